"""The in-process rate limiter: one deque of request times per key.

Correct for a single process only; several processes need the Redis backend to share limits.
Memory stays bounded: a key's log never holds more than the largest limit it was hit with, and a
periodic sweep drops keys whose requests have all left their window.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ringflow.ratelimit import Decision, check_args, decide, to_micros

if TYPE_CHECKING:
    from ringflow.clock import Clock


@dataclass(slots=True)
class _Log:
    times: deque[int] = field(default_factory=deque)  # microseconds, ascending
    window_us: int = 0  # the window of the latest hit, which the sweep prunes by


class MemoryRateLimiter:
    """Sliding-window log rate limiter held in this process."""

    def __init__(self, clock: Clock, *, sweep_every: int = 1024):
        self._clock = clock
        self._logs: dict[str, _Log] = {}
        self._sweep_every = sweep_every
        self._hits_since_sweep = 0

    def __len__(self) -> int:
        """How many keys are tracked (for tests and metrics)."""
        return len(self._logs)

    async def hit(self, key: str, limit: int, window: float = 60.0) -> Decision:
        """Count one request for ``key`` if under ``limit`` in the last ``window`` seconds."""
        return self._decide(key, limit, window, record=True)

    async def peek(self, key: str, limit: int, window: float = 60.0) -> Decision:
        """What ``hit`` would decide now, without counting anything."""
        return self._decide(key, limit, window, record=False)

    def _decide(self, key: str, limit: int, window: float, *, record: bool) -> Decision:
        # No await here: on one event loop the whole check-and-add is atomic.
        window_us = check_args(limit, window)
        now = to_micros(self._clock.wall().timestamp())
        log = self._logs.get(key)
        if log is None:
            if not record:
                return decide(True, limit, 0, 0, 0)
            log = self._logs[key] = _Log()
        log.window_us = window_us
        times = log.times
        _prune(times, now - window_us)
        count = len(times)
        allowed = count < limit
        if allowed and record:
            _insert(times, now)
            count += 1
        if not times:  # a peek at an empty log: nothing to wait for
            return decide(True, limit, 0, 0, 0)
        # When refused, the entry whose departure frees one slot (more than one must leave if
        # the limit was lowered since the log filled).
        pivot = 0 if allowed else count - limit
        decision = decide(
            allowed, limit, count, times[0] + window_us - now, times[pivot] + window_us - now
        )
        self._maybe_sweep(now)
        return decision

    async def close(self) -> None:
        """Forget every key."""
        self._logs.clear()

    def _maybe_sweep(self, now: int) -> None:
        # Sweeping every max(sweep_every, len) hits keeps the cost amortised O(1) per hit.
        self._hits_since_sweep += 1
        if self._hits_since_sweep < max(self._sweep_every, len(self._logs)):
            return
        self._hits_since_sweep = 0
        for key in list(self._logs):
            log = self._logs[key]
            _prune(log.times, now - log.window_us)
            if not log.times:
                del self._logs[key]


def _prune(times: deque[int], cutoff: int) -> None:
    while times and times[0] <= cutoff:
        times.popleft()


def _insert(times: deque[int], at: int) -> None:
    # The wall clock can step backwards (NTP); keep the log sorted as Redis's sorted set is.
    if not times or times[-1] <= at:
        times.append(at)
    else:
        bisect.insort(times, at)
