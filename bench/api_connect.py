#!/usr/bin/env python3
"""Sustained Calls/connect throughput and latency on the sandbox, against a trivial endpoint.

Starts ``ringflow serve`` as a subprocess on a free loopback port with a fresh database, then
drives it with a fixed number of concurrent HTTP clients for a fixed time: first ``GET /healthz``
(the baseline: the same server, framework and event loop, no work), then ``POST Calls/connect``
(parse, authenticate, rate-limit, validate, persist the call and its leg, admit it, answer with
the Call XML). Every accepted call really runs on the sandbox while the load goes on.

Prints one line per endpoint and the comparable figure: connect throughput as a share of the
baseline's, measured in the same run.

    .venv/bin/python bench/api_connect.py [--seconds 20] [--concurrency 16] [--database-url URL]
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


async def drive(
    client: httpx.AsyncClient, request: dict, seconds: float, concurrency: int
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            response = await client.request(**request)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
                if errors <= 3:
                    print(f"  error {response.status_code}: {response.text[:200]}", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def report(name: str, latencies: list[float], errors: int, seconds: float) -> float:
    rate = len(latencies) / seconds
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{name:<18} {rate:8.1f} req/s   p50 {cuts[49] * 1000:6.1f} ms   "
        f"p99 {cuts[98] * 1000:6.1f} ms   errors {errors}"
    )
    return rate


async def bench(base: str, creds: dict[str, str], seconds: float, concurrency: int) -> None:
    auth = (creds["api_key"], creds["api_token"])
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        await drive(client, {"method": "GET", "url": "/healthz"}, 2, concurrency)  # warm-up
        health = await drive(client, {"method": "GET", "url": "/healthz"}, seconds, concurrency)
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
        connect = await drive(client, connect_request, seconds, concurrency)
    base_rate = report("GET /healthz", *health, seconds)
    rate = report("POST Calls/connect", *connect, seconds)
    print(f"connect/healthz throughput ratio: {rate / base_rate:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
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
    server = subprocess.Popen([*RINGFLOW, "serve"], env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        print(
            f"ringflow on {env['RINGFLOW_DATABASE_URL'].split(':')[0]}, {args.concurrency} clients, {args.seconds:g} s each"
        )
        asyncio.run(bench(base, creds, args.seconds, args.concurrency))
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
