"""SQLite's connection (``storage/sqlite.py``): a statement is one trip to the connection's
thread, a transaction of the hot path one trip too, and what runs there reads and writes the
rows exactly as SQLAlchemy does."""

import datetime as dt
import logging
from typing import Self

import pytest
from sqlalchemy import insert, select

from ringflow.storage import sqlite
from ringflow.storage.models import Account

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
_accounts = Account.__table__
_INSERT = sqlite.Statement(insert(_accounts), ["sid", "name", "time_zone", "created_at"])
_READ = sqlite.Statement(select(_accounts.c.sid, _accounts.c.created_at).order_by(_accounts.c.id))


def _add(connection, sid):
    _INSERT.execute(
        connection,
        {"sid": sid, "name": sid, "time_zone": "Asia/Kolkata", "created_at": _AT},
    )


_AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=IST)


class Trips(logging.Handler):
    """The trips made to aiosqlite's thread (it logs each one it runs)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("executing"):
            self.count += 1

    def __enter__(self) -> Self:
        logger = logging.getLogger("aiosqlite")
        self._level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("aiosqlite")
        logger.removeHandler(self)
        logger.setLevel(self._level)


async def test_a_statement_is_one_trip_and_a_session_that_only_read_commits_none(db):
    """SQLAlchemy's adapter asks aiosqlite for four things a statement (a cursor, the execute,
    the rows, the close), each a trip to the thread that the whole database waits behind."""
    async with db.session() as session:  # the pool's connection opened before counting
        await session.execute(select(1))
    with Trips() as trips:
        async with db.session() as session:
            assert (await session.execute(select(_accounts.c.sid))).all() == []
    assert trips.count == 1  # no commit, and no rollback as the pool takes it back
    with Trips() as trips:
        async with db.session() as session:
            session.add(Account(sid="a1", name="A", time_zone="Asia/Kolkata", created_at=_AT))
    assert trips.count == 2  # the insert and the commit


async def test_work_in_the_thread_reads_and_writes_as_sqlalchemy_does(db):
    async with db.sqlite() as connection:
        await connection.transact(_add, "a1")
    async with db.session() as session:
        stored = (await session.execute(select(Account))).scalar_one()
    assert (stored.sid, stored.created_at) == ("a1", _AT)  # aware, the same instant
    async with db.session() as session:
        session.add(Account(sid="a2", name="B", time_zone="Asia/Kolkata", created_at=_AT))
    async with db.sqlite() as connection:
        rows = await connection.run(_READ.rows, {})
    assert rows == [("a1", _AT), ("a2", _AT)]
    assert rows[0][1].tzinfo is dt.UTC


async def test_work_that_raises_writes_nothing_and_leaves_no_transaction_open(db):
    def add_then_fail(connection):
        _add(connection, "a1")
        raise RuntimeError("no")

    async with db.sqlite() as connection:
        with pytest.raises(RuntimeError):
            await connection.transact(add_then_fail)
    # A transaction begun by one trip and left by code that raised before the next.
    with pytest.raises(RuntimeError):
        async with db.sqlite() as connection:
            await connection.run(sqlite.begin)
            await connection.run(_add, "a2")
            raise RuntimeError("the caller gave up")
    async with db.session() as session:
        session.add(Account(sid="a3", name="C", time_zone="Asia/Kolkata", created_at=_AT))
    async with db.session() as session:
        assert (await session.execute(select(Account.sid))).scalars().all() == ["a3"]
