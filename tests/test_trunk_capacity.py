"""A trunk's channels and pace shared through Redis by several ringflow processes.

Each "process" here is its own SharedTrunkGate with its own Redis connection (and, where it
matters, its own clock), pointed at the same real Redis and trunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from ringflow.clock import ManualClock, RealClock
from ringflow.telephony.sip.capacity import SharedTrunkGate, TrunkUnavailable
from ringflow.telephony.sip.carrier import SipCarrier
from ringflow.telephony.sip.trunks import Trunk
from tests.conftest import REDIS_URL


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix for this test; its keys are deleted afterwards."""
    prefix = f"ringflow:trunk:test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=prefix + "*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[list[redis.asyncio.Redis]]:
    """One Redis connection per simulated process."""
    made = [redis.asyncio.Redis.from_url(REDIS_URL) for _ in range(2)]
    yield made
    for client in made:
        await client.aclose()


class Caller:
    """Places 'calls' through a gate: each holds its slot until released."""

    def __init__(self, gate: SharedTrunkGate):
        self.gate = gate
        self.started: list[float] = []
        self.release = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def call(self) -> None:
        async def one() -> None:
            async with self.gate.slot():
                self.started.append(self.gate.clock.now())
                await self.release.wait()

        self.tasks.append(asyncio.ensure_future(one()))

    async def hang_up_all(self) -> None:
        self.release.set()
        await asyncio.gather(*self.tasks)


async def test_two_processes_share_the_trunk_channels(prefix, clients) -> None:
    clock = ManualClock()
    trunk = Trunk("pbx", "h", max_channels=2, max_cps=100.0)
    a = Caller(SharedTrunkGate(trunk, clock, clients[0], prefix=prefix))
    b = Caller(SharedTrunkGate(trunk, clock, clients[1], prefix=prefix))
    a.call()
    a.call()
    await clock.run_until(lambda: len(a.started) == 2, limit=5)
    b.call()
    await clock.advance(10)  # polls and lease renewals happen; the trunk stays full
    assert b.started == []
    await a.hang_up_all()
    await clock.run_until(lambda: len(b.started) == 1, limit=5)
    await b.hang_up_all()


async def test_a_dead_process_frees_its_channels_when_their_leases_lapse(prefix, clients) -> None:
    trunk = Trunk("pbx", "h", max_channels=1, max_cps=100.0)
    frozen, alive = ManualClock(), ManualClock()  # the first process stops: its time stands still
    dead = Caller(SharedTrunkGate(trunk, frozen, clients[0], prefix=prefix, lease=30))
    dead.call()
    await frozen.run_until(lambda: len(dead.started) == 1, limit=1)
    survivor = Caller(SharedTrunkGate(trunk, alive, clients[1], prefix=prefix, lease=30))
    survivor.call()
    await alive.advance(29)
    assert survivor.started == []  # the lease still holds
    await alive.run_until(lambda: len(survivor.started) == 1, limit=5)
    assert 30 <= alive.now() < 31
    await survivor.hang_up_all()
    for task in dead.tasks:
        task.cancel()


async def test_two_processes_share_the_pace(prefix, clients) -> None:
    clock = ManualClock()
    trunk = Trunk("pbx", "h", max_channels=10, max_cps=4.0)
    a = Caller(SharedTrunkGate(trunk, clock, clients[0], prefix=prefix))
    b = Caller(SharedTrunkGate(trunk, clock, clients[1], prefix=prefix))
    for _ in range(3):
        a.call()
        b.call()
    await clock.run_until(lambda: len(a.started) + len(b.started) == 6, limit=10)
    starts = sorted(a.started + b.started)
    assert [round(s - starts[0], 3) for s in starts] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    await a.hang_up_all()
    await b.hang_up_all()


async def test_a_cancelled_waiter_takes_no_channel(prefix, clients) -> None:
    clock = ManualClock()
    trunk = Trunk("pbx", "h", max_channels=1, max_cps=100.0)
    gate = SharedTrunkGate(trunk, clock, clients[0], prefix=prefix)
    holder, waiter = Caller(gate), Caller(gate)
    holder.call()
    await clock.run_until(lambda: len(holder.started) == 1, limit=1)
    waiter.call()
    await clock.advance(1)
    waiter.tasks[0].cancel()
    await asyncio.gather(*waiter.tasks, return_exceptions=True)
    await holder.hang_up_all()
    assert await clients[1].zcard(f"{prefix}pbx:channels") == 0


async def test_an_unreachable_redis_refuses_the_call() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    gate = SharedTrunkGate(Trunk("pbx", "h"), ManualClock(), client)
    with pytest.raises(TrunkUnavailable, match="trunk pbx: shared limits unavailable"):
        async with gate.slot():
            pass
    await client.aclose()


@pytest.mark.parametrize("shared", [False, True])
async def test_a_call_that_must_wait_is_told_once_and_one_that_need_not_is_not(
    prefix, clients, shared: bool
) -> None:
    from ringflow.telephony.sip.capacity import TrunkGate

    clock = ManualClock()
    trunk = Trunk("pbx", "h", max_channels=1, max_cps=0.5)
    gate = (
        SharedTrunkGate(trunk, clock, clients[0], prefix=prefix)
        if shared
        else TrunkGate(trunk, clock)
    )
    told: list[list[str]] = [[], []]
    first_in, release = asyncio.Event(), asyncio.Event()

    async def call(n: int) -> None:
        async with gate.slot(on_wait=told[n].append):
            first_in.set()
            await release.wait()

    first = asyncio.ensure_future(call(0))
    await clock.run_until(first_in.is_set, limit=5)
    second = asyncio.ensure_future(call(1))
    await clock.run_until(lambda: bool(told[1]), limit=5)
    await clock.advance(5)  # many polls for a channel: still one report
    assert told == [[], ["all 1 channels of trunk pbx are busy"]]
    release.set()
    await clock.run_until(lambda: second.done(), limit=10)
    await first
    assert told[1] == ["all 1 channels of trunk pbx are busy"]


async def test_a_channel_held_at_admission_is_shared_and_its_release_tells(prefix, clients) -> None:
    clock = ManualClock()
    trunk = Trunk("pbx", "h", max_channels=1, max_cps=100.0)
    freed: list[str] = []
    a = SharedTrunkGate(trunk, clock, clients[0], prefix=prefix, on_room=lambda: freed.append("a"))
    b = SharedTrunkGate(trunk, clock, clients[1], prefix=prefix)
    hold = await a.try_hold()
    assert hold is not None
    assert await b.try_hold() is None, "the other process took the trunk's only channel"
    assert await b.active() == 1
    async with a.slot(hold=hold):  # the leg dials with the channel it holds: no second take
        assert await a.active() == 1
    assert freed == ["a"]
    again = await b.try_hold()
    assert again is not None
    await again.release()
    await again.release()  # once only
    assert await a.active() == 0


async def test_a_channel_another_process_gives_back_is_announced_to_every_process() -> None:
    """A call waiting (queued) in one process for a trunk's channel learns at once that another
    process freed one: the carrier tells its room listeners, as for its own channels."""
    trunk = Trunk(f"pbx-{uuid.uuid4().hex[:8]}", "127.0.0.1", max_channels=1, max_cps=100.0)
    other = Trunk(f"pbx-{uuid.uuid4().hex[:8]}", "127.0.0.1", max_channels=1, max_cps=100.0)
    here = SipCarrier(RealClock(), (trunk,), sip_port=0, redis_url=REDIS_URL)
    there = SipCarrier(RealClock(), (trunk, other), sip_port=0, redis_url=REDIS_URL)
    rooms: list[str] = []
    heard = asyncio.Event()

    def room() -> None:
        rooms.append("room")
        heard.set()

    here.listen_for_room(room)
    await here.start()
    await there.start()
    try:
        # The subscription starts in the background: free the channel until it is heard.
        for _ in range(100):
            hold = await there.gates[trunk.name].try_hold()
            assert hold is not None
            await hold.release()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), 0.05)
                break
        assert heard.is_set(), "the other process's freed channel was never announced"
        # A channel of a trunk this process does not use wakes nobody here: announced before
        # the next one of ours, it would have been heard first.
        count, heard = len(rooms), asyncio.Event()
        for name in (other.name, trunk.name):
            hold = await there.gates[name].try_hold()
            assert hold is not None
            await hold.release()
        await asyncio.wait_for(heard.wait(), 5)
        assert len(rooms) == count + 1
    finally:
        await there.close()
        await here.close()
