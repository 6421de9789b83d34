"""A trunk's limits: how many calls it carries at once and how fast new ones may start.

Legs wait their turn in FIFO order: first for a free channel, then for the next start the
calls-per-second pace allows (starts are spaced evenly, ``1 / max_cps`` apart, on the
injectable clock). A waiting leg that is cancelled leaves the line without taking a slot.

``TrunkGate`` counts in this process. ``SharedTrunkGate`` counts in Redis, so several ringflow
processes dialling through one trunk share its channels and its pace: each call holds a lease
in a sorted set (renewed while the call is up, so a process that dies frees its channels when
their leases lapse), and the next allowed start is one key that every process advances. Times
are wall-clock milliseconds, so the processes' clocks must agree (NTP), as for the rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import redis.asyncio
from redis.exceptions import RedisError

from ringflow.clock import Clock
from ringflow.errors import Unavailable
from ringflow.telephony.sip.trunks import Trunk

PREFIX = "ringflow:trunk:"


class TrunkUnavailable(Unavailable):
    """The trunk's shared limits cannot be read (Redis is unreachable): no call is placed."""


class TrunkGate:
    """Admission to one trunk, counted in this process."""

    def __init__(self, trunk: Trunk, clock: Clock):
        self.trunk = trunk
        self.clock = clock
        self._channels = asyncio.Semaphore(trunk.max_channels)
        self._pace = asyncio.Lock()
        self._next_start = 0.0
        self.in_use = 0

    async def active(self) -> int:
        """Calls holding a channel now."""
        return self.in_use

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the trunk's channels for the life of a call."""
        async with self._channels:
            self.in_use += 1
            try:
                await self._paced()
                yield
            finally:
                self.in_use -= 1

    async def _paced(self) -> None:
        async with self._pace:
            now = self.clock.now()
            wait = self._next_start - now
            if wait > 0:
                await self.clock.sleep(wait)
            self._next_start = max(now, self._next_start) + 1.0 / self.trunk.max_cps


# KEYS[1]: the trunk's leases (member: one call, score: when its lease lapses, ms).
# ARGV: now, lease length, max channels, member. Returns 1 if the call got a channel.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1]: the trunk's next allowed start (ms). ARGV: now, spacing. Returns how long to wait.
# Milliseconds stay below 2^53 and print exactly with Lua's %.14g.
_PACE = """
local now = tonumber(ARGV[1])
local start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], string.format('%d', start + tonumber(ARGV[2])), 'PX', 60000)
return start - now
"""

# KEYS[1]: the leases. ARGV: new lapse time, member, key TTL. Renews only a lease still held.
_RENEW = """
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""


class SharedTrunkGate:
    """Admission to one trunk, counted in Redis for every process that dials through it."""

    def __init__(self, trunk: Trunk, clock: Clock, client: redis.asyncio.Redis, *,
                 prefix: str = PREFIX, lease: float = 30.0, poll: float = 0.05):
        self.trunk = trunk
        self.clock = clock
        self.lease, self.poll = lease, poll
        self._client = client
        self._leases = f"{prefix}{trunk.name}:channels"
        self._next = f"{prefix}{trunk.name}:next-start"
        self._take = client.register_script(_TAKE)
        self._pace = client.register_script(_PACE)
        self._renew = client.register_script(_RENEW)
        self._line = asyncio.Lock()  # this process's waiters queue in order; the head asks Redis
        self.in_use = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the trunk's channels (across processes) for the life of a call."""
        member = uuid.uuid4().hex
        async with self._line:
            limit = self.trunk.max_channels
            while not await self._redis(self._take, self._leases, self._lease_ms, limit, member):
                await self.clock.sleep(self.poll)
            try:
                wait_ms = await self._redis(self._pace, self._next,
                                            max(1, round(1000 / self.trunk.max_cps)))
            except BaseException:
                await self._release(member)
                raise
        self.in_use += 1
        renewing = asyncio.ensure_future(self._keep(member))
        try:
            if wait_ms > 0:
                await self.clock.sleep(wait_ms / 1000)
            yield
        finally:
            self.in_use -= 1
            renewing.cancel()
            await self._release(member)

    async def active(self) -> int:
        """Calls holding a channel now, in every process (unexpired leases)."""
        try:
            with self.clock.busy():
                return int(await self._client.zcount(self._leases, self._now_ms(), "+inf"))
        except RedisError as exc:
            raise TrunkUnavailable(
                f"trunk {self.trunk.name}: shared limits unavailable ({exc})") from exc

    @property
    def _lease_ms(self) -> int:
        return round(self.lease * 1000)

    def _now_ms(self) -> int:
        return round(self.clock.wall().timestamp() * 1000)

    async def _redis(self, script: object, key: str, *args: object) -> int:
        try:
            with self.clock.busy():
                return int(await script(keys=[key], args=[self._now_ms(), *args]))  # type: ignore
        except RedisError as exc:
            raise TrunkUnavailable(
                f"trunk {self.trunk.name}: shared limits unavailable ({exc})") from exc

    async def _keep(self, member: str) -> None:
        """Renew the lease at a third of its length while the call is up."""
        while True:
            await self.clock.sleep(self.lease / 3)
            with contextlib.suppress(RedisError), self.clock.busy():
                await self._renew(keys=[self._leases],
                                  args=[self._now_ms() + self._lease_ms, member, self._lease_ms])

    async def _release(self, member: str) -> None:
        with contextlib.suppress(RedisError), self.clock.busy():
            await asyncio.shield(self._client.zrem(self._leases, member))
