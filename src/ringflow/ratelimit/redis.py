"""The shared rate limiter: one Redis sorted set per key, updated by one atomic Lua script.

Several ringflow processes pointed at the same Redis share every limit. Times come from each
process's wall clock, so their clocks must agree (NTP) to within the precision limits need.

When Redis is down or slow (no answer within ``timeout`` seconds), ``hit`` and ``peek`` raise
ringflow's ``Unavailable``, never a ``redis.exceptions`` error: a limiter that cannot count
refuses, it never silently allows the request.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import TYPE_CHECKING

import redis.asyncio
from redis.exceptions import RedisError

from ringflow.errors import Unavailable
from ringflow.ratelimit import Decision, check_args, decide, to_micros
from ringflow.redis_client import connect

if TYPE_CHECKING:
    from ringflow.clock import Clock

log = logging.getLogger(__name__)

PREFIX = "ringflow:rl:"
UNAVAILABLE = "rate limiter unavailable; try again shortly"

# KEYS[1]: the log. ARGV: now, cutoff, limit, member, ttl in ms, record ("1": add the hit if
# allowed; "0": only decide, for a peek).
# Times are integer microseconds passed as strings: Lua 5.1 prints numbers with 14 significant
# digits, so a time computed in Lua and handed back to Redis would lose precision.
_HIT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  allowed = 1
  if ARGV[6] == '1' then
    redis.call('ZADD', key, ARGV[1], ARGV[4])
    count = count + 1
  end
end
if count == 0 then
  return {1, 0, 0, 0}
end
local pivot = 0
if allowed == 0 then
  pivot = count - limit
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local blocker = redis.call('ZRANGE', key, pivot, pivot, 'WITHSCORES')
redis.call('PEXPIRE', key, ARGV[5])
return {allowed, count, tonumber(oldest[2]) - now, tonumber(blocker[2]) - now}
"""


class RedisRateLimiter:
    """Sliding-window log rate limiter shared through Redis."""

    def __init__(self, client: redis.asyncio.Redis, clock: Clock, *, prefix: str = PREFIX):
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._script = client.register_script(_HIT)

    @classmethod
    def from_url(
        cls, url: str, clock: Clock, *, prefix: str = PREFIX, timeout: float = 2.0
    ) -> RedisRateLimiter:
        """A limiter with its own connection pool to ``url``."""
        return cls(connect(url, timeout), clock, prefix=prefix)

    async def hit(self, key: str, limit: int, window: float = 60.0) -> Decision:
        """Count one request for ``key`` if under ``limit`` in the last ``window`` seconds."""
        return await self._decide(key, limit, window, record=True)

    async def peek(self, key: str, limit: int, window: float = 60.0) -> Decision:
        """What ``hit`` would decide now, without counting anything."""
        return await self._decide(key, limit, window, record=False)

    async def _decide(self, key: str, limit: int, window: float, *, record: bool) -> Decision:
        window_us = check_args(limit, window)
        now = to_micros(self._clock.wall().timestamp())
        # The TTL only collects idle keys; the scores decide, so rounding it up is harmless.
        ttl_ms = max(1, math.ceil(window_us / 1000))
        member = f"{now}:{uuid.uuid4().hex}"  # unique, so same-microsecond hits all count
        try:
            allowed, count, oldest_age, blocker_age = await self._script(
                keys=[self._prefix + key],
                args=[now, now - window_us, limit, member, ttl_ms, "1" if record else "0"],
            )
        except (RedisError, OSError) as exc:
            log.error("rate limiter unavailable: %s", exc)
            raise Unavailable(UNAVAILABLE) from exc
        if count == 0:  # a peek at an empty log: nothing to wait for
            return decide(True, limit, 0, 0, 0)
        return decide(bool(allowed), limit, count, oldest_age + window_us, blocker_age + window_us)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
