#!/usr/bin/env python3
"""Bidirectional streams over SIP: concurrent calls each streamed to a bot speaking without pause.

One ``SipCarrier`` in this process places calls to SIPp on loopback (``callee_answer.xml`` with
``-rtp_echo``: it answers and sends every RTP packet back to its sender). For each level N, two
runs, each with a fresh SIPp and carrier, calls placed at ``--ramp-cps``:

1. **plain**: N calls, each looping ``channel.say`` of a 6.8 s espeak-ng prompt (rendered once
   beforehand) while SIPp echoes it back: a plain RTP-echo call (in-band DTMF detection of the
   echo on, as in production);
2. **streams**: N calls, each answered call streamed through ``Streams.run`` (bidirectional, 8
   kHz unless ``--sample-rate``) to ``bench/stream_bot.py``, a bot in its own process that
   answers every 100 ms ``media`` message at once with the next 100 ms of the same prompt. So
   on every call RTP goes out (the bot's audio, paced from the stream's ``Playout``) and comes
   back (SIPp's echo), and 10 messages a second go each way on the WebSocket.

With all N up and 2 s of warm-up, the counters are reset and ``--hold`` seconds measured:
ringflow's CPU (this process, ``getrusage``), SIPp's and the bot's, the media engine's send
lateness (how long after its 20 ms deadline each RTP packet left), RTP packets lost and send
errors, kernel drops on ringflow's and SIPp's sockets. For streams also: chunks dropped for a
slow bot, streams that failed or ended early, **gaps** (ticks after a stream's first frame on
which its playout buffer was empty, so the caller got a frame of silence), the playout's
underruns (a short last piece padded), and three latencies of the bot's audio, over every
message that arrived in the window on one stream in four (``TIMED_EVERY``; the instruments
cost a stream about 3% of its CPU, which the plain calls do not pay):

- **playout**: ``Playout.stats.latencies``, from the moment the decoded (and resampled) audio is
  pushed into the buffer to the pacer tick that takes its first frame for RTP; it ends before
  that frame's G.711 encoding and ``sendto`` (microseconds);
- **way in**: from the bot building the message (its ``"t"``, ``time.monotonic()``, the same
  clock in every process) to ringflow's parse of it returning: the bot's send, loopback TCP,
  this loop getting to the socket, the frame cut out of what it read, the JSON and base64
  decoding (the stream takes each message where the socket reads it). Taken by wrapping
  ``parse_bot_message`` here;
- **bot to caller**: their sum per message, from the bot's send to the tick sending its first
  frame.

A level passes if plain and streams alike keep lateness p99 under 5 ms and nothing is lost
(no RTP loss, send error, kernel drop, dropped chunk, gap, underrun or failed stream). Printed
per run and level, then one line: the most streams that held, CPU per stream-second against a
plain call's at that level (the ratio), and the bot-to-caller latency p50/p99 there.

    .venv/bin/python bench/streams.py [--levels 10 25 50 100 150 200 300 400] [--hold 10]
        [--ramp-cps 100] [--sample-rate 8000] [--loop asyncio|uvloop] [--keep-going] [--quick]
        [--profile] [--profile-lines N] [--only plain|streams] [--together] [--workdir DIR]

Every process of the bench sets the garbage collector as ``ringflow serve`` does
(``run_bench``).

``--together``: each level's plain calls and streams at the same time, in two processes of
their own (the same measures, over the same window), for a ratio that what else the machine
does moves less. ``--quick``: levels 10 and 50, 4 s held. The loop is uvloop when installed (here and in the
bot). Stepping stops after the first level that fails unless ``--keep-going``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import ringflow.streams.stream as stream_module
from bench.sip_calls import (
    PROMPT,
    RTP_PORTS,
    Sipp,
    answered,
    carrier_for,
    own_cpu,
    paced,
    percentile,
    process_cpu,
    run_bench,
    udp_drops,
)
from ringflow.clock import RealClock
from ringflow.config import Settings
from ringflow.media.cache import PromptCache
from ringflow.media.playout import FRAME_BYTES
from ringflow.media.tts import TextToSpeech
from ringflow.streams.service import LocalPlaces, StreamRequest, Streams

SCENARIO = "callee_answer.xml"
KEEP_LATENCIES = 1_000_000  # per timed stream: every message of a run
TIMED_EVERY = 4  # the latencies are taken on one stream in this many (their instruments cost)


# -- the bot's process -----------------------------------------------------------------------


class Bot:
    """``bench/stream_bot.py`` in its own process."""

    def __init__(self, prompt: Path):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "stream_bot.py"), "--prompt", str(prompt)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the bot did not start: {line!r}")
        self.url = f"ws://127.0.0.1:{int(line.split()[1])}/"

    def cpu(self) -> float:
        return process_cpu(self.proc.pid)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- the way in: bot's send to ringflow's parse ----------------------------------------------


class WayIn:
    """Wraps ``parse_bot_message`` (as the stream module sees it) to time each bot message from
    its ``"t"`` to the end of its parse, per stream in arrival order, for the streams in
    ``timed`` (the others pass through with a slice and a set lookup)."""

    def __init__(self) -> None:
        self.by_stream: dict[str, list[float]] = {}
        self.timed: set[str] = set()
        self._parse = stream_module.parse_bot_message

    def __enter__(self) -> Self:
        parse, by_stream, timed_sids = self._parse, self.by_stream, self.timed

        def timed(frame):
            event = parse(frame)
            # '{"event":"media","stream_sid":"MZ' and 32 hex digits: the bot's media messages
            sid = frame[31:65]
            if sid in timed_sids and frame.endswith("}") and '"t":' in frame[-24:]:
                now = time.monotonic()
                at = frame.rfind('"t":')
                by_stream.setdefault(sid, []).append(now - float(frame[at + 4 : -1]))
            return event

        stream_module.parse_bot_message = timed
        return self

    def __exit__(self, *exc) -> None:
        stream_module.parse_bot_message = self._parse


# -- one run ---------------------------------------------------------------------------------


class Watched:
    """One stream's playout: ticks it had nothing to give after its first frame (gaps)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    @property
    def gaps(self) -> int:
        return self.stream.playout.stats.empty_takes


async def run_level(
    kind: str,
    calls: int,
    args: argparse.Namespace,
    workdir: Path,
    tts: TextToSpeech,
    bot: Bot | None,
) -> dict:
    """N plain calls or N streams; what was measured over the hold."""
    sipp = Sipp(SCENARIO, workdir)
    carrier = carrier_for(
        sipp, speech=lambda words, voice: tts.speak(words, voice), rtp_ports=args.rtp_ports
    )
    await carrier.start()
    clock = RealClock()
    streams = Streams(
        Settings(allow_private_urls=True, stream_limit=100_000, streams_per_process=0),
        clock,
        None,
        LocalPlaces(),
        keep_latencies=KEEP_LATENCIES,
    )
    url = (bot.url if bot else "") + (
        f"?sample-rate={args.sample_rate}" if args.sample_rate != 8000 else ""
    )
    stop = asyncio.Event()
    all_up = asyncio.Event()
    up = 0
    failures: dict[str, int] = {}
    watched: dict[str, Watched] = {}
    way_in = WayIn()
    events: dict[str, int] = {}

    def fail(reason: str) -> None:
        failures[reason] = failures.get(reason, 0) + 1

    async def record(kind_: str, data: dict) -> None:
        events[kind_] = events.get(kind_, 0) + 1
        if kind_ in ("stream.failed", "stream.ignored"):
            fail(f"{kind_}: {data.get('reason')}")

    async def speak_forever(channel) -> None:
        while not channel.closed:
            await channel.say(PROMPT)

    async def one(i: int) -> None:
        nonlocal up
        channel = await answered(carrier, sipp, i, args.answer_timeout)
        if isinstance(channel, str):
            fail(channel)
            return
        up += 1
        if up == calls:
            all_up.set()
        work: asyncio.Future[Any]
        if kind == "plain":
            work = asyncio.ensure_future(speak_forever(channel))
        else:
            request = StreamRequest(
                url=url,
                account_sid="AC1",
                call_sid=f"CA{i}",
                from_number="09812345678",
                to_number="08041234567",
                limit=None,
            )

            def started(stream) -> None:
                watched[stream.info.stream_sid] = Watched(stream)
                if i % TIMED_EVERY:
                    stream.playout._keep = 0  # not timed: as in production
                else:
                    way_in.timed.add(stream.info.stream_sid)

            work = asyncio.ensure_future(streams.run(request, channel, record, started=started))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if work.done() and not stop.is_set():
            fail(
                f"{kind} ended early"
                + (
                    f": {work.result().detailed_status}"
                    if kind == "streams" and not work.exception()
                    else ""
                )
            )
        stopping.cancel()
        await channel.hangup()
        with contextlib.suppress(Exception):
            await work

    try:
        with way_in:
            tasks = await paced(args.ramp_cps, calls, one)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_up.wait(), args.answer_timeout + 10)
            await asyncio.sleep(2.0)  # warm-up: every leg sending, every stream flowing
            if args.sync:  # --together: the window opens when both runs are up
                print("ready", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            assert carrier.media is not None
            snapshot = {
                sid: (
                    len(w.stream.playout.stats.latencies),
                    len(way_in.by_stream.get(sid, ())),
                    w.gaps,
                    w.stream.playout.stats.underruns,
                    w.stream._dropped,
                    w.stream.playout.stats.played_bytes,
                )
                for sid, w in watched.items()
            }
            carrier.media.reset_stats()
            rtp = carrier.rtp_ports
            drops0 = udp_drops(*rtp), udp_drops(sipp.media, sipp.media)
            bot0 = bot.cpu() if bot else 0.0
            cpu0, sipp0, wall0 = own_cpu(), sipp.cpu(), time.monotonic()
            sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            profiler = cProfile.Profile() if args.profile and kind == "streams" else None
            if profiler:
                profiler.enable()
            await asyncio.sleep(args.hold)
            cpu, sipp_cpu = own_cpu() - cpu0, sipp.cpu() - sipp0
            kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0
            bot_cpu = bot.cpu() - bot0 if bot else 0.0
            wall = time.monotonic() - wall0
            if profiler:
                profiler.disable()
            drops = udp_drops(*rtp) - drops0[0], udp_drops(sipp.media, sipp.media) - drops0[1]
            stats = carrier.media.stats
            window = {}
            for sid, w in watched.items():
                lat0, way0, gaps0, under0, drop0, played0 = snapshot.get(sid, (0,) * 6)
                playout = w.stream.playout.stats
                window[sid] = {
                    "playout": playout.latencies[lat0:],
                    "way": way_in.by_stream.get(sid, [])[way0:],
                    "gaps": w.gaps - gaps0,
                    "underruns": playout.underruns - under0,
                    "dropped": w.stream._dropped - drop0,
                    "played": playout.played_bytes - played0,
                    "lat0": lat0,
                    "way0": way0,
                }
            stop.set()
            await asyncio.gather(*tasks)
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(
                    args.profile_lines
                )
                print(out.getvalue(), flush=True)
        await sipp.settle(calls, wait=10.0)
    finally:
        await carrier.close()
        sipp.stop()
    playout_lat = [x for w in window.values() for x in w["playout"]]
    way_lat = [x for w in window.values() for x in w["way"]]
    total_lat = []
    for sid, got in window.items():
        # The i-th media message parsed is the i-th push (each non-empty): pair them up. The
        # lists were read at the same instant, so a message parsed but not yet played is left.
        all_way = way_in.by_stream.get(sid, [])
        latencies = watched[sid].stream.playout.stats.latencies
        for k in range(got["lat0"], got["lat0"] + len(got["playout"])):
            if k < len(all_way):
                total_lat.append(all_way[k] + latencies[k])
    return {
        "kind": kind,
        "calls": calls,
        "up": up,
        "failures": failures,
        "wall": wall,
        "cpu": cpu,
        "kernel": kernel,
        "sipp_cpu": sipp_cpu,
        "bot_cpu": bot_cpu,
        "drops": drops,
        "p50": stats.lateness_p50,
        "p99": stats.lateness_p99,
        "lost": stats.lost,
        "send_errors": stats.totals.send_errors,
        "stalls": stats.stalls,
        "late": stats.totals.late,
        "sent": stats.sent,
        "received": stats.received,
        "streams": len(window),
        "gaps": sum(w["gaps"] for w in window.values()),
        "underruns": sum(w["underruns"] for w in window.values()),
        "dropped": sum(w["dropped"] for w in window.values()),
        "played_s": sum(w["played"] for w in window.values()) / (FRAME_BYTES * 50),
        "playout": playout_lat,
        "way": way_lat,
        "total": total_lat,
    }


def judged(r: dict) -> tuple[str, bool]:
    """The run's line, and whether it held (p99 < 5 ms, nothing lost, nothing failed)."""
    up, wall = r["up"], r["wall"]
    per = r["cpu"] / wall / max(1, up)  # CPU seconds per call-second
    lost = (
        r["lost"]
        + r["send_errors"]
        + sum(r["drops"])
        + r["dropped"]
        + r["gaps"]
        + r["underruns"]
        + r["stalls"]
    )
    ok = not r["failures"] and up == r["calls"] and r["p99"] < 0.005 and lost == 0
    line = (
        f"{r['kind']:>7} {r['calls']:4d}  up {up:4d}"
        f"{'  failed ' + str(r['failures']) if r['failures'] else ''}  "
        f"lateness p50 {r['p50'] * 1e3:5.1f} p99 {r['p99'] * 1e3:5.1f} ms  "
        f"lost {r['lost']}  send errors {r['send_errors']}  "
        f"kernel drops {r['drops'][0]}/{r['drops'][1]}  stalls {r['stalls']}  "
        f"ringflow cores {r['cpu'] / wall:.2f}  cpu/call {per * 1e3:.2f} ms/s "
        f"(kernel {r['kernel'] / wall / max(1, up) * 1e3:.2f})  "
        f"sipp cores {r['sipp_cpu'] / wall:.2f}  "
        f"RTP out/in {r['sent'] / wall / max(1, up):.1f}/{r['received'] / wall / max(1, up):.1f}"
        f" per call-second"
    )
    if r["kind"] == "streams":
        expected = r["streams"] * wall
        line += (
            f"  bot cores {r['bot_cpu'] / wall:.2f}  dropped {r['dropped']}  "
            f"gaps {r['gaps']}  underruns {r['underruns']}  "
            f"bot audio {r['played_s'] / max(1e-9, expected):.3f} s/s  "
            f"playout p50/p99 {ms(r['playout'], 0.5)}/{ms(r['playout'], 0.99)} ms  "
            f"way in {ms(r['way'], 0.5)}/{ms(r['way'], 0.99)} ms  "
            f"bot->caller {ms(r['total'], 0.5)}/{ms(r['total'], 0.99)} ms "
            f"({len(r['total'])} messages of every {TIMED_EVERY}th stream)"
        )
    return line + ("" if ok else "  FAIL"), ok


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1e3:.1f}" if values else "-"


# -- main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path) -> None:
    tts = TextToSpeech(PromptCache(workdir / "media"))
    prompt = await tts.speak(PROMPT)  # rendered once, before anything is measured
    prompt_file = workdir / "prompt.pcm"
    prompt_file.write_bytes(prompt.pcm)
    bot = Bot(prompt_file)  # (a plain-only run starts it too: the same processes either way)
    print(
        f"prompt {prompt.duration:.1f} s; streams at {args.sample_rate} Hz to {bot.url}; "
        f"{args.hold:g} s held per run, ramp {args.ramp_cps:g} cps",
        flush=True,
    )
    best = None
    try:
        for calls in args.levels:
            if args.only == "streams":
                plain, plain_ok = None, True
            else:
                plain = await run_level("plain", calls, args, workdir, tts, None)
                line, plain_ok = judged(plain)
                print(line, flush=True)
                if args.only == "plain":
                    if args.sync:
                        print("result " + json.dumps(summary(plain, line, plain_ok)), flush=True)
                    continue
                await asyncio.sleep(1.0)
            streamed = await run_level("streams", calls, args, workdir, tts, bot)
            line, ok = judged(streamed)
            print(line, flush=True)
            if args.sync:
                print("result " + json.dumps(summary(streamed, line, ok)), flush=True)
            if plain is None:
                if not ok and not args.keep_going:
                    break
                continue
            per_plain = plain["cpu"] / plain["wall"] / max(1, plain["up"])
            per_stream = streamed["cpu"] / streamed["wall"] / max(1, streamed["up"])
            ratio = per_stream / per_plain
            print(
                f"   level {calls}: stream/plain CPU {ratio:.2f} "
                f"({per_stream * 1e3:.2f} / {per_plain * 1e3:.2f} ms per call-second)"
                f"{'' if ok else '  streams FAIL'}{'' if plain_ok else '  plain FAIL'}",
                flush=True,
            )
            if ok:
                best = (calls, ratio, per_stream, per_plain, streamed)
            elif not args.keep_going:
                break
            await asyncio.sleep(1.0)
    finally:
        bot.stop()
        tts.close()
    if args.only:
        return
    if best is None:
        print("streams: no level held (lateness p99 < 5 ms, nothing lost)", flush=True)
        return
    calls, ratio, per_stream, per_plain, r = best
    print(
        f"streams: {calls} held (lateness p99 {r['p99'] * 1e3:.1f} ms, nothing lost); "
        f"CPU per stream {per_stream * 1e3:.2f} ms/s vs plain call {per_plain * 1e3:.2f} ms/s: "
        f"ratio {ratio:.2f} (goal <= 1.5); bot->caller p50/p99 {ms(r['total'], 0.5)}/"
        f"{ms(r['total'], 0.99)} ms (goal p99 < 40), of which playout "
        f"{ms(r['playout'], 0.5)}/{ms(r['playout'], 0.99)} ms",
        flush=True,
    )


def summary(r: dict, line: str, ok: bool) -> dict:
    """What a run of ``--together`` reports to the parent: its line and CPU per call."""
    return {
        "line": line,
        "ok": ok,
        "per_call": r["cpu"] / r["wall"] / max(1, r["up"]),
        "total": r["total"],
    }


def together(args: argparse.Namespace) -> None:
    """For each level, the plain calls and the streams at once, each in a process of its own
    (its own SIPp and RTP ports, the bot beside the streams), measured over the same window:
    whatever else the machine does then weighs on both, so the ratio is steadier than that of
    two runs a minute apart."""
    base = [sys.executable, str(Path(__file__).resolve()), "--sync", "--hold", str(args.hold)]
    base += ["--ramp-cps", str(args.ramp_cps), "--answer-timeout", str(args.answer_timeout)]
    base += ["--sample-rate", str(args.sample_rate)] + (["--loop", args.loop] if args.loop else [])
    ports = {"plain": ["12000", "21998"], "streams": ["22000", "31998"]}
    best = None
    for calls in args.levels:
        children = {
            kind: subprocess.Popen(
                [*base, "--only", kind, "--levels", str(calls), "--rtp-ports", *ports[kind]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for kind in ("plain", "streams")
        }
        try:
            for kind, child in children.items():
                _read_until(child, kind, "ready")
            for child in children.values():
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            results = {
                kind: json.loads(_read_until(child, kind, "result ")[len("result ") :])
                for kind, child in children.items()
            }
        finally:
            for child in children.values():
                child.wait(timeout=60)
        plain, streamed = results["plain"], results["streams"]
        print(plain["line"], flush=True)
        print(streamed["line"], flush=True)
        ratio = streamed["per_call"] / plain["per_call"]
        ok = plain["ok"] and streamed["ok"]
        print(
            f"   level {calls}, together: stream/plain CPU {ratio:.2f} "
            f"({streamed['per_call'] * 1e3:.2f} / {plain['per_call'] * 1e3:.2f} ms per "
            f"call-second){'' if streamed['ok'] else '  streams FAIL'}"
            f"{'' if plain['ok'] else '  plain FAIL'}",
            flush=True,
        )
        if ok:
            best = (calls, ratio, streamed)
        elif not args.keep_going:
            break
    if best is None:
        print("streams, together: no level held", flush=True)
        return
    calls, ratio, r = best
    print(
        f"streams, together: {calls} held; ratio {ratio:.2f} (goal <= 1.5); bot->caller "
        f"p50/p99 {ms(r['total'], 0.5)}/{ms(r['total'], 0.99)} ms (goal p99 < 40)",
        flush=True,
    )


def _read_until(child: subprocess.Popen, kind: str, prefix: str) -> str:
    """The child's next line starting with ``prefix`` (those before it are its own chatter)."""
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith(prefix):
            return line.rstrip("\n")
    raise RuntimeError(f"the {kind} run ended without {prefix.strip()!r} (exit {child.wait()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--levels", type=int, nargs="+", default=[10, 25, 50, 100, 150, 200, 300, 400]
    )
    parser.add_argument("--hold", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--ramp-cps", type=float, default=100.0)
    parser.add_argument("--answer-timeout", type=float, default=10.0)
    parser.add_argument("--sample-rate", type=int, choices=[8000, 16000, 24000], default=8000)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"])
    parser.add_argument(
        "--keep-going", action="store_true", help="run every level even after one fails"
    )
    parser.add_argument("--quick", action="store_true", help="levels 10 and 50, 4 s held")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a profile of each streams run's hold (its figures are "
        "worse than the real ones)",
    )
    parser.add_argument(
        "--only",
        choices=["plain", "streams"],
        help="run one kind only (for profiling; no ratio is printed)",
    )
    parser.add_argument(
        "--profile-lines", type=int, default=30, help="functions listed per profile"
    )
    parser.add_argument("--workdir", type=Path, help="keep SIPp's logs here")
    parser.add_argument(
        "--together",
        action="store_true",
        help="run the plain calls and the streams at once, in two processes, measured over "
        "the same window",
    )
    # Internal, for --together's children: wait for "go" on stdin after the warm-up, report a
    # "result" line; the carrier's RTP port range.
    parser.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rtp-ports", type=int, nargs=2, default=list(RTP_PORTS), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    args.rtp_ports = tuple(args.rtp_ports)
    if args.quick:
        args.levels, args.hold = [10, 50], 4.0
    if args.together:
        together(args)
        return
    run_bench(run, args, "streams-")


if __name__ == "__main__":
    main()
