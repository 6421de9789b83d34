"""The database handle: engine, sessions and migrations."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from ringflow.clock import Clock

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
                url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60
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
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection without a transaction of ours: each statement commits by itself (one
        round trip for a statement that does all its work at once)."""
        with self._busy():
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    async def close(self) -> None:
        await self.engine.dispose()


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
