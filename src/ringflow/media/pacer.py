"""The one clock that sends every session's RTP: a ticker on the event loop.

Each session sends a packet every 20 ms. One ticker serves them all, every 5 ms, and gives each
session one of four phases: a session in phase p sends at t0 + (4k + p) * 5 ms. Deadlines are
absolute (t0 + n * 5 ms, recomputed each time, never "sleep 5 ms" in a loop), so lateness in
one tick never accumulates into drift. Spreading sessions over phases keeps a thousand packets
from leaving (and landing in a peer's socket buffer) in the same instant.

The ticker is a chain of ``loop.call_later`` callbacks rather than a task that sleeps: a
callback costs no coroutine step and no future per wake-up, which matters 200 times a second.
uvloop's timers run on a millisecond loop time cached per iteration, so a tick can fire a little
early; it then re-arms for the rest of the wait instead of sending early.

If the loop stalls (a long GC pause, a blocking call somewhere), ticks up to MAX_BEHIND late are
caught up in order, so each session's frames stay tied to the wall clock; beyond that the
missed ticks are skipped (and counted as stalls) rather than sent as a burst.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ringflow.media.stats import LatencyHistogram
from ringflow.metrics import RTP_LATENESS

log = logging.getLogger("ringflow.media")

STEP = 0.005  # seconds between ticks
PHASES = 4  # ticks per 20 ms frame
MAX_BEHIND = 0.1  # seconds of lateness caught up; beyond, ticks are skipped
LATE_SEND = 0.010  # a packet sent this long after its deadline counts as late
_EARLY = 0.0002  # a timer firing earlier than this before its deadline is re-armed


class Ticked(Protocol):
    """What the pacer drives: one call per 20 ms frame."""

    def tick(self, frame: int) -> None:
        """Send this frame's packet (``frame`` counts 20 ms frames since the pacer started)."""

    def note_late(self) -> None:
        """The packet just sent left more than LATE_SEND after its deadline."""

    def fail(self) -> None:
        """The tick raised: stop this session so the others keep their clock."""


class Pacer:
    """The shared ticker: call ``add`` for a session to start sending, ``remove`` to stop."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        every_frame: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        # Work batched over all sessions (in-band DTMF), once per 20 ms frame: the batch then
        # holds a frame's blocks of every session, and its fixed cost is paid 50 times a second.
        self._every_frame = every_frame
        self._phases: list[list[Ticked]] = [[] for _ in range(PHASES)]
        self._where: dict[Ticked, int] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._n = 0
        self.lateness = LatencyHistogram()
        self.ticks = 0
        self.stalls = 0

    def __len__(self) -> int:
        return len(self._where)

    def add(self, session: Ticked) -> int:
        """Start ticking ``session`` in the least busy phase; returns the phase."""
        if session in self._where:
            return self._where[session]
        phase = min(range(PHASES), key=lambda p: len(self._phases[p]))
        self._phases[phase].append(session)
        self._where[session] = phase
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._t0, self._n = self._clock(), 0
            self._arm()
        return phase

    def remove(self, session: Ticked) -> None:
        """Stop ticking ``session``; the ticker itself stops when nothing is left."""
        phase = self._where.pop(session, None)
        if phase is not None:
            self._phases[phase].remove(session)
        if not self._where:
            self.stop()

    def stop(self) -> None:
        """Stop the ticker (sessions stay registered; ``add`` restarts it)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        assert self._loop is not None
        delay = self._t0 + self._n * STEP - self._clock()
        self._handle = self._loop.call_later(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        fired = self._handle
        now = self._clock()
        deadline = self._t0 + self._n * STEP
        if now < deadline - _EARLY:
            self._arm()
            return
        if now - deadline > MAX_BEHIND:
            self.stalls += 1
            self._n = int((now - self._t0) / STEP)
            deadline = self._t0 + self._n * STEP
        phase, frame = self._n % PHASES, self._n // PHASES
        self._n += 1
        self.ticks += 1
        if phase == 0 and self._every_frame is not None:
            try:
                self._every_frame()
            except Exception:
                log.exception("per-tick media work failed")
        self._run(self._phases[phase], frame, deadline)
        # Sessions closed or opened in the run may have stopped (or stopped and restarted) the
        # ticker: re-arm only the chain that is still this one.
        if self._handle is fired:
            self._arm()

    def _run(self, sessions: list[Ticked], frame: int, deadline: float) -> None:
        clock, add = self._clock, self.lateness.add
        late = None
        for session in tuple(sessions):  # a tick may close its session and edit the list
            try:
                session.tick(frame)
            except Exception:
                log.exception("RTP session tick failed; closing that session")
                session.fail()
                continue
            late = clock() - deadline
            add(late)
            if late > LATE_SEND:
                session.note_late()
        # One observation a tick, not one a packet: the tick's last packet is its latest (they
        # leave in turn), and a Prometheus observation costs microseconds, 200 times a second.
        if late is not None:
            RTP_LATENESS.observe(late if late > 0 else 0.0)
