#!/usr/bin/env python3
"""Normal calls under hostile traffic: what a steady stream of ordinary calls sees.

Two runs of ``--seconds`` each, each against a fresh ``ringflow serve`` and database on loopback:

- quiet: the normal traffic alone;
- hostile: the same normal traffic while, all at once, a separate process sends fuzzed SIP
  datagrams to the SIP port (from the trunk's address and a stranger's) and fuzzed RTP to the
  RTP range, holds slow HTTP clients that dribble a header line every 5 s, floods the API with
  wrong tokens, posts multipart bombs to /logout, and places calls for a tenant whose
  StatusCallback is a tarpit (accepts, reads, never answers).

Normal traffic: account ``steady`` places flow calls on the sandbox at ``--rate`` a second and
account ``sip`` one SIP call a second through a trunk whose far end is SIPp (``sipp -sn uas``),
each with a StatusCallback to a receiver in its own process that notes when each callback came.
Printed per run: Calls/connect latency p50/p99, the time from the API's answer to the terminal
callback p50/p99 per account (it includes the call itself, about the same in both runs), calls
lost (accepted, but no terminal callback by the end of a grace period; goal 0), requests refused,
and the server's peak RSS; then the hostile/quiet ratios.

    .venv/bin/python bench/soak.py [--seconds 120] [--rate 4] [--database-url URL] [--no-sip]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# After the path: api_connect is the sibling script, importable once its folder is on the path.
from api_connect import RINGFLOW, cli, free_port

EXOPHONES = {"steady": "08039591234", "sip": "08039591235", "tarpit": "08039591236"}
GRACE = 60.0  # seconds after the load stops for the last callbacks to arrive
APP = """
name: soak
start: hello
nodes:
  hello: {applet: greeting, text: "Hello, this is a reminder from the soak test.", next: bye}
  bye: {applet: hangup}
"""


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


# --- the callback receiver (its own process, so the load generator's work cannot delay it) ---


async def receive_callbacks(port: int, out: Path) -> None:
    """A minimal HTTP/1.1 server: each request's arrival time and JSON body, one line each."""
    sink = out.open("a", buffering=1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                arrived = time.time()
                with contextlib.suppress(ValueError):
                    data = json.loads(body)
                    sink.write(
                        json.dumps(
                            {
                                "at": arrived,
                                "sid": data.get("CallSid"),
                                "status": data.get("Status"),
                            }
                        )
                        + "\n"
                    )
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- the hostile process ---


def raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def tarpit(port: int) -> None:
    """Accepts, reads, never answers; holds each connection until the peer gives up."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def slow_client(host: str, port: int, stop: float) -> int:
    """One connection at a time dribbling a header line every 5 s; reconnects when cut off.
    Returns how many connections it made."""
    cut = 0
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.88", 0))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() < stop:
                await writer.drain()
                try:  # anything the server sends (an error, or the end) means it cut us off
                    await asyncio.wait_for(reader.read(1024), 5)
                    break
                except TimeoutError:
                    writer.write(b"X-Slow: 1\r\n")
            writer.close()
        except (ConnectionError, OSError):
            pass
        cut += 1
        await asyncio.sleep(0.5)  # then straight back, as a slow-loris attacker does
    return cut


async def wrong_tokens(base: str, sid: str, key: str, per_second: int, stop: float) -> dict:
    """A flood of wrong tokens for a real key id, from one address."""
    counts: dict[int, int] = {}
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.77")
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        while time.monotonic() < stop:
            tick = time.monotonic()
            answers = await asyncio.gather(
                *(
                    http.get(f"{base}/v1/Accounts/{sid}/Calls.json", auth=(key, f"wrong{i}"))
                    for i in range(per_second // 10)
                ),
                return_exceptions=True,
            )
            for a in answers:
                code = a.status_code if isinstance(a, httpx.Response) else 0
                counts[code] = counts.get(code, 0) + 1
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    return counts


async def bombs(base: str, stop: float) -> int:
    """A multipart body of 50 one-megabyte file parts to /logout, every two seconds."""
    part = b"x" * (1024 * 1024)
    files = [("f", (f"{i}.bin", part)) for i in range(50)]
    sent = 0
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() < stop:
            with contextlib.suppress(httpx.HTTPError):
                await http.post(f"{base}/logout", files=files)
                sent += 1
            await asyncio.sleep(2)
    return sent


async def tarpit_tenant(
    base: str, creds: dict, tarpit_url: str, per_second: float, stop: float
) -> int:
    """A tenant whose every call reports to the tarpit."""
    placed = 0
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() < stop:
            with contextlib.suppress(httpx.HTTPError):
                r = await http.post(
                    f"{base}/v1/Accounts/{creds['sid']}/Calls/connect.json",
                    auth=(creds["api_key"], creds["api_token"]),
                    data={
                        "From": "09812345678",
                        "CallerId": creds["exophone"],
                        "Url": creds["flow"],
                        "StatusCallback": tarpit_url,
                    },
                )
                placed += r.status_code == 200
            await asyncio.sleep(1 / per_second)
    return placed


def fuzz(
    sip: tuple[str, int], rtp: tuple[int, int], per_second: int, stop: float, out: dict
) -> None:
    """Fuzzed SIP (from the trunk's address and a stranger's) and RTP, paced, on a thread."""
    from tests.sipfuzz import blast, rtp_datagram, sip_datagram

    seed, sent = 1, 0
    while time.monotonic() < stop:
        tick = time.monotonic()
        seed += 1
        sent += blast(
            sip, per_second // 2, sip_datagram, sources=("127.0.0.1", "127.0.0.66"), seed=seed
        ).sent
        port = random.Random(seed).randrange(rtp[0], rtp[1] + 1)
        sent += blast(
            ("127.0.0.1", port), per_second // 2, rtp_datagram, sources=("127.0.0.66",), seed=seed
        ).sent
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    out["datagrams"] = sent


async def hostile(plan: dict) -> None:
    raise_file_limit()
    stop = time.monotonic() + plan["seconds"]
    base = plan["base"]
    results: dict = {}
    side = asyncio.ensure_future(tarpit(plan["tarpit_port"]))
    fuzzer = None
    if plan["sip_port"]:
        fuzzer = threading.Thread(
            target=fuzz,
            args=(
                ("127.0.0.1", plan["sip_port"]),
                tuple(plan["rtp"]),
                plan["fuzz_rate"],
                stop,
                results,
            ),
            daemon=True,
        )
        fuzzer.start()
    host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
    slow = [slow_client(host, port, stop) for _ in range(plan["slow_clients"])]
    outcome = await asyncio.gather(
        asyncio.gather(*slow),
        wrong_tokens(
            base, plan["steady"]["sid"], plan["steady"]["api_key"], plan["token_rate"], stop
        ),
        bombs(base, stop),
        tarpit_tenant(
            base, plan["tarpit"], f"http://127.0.0.1:{plan['tarpit_port']}/cb", 2.0, stop
        ),
    )
    if fuzzer is not None:
        fuzzer.join()
    side.cancel()
    await asyncio.gather(side, return_exceptions=True)
    results.update(
        slow_connections=sum(outcome[0]),
        tokens=outcome[1],
        bombs=outcome[2],
        tarpit_calls=outcome[3],
    )
    print(json.dumps(results), flush=True)


# --- the normal traffic and the runs ---


async def normal_traffic(
    base: str, accounts: dict[str, dict], rates: dict[str, float], seconds: float, callback: str
) -> dict[str, list]:
    """Place calls for each account at its rate; note each call's SID and when it was accepted."""
    placed: dict[str, list] = {name: [] for name in rates}
    stop = time.monotonic() + seconds

    async def one(http: httpx.AsyncClient, name: str) -> None:
        creds = accounts[name]
        started = time.perf_counter()
        try:
            r = await http.post(
                f"{base}/v1/Accounts/{creds['sid']}/Calls/connect.json",
                auth=(creds["api_key"], creds["api_token"]),
                data={
                    "From": "09812345678",
                    "CallerId": creds["exophone"],
                    "Url": creds["flow"],
                    "StatusCallback": callback,
                    "StatusCallbackContentType": "application/json",
                },
            )
            ok = r.status_code == 200
            sid = r.json()["Call"]["Sid"] if ok else None
        except httpx.HTTPError:
            ok, sid = False, None
        placed[name].append((sid, time.time(), time.perf_counter() - started, ok))

    async def stream(http: httpx.AsyncClient, name: str, rate: float) -> None:
        tasks = []
        next_at = time.monotonic()
        while next_at < stop:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tasks.append(asyncio.ensure_future(one(http, name)))
            next_at += 1 / rate
        await asyncio.gather(*tasks)

    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.5")
    async with httpx.AsyncClient(transport=transport, timeout=30) as http:
        await asyncio.gather(*(stream(http, n, r) for n, r in rates.items()))
    return placed


def peak_rss_sampler(pid: int, out: dict) -> threading.Event:
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out["rss"] = max(out.get("rss", 0), int(line.split()[1]) // 1024)
            done.wait(0.2)

    threading.Thread(target=sample, daemon=True).start()
    return done


def run(args: argparse.Namespace, hostile_on: bool) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="ringflow-soak-"))
    port, sip_port = free_port(), (free_port(socket.SOCK_DGRAM) if args.sip else 0)
    receiver_port, tarpit_port = free_port(), free_port()
    rtp = (30000, 30400)
    env = {
        **os.environ,
        "RINGFLOW_DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{workdir}/soak.db",
        "RINGFLOW_DATA_DIR": str(workdir / "data"),
        "RINGFLOW_PORT": str(port),
        "RINGFLOW_ALLOW_PRIVATE_URLS": "1",
        "RINGFLOW_RATE_LIMIT_PER_MINUTE": "100000",
        "RINGFLOW_MAX_CONCURRENT_CALLS": "1000",
        "RINGFLOW_LOG_LEVEL": "warning",
        "RINGFLOW_RTP_PORT_MIN": str(rtp[0]),
        "RINGFLOW_RTP_PORT_MAX": str(rtp[1]),
    }
    (workdir / "app.yaml").write_text(APP)
    accounts = {}
    for name in ("steady", "sip", "tarpit"):
        creds = json.loads(cli(env, "accounts", "create", f"soak {name}", "--json"))
        creds["exophone"] = EXOPHONES[name]
        cli(env, "numbers", "add", creds["sid"], creds["exophone"])
        app_id = cli(env, "apps", "import", creds["sid"], str(workdir / "app.yaml")).split()[1]
        creds["flow"] = f"http://my.exotel.com/{creds['sid']}/exoml/start_voice/{app_id}"
        accounts[name] = creds
    procs: list[subprocess.Popen] = []
    if args.sip:
        sipp_port = free_port(socket.SOCK_DGRAM)
        procs.append(
            subprocess.Popen(
                ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(sipp_port), "-nostdin", "-bg"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        (workdir / "trunks.yaml").write_text(
            json.dumps(
                {
                    "trunks": [
                        {
                            "name": "sipp",
                            "host": "127.0.0.1",
                            "port": sipp_port,
                            "accounts": [accounts["sip"]["sid"]],
                        }
                    ]
                }
            )
        )
        env.update(
            RINGFLOW_SIP_TRUNKS=str(workdir / "trunks.yaml"),
            RINGFLOW_SIP_PORT=str(sip_port),
            RINGFLOW_SIP_HOST="127.0.0.1",
        )
    callbacks = workdir / "callbacks.jsonl"
    procs.append(
        subprocess.Popen(
            [sys.executable, __file__, "--receiver", str(receiver_port), str(callbacks)]
        )
    )
    server_log = (workdir / "server.log").open("w")
    server = subprocess.Popen([*RINGFLOW, "serve"], env=env, stdout=server_log, stderr=server_log)
    base = f"http://127.0.0.1:{port}"
    stats: dict = {}
    try:
        for _ in range(400):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        stop_sampling = peak_rss_sampler(server.pid, stats)
        attacker = None
        if hostile_on:
            plan = {
                "seconds": args.seconds,
                "base": base,
                "sip_port": sip_port,
                "rtp": rtp,
                "tarpit_port": tarpit_port,
                "steady": accounts["steady"],
                "tarpit": accounts["tarpit"],
                "slow_clients": args.slow_clients,
                "token_rate": args.token_rate,
                "fuzz_rate": args.fuzz_rate,
            }
            attacker = subprocess.Popen(
                [sys.executable, __file__, "--hostile", json.dumps(plan)],
                stdout=subprocess.PIPE,
                text=True,
            )
        rates = {"steady": args.rate, **({"sip": 1.0} if args.sip else {})}
        placed = asyncio.run(
            normal_traffic(
                base, accounts, rates, args.seconds, f"http://127.0.0.1:{receiver_port}/cb"
            )
        )
        if attacker is not None:
            stats["hostile"] = json.loads(attacker.communicate(timeout=120)[0] or "{}")
        wanted = {sid for calls in placed.values() for sid, _, _, ok in calls if ok}
        deadline = time.monotonic() + GRACE
        arrived: dict[str, float] = {}
        while time.monotonic() < deadline:
            arrived = terminal_callbacks(callbacks)
            if wanted <= arrived.keys():
                break
            time.sleep(0.5)
        stop_sampling.set()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        if server.returncode not in (0, -signal.SIGTERM):
            print((workdir / "server.log").read_text()[-3000:], file=sys.stderr)
        for proc in procs:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    for name, calls in placed.items():
        accepted = [(sid, at) for sid, at, _, ok in calls if ok]
        delays = [arrived[sid] - at for sid, at in accepted if sid in arrived]
        stats[name] = {
            "placed": len(calls),
            "refused": len(calls) - len(accepted),
            "lost": sum(sid not in arrived for sid, _ in accepted),
            "api_p50": quantile([lat for _, _, lat, _ in calls], 0.5) * 1000,
            "api_p99": quantile([lat for _, _, lat, _ in calls], 0.99) * 1000,
            "cb_p50": quantile(delays, 0.5),
            "cb_p99": quantile(delays, 0.99),
        }
    return stats


def terminal_callbacks(path: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                found.setdefault(item["sid"], item["at"])
    return found


def report(quiet: dict, loud: dict, accounts: list[str]) -> None:
    print(
        f"{'':<8} {'run':<8} {'placed':>6} {'refused':>7} {'lost':>5} {'API p50':>9} "
        f"{'API p99':>9} {'callback p50':>13} {'callback p99':>13}"
    )
    for name in accounts:
        for label, stats in (("quiet", quiet), ("hostile", loud)):
            s = stats[name]
            print(
                f"{name:<8} {label:<8} {s['placed']:>6} {s['refused']:>7} {s['lost']:>5} "
                f"{s['api_p50']:>7.1f}ms {s['api_p99']:>7.1f}ms {s['cb_p50']:>12.2f}s "
                f"{s['cb_p99']:>12.2f}s"
            )
        q, h = quiet[name], loud[name]
        print(
            f"{name:<8} ratio    API p99 x{h['api_p99'] / q['api_p99']:.2f}, callback p99 "
            f"x{h['cb_p99'] / q['cb_p99']:.2f} (+{h['cb_p99'] - q['cb_p99']:.2f} s)"
        )
    print(f"server peak RSS: quiet {quiet.get('rss', 0)} MB, hostile {loud.get('rss', 0)} MB")
    print(f"hostile traffic: {json.dumps(loud.get('hostile', {}))}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--rate", type=float, default=4.0, help="steady calls a second")
    parser.add_argument("--database-url", help="default: a fresh SQLite file per run")
    parser.add_argument("--no-sip", dest="sip", action="store_false")
    parser.add_argument("--slow-clients", type=int, default=1100)
    parser.add_argument("--token-rate", type=int, default=300, help="wrong tokens a second")
    parser.add_argument("--fuzz-rate", type=int, default=2000, help="datagrams a second")
    parser.add_argument("--receiver", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--hostile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        asyncio.run(receive_callbacks(int(args.receiver[0]), Path(args.receiver[1])))
        return 0
    if args.hostile:
        asyncio.run(hostile(json.loads(args.hostile)))
        return 0
    if args.sip and shutil.which("sipp") is None:
        parser.error("sipp is not installed (make test installs it), or pass --no-sip")
    print(
        f"soak: {args.seconds:g} s per run, {args.rate:g} steady calls/s"
        f"{', 1 SIP call/s' if args.sip else ''}",
        flush=True,
    )
    quiet = run(args, hostile_on=False)
    loud = run(args, hostile_on=True)
    report(quiet, loud, ["steady", *(["sip"] if args.sip else [])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
