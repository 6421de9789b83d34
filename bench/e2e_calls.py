#!/usr/bin/env python3
"""Whole flow calls per second, and database transactions per call, on the sandbox.

Starts ``ringflow serve`` on a fresh database, submits ``--calls`` flow calls (a short greeting,
then hang up) with ``--concurrency`` clients, and waits until every call's StatusCallback has
reached a receiver in this script. Prints the calls per second from the first request to the
last callback.

On PostgreSQL it also counts the transactions the server committed, with PostgreSQL's own
counter (``pg_stat_database.xact_commit``), read before the server starts and after it has
stopped (a backend flushes its counts when it exits). A baseline run of the same length with
no calls is subtracted, so heartbeats and polls do not count: the figure is transactions per
completed call (the call accepted, answered, ended, its callback acknowledged).

    .venv/bin/python bench/e2e_calls.py [--calls 300] [--concurrency 16] [--db sqlite|postgresql]
                                        [--redis redis://127.0.0.1:6379/0] [--workers N]

``--db postgresql`` creates a database on ``RINGFLOW_BENCH_PG`` (default
postgresql://postgres@127.0.0.1:5432/test) and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
from api_connect import APP, RINGFLOW, cli, free_port, wait_healthy

PG_ADMIN = os.environ.get("RINGFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


class Receiver:
    """A StatusCallback receiver: answers 200 and counts callbacks by Idempotency-Key."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.duplicates = 0
        self.changed = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/status"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(":", 1)
                    for line in head.decode("latin-1").split("\r\n")[1:]
                    if ":" in line
                )
                headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
                await reader.readexactly(int(headers.get("content-length", "0")))
                key = headers.get("idempotency-key", "")
                if key in self.keys:
                    self.duplicates += 1
                self.keys.add(key)
                self.changed.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the sender closed its connection, or this run is over
        finally:
            writer.close()

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.keys) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def commits(url: str) -> int:
    conn = await asyncpg.connect(plain(url))
    try:
        name = plain(url).rsplit("/", 1)[1]
        return int(
            await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name)
        )
    finally:
        await conn.close()


class Server:
    def __init__(self, env: dict[str, str], workers: int = 1):
        self.env = env
        self.workers = workers
        self.base = f"http://127.0.0.1:{env['RINGFLOW_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        more = ["--workers", str(self.workers)] if self.workers > 1 else []
        self.proc = subprocess.Popen(
            [*RINGFLOW, "serve", *more], env=self.env, stdout=subprocess.DEVNULL
        )
        wait_healthy(self.base)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def run_calls(
    server: Server, creds: dict[str, str], calls: int, concurrency: int, first: int
) -> float:
    """Submit ``calls`` calls and wait for every callback; the seconds it took."""
    receiver = Receiver()
    await receiver.start()
    url = f"http://my.exotel.com/{creds['sid']}/exoml/start_voice/{creds['app_id']}"
    auth = (creds["api_key"], creds["api_token"])
    pending = iter(range(first, first + calls))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.base, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for n in pending:
                response = await client.post(
                    f"/v1/Accounts/{creds['sid']}/Calls/connect",
                    auth=auth,
                    data={
                        "From": f"0981{n:07d}",
                        "CallerId": "08039591234",
                        "Url": url,
                        "StatusCallback": receiver.url,
                    },
                )
                if response.status_code != 200:
                    raise SystemExit(f"connect failed: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await receiver.wait_for(calls, 600)
    elapsed = time.perf_counter() - started
    if receiver.duplicates:
        print(f"  {receiver.duplicates} callbacks came twice")
    assert receiver.server is not None
    receiver.server.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--redis", help="RINGFLOW_REDIS_URL, as production runs (default: none)")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (ringflow serve --workers)"
    )
    args = parser.parse_args()
    if args.workers > 1 and args.db != "postgresql":
        parser.error("--workers needs --db postgresql (SQLite serves one process)")

    with fresh_server(args.db) as (url, env, workdir):
        if args.redis:
            env["RINGFLOW_REDIS_URL"] = args.redis
        bench(args, url, env, workdir)
    return 0


def bench_account(env: dict[str, str], workdir: Path) -> dict[str, str]:
    """Migrate, and make the account every call is placed for: its credentials and app id."""
    cli(env, "migrate")
    creds = json.loads(cli(env, "accounts", "create", "bench", "--json"))
    cli(env, "numbers", "add", creds["sid"], "08039591234")
    (workdir / "app.yaml").write_text(APP)
    creds["app_id"] = cli(env, "apps", "import", creds["sid"], str(workdir / "app.yaml")).split()[1]
    return creds


def bench(args: argparse.Namespace, url: str, env: dict[str, str], workdir: Path) -> None:
    creds = bench_account(env, workdir)
    server = Server(env, args.workers)
    server.start()  # warm-up: prompts rendered, code paths hot
    asyncio.run(run_calls(server, creds, min(20, args.calls), 4, 0))
    server.stop()
    counted = args.db == "postgresql"
    before = asyncio.run(commits(url)) if counted else 0
    server.start()
    elapsed = asyncio.run(run_calls(server, creds, args.calls, args.concurrency, 1000))
    server.stop()
    shared = " and Redis" if args.redis else ""
    shared += f", {args.workers} workers" if args.workers > 1 else ""
    print(
        f"ringflow on {args.db}{shared}: {args.calls} flow calls, {args.concurrency} clients: "
        f"{args.calls / elapsed:.1f} calls/s ({elapsed:.1f} s to the last callback)"
    )
    if counted:
        loaded = asyncio.run(commits(url)) - before
        before = asyncio.run(commits(url))
        server.start()
        time.sleep(elapsed)
        server.stop()
        idle = asyncio.run(commits(url)) - before
        print(
            f"transactions: {loaded} with calls, {idle} idle for as long: "
            f"{(loaded - idle) / args.calls:.2f} per call"
        )


@contextlib.contextmanager
def fresh_server(db: str) -> Iterator[tuple[str, dict[str, str], Path]]:
    """A fresh database (a SQLite file, or a PostgreSQL database dropped afterwards) and the
    environment of a server on it with no limit in a benchmark's way: (URL, env, its folder)."""
    workdir = Path(tempfile.mkdtemp(prefix="ringflow-bench-"))
    pg_name = f"ringflow_bench_{uuid.uuid4().hex[:10]}"
    if db == "postgresql":
        asyncio.run(_pg_admin(f'CREATE DATABASE "{pg_name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        url = f"{url}/{pg_name}"
    else:
        url = f"sqlite+aiosqlite:///{workdir}/bench.db"
    env = {
        **os.environ,
        "RINGFLOW_DATABASE_URL": url,
        "RINGFLOW_PORT": str(free_port()),
        "RINGFLOW_DATA_DIR": str(workdir),
        "RINGFLOW_ALLOW_PRIVATE_URLS": "1",
        "RINGFLOW_RATE_LIMIT_PER_MINUTE": "100000000",
        "RINGFLOW_MAX_CONCURRENT_CALLS": "100000",
        "RINGFLOW_QUEUE_LIMIT": "100000",
        "RINGFLOW_LOG_LEVEL": "warning",
    }
    try:
        yield url, env, workdir
    finally:
        if db == "postgresql":
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        shutil.rmtree(workdir, ignore_errors=True)


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
