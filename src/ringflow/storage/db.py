"""The database handle: engine, sessions and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, cast, overload

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import ClauseElement, ColumnElement, String, event, literal_column
from sqlalchemy.engine import CursorResult, Result, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from ringflow.clock import Clock
from ringflow.storage import sqlite

MIGRATIONS = Path(__file__).parent / "migrations"
# A transaction left open by a task cancelled in the middle of it, whose connection the pool
# never got back, would keep its row locks (an account's, a campaign's) until the process
# exits. PostgreSQL ends a session idle inside a transaction for this long; no transaction of
# ringflow's waits between its statements for more than a moment.
IDLE_IN_TRANSACTION_MS = 60_000
# PostgreSQL connections a process keeps open. A transaction that finds them all busy waits
# for one: none is opened beyond them, since under load such extra connections are opened and
# closed over and over (each a new backend, a TLS attempt, type lookups and every statement
# prepared again), which cost a busy server a third of its calls (bench/README.md).
POOL_SIZE = 10


class Database:
    """One engine and session factory per process."""

    def __init__(self, url: str, clock: Clock | None = None, pool_size: int = POOL_SIZE):
        self.url = url
        # Database work is a wait on the outside world: a test clock must not jump over it.
        self._busy = clock.busy if clock is not None else contextlib.nullcontext
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            _ensure_sqlite_dir(url)
            # SQLite has one writer: one pooled connection queues transactions in asyncio
            # instead of leaving them to SQLite's sleeping busy handler (up to 100 ms a retry).
            self.engine: AsyncEngine = create_async_engine(
                url,
                async_creator=sqlite.creator(url, timeout=30),
                pool_size=1,
                max_overflow=0,
                pool_timeout=60,
            )
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=0,
                connect_args=_postgresql_settings(url),
            )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        Never open a session while holding another: on SQLite the pool has one connection.
        """
        with self._busy():
            async with self.sessions() as session, session.begin():
                yield session

    @contextlib.asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """PostgreSQL: a pooled connection's own asyncpg connection, outside any transaction
        (each statement commits by itself), for the few statements every call runs
        (``Prepared``). Executing through SQLAlchemy costs two and a half times what asyncpg
        itself does, and choosing autocommit as much again.

        The connection is taken from the pool itself, without SQLAlchemy's Connection around
        it (half the CPU a checkout). A connection that asyncpg found closed is
        dropped from the pool rather than handed out again (SQLAlchemy's execution, which would
        notice, is not in the way). One whose statement was cancelled in flight asyncpg makes
        ready again itself.
        """
        assert not self.is_sqlite, "the driver's own connection is PostgreSQL's"
        with self._busy():
            pooled = await self.engine.raw_connection()
            dead = False
            try:
                driver: Any = pooled.driver_connection
                try:
                    yield driver
                except Exception:
                    dead = driver.is_closed()
                    raise
            finally:
                # Both in SQLAlchemy's greenlet, as the pool expects. Giving back a connection
                # SQLAlchemy began no transaction on awaits nothing, so no cancellation can cut
                # it short; dropping a dead one closes it, which awaits: that is shielded.
                if dead:
                    await asyncio.shield(greenlet_spawn(pooled.invalidate))
                else:
                    await greenlet_spawn(pooled.close)

    @contextlib.asynccontextmanager
    async def sqlite(self) -> AsyncIterator[sqlite.Connection]:
        """SQLite: the pooled connection itself, for work run in its thread, a transaction in
        one trip (``sqlite.Connection.transact``) rather than a trip a statement through
        SQLAlchemy, for the few transactions every call runs. A transaction left open (work
        that raised between two trips) is rolled back as the connection goes back to the
        pool."""
        assert self.is_sqlite, "the pooled connection's own thread is SQLite's"
        with self._busy():
            pooled = await self.engine.raw_connection()
            try:
                yield cast(sqlite.Connection, pooled.driver_connection)
            finally:
                await greenlet_spawn(pooled.close)

    async def close(self) -> None:
        await self.engine.dispose()


_ASYNCPG = make_url("postgresql+asyncpg://").get_dialect()()


_WORD = re.compile(r"[a-z0-9_.-]+")


def quoted(value: str) -> str:
    """``value``, one of ringflow's own words (a status, a state), as an SQL string constant,
    the same on every backend. Anything else is refused: a quote or a ``:name`` in it would
    change the statement it is written into."""
    if not _WORD.fullmatch(value):
        raise ValueError(f"not a word to write into SQL: {value!r}")
    return f"'{value}'"


def constant(value: str) -> ColumnElement[str]:
    """``value`` written into a statement's SQL rather than sent as a parameter: for values
    ringflow itself names (statuses), never for input.

    For the values that pick out a few rows of many, such as the statuses of live calls: once
    the driver has run a prepared statement five times, PostgreSQL may plan it for any value
    of its parameters, and for "calls of this account in status $2" that plan reads every
    call (a call's end did, 23 ms on an account with 200,000 finished calls). With the value
    written in, every plan knows how few rows have it.
    """
    return literal_column(quoted(value), String)


def constants(values: Iterable[str]) -> list[ColumnElement[str]]:
    """Each of ``values`` as a ``constant``, in one order (for ``column.in_``)."""
    return [constant(value) for value in sorted(str(value) for value in values)]


def postgresql_type(column: ColumnElement[Any]) -> str:
    """How PostgreSQL spells the type of ``column`` (for a record read from JSON)."""
    return column.type.compile(dialect=_ASYNCPG)


class Prepared:
    """A statement compiled once for asyncpg: its SQL with ``$n`` placeholders and the order its
    named parameters go in. None of its parameters may need converting (SQLAlchemy would do it
    on the way; here nothing does), so values are given as the columns keep them (times naive
    UTC, JSON as text)."""

    def __init__(self, statement: ClauseElement) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=_ASYNCPG))
        converted = [
            name
            for name, bind in compiled.binds.items()
            if bind.type.dialect_impl(_ASYNCPG).bind_processor(_ASYNCPG) is not None
        ]
        assert not converted, f"parameters that would not be converted: {converted}"
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())

    async def row(self, driver: Any, params: dict[str, Any]) -> Any:
        """Run it on ``driver`` (``Database.driver``) with ``params`` by name; its first row
        (None: none)."""
        return await driver.fetchrow(self.sql, *[params[name] for name in self.names])

    async def rows(self, driver: Any, params: dict[str, Any]) -> list[Any]:
        """Run it on ``driver`` with ``params`` by name; every row."""
        return list(await driver.fetch(self.sql, *[params[name] for name in self.names]))


async def driver_of(session: AsyncSession) -> Any:
    """The asyncpg connection under ``session`` (PostgreSQL), to run ``Prepared`` statements in
    its transaction. A statement must have run in the session first: SQLAlchemy begins the
    transaction with its first statement, and one run here before would commit by itself."""
    conn = await session.connection()
    return (await conn.get_raw_connection()).driver_connection


def read_back(value: Any) -> Any:
    """A value read by the driver as SQLAlchemy's column types give it: times aware UTC."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


@overload
def stored(value: dt.datetime) -> dt.datetime: ...
@overload
def stored(value: None) -> None: ...
def stored(value: dt.datetime | None) -> dt.datetime | None:
    """A time as the columns keep it (naive UTC, see ``models.UTCDateTime``), for statements
    whose parameters nothing converts (``Prepared``)."""
    if value is None:
        return None
    if value.tzinfo is not dt.UTC:  # the clocks' own times are UTC already
        value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None)


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE matched. ``Session.execute`` is typed as giving a
    ``Result`` whatever it runs; for these statements it is a ``CursorResult``, the one kind that
    has the count."""
    return cast(CursorResult[Any], result).rowcount


def _postgresql_settings(url: str) -> dict[str, Any]:
    """The connect arguments of a PostgreSQL engine: with asyncpg, the session settings."""
    if "+asyncpg" not in url.split("://", 1)[0]:
        return {}
    timeout = str(IDLE_IN_TRANSACTION_MS)
    return {"server_settings": {"idle_in_transaction_session_timeout": timeout}}


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while the server writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL survives a crash of ringflow (only a power cut can lose the last
    # commits) and spares an fsync per transaction.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (synchronous; run before the event loop)."""
    _ensure_sqlite_dir(url) if url.startswith("sqlite") else None
    command.upgrade(alembic_config(url), "head")
