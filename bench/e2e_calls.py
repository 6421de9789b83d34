#!/usr/bin/env python3
"""Whole flow calls per second through the HTTP API, on the sandbox or over SIP to SIPp.

Starts ``ringflow serve`` on a fresh database and places flow calls (a short greeting, then hang
up) through ``POST Calls/connect``, each with a StatusCallback (JSON) to a receiver in this
script, and waits until every call's terminal callback has come. With ``--carrier sip`` every
call goes over SIP to a SIPp UAS on loopback (it answers, echoes the RTP it gets, and takes our
BYE) through a trunk whose limits the load never reaches; with ``--carrier sandbox`` (the
default) to the sandbox's virtual phones.

Two ways to load it:

- ``--calls N`` (the default, 300): N calls from ``--concurrency`` clients, each placing its
  next call as soon as the last was accepted. Prints calls per second from the first request
  to the last callback.
- ``--rate R [R ...]``: for each rate, calls placed at R a second (on a fixed grid, whatever the
  answers' latency) for ``--seconds`` (30). Prints per rate the rate achieved, failed calls (a
  refused request, or a terminal status other than ``completed``), callbacks missing or
  received twice, and p50/p99 from the API request to its call's terminal callback. A rate
  is sustained when nothing failed, every callback came exactly once, and the p99 stayed under
  ``--max-p99`` (5 s; the flow itself takes about 1.6 s, so a server falling behind, its calls
  waiting ever longer in the queue, shows as a p99 of tens of seconds); the figure is the
  highest rate sustained.

On PostgreSQL it also counts the transactions the server committed, with PostgreSQL's own
counter (``pg_stat_database.xact_commit``), read before the server starts and after it has
stopped (a backend flushes its counts when it exits). A baseline run of the same length with
no calls is subtracted, so heartbeats and polls do not count: the figure is transactions per
completed call (the call accepted, answered, ended, its callback acknowledged).

    .venv/bin/python bench/e2e_calls.py [--calls 300] [--concurrency 16] [--db sqlite|postgresql]
                                        [--redis redis://127.0.0.1:6379/0] [--workers N]
                                        [--carrier sandbox|sip] [--rate 50 100 150 [--seconds 30]]

``--db postgresql`` creates a database on ``RINGFLOW_BENCH_PG`` (default
postgresql://postgres@127.0.0.1:5432/test) and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from api_connect import APP, RINGFLOW, cli, free_port, wait_healthy
from sip_calls import Sipp, machine_busy, paced, percentile

from tests.sipp import free_udp_port

PG_ADMIN = os.environ.get("RINGFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


class Receiver:
    """A StatusCallback receiver: answers 200, counts callbacks by Idempotency-Key, and keeps
    each call's terminal status and the moment it came, by CallSid (JSON bodies)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.duplicates = 0
        self.ended: dict[str, tuple[str, float]] = {}  # CallSid -> (Status, perf_counter)
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
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                at = time.perf_counter()
                key = headers.get("idempotency-key", "")
                if key in self.keys:
                    self.duplicates += 1
                self.keys.add(key)
                if headers.get("content-type", "").startswith("application/json"):
                    payload = json.loads(body)
                    self.ended.setdefault(payload["CallSid"], (payload["Status"], at))
                self.changed.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the sender closed its connection, or this run is over
        finally:
            writer.close()

    async def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` callbacks have come; False if ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        while len(self.keys) < count:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


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


async def phases(url: str, sids: list[str]) -> str:
    """Where the calls' time went, from their records (PostgreSQL): p50/p99 of created (the
    call written, admitted) to ended, and ended to the callback's acknowledgement; the rest of
    request to callback is the API's answer."""
    conn = await asyncpg.connect(plain(url))
    try:
        rows = await conn.fetch(
            "SELECT c.created_at, c.end_time, o.delivered_at FROM calls c "
            "JOIN outbox o ON o.call_id = c.id WHERE c.sid = ANY($1::text[])",
            sids,
        )
    finally:
        await conn.close()
    spans = {"created to ended": (0, 1), "ended to callback": (1, 2)}
    parts = []
    for name, (a, b) in spans.items():
        values = [(r[b] - r[a]).total_seconds() for r in rows if r[a] and r[b]]
        parts.append(
            f"{name} p50 {percentile(values, 0.5) * 1000:.0f} / p99 "
            f"{percentile(values, 0.99) * 1000:.0f} ms"
        )
    return "; ".join(parts)


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


def connect_form(creds: dict[str, str], n: int, receiver: Receiver) -> dict[str, str]:
    return {
        "From": f"0981{n:07d}",
        "CallerId": "08039591234",
        "Url": f"http://my.exotel.com/{creds['sid']}/exoml/start_voice/{creds['app_id']}",
        "StatusCallback": receiver.url,
        "StatusCallbackContentType": "application/json",
    }


class Placer:
    """POST requests over at most ``connections`` keep-alive HTTP/1.1 connections (asyncio
    streams), each request waiting for a free one.

    The fixed-rate load must stay cheap however far behind the server falls: an httpx client
    with hundreds of requests in flight spends CPU on its pool that grows with their square
    (0.7 of a core past the sustained rate, taken from the server it measures), and the rates
    just above the figure then collapse for the load generator's sake, not the server's."""

    def __init__(self, base: str, auth: tuple[str, str], connections: int = 64) -> None:
        parts = urllib.parse.urlsplit(base)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self._head = f"Host: {parts.netloc}\r\nAuthorization: Basic {token}\r\n"
        self._idle: asyncio.LifoQueue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.LifoQueue()
        )
        self._room = asyncio.Semaphore(connections)

    async def post(self, path: str, form: dict[str, str]) -> tuple[int, bytes]:
        """The status and body of the answer to a form POST; OSError if the connection fails."""
        body = urllib.parse.urlencode(form).encode()
        request = (
            f"POST {path} HTTP/1.1\r\n{self._head}"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self._room:
            reader, writer = (
                self._idle.get_nowait()
                if not self._idle.empty()
                else await asyncio.open_connection(self._host, self._port)
            )
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines[1:]
                    if line.lower().startswith("content-length:")
                )
                answer = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as error:
                writer.close()
                raise OSError(f"{type(error).__name__}: {error}") from None
            self._idle.put_nowait((reader, writer))
            return status, answer

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait()[1].close()


def client_for(server: Server, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=server.base, limits=limits, timeout=60)


async def run_calls(
    server: Server, creds: dict[str, str], calls: int, concurrency: int, first: int
) -> float:
    """Submit ``calls`` calls and wait for every callback; the seconds it took."""
    receiver = Receiver()
    await receiver.start()
    auth = (creds["api_key"], creds["api_token"])
    pending = iter(range(first, first + calls))
    started = time.perf_counter()
    async with client_for(server, concurrency) as client:

        async def worker() -> None:
            for n in pending:
                response = await client.post(
                    f"/v1/Accounts/{creds['sid']}/Calls/connect",
                    auth=auth,
                    data=connect_form(creds, n, receiver),
                )
                if response.status_code != 200:
                    raise SystemExit(f"connect failed: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if not await receiver.wait_for(calls, 600):
            raise SystemExit(f"only {len(receiver.keys)} of {calls} callbacks came in 600 s")
    elapsed = time.perf_counter() - started
    if receiver.duplicates:
        print(f"  {receiver.duplicates} callbacks came twice")
    receiver.close()
    return elapsed


async def run_paced(
    server: Server, creds: dict[str, str], rate: float, seconds: float, first: int
) -> dict[str, Any]:
    """Place calls at ``rate`` a second for ``seconds`` and wait for their terminal callbacks;
    what happened to them."""
    receiver = Receiver()
    await receiver.start()
    auth = (creds["api_key"], creds["api_token"])
    count = round(rate * seconds)
    sent: dict[str, float] = {}  # CallSid -> when its request was sent
    refused: list[str] = []
    placer = Placer(server.base, auth)
    path = f"/v1/Accounts/{creds['sid']}/Calls/connect.json"
    try:

        async def place(i: int) -> None:
            at = time.perf_counter()
            try:
                status, body = await placer.post(path, connect_form(creds, first + i, receiver))
            except OSError as error:
                refused.append(str(error))
                return
            if status == 200:
                sent[json.loads(body)["Call"]["Sid"]] = at
            else:
                refused.append(f"{status} {body[:200]!r}")

        started = time.perf_counter()
        tasks = await paced(rate, count, place)
        placed = time.perf_counter() - started
        await asyncio.gather(*tasks)
    finally:
        placer.close()
    await receiver.wait_for(len(sent), 120)
    receiver.close()
    ended = {sid: receiver.ended[sid] for sid in sent if sid in receiver.ended}
    latencies = [at - sent[sid] for sid, (_status, at) in ended.items()]
    not_completed = sum(1 for status, _at in ended.values() if status != "completed")
    return {
        "sids": list(sent),
        "rate": rate,
        "calls": count,
        "achieved": count / placed if placed else float("nan"),
        "refused": refused,
        "not_completed": not_completed,
        "missing": len(sent) - len(ended),
        "duplicates": receiver.duplicates,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--rate", type=float, nargs="+", help="place calls at these rates instead of --calls"
    )
    parser.add_argument("--seconds", type=float, default=30, help="how long each --rate lasts")
    parser.add_argument(
        "--max-p99", type=float, default=5.0, help="seconds, request to callback, to sustain a rate"
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--redis", help="RINGFLOW_REDIS_URL, as production runs (default: none)")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (ringflow serve --workers)"
    )
    parser.add_argument("--carrier", choices=("sandbox", "sip"), default="sandbox")
    args = parser.parse_args()
    if args.workers > 1 and args.db != "postgresql":
        parser.error("--workers needs --db postgresql (SQLite serves one process)")

    with fresh_server(args.db) as (url, env, workdir), carrier(args, env, workdir) as sipp:
        if args.redis:
            env["RINGFLOW_REDIS_URL"] = args.redis
        creds = bench_account(env, workdir)
        server = Server(env, args.workers)
        if args.rate:
            bench_rates(args, url, server, creds, sipp)
        else:
            bench_calls(args, url, server, creds)
    return 0


@contextlib.contextmanager
def carrier(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> Iterator[Sipp | None]:
    """With ``--carrier sip``: a SIPp UAS, and the server's environment sending every call to
    it through a trunk with limits the load never reaches."""
    if args.carrier != "sip":
        yield None
        return
    sipp = Sipp("uas", workdir)
    try:
        (workdir / "trunks.yaml").write_text(
            "trunks:\n"
            f"  - {{name: sipp, host: 127.0.0.1, port: {sipp.port}, "
            "max_channels: 100000, max_cps: 10000}\n"
        )
        env["RINGFLOW_CARRIER"] = "sip"
        env["RINGFLOW_SIP_TRUNKS"] = str(workdir / "trunks.yaml")
        env["RINGFLOW_SIP_HOST"] = "127.0.0.1"
        env["RINGFLOW_SIP_PORT"] = str(free_udp_ports(args.workers))
        yield sipp
    finally:
        sipp.stop()


def free_udp_ports(count: int) -> int:
    """The first of ``count`` consecutive free UDP ports (one SIP port per worker)."""
    for _ in range(100):
        first = free_udp_port()
        if all(udp_port_free(first + i) for i in range(1, count)):
            return first
    raise SystemExit(f"no {count} consecutive free UDP ports")


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by each process on this machine, with the part it belongs to:
    ringflow's processes, SIPp, PostgreSQL, Redis, this script (the load and the callback
    receiver), or the rest."""
    me = os.getpid()
    seen: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue  # gone meanwhile
        if pid == me:
            part = "load"
        elif b"\0ringflow.cli\0" in cmdline or b"\0ringflow\0serve\0" in cmdline:
            part = "ringflow"
        elif cmdline.startswith(b"sipp"):
            part = "sipp"
        elif cmdline.startswith(b"postgres"):
            part = "postgres"
        elif cmdline.startswith(b"redis"):
            part = "redis"
        else:
            part = "other"
        seen[pid] = part, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seen


def cores_by_part(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall: float
) -> str:
    """The cores each part used between two readings (a process that ended between them is
    not counted: none of the measured parts should end)."""
    used: dict[str, float] = {}
    for pid, (part, seconds) in after.items():
        used[part] = used.get(part, 0.0) + seconds - before.get(pid, (part, 0.0))[1]
    names = ("ringflow", "sipp", "postgres", "redis", "load", "other")
    return ", ".join(f"{name} {used[name] / wall:.2f}" for name in names if name in used)


def sipp_failed(sipp: Sipp | None) -> int:
    """Calls SIPp has counted as failed so far (an unexpected or missing message)."""
    return int(sipp.stats().get("FailedCall(C)", 0) or 0) if sipp else 0


def bench_account(env: dict[str, str], workdir: Path) -> dict[str, str]:
    """Migrate, and make the account every call is placed for: its credentials and app id."""
    cli(env, "migrate")
    creds = json.loads(cli(env, "accounts", "create", "bench", "--json"))
    cli(env, "numbers", "add", creds["sid"], "08039591234")
    (workdir / "app.yaml").write_text(APP)
    creds["app_id"] = cli(env, "apps", "import", creds["sid"], str(workdir / "app.yaml")).split()[1]
    return creds


def described(args: argparse.Namespace) -> str:
    shared = f"ringflow on {args.db}"
    shared += " and Redis" if args.redis else ""
    shared += f", {args.workers} workers" if args.workers > 1 else ""
    return shared + (", over SIP to SIPp" if args.carrier == "sip" else ", on the sandbox")


def bench_calls(args: argparse.Namespace, url: str, server: Server, creds: dict[str, str]) -> None:
    server.start()  # warm-up: prompts rendered, code paths hot
    asyncio.run(run_calls(server, creds, min(20, args.calls), 4, 0))
    server.stop()
    counted = args.db == "postgresql"
    before = asyncio.run(commits(url)) if counted else 0
    server.start()
    elapsed = asyncio.run(run_calls(server, creds, args.calls, args.concurrency, 1000))
    server.stop()
    print(
        f"{described(args)}: {args.calls} flow calls, {args.concurrency} clients: "
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


def bench_rates(
    args: argparse.Namespace,
    url: str,
    server: Server,
    creds: dict[str, str],
    sipp: Sipp | None,
) -> None:
    server.start()
    try:
        asyncio.run(run_calls(server, creds, 20, 4, 0))  # warm-up: prompts rendered
        print(f"{described(args)}: calls placed at a fixed rate for {args.seconds:g} s each")
        best = 0.0
        for step, rate in enumerate(args.rate, start=1):
            busy0, wall0, sipp0 = machine_busy(), time.monotonic(), sipp_failed(sipp)
            parts0 = cpu_by_process()
            r = asyncio.run(run_paced(server, creds, rate, args.seconds, step * 1_000_000))
            wall = time.monotonic() - wall0
            busy = (machine_busy() - busy0) / wall
            cores = cores_by_part(parts0, cpu_by_process(), wall)
            if sipp:
                time.sleep(1.5)  # SIPp writes its statistics file once a second
            failed_in_sipp = sipp_failed(sipp) - sipp0
            ok = not r["refused"] and not r["not_completed"] and not r["missing"]
            ok = ok and not r["duplicates"] and not failed_in_sipp and r["p99"] <= args.max_p99
            best = max(best, rate) if ok else best
            print(
                f"  rate {rate:g}/s: {r['calls']} calls at {r['achieved']:.1f}/s, "
                f"refused {len(r['refused'])}, not completed {r['not_completed']}, "
                f"callbacks missing {r['missing']}, twice {r['duplicates']}"
                + (f", SIPp failed {failed_in_sipp}" if sipp else "")
                + f"; request to callback p50 {r['p50'] * 1000:.0f} ms, "
                f"p99 {r['p99'] * 1000:.0f} ms; machine {busy:.2f} cores busy  "
                + ("sustained" if ok else "NOT sustained")
            )
            for reason in r["refused"][:3]:
                print(f"    refused: {reason}")
            print(f"    cores: {cores}")
            if args.db == "postgresql":
                print(f"    {asyncio.run(phases(url, r['sids']))}")
        print(
            f"highest rate sustained (every call completed and called back once, p99 under "
            f"{args.max_p99:g} s): {best:g} calls/s"
        )
    finally:
        server.stop()


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
        # Longer than the clients' own 5 s: an idle pooled connection is closed by the client,
        # never by the server as a request goes out on it (a ReadError, counted as a failure).
        "RINGFLOW_HTTP_KEEP_ALIVE": "60",
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
