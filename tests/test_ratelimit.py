"""The rate limiter: one suite over the memory and Redis backends, plus backend specifics."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
import redis.exceptions
from conftest import REDIS_URL, free_port

from ringflow.clock import ManualClock
from ringflow.errors import Unavailable
from ringflow.ratelimit import Decision, RateLimiter, make_rate_limiter
from ringflow.ratelimit.memory import MemoryRateLimiter
from ringflow.ratelimit.redis import RedisRateLimiter


async def _delete_prefixed(client: redis.asyncio.Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=prefix + "*"):
        await client.delete(key)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"ringflow:rl:test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await _delete_prefixed(client, prefix)
    finally:
        await client.aclose()


def _backend(name: str, clock: ManualClock, prefix: str) -> RateLimiter:
    if name == "memory":
        return MemoryRateLimiter(clock)
    return RedisRateLimiter.from_url(REDIS_URL, clock, prefix=prefix)


@pytest.fixture(params=["memory", "redis"])
async def limiter(
    request: pytest.FixtureRequest, clock: ManualClock, redis_prefix: str
) -> AsyncIterator[RateLimiter]:
    """Each backend in turn, on the test's ManualClock."""
    backend = _backend(request.param, clock, redis_prefix)
    yield backend
    await backend.close()


async def test_allows_exactly_limit_then_refuses(limiter: RateLimiter, clock: ManualClock):
    for i in range(5):
        d = await limiter.hit("acct", 5)
        assert d == Decision(
            allowed=True, limit=5, remaining=4 - i, reset_after=60.0 - i, retry_after=0
        )
        await clock.advance(1)
    refused = await limiter.hit("acct", 5)
    assert refused == Decision(
        allowed=False, limit=5, remaining=0, reset_after=55.0, retry_after=55
    )
    await clock.advance(0.5)
    refused = await limiter.hit("acct", 5)
    assert (refused.reset_after, refused.retry_after) == (54.5, 55)  # retry_after rounds up


async def test_window_slides_one_request_at_a_time(limiter: RateLimiter, clock: ManualClock):
    for _ in range(3):
        assert (await limiter.hit("acct", 3)).allowed
        await clock.advance(10)
    await clock.advance(29.999)  # t=59.999: the first request is still in the window
    d = await limiter.hit("acct", 3)
    assert (d.allowed, d.retry_after) == (False, 1)
    await clock.advance(0.001)  # t=60: exactly the first request has left
    d = await limiter.hit("acct", 3)
    assert (d.allowed, d.remaining, d.reset_after) == (True, 0, 10.0)
    d = await limiter.hit("acct", 3)  # not a fresh window: the t=10 request still counts
    assert (d.allowed, d.retry_after) == (False, 10)


async def test_minute_boundaries_do_not_reset(limiter: RateLimiter, clock: ManualClock):
    # ManualClock's wall starts on a whole minute: t=50 and t=70 straddle 10:01:00.
    await clock.advance(50)
    for _ in range(100):
        assert (await limiter.hit("acct", 200)).allowed
    await clock.advance(20)
    for _ in range(100):
        assert (await limiter.hit("acct", 200)).allowed
    await clock.advance(5)
    d = await limiter.hit("acct", 200)
    assert (d.allowed, d.retry_after) == (False, 35)


async def test_keys_are_independent(limiter: RateLimiter):
    assert (await limiter.hit("a", 1)).allowed
    assert not (await limiter.hit("a", 1)).allowed
    d = await limiter.hit("b", 1)
    assert (d.allowed, d.remaining) == (True, 0)
    assert not (await limiter.hit("a", 1)).allowed


async def test_refused_hits_do_not_extend_the_block(limiter: RateLimiter, clock: ManualClock):
    assert (await limiter.hit("acct", 2)).allowed
    assert (await limiter.hit("acct", 2)).allowed
    for t in range(1, 60):
        await clock.advance(1)
        d = await limiter.hit("acct", 2)
        assert (d.allowed, d.retry_after) == (False, 60 - t)
    await clock.advance(1)
    d = await limiter.hit("acct", 2)
    assert (d.allowed, d.remaining) == (True, 1)  # both t=0 requests left together


async def test_peek_decides_like_hit_without_counting(limiter: RateLimiter, clock: ManualClock):
    fresh = await limiter.peek("acct", 3)
    assert (fresh.allowed, fresh.remaining, fresh.retry_after) == (True, 3, 0)
    for _ in range(10):
        assert (await limiter.peek("acct", 3)).allowed
    for _ in range(3):
        assert (await limiter.hit("acct", 3)).allowed  # the peeks took no room
    await clock.advance(10)
    peeked = await limiter.peek("acct", 3)
    assert (peeked.allowed, peeked.retry_after) == (False, 50)
    assert (await limiter.hit("acct", 3)) == peeked  # the same answer as a hit
    await clock.advance(50)
    assert (await limiter.peek("acct", 3)).allowed


async def test_limit_is_per_call(limiter: RateLimiter, clock: ManualClock):
    for _ in range(5):
        assert (await limiter.hit("acct", 5)).allowed
        await clock.advance(1)
    d = await limiter.hit("acct", 10)
    assert (d.allowed, d.limit, d.remaining) == (True, 10, 4)
    # Lowered to 2 with 6 logged (t=0..5): five must leave, so wait for the t=4 one.
    d = await limiter.hit("acct", 2)
    assert d == Decision(allowed=False, limit=2, remaining=0, reset_after=55.0, retry_after=59)


async def test_window_is_per_call(limiter: RateLimiter, clock: ManualClock):
    assert (await limiter.hit("acct", 1, window=10)).allowed
    await clock.advance(10)
    d = await limiter.hit("acct", 1, window=10)
    assert (d.allowed, d.reset_after) == (True, 10.0)


async def test_concurrent_hits_never_exceed_the_limit(limiter: RateLimiter):
    decisions = await asyncio.gather(*(limiter.hit("acct", 20) for _ in range(50)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 20
    assert sorted(d.remaining for d in allowed) == list(range(20))
    assert all(d.retry_after == 60 for d in decisions if not d.allowed)


@pytest.mark.parametrize(("limit", "window"), [(0, 60.0), (-1, 60.0), (5, 0.0)])
async def test_rejects_nonsense_arguments(limiter: RateLimiter, limit: int, window: float):
    with pytest.raises(ValueError, match="at least 1|positive"):
        await limiter.hit("acct", limit, window)


async def test_backends_agree_on_a_random_sequence(clock: ManualClock, redis_prefix: str):
    memory = _backend("memory", clock, redis_prefix)
    shared = _backend("redis", clock, redis_prefix)
    rng = random.Random(20261126)
    try:
        for _ in range(400):
            key, limit = rng.choice("abc"), rng.choice([1, 2, 3, 5])
            window = rng.choice([10.0, 60.0])
            assert await memory.hit(key, limit, window) == await shared.hit(key, limit, window)
            await clock.advance(rng.choice([0, 0, 0.25, 1, 3.7, 12]))
    finally:
        await memory.close()
        await shared.close()


async def test_redis_processes_share_limits(clock: ManualClock, redis_prefix: str):
    one = RedisRateLimiter.from_url(REDIS_URL, clock, prefix=redis_prefix)
    two = RedisRateLimiter.from_url(REDIS_URL, clock, prefix=redis_prefix)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        assert (await one.hit("acct", 2)).allowed
        assert (await two.hit("acct", 2)).allowed
        assert not (await one.hit("acct", 2)).allowed
        assert 0 < await client.pttl(redis_prefix + "acct") <= 60_000  # idle keys expire
    finally:
        await one.close()
        await two.close()
        await client.aclose()


async def test_redis_down_raises_unavailable_instead_of_allowing(clock: ManualClock):
    dead = RedisRateLimiter.from_url(f"redis://127.0.0.1:{free_port()}/15", clock, timeout=1)
    try:
        for ask in (dead.hit, dead.peek):
            with pytest.raises(
                Unavailable, match="^rate limiter unavailable; try again shortly$"
            ) as refused:
                await ask("acct", 5)
            # Translated once, here, keeping what Redis said for the log.
            assert isinstance(refused.value.__cause__, redis.exceptions.ConnectionError)
    finally:
        await dead.close()


async def test_memory_drops_idle_keys(clock: ManualClock):
    limiter = MemoryRateLimiter(clock, sweep_every=10)
    for i in range(10):
        await limiter.hit(f"k{i}", 5)
    assert len(limiter) == 10
    await clock.advance(61)
    for _ in range(11):  # the sweep runs once hits reach the number of keys (11 now)
        await limiter.hit("fresh", 100)
    assert len(limiter) == 1


async def test_make_rate_limiter_picks_the_backend(clock: ManualClock):
    memory = make_rate_limiter(None, clock)
    shared = make_rate_limiter(REDIS_URL, clock)
    try:
        assert isinstance(memory, MemoryRateLimiter)
        assert isinstance(shared, RedisRateLimiter)
    finally:
        await memory.close()
        await shared.close()
