"""Every SQL statement the database runs while counting: those SQLAlchemy executes and those
run on a pooled connection's own asyncpg connection (``Database.driver``)."""

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
    began are not watched for the driver's statements."""

    def __init__(self, db: Database) -> None:
        self.seen: list[str] = []
        self._engine = db.engine.sync_engine
        self._pool = db.engine.sync_engine.pool
        self._sqlite_commits = 0

    @property
    def commits(self) -> int:
        """Transactions committed: on PostgreSQL each is a COMMIT the driver ran (SQLAlchemy's
        transactions too go through it), on SQLite SQLAlchemy's commits."""
        return self._sqlite_commits + sum(s.rstrip(";") == "COMMIT" for s in self.seen)

    def _committed(self, _conn: Any) -> None:
        self._sqlite_commits += 1

    def _executed(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(" ".join(statement.split()))

    def _logged(self, record: Any) -> None:
        if any(mark in record.query for mark in _INTROSPECTION):
            return  # asyncpg learning a type, once per connection: not the code's statement
        self.seen.append(" ".join(record.query.split()))

    def _out(self, dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(self._logged)

    def _back(self, dbapi_connection: Any, *_: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.driver_connection.remove_query_logger(self._logged)

    def _listeners(self) -> list[tuple[Any, str, Any]]:
        watched: list[tuple[Any, str, Any]] = [
            (self._engine, "before_cursor_execute", self._executed)
        ]
        if self._engine.dialect.name == "sqlite":
            return [*watched, (self._engine, "commit", self._committed)]
        return [*watched, (self._pool, "checkout", self._out), (self._pool, "checkin", self._back)]

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
