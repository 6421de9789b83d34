"""The lookup cache: two ``Accounts`` on one database stand for two processes. A change is
seen at once where it was made, within ``LOCAL_TTL`` of the clock elsewhere without Redis, and
as soon as the notice arrives with Redis; a cache cut off from Redis falls back to the TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ringflow.accounts import Accounts
from ringflow.clock import ManualClock
from ringflow.storage.cache import LOCAL_TTL, Lookups
from ringflow.storage.db import Database
from tests.conftest import REDIS_URL, free_port

GRAPH = {"name": "v1", "start": "h", "nodes": {"h": {"applet": "hangup"}}}
NUMBER = "+918039591234"


@pytest.fixture
async def pair(db: Database, clock: ManualClock) -> AsyncIterator[tuple[Accounts, Accounts]]:
    """Two processes' views of one database, without Redis."""
    yield Accounts(db, clock), Accounts(db, clock)


async def test_a_revoked_key_is_refused_at_once_here_and_within_the_ttl_elsewhere(
    pair: tuple[Accounts, Accounts], clock: ManualClock
):
    here, there = pair
    creds = await here.create_account("Acme")
    account = await there.authenticate(creds.api_key, creds.api_token)
    assert account is not None and account.sid == creds.account_sid
    assert await there.authenticate(creds.account_sid, creds.api_token) is not None
    assert await there.authenticate(creds.api_key, "wrong") is None
    assert await here.authenticate(creds.api_key, creds.api_token) is not None

    await here.revoke_key(creds.account_sid, creds.api_key)
    assert await here.authenticate(creds.api_key, creds.api_token) is None
    # The other process answers from its cache (what it is for), but not past LOCAL_TTL.
    assert await there.authenticate(creds.api_key, creds.api_token) is not None
    await clock.advance(LOCAL_TTL + 0.01)
    assert await there.authenticate(creds.api_key, creds.api_token) is None
    assert await there.authenticate(creds.account_sid, creds.api_token) is None


async def test_app_and_exophone_changes_reach_the_other_process(
    pair: tuple[Accounts, Accounts], clock: ManualClock, db: Database
):
    here, there = pair
    creds = await here.create_account("Acme")
    account = await there.authenticate(creds.api_key, creds.api_token)
    assert account is not None
    saved = await here.save_app(creds.account_sid, GRAPH)
    async with db.session() as session:
        for side in (here, there):
            assert not await side.owns_number(session, account.id, NUMBER)
            assert (await side.app(session, account.id, saved.id)).version == 1

    await here.add_number(creds.account_sid, NUMBER)
    await here.save_app(creds.account_sid, {**GRAPH, "name": "v2"}, saved.id)
    async with db.session() as session:
        assert await here.owns_number(session, account.id, NUMBER)
        assert (await here.app(session, account.id, saved.id)).name == "v2"
    await clock.advance(LOCAL_TTL + 0.01)
    async with db.session() as session:
        assert await there.owns_number(session, account.id, NUMBER)
        app = await there.app(session, account.id, saved.id)
    assert (app.name, app.version) == ("v2", 2)
    assert (await there.find_app(account.id, saved.id)) is not None
    assert await there.find_app(account.id + 1, saved.id) is None  # another account's app


async def test_limits_set_in_one_process_are_read_by_the_other(
    pair: tuple[Accounts, Accounts], clock: ManualClock
):
    here, there = pair
    creds = await here.create_account("Acme")

    async def rate_limit(side: Accounts) -> int | None:
        account = await side.authenticate(creds.api_key, creds.api_token)
        assert account is not None
        return account.rate_limit_per_minute

    assert [await rate_limit(here), await rate_limit(there)] == [None, None]
    stored = await here.set_limits(creds.account_sid, {"rate_limit_per_minute": 7})
    assert stored.rate_limit_per_minute == 7
    assert await rate_limit(here) == 7
    await clock.advance(LOCAL_TTL + 0.01)
    assert await rate_limit(there) == 7


async def _notice(lookups: Lookups, before: int) -> None:
    """Wait (a bounded real time: it crosses Redis) until ``lookups`` forgot after ``before``."""
    deadline = time.monotonic() + 2
    while lookups.generation == before:
        assert time.monotonic() < deadline, "no notice arrived through Redis"
        await asyncio.sleep(0.01)


async def _listening(lookups: Lookups) -> None:
    deadline = time.monotonic() + 5
    while lookups._ttl() == LOCAL_TTL:
        assert time.monotonic() < deadline, "the subscription did not come up"
        await asyncio.sleep(0.01)


async def test_with_redis_a_revocation_reaches_the_other_process_without_waiting(
    db: Database, clock: ManualClock
):
    here = Accounts(db, clock, lookups=Lookups(clock, REDIS_URL))
    there = Accounts(db, clock, lookups=Lookups(clock, REDIS_URL))
    here.lookups.start()
    there.lookups.start()
    try:
        await _listening(there.lookups)
        creds = await here.create_account("Acme")
        assert await there.authenticate(creds.api_key, creds.api_token) is not None
        before = there.lookups.generation
        await here.revoke_key(creds.account_sid, creds.api_key)
        await _notice(there.lookups, before)
        assert await there.authenticate(creds.api_key, creds.api_token) is None  # clock unmoved
    finally:
        await here.close()
        await there.close()


async def test_a_cache_cut_off_from_redis_keeps_entries_only_the_local_ttl(
    db: Database, clock: ManualClock
):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    there = Accounts(db, clock, lookups=Lookups(clock, dead_redis))
    there.lookups.start()
    here = Accounts(db, clock)  # its notice cannot reach ``there`` anyway
    try:
        creds = await here.create_account("Acme")
        assert await there.authenticate(creds.api_key, creds.api_token) is not None
        await here.revoke_key(creds.account_sid, creds.api_key)
        await clock.advance(LOCAL_TTL + 0.01)
        assert await there.authenticate(creds.api_key, creds.api_token) is None
    finally:
        await there.close()


async def test_a_lookup_read_during_a_change_is_not_kept(clock: ManualClock):
    lookups = Lookups(clock)
    release = asyncio.Event()

    async def slow_old_value() -> str:
        await release.wait()
        return "before the change"

    pending = asyncio.ensure_future(lookups.get("k", slow_old_value))
    await asyncio.sleep(0)
    await lookups.changed()  # committed while the read was under way
    release.set()
    assert await pending == "before the change"

    async def fresh() -> str:
        return "after"

    assert await lookups.get("k", fresh) == "after"


async def test_the_cache_is_bounded(clock: ManualClock):
    lookups = Lookups(clock, max_entries=3)

    async def value() -> int:
        return 1

    for key in range(10):
        await lookups.get(key, value)
    assert len(lookups._entries) == 3


async def test_requests_that_miss_at_the_same_moment_share_one_read(clock: ManualClock):
    """Under load an expired entry is missed by every request in flight: a shared lookup is
    read once for all of them; a caller that gives up leaves the read to the others; a
    request that comes after a change reads again rather than joining the older read; a
    failed read fails those waiting for it and is not kept."""
    lookups = Lookups(clock)
    reads: list[str] = []
    release = asyncio.Event()

    def reader(value: str) -> Callable[[], Awaitable[str]]:
        async def read() -> str:
            reads.append(value)
            await release.wait()
            if value == "broken":
                raise OSError("connection lost")
            return value

        return read

    waiting = [
        asyncio.ensure_future(lookups.get("k", reader("v1"), shared=True)) for _ in range(20)
    ]
    await asyncio.sleep(0)
    waiting[0].cancel()  # its client went away
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting[1:]) == ["v1"] * 19
    assert reads == ["v1"]
    assert await lookups.get("k", reader("unused"), shared=True) == "v1"  # kept

    release.clear()
    await clock.advance(LOCAL_TTL + 0.01)
    before = asyncio.ensure_future(lookups.get("k", reader("old"), shared=True))
    await asyncio.sleep(0)
    await lookups.changed()
    after = asyncio.ensure_future(lookups.get("k", reader("new"), shared=True))
    await asyncio.sleep(0)
    release.set()
    assert (await before, await after) == ("old", "new")
    assert reads == ["v1", "old", "new"]
    assert await lookups.get("k", reader("unused"), shared=True) == "new"

    release.clear()
    lookups.forget()
    failing = [
        asyncio.ensure_future(lookups.get("k", reader("broken"), shared=True)) for _ in range(3)
    ]
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert [type(o) for o in outcomes] == [OSError] * 3
    assert reads == ["v1", "old", "new", "broken"]
    assert await lookups.get("k", reader("again"), shared=True) == "again"


async def test_lookups_in_a_callers_transaction_are_not_shared(clock: ManualClock):
    """A read that runs in its caller's transaction is that caller's own: never joined."""
    lookups = Lookups(clock)
    reads = 0
    release = asyncio.Event()

    async def read() -> int:
        nonlocal reads
        reads += 1
        await release.wait()
        return reads

    both = [asyncio.ensure_future(lookups.get("k", read)) for _ in range(2)]
    await asyncio.sleep(0)
    release.set()
    assert sorted(await asyncio.gather(*both)) == [2, 2]
    assert reads == 2
