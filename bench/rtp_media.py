#!/usr/bin/env python3
"""Paced RTP legs on one process: CPU per leg, send lateness and loss, against a bare socket loop.

Each leg is an ``RtpSession`` of one ``MediaEngine``, half PCMU and half PCMA, playing a
speech-level prompt over and over and recording what it hears (a listener appending every 20 ms
frame). The far end of every leg is an echo in a separate process (one plain blocking UDP
socket that sends each datagram back where it came from), so the measured process holds only
the legs: 50 packets a second out and 50 in per leg, with the G.711 work, the in-band DTMF
detector (on by default, as in production) and the recording buffer.

The baseline, in the same run and on the same event loop: the same number of UDP sockets
sending the same 172-byte packets at the same rate to the same echo, from one timer callback,
with a protocol that only counts what comes back. The figure to compare across runs and
machines is the ratio of the two CPU costs.

    .venv/bin/python bench/rtp_media.py --legs 100 400 [--seconds 10] [--loop uvloop] [--no-inband]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ringflow.media.engine import MediaEngine
from ringflow.sip.sdp import PCMA, PCMU, Direction, MediaPlan

PACKET = 12 + 160  # header and 20 ms of G.711


def echo(port: int) -> None:
    """The far end of every leg: send each datagram back to where it came from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", socket.SO_RCVBUF), 8 << 20)
    sock.bind(("127.0.0.1", port))
    while True:
        data, addr = sock.recvfrom(2048)
        sock.sendto(data, addr)


def start_echo() -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--echo", str(port)])
    time.sleep(0.5)
    return proc, ("127.0.0.1", port)


def prompt(seconds: float = 3.0) -> bytes:
    """Speech-level noise shaped like syllables: loud enough that every frame is analysed."""
    rng = np.random.default_rng(1)
    t = np.arange(round(seconds * 8000)) / 8000
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return np.clip(rng.normal(0, 3000, len(t)) * envelope, -32768, 32767).astype("<i2").tobytes()


class Cpu:
    """Process CPU and wall time between ``start`` and ``stop``."""

    def start(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)

    def stop(self) -> tuple[float, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru.ru_utime - self.ru0.ru_utime) + (ru.ru_stime - self.ru0.ru_stime)
        return max(cpu, time.process_time() - self.cpu0), time.monotonic() - self.wall0


def process_cpu(pid: int) -> float:
    """CPU seconds another process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counter(asyncio.DatagramProtocol):
    received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        Counter.received += 1


async def baseline(legs: int, seconds: float, peer: tuple[str, int]) -> dict[str, float]:
    """Bare sockets at the same packet rate: what the loop and the kernel cost by themselves."""
    loop = asyncio.get_running_loop()
    transports = [
        (await loop.create_datagram_endpoint(Counter, local_addr=("127.0.0.1", 0)))[0]
        for _ in range(legs)
    ]
    data = bytes([0x80, 0]) + bytes(PACKET - 2)
    t0, n = time.monotonic(), 0

    def tick() -> None:
        nonlocal n
        for transport in transports:
            transport.sendto(data, peer)
        n += 1
        handles[0] = loop.call_later(max(0.0, t0 + n * 0.02 - time.monotonic()), tick)

    handles = [loop.call_later(0, tick)]
    await asyncio.sleep(1)
    cpu = Cpu()
    cpu.start()
    Counter.received = 0
    await asyncio.sleep(seconds)
    used, wall = cpu.stop()
    handles[0].cancel()
    for transport in transports:
        transport.close()
    return {"cpu": used, "wall": wall, "received": Counter.received}


async def engine_run(
    legs: int, seconds: float, peer: tuple[str, int], inband: bool, base: int
) -> dict[str, float]:
    """``legs`` sessions playing and recording against the echo."""
    engine = MediaEngine("127.0.0.1", base, base + 4 * legs + 200)
    audio = prompt()
    recordings: list[bytearray] = []
    players = []
    for i in range(legs):
        session = await engine.open_session()
        session.inband = None if inband else False
        session.start(
            MediaPlan(peer, PCMU if i % 2 else PCMA, 101, frozenset({101}), 20, Direction.SENDRECV)
        )
        recording = bytearray()
        session.listen(recording.extend)
        recordings.append(recording)
        players.append(asyncio.create_task(play_forever(session, audio)))
    await asyncio.sleep(2)  # warm-up: every leg started, buffers primed
    engine.reset_stats()
    for recording in recordings:
        recording.clear()
    cpu = Cpu()
    cpu.start()
    await asyncio.sleep(seconds)
    used, wall = cpu.stop()
    stats = engine.stats
    heard = sum(len(r) for r in recordings) / (16000 * legs)
    for task in players:
        task.cancel()
    await asyncio.gather(*players, return_exceptions=True)
    await engine.close()
    return {
        "cpu": used,
        "wall": wall,
        "sent": stats.sent,
        "received": stats.received,
        "lost": stats.lost,
        "late": stats.totals.late,
        "p50": stats.lateness_p50,
        "p99": stats.lateness_p99,
        "stalls": stats.stalls,
        "heard": heard,
    }


async def play_forever(session, audio: bytes) -> None:
    while not session.closed:
        await session.play(audio)


async def measure(
    legs: int, seconds: float, peer: tuple[str, int], inband: bool, base: int, echo_pid: int
) -> str:
    bare = await baseline(legs, min(seconds, 5.0), peer)
    echo0, wall0 = process_cpu(echo_pid), time.monotonic()
    run = await engine_run(legs, seconds, peer, inband, base)
    echo_core = (process_cpu(echo_pid) - echo0) / (time.monotonic() - wall0)
    per_leg = run["cpu"] / run["wall"] / legs
    bare_per_leg = bare["cpu"] / bare["wall"] / legs
    missing = 1 - run["received"] / max(1, run["sent"])
    return (
        f"{legs:5d} legs  core {run['cpu'] / run['wall']:.2f}  "
        f"cpu/leg/s {per_leg * 1e3:.3f} ms  baseline {bare_per_leg * 1e3:.3f} ms  "
        f"ratio {per_leg / bare_per_leg:.1f}  lateness p50 {run['p50'] * 1e3:.1f} ms "
        f"p99 {run['p99'] * 1e3:.1f} ms  lost {run['lost']}  missing {missing:.2%}  "
        f"late>10ms {run['late']}  stalls {run['stalls']}  "
        f"heard {run['heard'] / run['wall']:.2f} s/s  echo core {echo_core:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--no-inband", action="store_true", help="no in-band DTMF detection")
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        echo(args.echo)
        return
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    proc, peer = start_echo()
    try:
        print(
            f"loop {args.loop}, in-band DTMF {'off' if args.no_inband else 'on'}, "
            f"{args.seconds:g} s per size, load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        with asyncio.Runner(loop_factory=factory) as runner:
            for i, legs in enumerate(args.legs):
                line = runner.run(
                    measure(
                        legs, args.seconds, peer, not args.no_inband, 20000 + 4000 * i, proc.pid
                    )
                )
                print(line, flush=True)
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
