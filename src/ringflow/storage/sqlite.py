"""SQLite's connection: aiosqlite's, with a statement run in one trip to its thread, and the
transactions every call runs in one trip each.

aiosqlite runs each call on the sqlite3 connection in a thread of its own and hands the result
back to the event loop. SQLAlchemy's adapter makes four such calls a statement: open a cursor,
execute, fetch the rows, close the cursor. Each one waits for the loop to come round, and on
SQLite (one writer, one pooled connection) every other transaction waits with it. Here the
cursor opens, executes, fetches and closes in the one trip of ``execute``; the rest answers
from what it brought back. Commit and rollback make no trip when no transaction is open: the
pool rolls back every connection given back, after a commit too, and SQLite begins no
transaction for a session that only read.

The transactions of a call's admission, its status changes and its callbacks' attempts go
further (``Database.sqlite``): each is a function run in the thread (``Connection.transact``)
on ``Statement``s, Core statements compiled once, without SQLAlchemy's execution around them,
which was half of what those transactions cost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Self, cast

import aiosqlite
from sqlalchemy import ClauseElement
from sqlalchemy.engine import make_url
from sqlalchemy.sql.compiler import SQLCompiler

_SQLITE = make_url("sqlite+aiosqlite://").get_dialect()()
_MISSING = object()


class Statement:
    """A Core statement compiled once for SQLite, for work run in the connection's thread
    (``Connection.run``): its parameters converted by the columns' own types (times, JSON,
    flags) and its rows' columns read back by them, as SQLAlchemy itself would."""

    def __init__(self, statement: ClauseElement, keys: Sequence[str] | None = None) -> None:
        """``keys``: an INSERT's columns (its parameters' names), when it names no values."""
        compiled = cast(
            SQLCompiler, statement.compile(dialect=_SQLITE, column_keys=keys and list(keys))
        )
        self.sql = compiled.string
        binds = compiled.binds
        # (name, how its value is converted, the value the statement itself gives it: what
        # ``.values(state="delivered")`` or ``attempts + 1`` write in)
        self._params = [
            (
                name,
                binds[name].type.dialect_impl(_SQLITE).bind_processor(_SQLITE),
                _MISSING if binds[name].required else binds[name].effective_value,
            )
            for name in compiled.positiontup or ()
        ]
        # The columns it reads: a SELECT's, or an INSERT's or UPDATE's RETURNING.
        self._columns = [
            column.type.dialect_impl(_SQLITE).result_processor(_SQLITE, None)
            for column in getattr(statement, "exported_columns", ())
        ]

    def _values(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, convert, given in self._params:
            value = params.get(name, given)
            if value is _MISSING:
                raise KeyError(f"no value for the parameter {name!r} of {self.sql!r}")
            values.append(value if convert is None else convert(value))
        return values

    def _read(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if read is None else read(value)
            for value, read in zip(row, self._columns, strict=True)
        )

    def execute(self, connection: sqlite3.Connection, params: Mapping[str, Any]) -> int:
        """Run it with ``params`` by name; the rows it changed."""
        return connection.execute(self.sql, self._values(params)).rowcount

    def executemany(
        self, connection: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]
    ) -> None:
        """Run it once for each of ``rows``."""
        connection.executemany(self.sql, [self._values(params) for params in rows])

    def rows(self, connection: sqlite3.Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run it with ``params`` by name; its rows, read back."""
        cursor = connection.execute(self.sql, self._values(params))
        return [self._read(row) for row in cursor.fetchall()]


def begin(connection: sqlite3.Connection) -> None:
    """Begin a transaction that writes: SQLite's write lock taken at once (a transaction that
    read first and then wanted it could find another process's writer there)."""
    connection.execute("BEGIN IMMEDIATE")


def _transaction(connection: sqlite3.Connection, work: Callable[..., Any], args: Any) -> Any:
    if not connection.in_transaction:
        begin(connection)
    try:
        result = work(connection, *args)
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
    return result


# What the cursor brought back from one execute: rows, description, rowcount, lastrowid.
_Outcome = tuple[list[Any], Any, int, int | None]


def _one_statement(
    connection: sqlite3.Connection, sql: str, parameters: Any, many: bool
) -> _Outcome:
    """In the connection's thread: one statement from cursor to closed cursor."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return rows, description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.rollback()


class Cursor:
    """The part of aiosqlite's cursor SQLAlchemy's adapter uses, one trip per statement."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def _run(self, sql: str, parameters: Any, many: bool) -> Cursor:
        outcome = await self._connection.run(_one_statement, sql, parameters, many)
        self._rows, self.description, self.rowcount, self.lastrowid = outcome
        return self

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        return await self._run(sql, () if parameters is None else parameters, False)

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        return await self._run(sql, parameters, True)

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        taken, self._rows = self._rows[:size], self._rows[size:]
        return taken

    async def fetchall(self) -> list[Any]:
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        self._rows = []


class Connection(aiosqlite.Connection):
    """aiosqlite's connection with ``Cursor`` for its cursors, whose commit and rollback make
    no trip when there is no transaction to end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Trips asked for (counted on the loop) and done (counted in the thread, even when the
        # one who asked was cancelled): equal, the thread is idle, and the sqlite3 connection
        # can be read from the loop.
        self._asked = 0
        self._done = 0

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def counted() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                self._done += 1

        self._asked += 1
        execute: Any = super()._execute  # aiosqlite's own, untyped
        return await execute(counted)

    def _idle_outside_transaction(self) -> bool:
        return self._asked == self._done and not self._conn.in_transaction

    async def run(self, work: Callable[..., Any], *args: Any) -> Any:
        """``work(sqlite3_connection, *args)`` in the connection's thread."""
        return await self._execute(work, self._conn, *args)

    async def transact(self, work: Callable[..., Any], *args: Any) -> Any:
        """``run(work, *args)`` in a transaction (``begin``; or the one an earlier ``run``
        began), committed in the same trip, or rolled back there if ``work`` raises."""
        return await self._execute(_transaction, self._conn, work, args)

    def trace(self, callback: Callable[[str], object] | None) -> None:
        """From now on ``callback`` gets each statement the connection runs, in its thread
        (None: no more). At once, unlike aiosqlite's ``set_trace_callback``, which waits for
        a trip: for a pool's events, which cannot wait."""
        self._conn.set_trace_callback(callback)

    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)

    async def commit(self) -> None:
        if not self._idle_outside_transaction():  # a session that only read began none
            await self._execute(self._conn.commit)

    async def rollback(self) -> None:
        # The pool rolls back every connection given back, after a commit too.
        if not self._idle_outside_transaction():
            await self._execute(_rollback, self._conn)


def creator(url: str, **defaults: Any) -> Callable[[], Awaitable[Connection]]:
    """The engine's ``async_creator`` for the database at ``url``: sqlite3's arguments as
    SQLAlchemy reads them from the URL, over ``defaults``."""
    parsed = make_url(url)
    args, kwargs = cast(
        tuple[list[Any], dict[str, Any]], parsed.get_dialect()().create_connect_args(parsed)
    )

    # Used from its thread only, but read from the loop while that is idle (``Connection``).
    kwargs["check_same_thread"] = False

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(*args, **{**defaults, **kwargs})
        return connection

    async def connect() -> Connection:
        connection = Connection(connector, iter_chunk_size=64)
        connection._thread.daemon = True  # as SQLAlchemy's own: a process may exit with it open
        await connection
        return connection

    return connect
