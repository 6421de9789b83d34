"""Request rate limits: a sliding-window log, in memory or shared through Redis.

A key may make ``limit`` requests in any ``window`` seconds, wherever minute boundaries fall
(spec section 8: 200 per minute per account). Each allowed request is logged with its wall-clock
time and leaves the log ``window`` seconds later; a refused request is not logged, so hammering a
blocked key does not extend the block.

Both backends keep times as integer microseconds and derive every ``Decision`` through
``decide`` below, so the same sequence of hits gives the same Decisions on either backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ringflow.clock import Clock

MICROS = 1_000_000


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit, with what the X-RateLimit-* and Retry-After headers need."""

    allowed: bool
    limit: int
    remaining: int  # requests still allowed in the window after this one (>= 0)
    reset_after: float  # seconds until the oldest counted request leaves the window
    retry_after: int  # whole seconds (ceil, >= 1) before a retry can succeed; 0 when allowed


class RateLimiter(Protocol):
    """What the API needs from a rate limiter backend. A backend that cannot reach its store
    raises ``ringflow.errors.Unavailable``."""

    async def hit(self, key: str, limit: int, window: float = 60.0) -> Decision:
        """Count one request for ``key`` if under ``limit`` in the last ``window`` seconds."""

    async def peek(self, key: str, limit: int, window: float = 60.0) -> Decision:
        """What ``hit`` would decide now, without counting anything."""

    async def close(self) -> None:
        """Release connections and state."""


def make_rate_limiter(redis_url: str | None, clock: Clock) -> RateLimiter:
    """The in-memory limiter, or the Redis one when ``redis_url`` is set."""
    # Imported here so a memory-only deployment never imports the redis client.
    if redis_url is None:
        from ringflow.ratelimit.memory import MemoryRateLimiter

        return MemoryRateLimiter(clock)
    from ringflow.ratelimit.redis import RedisRateLimiter

    return RedisRateLimiter.from_url(redis_url, clock)


def to_micros(seconds: float) -> int:
    """Seconds as integer microseconds."""
    return round(seconds * MICROS)


def check_args(limit: int, window: float) -> int:
    """Validate a hit's arguments; return the window in microseconds."""
    # A zero limit has no "oldest request" to wait for, so there is no honest retry_after.
    if limit < 1:
        raise ValueError(f"rate limit must be at least 1, got {limit}")
    window_us = to_micros(window)
    if window_us < 1:
        raise ValueError(f"rate limit window must be positive, got {window}")
    return window_us


def decide(allowed: bool, limit: int, count: int, reset_us: int, retry_us: int) -> Decision:
    """Build the Decision from a log of ``count`` entries (after this hit was added, if allowed).

    ``reset_us`` is how long until the oldest entry leaves; ``retry_us`` how long until enough
    entries leave for one more to fit.
    """
    return Decision(
        allowed=allowed,
        limit=limit,
        remaining=max(0, limit - count) if allowed else 0,
        reset_after=max(0, reset_us) / MICROS,
        retry_after=0 if allowed else max(1, -(-retry_us // MICROS)),  # integer ceil
    )
