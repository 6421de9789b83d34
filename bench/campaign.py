#!/usr/bin/env python3
"""The highest campaign pace one ringflow process sustains, and how exactly it keeps it.

Starts ``ringflow serve`` (one process) on a fresh database, on the sandbox or over SIP to a
SIPp phone that answers every call, and runs one campaign per step of a ladder of paces
(``calls_per_second``), each ``--seconds`` long, every call a short greeting then hang-up.
From the calls' own records it prints, per step:

- the pace achieved (calls over the time from the first start to the last);
- the pacing error: each call's start minus when the pace scheduled it (call ``k`` at
  ``origin + k / calls_per_second``, the origin the latest one no call started before), median,
  p99 and max;
- failed calls.

A step is *sustained* when the pace achieved is within 5% of the pace asked and no call failed;
the figure is the highest sustained step.

    .venv/bin/python bench/campaign.py [--carrier sandbox|sip] [--db sqlite|postgresql]
                                       [--rates 10,20,40,80] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from api_connect import free_port
from e2e_calls import Server, bench_account, fresh_server
from sqlalchemy import select

from ringflow.storage.db import Database
from ringflow.storage.models import Call, Campaign

EXOPHONE = "08039591234"


async def step(
    server: Server, creds: dict[str, str], url: str, rate: float, seconds: float, first: int
) -> dict[str, float]:
    """One campaign at ``rate``; its figures."""
    count = max(20, round(rate * seconds))
    body = {
        "from": [f"0981{first + i:07d}" for i in range(count)],
        "caller_id": EXOPHONE,
        "url": f"http://my.exotel.com/{creds['sid']}/exoml/start_voice/{creds['app_id']}",
        "calls_per_second": rate,
        "name": f"bench at {rate:g} a second",
    }
    auth = (creds["api_key"], creds["api_token"])
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        r = await http.post(f"/v2/accounts/{creds['sid']}/campaigns", json=body, auth=auth)
        if r.status_code != 200:
            raise SystemExit(f"campaign refused: {r.text}")
        sid = r.json()["response"][0]["data"]["id"]
        deadline = time.monotonic() + seconds * 10 + 120
        while time.monotonic() < deadline:
            r = await http.get(f"/v2/accounts/{creds['sid']}/campaigns/{sid}", auth=auth)
            campaign = r.json()["response"][0]["data"]
            if campaign["status"] == "Completed" and campaign["end_time"]:
                break
            await asyncio.sleep(0.5)
        else:
            raise SystemExit(f"the campaign at {rate:g}/s did not finish")
    db = Database(url)
    try:
        async with db.session() as session:
            rows = (
                await session.execute(
                    select(Call.created_at, Call.status)
                    .join(Campaign, Campaign.id == Call.campaign_id)
                    .where(Campaign.sid == sid)
                    .order_by(Call.created_at)
                )
            ).all()
    finally:
        await db.close()
    starts = [row[0].timestamp() for row in rows]
    # The grid the pace set: the earliest one no call started before (the driver never starts
    # a call early, so lateness against it is the pacing error).
    origin = min(start - k / rate for k, start in enumerate(starts))
    errors = [(start - (origin + k / rate)) * 1000 for k, start in enumerate(starts)]
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    return {
        "rate": rate,
        "calls": len(rows),
        "achieved": achieved,
        "failed": sum(1 for row in rows if row[1] != "completed"),
        "p50": statistics.median(errors),
        "p99": percentile(errors, 0.99),
        "max": max(errors),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sipp_phone(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """SIPp answering every call (its built-in ``uas`` scenario) on a free UDP port."""
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--carrier", choices=("sandbox", "sip"), default="sandbox")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rates", default="10,20,40,80")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    with fresh_server(args.db) as (url, env, workdir):
        ladder(args, url, env, workdir)
    return 0


def ladder(args: argparse.Namespace, url: str, env: dict[str, str], workdir: Path) -> None:
    """Every step of the ladder on one server; prints a line each and the highest kept."""
    rates = [float(r) for r in args.rates.split(",")]
    phone = None
    try:
        if args.carrier == "sip":
            phone, port = sipp_phone(workdir)
            trunks = workdir / "trunks.yaml"
            trunks.write_text(
                f"trunks:\n  - name: bench\n    host: 127.0.0.1\n    port: {port}\n"
                "    max_channels: 10000\n    max_cps: 1000\n"
            )
            env.update(
                RINGFLOW_CARRIER="sip",
                RINGFLOW_SIP_TRUNKS=str(trunks),
                RINGFLOW_SIP_PORT=str(free_port(socket.SOCK_DGRAM)),
            )
        creds = bench_account(env, workdir)
        server = Server(env)
        server.start()
        try:
            asyncio.run(step(server, creds, url, 5, 2, 0))  # warm-up: prompts rendered
            print(f"ringflow on {args.carrier}, {args.db}: one process, {args.seconds:g} s a step")
            print("asked/s  calls  achieved/s  failed  error p50 / p99 / max (ms)")
            best = 0.0
            for index, rate in enumerate(rates, 1):
                figures = asyncio.run(step(server, creds, url, rate, args.seconds, index * 100_000))
                kept = figures["achieved"] >= 0.95 * rate and figures["failed"] == 0
                best = rate if kept else best
                print(
                    f"{rate:7g}  {figures['calls']:5.0f}  {figures['achieved']:10.1f}  "
                    f"{figures['failed']:6.0f}  {figures['p50']:6.1f} / {figures['p99']:6.1f}"
                    f" / {figures['max']:6.1f}{'' if kept else '  (not sustained)'}"
                )
            print(f"highest pace sustained: {best:g} calls a second")
        finally:
            server.stop()
    finally:
        if phone is not None:
            phone.kill()


if __name__ == "__main__":
    sys.exit(main())
