"""Housekeeping on every backend: heartbeats, calls of silent processes, stale queued calls."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select, update

from ringflow.accounts import Accounts
from ringflow.calls.dispatcher import Dispatcher
from ringflow.calls.housekeeping import Housekeeper
from ringflow.calls.requests import CallRequest
from ringflow.config import Settings
from ringflow.storage.models import Account, Call, Instance, OutboxMessage


async def setup(db, clock, **settings_kw):
    settings = Settings(instance="me", **settings_kw)
    accounts = Accounts(db, clock)
    creds = await accounts.create_account("acme")
    await accounts.add_number(creds.account_sid, "08039591234")
    async with db.session() as s:
        account = (await s.execute(select(Account))).scalar_one()
    forever = asyncio.Event()

    async def carry(call, account, line) -> None:  # a call this process is carrying, forever
        await forever.wait()

    dispatcher = Dispatcher(db, clock, settings, carry, lambda: None)
    released: list[int] = []

    async def release(account_id: int) -> None:
        released.append(account_id)
        await dispatcher.release(account_id)

    keeper = Housekeeper(db, clock, settings, release, lambda: None)
    return account, dispatcher, keeper, released


def request(account: Account, **kw) -> CallRequest:
    return CallRequest(
        account_id=account.id,
        shape="numbers",
        from_number="+919812345678",
        to_number="+919812345679",
        caller_id="+918039591234",
        status_callback="http://hooks.example/status",
        **kw,
    )


async def test_calls_of_a_silent_instance_are_finished(db, clock):
    account, dispatcher, keeper, _ = await setup(db, clock)
    dead, _ = await dispatcher.submit(request(account))
    alive, _ = await dispatcher.submit(request(account))
    old = clock.wall() - dt.timedelta(seconds=Settings().instance_lease + 1)
    async with db.session() as s:
        s.add(Instance(name="dead", started_at=old, heartbeat_at=old))
        s.add(Instance(name="alive", started_at=old, heartbeat_at=clock.wall()))
        await s.execute(update(Call).where(Call.sid == dead.sid).values(owner="dead"))
        await s.execute(update(Call).where(Call.sid == alive.sid).values(owner="alive"))

    await keeper.tend()

    async with db.session() as s:
        calls = {c.sid: c for c in (await s.execute(select(Call))).scalars()}
        names = set((await s.execute(select(Instance.name))).scalars())
        callbacks = (await s.execute(select(OutboxMessage.idempotency_key))).scalars().all()
    assert calls[dead.sid].status == "failed"  # it was ringing: nobody talked
    assert calls[dead.sid].legs[0].status == "canceled"
    assert calls[dead.sid].reason == "ringflow instance dead stopped while carrying the call"
    assert calls[alive.sid].status == "ringing"
    assert names == {"me", "alive"}
    assert callbacks == [f"{dead.sid}:terminal"]
    await dispatcher.stop()


async def test_calls_queued_too_long_fail_with_a_reason(db, clock):
    account, dispatcher, keeper, released = await setup(db, clock, queue_max_age=300)
    async with db.session() as s:
        await s.execute(update(Account).values(max_concurrent_calls=0))  # no free line at all
    first, started = await dispatcher.submit(request(account))
    assert not started
    await clock.advance(200)
    second, _ = await dispatcher.submit(request(account))
    await clock.advance(150)

    await keeper.tend()

    async with db.session() as s:
        calls = {c.sid: c for c in (await s.execute(select(Call))).scalars()}
    assert calls[first.sid].status == "failed"
    assert calls[first.sid].reason == "waited more than 300s in the queue for a free line"
    assert calls[second.sid].status == "queued"
    assert released == [account.id]  # accounts still waiting get their lines looked at
    await dispatcher.stop()


async def test_heartbeat_is_written_and_removed_on_stop(db, clock):
    _, dispatcher, keeper, _ = await setup(db, clock)
    await keeper.tend()
    async with db.session() as s:
        me = await s.get(Instance, "me")
    assert me is not None and me.heartbeat_at == clock.wall()
    await keeper.stop()
    async with db.session() as s:
        assert await s.get(Instance, "me") is None
    await dispatcher.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_running_server_prunes_its_prompt_cache_on_a_schedule(database_url, tmp_path):
    """Prompts unused past the age go, then the least recently used beyond the size cap."""
    import os
    import time

    from ringflow.calls.housekeeping import PRUNE_EVERY
    from ringflow.media.audio import Prompt
    from ringflow.media.cache import PromptCache
    from tests.e2e import running

    async with running(
        database_url, data_dir=str(tmp_path), prompt_cache_max_age=3600, prompt_cache_max_mb=1
    ) as rig:
        cache = rig.services.tts.cache
        other = PromptCache(cache.directory)  # another process rendered these: not in memory
        now = time.time()
        files = {}
        for name, age, seconds in [
            ("stale", 7200, 0.1),
            ("older", 600, 40.0),
            ("newer", 60, 40.0),
            ("hot", 9000, 0.1),
        ]:
            key = name.encode().hex().ljust(64, "0")
            # "hot" is in this server's memory: a prompt live flows keep playing.
            await asyncio.to_thread(
                (cache if name == "hot" else other).put, key, Prompt.silence(seconds)
            )
            os.utime(cache.path(key), (now - age, now - age))
            files[name] = cache.path(key)
        other.close()

        await rig.clock.advance(PRUNE_EVERY)
        for _ in range(500):  # the pass runs on a thread
            if not files["stale"].exists() and not files["older"].exists():
                break
            await asyncio.sleep(0.01)
        assert not files["stale"].exists()  # unused for two hours, past the one-hour age
        assert not files["older"].exists()  # two 40 s prompts (1.3 MB) exceed 1 MB: oldest goes
        assert files["newer"].exists()
        assert files["hot"].exists()  # old on disk, but in use from memory
