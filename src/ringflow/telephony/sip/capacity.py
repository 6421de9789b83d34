"""A trunk's limits: how many calls it carries at once and how fast new ones may start.

Legs wait their turn in FIFO order: first for a free channel, then for the next start the
calls-per-second pace allows (starts are spaced evenly, ``1 / max_cps`` apart, on the
injectable clock). A waiting leg that is cancelled leaves the line without taking a slot.

A call's first leg may take its channel before the call is admitted (``try_hold``): the
engine admits a call only when its trunk has room, so a call waiting for a channel shows
``queued`` rather than ``ringing``. The leg then dials with that ``Hold`` (``slot(hold=...)``),
waiting only for its turn at the pace; releasing the hold frees the channel and tells
``on_room``.

``TrunkGate`` counts in this process. ``SharedTrunkGate`` counts in Redis, so several ringflow
processes dialling through one trunk share its channels and its pace: each call holds a lease
in a sorted set (renewed while the call is up, so a process that dies frees its channels when
their leases lapse), and the next allowed start is one key that every process advances. Times
are wall-clock milliseconds, so the processes' clocks must agree (NTP), as for the rate limits.
A channel given back is also announced on ``ROOM_CHANNEL`` (the trunk's name), so a process
whose calls wait for that trunk admits one at once, not at its next housekeeping round.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio
from redis.exceptions import RedisError

from ringflow.clock import Clock
from ringflow.errors import Unavailable
from ringflow.redis_client import scoped
from ringflow.telephony.sip.trunks import Trunk

PREFIX = "ringflow:trunk:"
ROOM_CHANNEL = "ringflow:trunk-room"  # a channel came free: the trunk's name
NOTABLE_PACE_WAIT = 1.0  # seconds: a shorter wait for the pace is not reported to ``on_wait``

OnWait = Callable[[str], None]


class TrunkUnavailable(Unavailable):
    """The trunk's shared limits cannot be read (Redis is unreachable): no call is placed."""


class Hold:
    """One of a trunk's channels, taken ahead of the leg that will use it."""

    def __init__(self, release: Callable[[], Awaitable[None]]):
        self._release = release
        self.released = False

    async def release(self) -> None:
        """Give the channel back (once)."""
        if not self.released:
            self.released = True
            await self._release()


class TrunkGate:
    """Admission to one trunk, counted in this process."""

    def __init__(self, trunk: Trunk, clock: Clock, on_room: Callable[[], None] | None = None):
        self.trunk = trunk
        self.clock = clock
        self.on_room = on_room  # a channel was given back
        self._channels = asyncio.Semaphore(trunk.max_channels)
        self._pace = asyncio.Lock()
        self._next_start = 0.0
        self.in_use = 0

    async def try_hold(self) -> Hold | None:
        """Take a channel now if one is free (None: the trunk is full)."""
        if self._channels.locked():
            return None
        await self._channels.acquire()
        self.in_use += 1

        async def release() -> None:
            self.in_use -= 1
            self._channels.release()
            if self.on_room is not None:
                self.on_room()

        return Hold(release)

    async def active(self) -> int:
        """Calls holding a channel now."""
        return self.in_use

    @contextlib.asynccontextmanager
    async def slot(
        self, on_wait: OnWait | None = None, hold: Hold | None = None
    ) -> AsyncIterator[None]:
        """Hold one of the trunk's channels for the life of a call.

        ``on_wait(reason)`` is called once if the call has to wait: for a channel, or for its
        turn at the trunk's pace when that is a second or more away. With ``hold``, the channel
        is the one held already.
        """
        tell = _once(on_wait)
        if hold is not None:
            try:
                await self._paced(tell)
                yield
            finally:
                await hold.release()
            return
        if self._channels.locked():
            tell(f"all {self.trunk.max_channels} channels of trunk {self.trunk.name} are busy")
        async with self._channels:
            self.in_use += 1
            try:
                await self._paced(tell)
                yield
            finally:
                self.in_use -= 1
                if self.on_room is not None:
                    self.on_room()

    async def _paced(self, tell: OnWait) -> None:
        async with self._pace:
            now = self.clock.now()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.trunk.max_cps
        if start - now >= NOTABLE_PACE_WAIT:
            tell(_pace_reason(self.trunk, start - now))
        if start > now:
            await self.clock.sleep(start - now)


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

    def __init__(
        self,
        trunk: Trunk,
        clock: Clock,
        client: redis.asyncio.Redis,
        *,
        prefix: str = PREFIX,
        lease: float = 30.0,
        poll: float = 0.05,
        on_room: Callable[[], None] | None = None,
    ):
        self.trunk = trunk
        self.clock = clock
        self.on_room = on_room  # a channel this process held was given back
        self.lease, self.poll = lease, poll
        self._client = client
        self._leases = f"{prefix}{trunk.name}:channels"
        self._next = f"{prefix}{trunk.name}:next-start"
        self._take = client.register_script(_TAKE)
        self._pace = client.register_script(_PACE)
        self._renew = client.register_script(_RENEW)
        self._line = asyncio.Lock()  # this process's waiters queue in order; the head asks Redis
        self._in_line: list[OnWait] = []  # those behind the head, told when the trunk is full
        self.in_use = 0

    async def try_hold(self) -> Hold | None:
        """Take a channel now (across processes) if one is free (None: the trunk is full)."""
        member = uuid.uuid4().hex
        if not await self._redis(
            self._take, self._leases, self._lease_ms, self.trunk.max_channels, member
        ):
            return None
        self.in_use += 1
        renewing = asyncio.ensure_future(self._keep(member))

        async def release() -> None:
            self.in_use -= 1
            renewing.cancel()
            await self._release(member)
            if self.on_room is not None:
                self.on_room()

        return Hold(release)

    @contextlib.asynccontextmanager
    async def slot(
        self, on_wait: OnWait | None = None, hold: Hold | None = None
    ) -> AsyncIterator[None]:
        """Hold one of the trunk's channels (across processes) for the life of a call; with
        ``hold``, the channel held already."""
        tell = _once(on_wait)
        if hold is not None:
            try:
                await self._wait_turn(await self._next_turn(), tell)
                yield
            finally:
                await hold.release()
            return
        member = uuid.uuid4().hex
        self._in_line.append(tell)
        try:
            async with self._line:
                self._in_line.remove(tell)
                limit = self.trunk.max_channels
                while not await self._redis(
                    self._take, self._leases, self._lease_ms, limit, member
                ):
                    # The trunk is full: this call waits, and so does everyone behind it.
                    for waiter in (tell, *self._in_line):
                        waiter(f"all {limit} channels of trunk {self.trunk.name} are busy")
                    await self.clock.sleep(self.poll)
                try:
                    wait_ms = await self._next_turn()
                except BaseException:
                    await self._release(member)
                    raise
        finally:
            if tell in self._in_line:  # cancelled while in line
                self._in_line.remove(tell)
        self.in_use += 1
        renewing = asyncio.ensure_future(self._keep(member))
        try:
            await self._wait_turn(wait_ms, tell)
            yield
        finally:
            self.in_use -= 1
            renewing.cancel()
            await self._release(member)
            if self.on_room is not None:
                self.on_room()

    async def _next_turn(self) -> int:
        """Take the next start the trunk's pace allows: milliseconds until it."""
        return await self._redis(self._pace, self._next, max(1, round(1000 / self.trunk.max_cps)))

    async def _wait_turn(self, wait_ms: int, tell: OnWait) -> None:
        if wait_ms >= NOTABLE_PACE_WAIT * 1000:
            tell(_pace_reason(self.trunk, wait_ms / 1000))
        if wait_ms > 0:
            await self.clock.sleep(wait_ms / 1000)

    async def active(self) -> int:
        """Calls holding a channel now, in every process (unexpired leases)."""
        try:
            with self.clock.busy():
                return int(await self._client.zcount(self._leases, self._now_ms(), "+inf"))
        except RedisError as exc:
            raise TrunkUnavailable(
                f"trunk {self.trunk.name}: shared limits unavailable ({exc})"
            ) from exc

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
                f"trunk {self.trunk.name}: shared limits unavailable ({exc})"
            ) from exc

    async def _keep(self, member: str) -> None:
        """Renew the lease at a third of its length while the call is up."""
        while True:
            await self.clock.sleep(self.lease / 3)
            with contextlib.suppress(RedisError), self.clock.busy():
                await self._renew(
                    keys=[self._leases],
                    args=[self._now_ms() + self._lease_ms, member, self._lease_ms],
                )

    async def _release(self, member: str) -> None:
        """Give the channel back and tell every process, in one round trip (a lost
        announcement costs a wait until the next housekeeping round, never the channel)."""
        with contextlib.suppress(RedisError), self.clock.busy():
            await asyncio.shield(self._give_back(member))

    async def _give_back(self, member: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(self._leases, member)
        pipe.publish(scoped(self._client, ROOM_CHANNEL), self.trunk.name)
        await pipe.execute()


def _once(on_wait: OnWait | None) -> OnWait:
    """``on_wait``, called at most once (and a no-op when None)."""
    told = False

    def tell(reason: str) -> None:
        nonlocal told
        if on_wait is not None and not told:
            told = True
            on_wait(reason)

    return tell


def _pace_reason(trunk: Trunk, wait: float) -> str:
    return f"trunk {trunk.name} starts {trunk.max_cps:g} calls per second: {wait:.1f} s to wait"
