"""The injectable clock: every timer in ringflow reads one of these.

``RealClock`` runs on the event loop's time (optionally sped up by ``scale`` for demos and
process-level tests). ``ManualClock`` only moves when a test advances it, so a four-hour call runs
in milliseconds. Code that waits on the outside world (an HTTP request, a database) wraps that
wait in ``clock.busy()`` so ``ManualClock.run_until`` never jumps time past work still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")

UTC = dt.UTC


class Clock(Protocol):
    """What the call engine, sandbox and outbox need from time."""

    def now(self) -> float:
        """Monotonic seconds."""

    def wall(self) -> dt.datetime:
        """The current UTC time (aware)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""

    def busy(self) -> contextlib.AbstractContextManager[None]:
        """Mark a wait on the outside world (no-op on a real clock)."""


class RealClock:
    """Wall time, optionally scaled: ``scale=10`` makes every timer ten times shorter."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        self._mono0 = time.monotonic()
        self._wall0 = dt.datetime.now(UTC)

    def now(self) -> float:
        return (time.monotonic() - self._mono0) * self.scale

    def wall(self) -> dt.datetime:
        if self.scale == 1.0:
            return dt.datetime.now(UTC)
        return self._wall0 + dt.timedelta(seconds=self.now())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        yield


class ManualClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, start: dt.datetime | None = None):
        self._now = 0.0
        self._wall0 = start or dt.datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._busy = 0

    def now(self) -> float:
        return self._now

    def wall(self) -> dt.datetime:
        return self._wall0 + dt.timedelta(seconds=self._now)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    def next_deadline(self) -> float | None:
        """The earliest pending timer, or None."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every timer due on the way, in order."""
        target = self._now + seconds
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self._wake_until(deadline)
            await _settle()
        self._now = max(self._now, target)
        await _settle()

    async def run_until(
        self,
        condition: Callable[[], bool | Awaitable[bool]],
        *,
        limit: float = 86400.0,
        real_timeout: float = 30.0,
    ) -> None:
        """Jump from timer to timer until ``condition`` holds.

        Time never jumps while something is ``busy`` (an HTTP request in flight); then it waits
        in real time, bounded by ``real_timeout``.
        """
        start = self._now
        give_up = time.monotonic() + real_timeout
        while True:
            await _settle()
            if await _holds(condition):
                return
            if time.monotonic() > give_up:
                raise TimeoutError(f"condition not met by clock t={self._now:.1f}s")
            # The condition's own awaits let other tasks run, and it may have read state that
            # changed meanwhile: jump only once everything is idle and it still does not hold.
            await _settle()
            deadline = self.next_deadline()
            if self._busy or deadline is None:
                await asyncio.sleep(0.005)
                continue
            if await _holds(condition):
                return
            await _settle()
            if self._busy or self.next_deadline() != deadline:
                continue
            if deadline - start > limit:
                raise TimeoutError(f"condition not met within {limit}s of clock time")
            self._wake_until(deadline)

    def _wake_until(self, deadline: float) -> None:
        self._now = max(self._now, deadline)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    if not isinstance(result, bool):
        result = await result
    return bool(result)


async def _settle(rounds: int = 20) -> None:
    """Let woken tasks run until they block again (on I/O, a future or the clock)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_with_timeout(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T | None:
    """Await ``awaitable``; return None if ``seconds`` of clock time pass first (it is cancelled)."""
    task = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        timer.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def make_clock(scale: float = 1.0) -> RealClock:
    """The production clock."""
    return RealClock(scale)
