#!/usr/bin/env python3
"""SIP calls through ``SipCarrier`` against SIPp on loopback: calls a second, concurrent calls.

Two measurements, each step with a fresh SIPp (a UAS answering every INVITE and echoing the RTP
it gets back to its sender, ``-rtp_echo``) and a fresh ``SipCarrier`` whose trunk's ``max_cps``
and ``max_channels`` are set far above the load, so the trunk gate never holds a call back:

1. ``--cps``: for each rate, calls are placed at that rate for ``--seconds``; each is answered
   by SIPp (180 then 200 with SDP), held ``--hold`` seconds (RTP flowing both ways), and hung
   up by us (BYE). A call fails if it is rejected, not answered within ``--answer-timeout``,
   hung up by SIPp, or counted as failed by SIPp itself (its statistics file: an unexpected or
   missing message, e.g. no ACK or no BYE). Printed per rate: calls placed, the rate achieved,
   failures, SIPp's retransmissions (a sign we answered slowly), setup latency p50/p99 (from
   ``carrier.dial()`` to ``Answered``: RTP port bind, INVITE, 180, 200, ACK), and the cores
   used by ringflow's process and by SIPp. The figure: the highest rate with zero failures.

2. ``--calls``: for each level N, N calls are placed (at ``--ramp-cps``) and, once answered,
   each speaks a TTS prompt (espeak-ng, rendered once before anything is measured, then served
   from the prompt cache) in a loop with ``channel.say`` while ``channel.record`` records what
   comes back (SIPp's echo of that prompt). When all N are up and 2 s have passed, the media
   engine's counters are reset and the process's CPU time measured over ``--hold-concurrent``
   seconds. Printed per level: the engine's RTP send lateness p50/p99 (how long after its 20 ms
   deadline each packet left; 100.1 ms means "100 ms or more"), packets lost (gaps in the
   received sequences), missing (sent but not echoed back), datagrams the kernel dropped on
   full receive buffers (ringflow's RTP sockets, SIPp's one echo socket), packets sent more
   than 10 ms late, pacer stalls (ticks skipped: that audio is never sent, so it shows in
   neither loss figure), ringflow's cores and CPU per call as % of a core, SIPp's cores, and
   the seconds of audio per second the recordings got (1.00: nothing skipped). The figure: the
   highest level with lateness p99 under 5 ms and nothing lost.

SIPp runs on the same machine, so its CPU (SIP, and one thread echoing every RTP packet)
competes with ringflow's for the same cores: both are printed. The loop is uvloop when it is
installed (``pip install -e '.[fast]'``), else stdlib asyncio; ``--loop`` forces one.

    .venv/bin/python bench/sip_calls.py [--cps 20 50 100 200 300] [--seconds 10] [--hold 1]
        [--calls 50 100 150 200 400 700 1000] [--hold-concurrent 10] [--ramp-cps 100]
        [--loop asyncio|uvloop] [--only cps|concurrent] [--scenario callee_answer.xml|uas]
        [--profile cps|concurrent] [--workdir DIR] [--processes 1]

``--profile`` runs that phase under cProfile and prints the top functions (the figures of a
profiled run are worse than the real ones: use it to find the cost, not to measure it).
``--workdir`` keeps SIPp's statistics and error logs (and the profile) instead of a temporary
directory.

``--processes N`` (default 1: everything in this process, as above) splits each step over N
fresh processes (multiprocessing, spawn), each with its own loop, ``SipCarrier`` (own SIP socket,
media engine and slice of the RTP ports) and SIPp, as ``ringflow serve --workers N`` splits the
calls over workers. Process k places its share of the calls at 1/N of the rate (so the total rate
is the one asked for); they start dialing together at a barrier and, for concurrent calls, reset
their counters and measure the same hold window (barriers before and after it). Printed: the
totals (calls, failures, lost, kernel drops, ringflow's and SIPp's cores summed over processes,
CPU per call = ringflow cores / calls up), lateness p50/p99 of the merged histograms and the
worst process's p99, the whole machine's busy cores over the window, then one line per process.
A level passes if every process's p99 is under 5 ms and nothing was lost anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import csv
import io
import logging
import multiprocessing
import os
import pstats
import queue
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # the SIPp helpers the end-to-end tests use

from ringflow.cli.server import settle_heap
from ringflow.clock import RealClock
from ringflow.media.cache import PromptCache
from ringflow.media.stats import LatencyHistogram
from ringflow.media.tts import TextToSpeech
from ringflow.telephony.carrier import Answered, DialRequest, Rejected
from ringflow.telephony.sip.carrier import SipCarrier
from ringflow.telephony.sip.trunks import Trunk
from tests.sipp import free_media_port, free_udp_port

SCENARIOS = ROOT / "tests" / "fixtures" / "sipp"
RTP_PORTS = (12000, 31998)  # below Linux's ephemeral range, where SIPp's ports come from
PROMPT = (
    "Thank you for calling. Your call is important to us. Please hold while we connect "
    "you to the next available agent."
)


# -- SIPp ------------------------------------------------------------------------------------


class Sipp:
    """One SIPp UAS on loopback, answering every call, with its statistics file."""

    def __init__(self, scenario: str, workdir: Path):
        self.port, self.media = free_udp_port(), free_media_port()
        self.workdir = workdir
        self.stat_file = workdir / f"stat-{self.port}.csv"
        scenario_args = (
            ["-sf", str(SCENARIOS / scenario)] if scenario.endswith(".xml") else ["-sn", scenario]
        )
        self.proc = subprocess.Popen(
            [
                "sipp",
                *scenario_args,
                "-rtp_echo",
                "-i",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-mi",
                "127.0.0.1",
                "-mp",
                str(self.media),
                "-m",
                "100000000",
                "-nostdin",
                "-trace_stat",
                "-stf",
                str(self.stat_file),
                "-fd",
                "1",
                "-trace_err",
                "-error_file",
                str(workdir / f"errors-{self.port}.log"),
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"sipp exited at once: {self.proc.stderr.read().decode()}")

    @property
    def uri(self) -> str:
        return f"sip:callee@127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return process_cpu(self.proc.pid)

    def stats(self) -> dict[str, str]:
        """The last line of SIPp's statistics file, by column name (empty before the first)."""
        try:
            rows = list(csv.reader(io.StringIO(self.stat_file.read_text()), delimiter=";"))
        except FileNotFoundError:
            return {}
        if len(rows) < 2:
            return {}
        return dict(zip(rows[0], rows[-1]))

    async def settle(self, calls: int, wait: float = 15.0) -> dict[str, int]:
        """Wait until SIPp has finished ``calls`` calls (or ``wait`` runs out); its counters."""
        deadline = time.monotonic() + wait
        while True:
            stats = self.stats()
            done = int(stats.get("SuccessfulCall(C)", 0)) + int(stats.get("FailedCall(C)", 0))
            if (
                done >= calls and int(stats.get("CurrentCall", 1)) == 0
            ) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        keys = (
            "IncomingCall(C)",
            "SuccessfulCall(C)",
            "FailedCall(C)",
            "Retransmissions(C)",
            "CurrentCall",
            "FailedUnexpectedMessage(C)",
            "FailedMaxUDPRetrans(C)",
            "FailedCallRejected(C)",
            "FailedCmdNotSent(C)",
            "FailedRegexpDoesntMatch(C)",
            "FailedOutboundCongestion(C)",
            "FailedTimeoutOnRecv(C)",
        )
        return {k: int(stats.get(k, 0) or 0) for k in keys}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def process_cpu(pid: int) -> float:
    """CPU seconds another process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_drops(low: int, high: int) -> int:
    """Datagrams the kernel dropped (receive buffer full) on open UDP sockets bound to ports
    ``low``..``high`` (Linux /proc/net/udp, cumulative per socket)."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if low <= int(fields[1].rsplit(":", 1)[1], 16) <= high:
            total += int(fields[-1])
    return total


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def carrier_for(sipp: Sipp, speech=None, rtp_ports: tuple[int, int] = RTP_PORTS) -> SipCarrier:
    """A carrier whose one trunk is SIPp, with limits the load never reaches. Its RTP ports
    stay below Linux's ephemeral range, where SIPp's ports come from."""
    trunk = Trunk(
        name="sipp", host="127.0.0.1", port=sipp.port, max_channels=100_000, max_cps=1_000_000.0
    )
    return SipCarrier(
        RealClock(), (trunk,), sip_host="127.0.0.1", sip_port=0, rtp_ports=rtp_ports, speech=speech
    )


async def paced(rate: float, count: int, start) -> list[asyncio.Task]:
    """Call ``start(i)`` ``count`` times, ``1/rate`` apart on absolute deadlines (a late loop
    catches up rather than drifting); returns the tasks."""
    loop = asyncio.get_running_loop()
    t0, tasks = loop.time(), []
    for i in range(count):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(start(i)))
    return tasks


async def answered(carrier: SipCarrier, sipp: Sipp, i: int, timeout: float):
    """Place call ``i``; the channel once answered, else the reason it failed."""
    attempt = carrier.dial(DialRequest(sipp.uri, "+918041234567", "AC1", f"CA{i}", 1))
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = await attempt.next_event()
                if isinstance(event, Answered):
                    return event.channel
                if isinstance(event, Rejected):
                    return f"rejected {event.outcome}: {event.cause}"
    except TimeoutError:
        await attempt.cancel()
        return "no answer in time"


# -- 1. calls per second ---------------------------------------------------------------------


@dataclass
class CpsResult:
    calls: int = 0
    setup: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


async def cps_run(
    rate: float,
    count: int,
    hold: float,
    scenario: str,
    workdir: Path,
    answer_timeout: float,
    *,
    sync=None,
    rtp_ports: tuple[int, int] = RTP_PORTS,
) -> dict:
    """Place ``count`` calls at ``rate`` through a fresh carrier and SIPp; what was measured.
    ``sync`` (several processes) is awaited once SIPp and the carrier are up, before dialing."""
    sipp = Sipp(scenario, workdir)
    carrier = carrier_for(sipp, rtp_ports=rtp_ports)
    await carrier.start()
    result = CpsResult()

    async def one(i: int) -> None:
        t0 = time.perf_counter()  # uvloop's loop.time() only has whole milliseconds
        channel = await answered(carrier, sipp, i, answer_timeout)
        if isinstance(channel, str):
            result.fail(channel)
            return
        result.setup.append(time.perf_counter() - t0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.wait_closed(), hold)
        if channel.closed:
            result.fail("hung up by SIPp")
            return
        await channel.hangup()

    try:
        if sync is not None:
            await sync()
        cpu0, sipp0, wall0 = own_cpu(), sipp.cpu(), time.monotonic()
        tasks = await paced(rate, count, one)
        placed_in = time.monotonic() - wall0
        await asyncio.gather(*tasks)
        cpu, sipp_cpu = own_cpu() - cpu0, sipp.cpu() - sipp0
        wall = time.monotonic() - wall0
        result.calls = count
        counters = await sipp.settle(count)
    finally:
        await carrier.close()
        sipp.stop()
    failed = sum(result.failures.values()) + counters["FailedCall(C)"]
    missing = count - counters["SuccessfulCall(C)"] - counters["FailedCall(C)"]
    failed += max(0, missing)
    detail = dict(result.failures)
    for key, value in counters.items():
        if key.startswith("Failed") and value:
            detail[f"sipp {key[:-3]}"] = value
    if missing > 0:
        detail["sipp never finished"] = missing
    return {
        "rate": rate,
        "calls": count,
        "placed_in": placed_in,
        "failed": failed,
        "detail": detail,
        "retrans": counters["Retransmissions(C)"],
        "setup": result.setup,
        "cpu": cpu,
        "sipp_cpu": sipp_cpu,
        "wall": wall,
    }


async def cps_step(
    rate: float, seconds: float, hold: float, scenario: str, workdir: Path, answer_timeout: float
) -> tuple[str, int]:
    count = round(rate * seconds)
    r = await cps_run(rate, count, hold, scenario, workdir, answer_timeout)
    detail, cpu, wall, placed_in = r["detail"], r["cpu"], r["wall"], r["placed_in"]
    return (
        f"{rate:6g} cps  calls {count:5d}  achieved {count / (placed_in + 1 / rate):6.1f} cps  "
        f"failed {r['failed']}{' ' + str(detail) if detail else ''}  "
        f"sipp retrans {r['retrans']}  "
        f"setup p50 {percentile(r['setup'], 0.5) * 1e3:6.1f} ms  "
        f"p99 {percentile(r['setup'], 0.99) * 1e3:6.1f} ms  "
        f"ringflow cores {cpu / wall:.2f}  sipp cores {r['sipp_cpu'] / wall:.2f}"
    ), r["failed"]


def cps_step_processes(
    rate: float,
    seconds: float,
    hold: float,
    scenario: str,
    workdir: Path,
    answer_timeout: float,
    processes: int,
    loop: str | None,
) -> tuple[str, int]:
    """``cps_step`` split over ``processes`` processes, each dialing its share at
    ``rate / processes`` through its own carrier and SIPp, all starting together."""
    count = round(rate * seconds)
    params = [
        {
            "rate": rate / processes,
            "count": share,
            "hold": hold,
            "scenario": scenario,
            "answer_timeout": answer_timeout,
        }
        for share in spread(count, processes)
    ]
    results = in_processes(
        "cps", params, workdir, loop, timeout=seconds + hold + answer_timeout + 120
    )
    failed = sum(r["failed"] for r in results)
    detail: dict[str, int] = {}
    for r in results:
        for key, value in r["detail"].items():
            detail[key] = detail.get(key, 0) + value
    setup = [t for r in results for t in r["setup"]]
    placed_in = max(r["placed_in"] for r in results)
    cores = sum(r["cpu"] / r["wall"] for r in results)
    sipp_cores = sum(r["sipp_cpu"] / r["wall"] for r in results)
    summary = (
        f"{rate:6g} cps  calls {count:5d} in {processes} processes  "
        f"achieved {count / (placed_in + processes / rate):6.1f} cps  "
        f"failed {failed}{' ' + str(detail) if detail else ''}  "
        f"sipp retrans {sum(r['retrans'] for r in results)}  "
        f"setup p50 {percentile(setup, 0.5) * 1e3:6.1f} ms  "
        f"p99 {percentile(setup, 0.99) * 1e3:6.1f} ms  "
        f"ringflow cores {cores:.2f}  sipp cores {sipp_cores:.2f}"
    )
    lines = [summary]
    for k, r in enumerate(results):
        lines.append(
            f"    process {k}: calls {r['calls']}  failed {r['failed']}  "
            f"setup p99 {percentile(r['setup'], 0.99) * 1e3:6.1f} ms  "
            f"ringflow cores {r['cpu'] / r['wall']:.2f}"
        )
    return "\n".join(lines), failed


# -- 2. concurrent calls with prompts and recording ------------------------------------------


async def concurrent_run(
    calls: int,
    hold: float,
    ramp_cps: float,
    scenario: str,
    workdir: Path,
    tts: TextToSpeech,
    answer_timeout: float,
    *,
    sync=None,
    rtp_ports: tuple[int, int] = RTP_PORTS,
    machine: bool = False,
) -> dict:
    """Place ``calls`` calls at ``ramp_cps``, speaking and recording; what was measured over the
    hold. ``sync`` (several processes) is awaited before dialing, before the counters are reset
    (every process has its calls up) and after the hold (before anyone hangs up), so the
    processes measure the same seconds. ``machine``: also the whole machine's busy cores."""
    sipp = Sipp(scenario, workdir)
    carrier = carrier_for(
        sipp, speech=lambda words, voice: tts.speak(words, voice), rtp_ports=rtp_ports
    )
    await carrier.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    up = 0
    all_up = asyncio.Event()
    failures: dict[str, int] = {}
    heard: list[float] = []  # seconds recorded / seconds the recording ran, per call

    async def speak_forever(channel) -> None:
        while not channel.closed:
            await channel.say(PROMPT)

    async def one(i: int) -> None:
        nonlocal up
        channel = await answered(carrier, sipp, i, answer_timeout)
        if isinstance(channel, str):
            failures[channel] = failures.get(channel, 0) + 1
            return
        up += 1
        if up == calls:
            all_up.set()
        speaker = asyncio.ensure_future(speak_forever(channel))
        started = loop.time()
        recorder = asyncio.ensure_future(channel.record(3600.0, "", False, 0.0))
        await stop.wait()
        ran = loop.time() - started
        await channel.hangup()
        recording = await recorder
        await speaker
        if ran > 1.0:  # a call answered after the hold ended says nothing about audio
            heard.append(recording.duration / ran)

    busy = None
    try:
        if sync is not None:
            await sync()
        tasks = await paced(ramp_cps, calls, one)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_up.wait(), answer_timeout + 5)
        await asyncio.sleep(2.0)  # warm-up: every leg playing, recording, jitter buffers primed
        if sync is not None:
            await sync()
        assert carrier.media is not None
        carrier.media.reset_stats()
        rtp = carrier.rtp_ports
        drops0 = udp_drops(*rtp), udp_drops(sipp.media, sipp.media)
        busy0 = machine_busy() if machine else None
        cpu0, sipp0, wall0 = own_cpu(), sipp.cpu(), time.monotonic()
        await asyncio.sleep(hold)
        cpu, sipp_cpu = own_cpu() - cpu0, sipp.cpu() - sipp0
        drops = udp_drops(*rtp) - drops0[0], udp_drops(sipp.media, sipp.media) - drops0[1]
        wall = time.monotonic() - wall0
        if busy0 is not None:
            busy = (machine_busy() - busy0) / wall
        stats = carrier.media.stats
        lateness = list(carrier.media.pacer.lateness.counts)
        if sync is not None:
            await sync()
        stop.set()
        await asyncio.gather(*tasks)
        await sipp.settle(calls, wait=10.0)
    finally:
        await carrier.close()
        sipp.stop()
    return {
        "calls": calls,
        "up": up,
        "failures": failures,
        "p50": stats.lateness_p50,
        "p99": stats.lateness_p99,
        "lateness": lateness,
        "lost": stats.lost,
        "sent": stats.sent,
        "received": stats.received,
        "late": stats.totals.late,
        "stalls": stats.stalls,
        "drops": drops,
        "cpu": cpu,
        "sipp_cpu": sipp_cpu,
        "wall": wall,
        "heard": heard,
        "busy": busy,
    }


async def concurrent_step(
    calls: int,
    hold: float,
    ramp_cps: float,
    scenario: str,
    workdir: Path,
    tts: TextToSpeech,
    answer_timeout: float,
) -> tuple[str, bool]:
    r = await concurrent_run(calls, hold, ramp_cps, scenario, workdir, tts, answer_timeout)
    up, failures, drops, heard = r["up"], r["failures"], r["drops"], r["heard"]
    cpu, wall = r["cpu"], r["wall"]
    # Echoes of packets sent before the reset land after it: clamp that small negative.
    missing = max(0.0, 1 - r["received"] / max(1, r["sent"]))
    ok = not failures and r["p99"] < 0.005 and r["lost"] == 0
    per_call = cpu / wall / max(1, up)
    return (
        f"{calls:5d} calls  up {up:5d}{' failed ' + str(failures) if failures else ''}  "
        f"lateness p50 {r['p50'] * 1e3:5.1f} ms  "
        f"p99 {r['p99'] * 1e3:5.1f} ms  "
        f"lost {r['lost']}  missing {missing:.2%}  "
        f"kernel drops ringflow {drops[0]} sipp {drops[1]}  late>10ms {r['late']}  "
        f"stalls {r['stalls']}  ringflow cores {cpu / wall:.2f}  "
        f"cpu/call {per_call * 100:.3f}% of a core  sipp cores {r['sipp_cpu'] / wall:.2f}  "
        f"audio {sum(heard) / max(1, len(heard)):.2f} s/s"
    ), ok


def concurrent_step_processes(
    calls: int,
    hold: float,
    ramp_cps: float,
    scenario: str,
    workdir: Path,
    answer_timeout: float,
    processes: int,
    loop: str | None,
) -> tuple[str, bool]:
    """``concurrent_step`` split over ``processes`` processes, each placing its share of the
    calls (at ``ramp_cps / processes``, so the total rate is ``ramp_cps``) through its own
    carrier and SIPp; all start dialing together and measure the same ``hold`` seconds.
    Lateness is given merged (the processes' histograms summed) and for the worst process;
    a level passes if every process's p99 is under 5 ms and nothing was lost anywhere."""
    params = [
        {
            "calls": share,
            "hold": hold,
            "ramp_cps": ramp_cps / processes,
            "scenario": scenario,
            "answer_timeout": answer_timeout,
            "machine": k == 0,
        }
        for k, share in enumerate(spread(calls, processes))
    ]
    results = in_processes(
        "concurrent", params, workdir, loop, timeout=calls / ramp_cps + answer_timeout + hold + 120
    )
    merged = LatencyHistogram()
    for r in results:
        merged.counts = [a + b for a, b in zip(merged.counts, r["lateness"])]
    up = sum(r["up"] for r in results)
    failures: dict[str, int] = {}
    for r in results:
        for key, value in r["failures"].items():
            failures[key] = failures.get(key, 0) + value
    worst = max(r["p99"] for r in results)
    lost = sum(r["lost"] for r in results)
    sent, received = sum(r["sent"] for r in results), sum(r["received"] for r in results)
    missing = max(0.0, 1 - received / max(1, sent))
    cores = sum(r["cpu"] / r["wall"] for r in results)
    sipp_cores = sum(r["sipp_cpu"] / r["wall"] for r in results)
    heard = [h for r in results for h in r["heard"]]
    busy = results[0]["busy"]
    ok = not failures and worst < 0.005 and lost == 0
    summary = (
        f"{calls:5d} calls in {processes} processes  up {up:5d}"
        f"{' failed ' + str(failures) if failures else ''}  "
        f"lateness p50 {merged.percentile(0.5) * 1e3:5.1f} ms  "
        f"p99 {merged.percentile(0.99) * 1e3:5.1f} ms "
        f"(worst process {worst * 1e3:5.1f} ms)  "
        f"lost {lost}  missing {missing:.2%}  "
        f"kernel drops ringflow {sum(r['drops'][0] for r in results)} "
        f"sipp {sum(r['drops'][1] for r in results)}  "
        f"late>10ms {sum(r['late'] for r in results)}  "
        f"stalls {sum(r['stalls'] for r in results)}  ringflow cores {cores:.2f}  "
        f"cpu/call {cores / max(1, up) * 100:.3f}% of a core  sipp cores {sipp_cores:.2f}  "
        f"machine busy {busy:.2f} of {os.cpu_count()} cores  "
        f"audio {sum(heard) / max(1, len(heard)):.2f} s/s"
    )
    lines = [summary]
    for k, r in enumerate(results):
        lines.append(
            f"    process {k}: up {r['up']:4d}  lateness p50 {r['p50'] * 1e3:5.1f} ms  "
            f"p99 {r['p99'] * 1e3:5.1f} ms  lost {r['lost']}  "
            f"late>10ms {r['late']}  stalls {r['stalls']}  "
            f"ringflow cores {r['cpu'] / r['wall']:.2f}  "
            f"sipp cores {r['sipp_cpu'] / r['wall']:.2f}"
        )
    return "\n".join(lines), ok


# -- several processes -----------------------------------------------------------------------


BARRIER_WAIT = 300.0  # seconds a process waits for the others at a barrier


def spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` shares differing by at most one."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def process_ports(index: int, processes: int) -> tuple[int, int]:
    """Process ``index``'s own slice of ``RTP_PORTS`` (the kernel drop counts are per range)."""
    low, high = RTP_PORTS
    width = (high - low + 2) // processes
    return low + index * width, low + (index + 1) * width - 2


def in_processes(
    kind: str, params: list[dict], workdir: Path, loop: str | None, timeout: float
) -> list[dict]:
    """Run one step in ``len(params)`` fresh processes (spawned), process ``k`` with
    ``params[k]``, started together at a barrier; their results, in order."""
    ctx = multiprocessing.get_context("spawn")
    processes = len(params)
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(
            target=process_main,
            name=f"sip-calls-{k}",
            args=(kind, k, processes, params[k], workdir, loop, barrier, results),
        )
        for k in range(processes)
    ]
    for proc in procs:
        proc.start()
    got: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(got) < processes:
            try:
                index, error, value = results.get(timeout=1.0)
            except queue.Empty:
                dead = [
                    p.name for k, p in enumerate(procs) if k not in got and p.exitcode is not None
                ]
                if dead:
                    time.sleep(1.0)  # its last words may still be in the pipe
                    if results.empty():
                        raise RuntimeError(f"{', '.join(dead)} exited without a result")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no result from every process in {timeout:.0f} s")
                continue
            if error:
                raise RuntimeError(f"process {index} failed:\n{error}")
            got[index] = value
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return [got[k] for k in range(processes)]


def process_main(
    kind: str,
    index: int,
    processes: int,
    params: dict,
    workdir: Path,
    loop: str | None,
    barrier,
    results,
) -> None:
    """A spawned process: run its share of one step on its own loop, carrier and SIPp, and
    put ``(index, error, result)`` on ``results``."""
    logging.basicConfig(level=logging.ERROR)
    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)[0]) as runner:
            result = runner.run(process_step(kind, index, processes, params, workdir, barrier))
        results.put((index, None, result))
    # The top of a spawned process: whatever ends it, KeyboardInterrupt included, must reach the
    # parent as a traceback and release the barrier, or the parent and the siblings wait in vain.
    except BaseException:  # noqa: BLE001 - reported to the parent, the process then exits
        barrier.abort()
        results.put((index, traceback.format_exc(), None))


async def process_step(
    kind: str, index: int, processes: int, params: dict, workdir: Path, barrier
) -> dict:
    async def sync() -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, BARRIER_WAIT)

    ports = process_ports(index, processes)
    if kind == "cps":
        return await cps_run(
            params["rate"],
            params["count"],
            params["hold"],
            params["scenario"],
            workdir,
            params["answer_timeout"],
            sync=sync,
            rtp_ports=ports,
        )
    tts = TextToSpeech(PromptCache(workdir / "media"))
    try:
        await tts.speak(PROMPT)  # rendered by the parent: this reads the cache, before dialing
        return await concurrent_run(
            params["calls"],
            params["hold"],
            params["ramp_cps"],
            params["scenario"],
            workdir,
            tts,
            params["answer_timeout"],
            sync=sync,
            rtp_ports=ports,
            machine=params["machine"],
        )
    finally:
        tts.close()


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy, all cores (Linux /proc/stat; idle,
    iowait and steal not counted)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


# -- main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path) -> None:
    profiler = cProfile.Profile() if args.profile else None
    if args.only in (None, "cps"):
        print(
            "calls per second: hold",
            args.hold,
            "s, dialing",
            args.seconds,
            "s per rate",
            *((f"in {args.processes} processes",) if args.processes > 1 else ()),
            flush=True,
        )
        best = None
        if profiler and args.profile == "cps":
            profiler.enable()
        for rate in args.cps:
            if args.processes > 1:
                line, failed = await asyncio.to_thread(
                    cps_step_processes,
                    rate,
                    args.seconds,
                    args.hold,
                    args.scenario,
                    workdir,
                    args.answer_timeout,
                    args.processes,
                    args.loop,
                )
            else:
                line, failed = await cps_step(
                    rate, args.seconds, args.hold, args.scenario, workdir, args.answer_timeout
                )
            print(line, flush=True)
            if failed == 0:
                best = rate
            elif args.stop_on_fail:
                break
            await asyncio.sleep(2)
        if profiler and args.profile == "cps":
            profiler.disable()
        print(f"highest rate with zero failures: {best} cps", flush=True)
    if args.only in (None, "concurrent"):
        tts = TextToSpeech(PromptCache(workdir / "media"))
        prompt = await tts.speak(PROMPT)  # rendered once, before anything is measured
        print(
            f"concurrent calls: prompt {prompt.duration:.1f} s spoken in a loop and recorded, "
            f"held {args.hold_concurrent} s per level, ramp {args.ramp_cps} cps"
            + (f" in all, {args.processes} processes" if args.processes > 1 else ""),
            flush=True,
        )
        best = None
        if profiler and args.profile == "concurrent":
            profiler.enable()
        for calls in args.calls:
            if args.processes > 1:
                line, ok = await asyncio.to_thread(
                    concurrent_step_processes,
                    calls,
                    args.hold_concurrent,
                    args.ramp_cps,
                    args.scenario,
                    workdir,
                    args.answer_timeout,
                    args.processes,
                    args.loop,
                )
            else:
                line, ok = await concurrent_step(
                    calls,
                    args.hold_concurrent,
                    args.ramp_cps,
                    args.scenario,
                    workdir,
                    tts,
                    args.answer_timeout,
                )
            print(line, flush=True)
            if ok:
                best = calls
            elif args.stop_on_fail:
                break
            await asyncio.sleep(2)
        if profiler and args.profile == "concurrent":
            profiler.disable()
        tts.close()
        print(f"highest level with lateness p99 < 5 ms and nothing lost: {best} calls", flush=True)
    if profiler:
        if args.workdir is not None:
            profiler.dump_stats(args.workdir / f"{args.profile}.pstats")
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(25)
            print(out.getvalue())


def loop_factory(loop: str | None):
    """The event loop factory (None: asyncio's) for ``--loop``, and its name."""
    if loop != "asyncio":
        try:
            import uvloop

            return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"
        except ImportError:
            if loop == "uvloop":
                raise
    return None, "asyncio"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cps", type=float, nargs="+", default=[20, 50, 100, 200, 300])
    parser.add_argument("--seconds", type=float, default=10.0, help="dialing time per rate")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each call is held")
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 100, 150, 200, 400, 700, 1000])
    parser.add_argument("--hold-concurrent", type=float, default=10.0)
    parser.add_argument("--ramp-cps", type=float, default=100.0)
    parser.add_argument("--answer-timeout", type=float, default=10.0)
    parser.add_argument(
        "--scenario",
        default="callee_answer.xml",
        help="a file of tests/fixtures/sipp, or a SIPp built-in (uas)",
    )
    parser.add_argument("--only", choices=["cps", "concurrent"])
    parser.add_argument("--stop-on-fail", action="store_true")
    parser.add_argument("--profile", choices=["cps", "concurrent"])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"])
    parser.add_argument("--workdir", type=Path, help="keep SIPp's statistics and error logs here")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="split each step's calls over this many processes, each with its own carrier and SIPp",
    )
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.processes > 1 and args.profile:
        parser.error("--profile profiles this process: use it with --processes 1")
    run_bench(run, args, "sip-calls-", f", SIPp scenario {args.scenario}")


def run_bench(run: Any, args: argparse.Namespace, prefix: str, note: str = "") -> None:
    """Run ``run(args, workdir)`` on the chosen loop: errors only in the log, as many open
    files as allowed, the garbage collector set as ``ringflow serve`` sets it (without, a full
    pass over the imported modules' objects stalls every call's RTP now and then), the machine
    said first, SIPp's files kept in ``--workdir`` if given."""
    logging.basicConfig(level=logging.ERROR)
    factory, loop_name = loop_factory(args.loop)
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    settle_heap()
    print(
        f"loop {loop_name}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}, collector as ringflow serve sets it{note}",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run(args, workdir))


if __name__ == "__main__":
    main()
