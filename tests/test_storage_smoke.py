import asyncio
import datetime as dt

import pytest
from sqlalchemy import bindparam, event, select, text

from ringflow.config import Settings
from ringflow.errors import ConfigError
from ringflow.storage.db import Database, Prepared, quoted, stored
from ringflow.storage.models import Account

UTC = dt.UTC


async def test_datetimes_come_back_aware_utc(db):
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    async with db.session() as s:
        s.add(Account(sid="a1", name="A", time_zone="Asia/Kolkata", created_at=at))
    async with db.session() as s:
        acc = (await s.execute(select(Account))).scalar_one()
    assert acc.created_at == at
    assert acc.created_at.tzinfo is not None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_ends_a_session_left_idle_in_a_transaction(db):
    """A transaction a cancelled task left open, its connection never given back to the pool,
    must not keep its row locks for the life of the process: every connection of ringflow's
    carries PostgreSQL's idle-in-transaction timeout."""
    async with db.engine.connect() as conn:
        setting = await conn.scalar(text("SHOW idle_in_transaction_session_timeout"))
    assert setting == "1min"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_busy_postgresql_pool_waits_for_a_connection_and_opens_no_extra_one(database_url):
    """Under load every connection may be busy; a transaction then waits for one rather than
    opening a connection that is closed again once used (a new backend, a TLS attempt and every
    statement prepared again, over and over)."""
    db = Database(database_url, pool_size=3)
    opened = 0

    def count(*_args):
        nonlocal opened
        opened += 1

    event.listen(db.engine.sync_engine, "connect", count)
    try:

        async def hold() -> int:
            async with db.session() as s:
                return await s.scalar(text("SELECT 1 FROM pg_sleep(0.05)"))

        results = await asyncio.gather(*(hold() for _ in range(12)))
    finally:
        await db.close()
    assert results == [1] * 12
    assert opened == 3


def test_the_database_pool_setting_is_read_and_checked():
    assert Settings.from_env({"RINGFLOW_DATABASE_POOL": "25"}).database_pool == 25
    with pytest.raises(ConfigError, match="RINGFLOW_DATABASE_POOL must be at least 1"):
        Settings.from_env({"RINGFLOW_DATABASE_POOL": "0"})


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_pool_stays_usable_after_a_driver_connection_dies_or_is_cancelled(
    database_url,
):
    """``Database.driver`` bypasses SQLAlchemy's execution, which is what notices a dead
    connection: it must drop such a connection itself, so the next user of the pool's only
    connection gets a working one. A statement cancelled in flight leaves a connection that
    works for the next user too."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.driver() as driver:
            victim = await driver.fetchval("SELECT pg_backend_pid()")
        async with db.session() as s:  # the pool's one connection, through SQLAlchemy
            assert await s.scalar(text("SELECT pg_backend_pid()")) == victim
        killer = Database(database_url, pool_size=1)
        async with killer.driver() as other:
            assert await other.fetchval("SELECT pg_terminate_backend($1)", victim)
        await killer.close()
        with pytest.raises(Exception):  # noqa: B017 (asyncpg says so in its own words)
            async with db.driver() as driver:
                await driver.fetchval("SELECT 1")
        async with db.driver() as driver:
            fresh = await driver.fetchval("SELECT pg_backend_pid()")
        assert fresh != victim

        async def slow() -> None:
            async with db.driver() as driver:
                await driver.fetchval("SELECT 1 FROM pg_sleep(5)")

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.driver() as driver:
            assert await driver.fetchval("SELECT 2") == 2
    finally:
        await db.close()


def test_a_prepared_statement_refuses_parameters_that_would_need_converting():
    """``Prepared`` runs SQL on the driver with nothing converting its values: a parameter whose
    column type converts it (aware times to naive UTC, JSON to text) must be refused when the
    statement is built, not written wrong; plain ones (an id) pass."""
    lock = Prepared(select(Account.id).where(Account.id == bindparam("account_id")))
    assert lock.names == ("account_id",) and "$1" in lock.sql
    with pytest.raises(AssertionError, match="created_at"):
        Prepared(select(Account.id).where(Account.created_at < bindparam("created_at")))


def test_times_are_stored_as_naive_utc_from_any_zone():
    """``stored`` (every time the driver's statements write, and their JSON) gives naive UTC
    whether the time came in UTC, as the clocks give it, or in another zone."""
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    noon_utc = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert stored(noon_utc) == dt.datetime(2026, 1, 1, 12, 0)
    assert stored(noon_utc.astimezone(ist)) == dt.datetime(2026, 1, 1, 12, 0)
    assert stored(None) is None


def test_only_ringflow_s_own_words_are_written_into_sql():
    """``quoted`` (what ``constant`` writes into a statement) takes a status or a state and
    nothing that could change the statement: a quote, a ``:name`` text() would bind, a space."""
    assert quoted("in-progress") == "'in-progress'" and quoted("no_answer") == "'no_answer'"
    for bad in ("it's", "queued' OR '1'='1", ":account_id", "in progress", "", "Queued"):
        with pytest.raises(ValueError, match="not a word"):
            quoted(bad)
