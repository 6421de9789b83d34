#!/usr/bin/env python3
"""Sustained Calls/connect throughput and latency on the sandbox, against a trivial endpoint.

Starts ``ringflow serve`` as a subprocess on a free loopback port with a fresh database, then
drives it with a fixed number of concurrent HTTP clients for a fixed time: first ``GET /healthz``
(the baseline: the same server, framework and event loop, no work), then ``POST Calls/connect``
(parse, authenticate, rate-limit, validate, persist the call and its leg, admit it, answer with
the Call XML). Every accepted call really runs on the sandbox while the load goes on.

Prints one line per endpoint and the comparable figure: connect throughput as a share of the
baseline's, measured in the same run. Each line also gives the server's CPU time per request,
the share of a core the load itself took (and on PostgreSQL its processes' CPU per request): on a small machine the baseline is bounded by
the client (httpx) long before the server, so the CPU per request says what a connect costs
the server against a request that does nothing.

    .venv/bin/python bench/api_connect.py [--seconds 20] [--concurrency 16] [--database-url URL]
        [--history N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RINGFLOW = [sys.executable, "-m", "ringflow.cli"]

APP = """
name: bench
start: hello
nodes:
  hello: {applet: greeting, text: "Hello from the benchmark", next: bye}
  bye: {applet: hangup}
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, seconds: float = 20) -> None:
    """Wait until the server at ``base`` answers /healthz."""
    for _ in range(round(seconds / 0.05)):
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"ringflow at {base} did not start")


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [*RINGFLOW, *args], env=env, check=True, capture_output=True, text=True
    ).stdout


# Finished calls inserted straight into the table (``--history``): what an account that has run
# for a while has, and what its admission must not read.
_HISTORY = """INSERT INTO calls (sid, account_id, shape, from_number, to_number, caller_id, status,
    direction, time_limit, time_out, callback_events, callback_json, record, recording_channels,
    recording_format, created_at, updated_at)
    SELECT {sid}, id, 'flow', '+919812345678', '', '+918039591234', 'completed', 'outbound-api',
        14400, 30, '[]', false, false, 'single', 'mp3', {at}, {at}
    FROM accounts, {numbers} WHERE accounts.sid = {account}"""


def add_history(url: str, account_sid: str, count: int) -> None:
    """Give the account ``count`` finished calls, then refresh the planner's statistics."""
    started = time.perf_counter()
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.split("///", 1)[1]) as conn:
            conn.execute(
                _HISTORY.format(
                    sid="'CH' || n.value",
                    at="datetime('now', '-1 day')",
                    numbers="(WITH RECURSIVE c(value) AS (SELECT 1 UNION ALL SELECT value + 1 "
                    "FROM c WHERE value < ?) SELECT value FROM c) AS n",
                    account="?",
                ),
                (count, account_sid),
            )
            conn.execute("ANALYZE")
    else:
        import asyncpg

        async def insert() -> None:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
            try:
                await conn.execute(
                    _HISTORY.format(
                        sid="'CH' || n",
                        at="now() - interval '1 day'",
                        numbers="generate_series(1, $1::int) AS n",
                        account="$2",
                    ),
                    count,
                    account_sid,
                )
                await conn.execute("ANALYZE calls")
            finally:
                await conn.close()

        asyncio.run(insert())
    print(f"{count} finished calls added in {time.perf_counter() - started:.1f} s")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_seconds() -> float:
    """CPU time of every PostgreSQL process on this machine so far (its backends, writers and
    autovacuum: what the load costs the database); 0 where none runs."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            if "(postgres)" in text:
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue  # ended meanwhile
    return total


class Run:
    """One endpoint's results: latencies of the answered requests, errors, and the CPU the
    server and the load took meanwhile."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.server_cpu = 0.0
        self.client_cpu = 0.0
        self.database_cpu = 0.0


async def drive(
    client: httpx.AsyncClient,
    request: dict,
    seconds: float,
    concurrency: int,
    server: int,
    postgres: bool = False,
) -> Run:
    run = Run()
    latencies = run.latencies
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            response = await client.request(**request)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                run.errors += 1
                if run.errors <= 3:
                    print(f"  error {response.status_code}: {response.text[:200]}", file=sys.stderr)

    server_before, client_before = cpu_seconds(server), time.process_time()
    database_before = postgres_seconds() if postgres else 0.0
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.server_cpu = cpu_seconds(server) - server_before
    run.database_cpu = postgres_seconds() - database_before if postgres else 0.0
    run.client_cpu = time.process_time() - client_before
    return run


def report(name: str, run: Run, seconds: float) -> tuple[float, float]:
    """Print one endpoint's line; its requests a second and server CPU ms a request."""
    rate = len(run.latencies) / seconds
    cuts = statistics.quantiles(run.latencies, n=100)
    per_request = run.server_cpu * 1000 / max(1, len(run.latencies))
    print(
        f"{name:<18} {rate:8.1f} req/s   p50 {cuts[49] * 1000:6.1f} ms   "
        f"p99 {cuts[98] * 1000:6.1f} ms   errors {run.errors}   "
        f"server {per_request:5.2f} ms CPU/request ({run.server_cpu / seconds:.2f} core)   "
        f"load {run.client_cpu / seconds:.2f} core"
        + (
            f"   PostgreSQL {run.database_cpu * 1000 / max(1, len(run.latencies)):.2f} ms CPU/request"
            if run.database_cpu
            else ""
        )
    )
    return rate, per_request


async def bench(
    base: str,
    creds: dict[str, str],
    seconds: float,
    concurrency: int,
    server: int,
    postgres: bool,
) -> None:
    auth = (creds["api_key"], creds["api_token"])
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        health_request = {"method": "GET", "url": "/healthz"}
        await drive(client, health_request, 2, concurrency, server)  # warm-up
        health = await drive(client, health_request, seconds, concurrency, server, postgres)
        connect_request = {
            "method": "POST",
            "url": f"/v1/Accounts/{creds['sid']}/Calls/connect",
            "auth": auth,
            "data": {
                "From": os.environ.get("BENCH_FROM", "09812345678"),
                "CallerId": "08039591234",
                "Url": f"http://my.exotel.com/{creds['sid']}/exoml/start_voice/{creds['app_id']}",
                "CallType": "trans",
            },
        }
        connect = await drive(client, connect_request, seconds, concurrency, server, postgres)
    base_rate, base_cpu = report("GET /healthz", health, seconds)
    rate, cpu = report("POST Calls/connect", connect, seconds)
    print(f"connect/healthz throughput ratio: {rate / base_rate:.3f}")
    print(f"connect/healthz server CPU per request: {cpu / base_cpu:.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="finished calls the account has before the load (as an account that has run a while)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ringflow-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "RINGFLOW_DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{workdir}/bench.db",
        "RINGFLOW_PORT": str(port),
        "RINGFLOW_RATE_LIMIT_PER_MINUTE": "100000000",
        "RINGFLOW_MAX_CONCURRENT_CALLS": "100000",
        "RINGFLOW_QUEUE_LIMIT": "100000",
        "RINGFLOW_LOG_LEVEL": "warning",
    }
    import json

    cli(env, "migrate")
    creds = json.loads(cli(env, "accounts", "create", f"bench {port}", "--json"))
    cli(env, "numbers", "add", creds["sid"], "08039591234")
    (workdir / "app.yaml").write_text(APP)
    creds["app_id"] = cli(env, "apps", "import", creds["sid"], str(workdir / "app.yaml")).split()[1]
    if args.history:
        add_history(env["RINGFLOW_DATABASE_URL"], creds["sid"], args.history)
    server = subprocess.Popen([*RINGFLOW, "serve"], env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        print(
            f"ringflow on {env['RINGFLOW_DATABASE_URL'].split(':')[0]}, {args.concurrency} clients, {args.seconds:g} s each"
        )
        postgres = env["RINGFLOW_DATABASE_URL"].startswith("postgresql")
        asyncio.run(bench(base, creds, args.seconds, args.concurrency, server.pid, postgres))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
