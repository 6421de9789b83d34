"""Every SQL statement the database runs while counting, on the connections checked out of
the pool: on PostgreSQL as asyncpg runs them (SQLAlchemy's and those of ``Database.driver``),
on SQLite as sqlite3 runs them (SQLAlchemy's and those of ``Database.sqlite``)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event

from ringflow.storage.db import Database

# What asyncpg runs the first time a connection meets a type (an array of ids, say): JIT off,
# the type's lookup, JIT back.
_INTROSPECTION = ("typeinfo_tree", "set_config('jit'")


class Statements:
    """``with Statements(db) as seen:``; ``await settled()`` before reading ``seen`` (asyncpg
    reports its statements on the loop's next turn). Connections checked out before the block
    began are not watched."""

    def __init__(self, db: Database) -> None:
        self.seen: list[str] = []  # on SQLite BEGIN, COMMIT and ROLLBACK too
        self._engine = db.engine.sync_engine
        self._pool = db.engine.sync_engine.pool
        # Each committed transaction's statements, and each connection's since its last commit.
        self.committed: list[list[str]] = []
        self._open: dict[int, list[str]] = {}
        self._loggers: dict[int, Any] = {}

    @property
    def commits(self) -> int:
        """Transactions committed: each a COMMIT the driver ran."""
        return len(self.committed)

    def _run(self, key: int, statement: str) -> None:
        """A statement run on connection ``key`` (on SQLite in the connection's thread)."""
        self.seen.append(" ".join(statement.split()))
        if self.seen[-1].rstrip(";") == "COMMIT":
            self.committed.append(self._open.pop(key, []))
        else:
            self._open.setdefault(key, []).append(self.seen[-1])

    def _logged(self, key: int, record: Any) -> None:
        if any(mark in record.query for mark in _INTROSPECTION):
            return  # asyncpg learning a type, once per connection: not the code's statement
        self._run(key, record.query)

    def _out(self, dbapi_connection: Any, *_: Any) -> None:
        key = id(dbapi_connection)
        driver = dbapi_connection.driver_connection
        if self._engine.dialect.name == "sqlite":  # every statement, SQLAlchemy's or not
            driver.trace(lambda statement: self._run(key, statement))
            return
        self._loggers[key] = lambda record: self._logged(key, record)
        driver.add_query_logger(self._loggers[key])

    def _back(self, dbapi_connection: Any, *_: Any) -> None:
        if dbapi_connection is None:
            return
        driver = dbapi_connection.driver_connection
        if self._engine.dialect.name == "sqlite":
            driver.trace(None)
        elif id(dbapi_connection) in self._loggers:
            driver.remove_query_logger(self._loggers.pop(id(dbapi_connection)))

    def _listeners(self) -> list[tuple[Any, str, Any]]:
        return [(self._pool, "checkout", self._out), (self._pool, "checkin", self._back)]

    def __enter__(self) -> list[str]:
        for target, name, listener in self._listeners():
            event.listen(target, name, listener)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        for target, name, listener in self._listeners():
            event.remove(target, name, listener)


async def settled() -> None:
    """Let asyncpg's query loggers (called soon after each statement) run."""
    for _ in range(3):
        await asyncio.sleep(0)
