"""The shared ticker: four phases 5 ms apart, absolute deadlines that do not drift, a failing
session dropped without stopping the clock, and the lateness histogram."""

from __future__ import annotations

import asyncio
import time

import pytest

from ringflow.media.pacer import PHASES, Pacer
from ringflow.media.stats import LatencyHistogram


class Recorder:
    """A stand-in session that notes when it was ticked."""

    def __init__(self, explode_at: int | None = None) -> None:
        self.ticks: list[tuple[int, float]] = []
        self.explode_at = explode_at
        self.failed = False
        self.late = 0

    def tick(self, frame: int) -> None:
        self.ticks.append((frame, time.monotonic()))
        if frame == self.explode_at:
            raise RuntimeError("a bug in one session")

    def note_late(self) -> None:
        self.late += 1

    def fail(self) -> None:
        self.failed = True


async def test_sessions_spread_over_phases_and_keep_time():
    pacer = Pacer()
    sessions = [Recorder() for _ in range(2 * PHASES)]
    phases = [pacer.add(s) for s in sessions]
    assert sorted(phases) == sorted(list(range(PHASES)) * 2)
    await asyncio.sleep(0.5)
    pacer.stop()
    for session in sessions:
        frames = [f for f, _ in session.ticks]
        assert frames == list(range(frames[0], frames[0] + len(frames)))  # one tick per frame
        assert 20 <= len(frames) <= 26
        times = [t for _, t in session.ticks]
        # Absolute deadlines: the n-th tick is due at start + n * 20 ms, however late others ran.
        span = times[-1] - times[0]
        assert abs(span - 0.020 * (len(times) - 1)) < 0.010
    # Sessions in neighbouring phases tick 5 ms apart within one frame.
    first = {phases[i]: sessions[i].ticks[2][1] for i in range(PHASES)}
    offsets = sorted(first[p] - first[0] for p in range(PHASES))
    assert offsets == pytest.approx([0.0, 0.005, 0.010, 0.015], abs=0.004)


async def test_a_failing_session_is_dropped_and_the_rest_keep_ticking():
    pacer = Pacer()
    bad, good = Recorder(explode_at=3), Recorder()
    pacer.add(bad)
    pacer.add(good)
    await asyncio.sleep(0.15)
    assert bad.failed  # the pacer asked it to close (a real session then calls remove)
    pacer.remove(bad)
    count = len(good.ticks)
    await asyncio.sleep(0.1)
    assert len(good.ticks) >= count + 3
    pacer.remove(good)
    assert pacer._handle is None  # nothing left: the ticker stopped


async def test_ticker_restarts_after_emptying():
    pacer = Pacer()
    one = Recorder()
    pacer.add(one)
    await asyncio.sleep(0.05)
    pacer.remove(one)
    two = Recorder()
    pacer.add(two)
    await asyncio.sleep(0.1)
    pacer.remove(two)
    assert len(two.ticks) >= 3
    assert pacer.lateness.total >= len(one.ticks) + len(two.ticks)


def test_lateness_percentiles():
    histogram = LatencyHistogram()
    assert histogram.percentile(0.99) == 0.0
    for value in [0.0001] * 90 + [0.002] * 9 + [0.5]:
        histogram.add(value)
    histogram.add(-0.001)  # a timer that fired early counts as on time
    assert histogram.total == 101
    assert histogram.percentile(0.5) == pytest.approx(0.0002)
    assert histogram.percentile(0.99) == pytest.approx(0.0021)
    assert histogram.percentile(1.0) == pytest.approx(0.1001)  # "100 ms or later"
    histogram.clear()
    assert histogram.total == 0


async def test_work_batched_over_sessions_runs_once_a_frame_before_its_first_phase():
    """In-band DTMF is classified for every session at once: once per 20 ms frame, so each
    batch holds a whole frame of everyone's audio (not a quarter of it four times over)."""
    order: list[str] = []

    class Phase(Recorder):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def tick(self, frame: int) -> None:
            order.append(self.name)

    pacer = Pacer(every_frame=lambda: order.append("batch"))
    for p in range(PHASES):
        pacer.add(Phase(str(p)))
    await asyncio.sleep(0.2)
    pacer.stop()
    start = order.index("batch")
    frames = order[start : start + 5 * (PHASES + 1)]
    assert frames == ["batch", "0", "1", "2", "3"] * 5
