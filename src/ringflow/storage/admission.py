"""Admission's statements: an account's lines counted and its queue taken, under its row lock.

Every process that admits calls for an account first locks the account's row (``FOR NO KEY
UPDATE`` on PostgreSQL, so rows that merely reference the account, such as new callbacks, are
not held up). The count of its calls in progress and the choice of the next queued ones then
happen one process at a time, which makes the account's limit exact and its queue FIFO across
processes. SQLite has a single writer and ignores the lock: one process serves it.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from collections.abc import Collection
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.storage import sqlite
from ringflow.storage.calls import change_rows, write_change
from ringflow.storage.db import Prepared, constant, constants, read_back
from ringflow.storage.models import Account, Call, Leg


@dataclasses.dataclass(frozen=True)
class AccountLines:
    """An account (its own limits; None: the server's default) and its calls now."""

    account: Account
    active: int  # calls ringing or in progress
    queued: int

    @property
    def max_concurrent_calls(self) -> int | None:
        return self.account.max_concurrent_calls


_Row = TypeVar("_Row", Account, Call, Leg)

# Built once, with parameters: admission runs for every call (see storage/calls.py).
_accounts, _calls = Account.__table__, cast(Table, Call.__table__)
_legs = cast(Table, Leg.__table__)
_ACCOUNT_COLUMNS = list(_accounts.columns)
_CALL_COLUMNS = list(_calls.columns)
_LEG_COLUMNS = list(_legs.columns)
_LEGS_OF = (
    select(*_LEG_COLUMNS)
    .where(_legs.c.call_id.in_(bindparam("ids", expanding=True)))
    .order_by(_legs.c.call_id, _legs.c.leg_no)
)
_SET_OWNER = update(_calls).where(_calls.c.id == bindparam("b_id")).values(owner=bindparam("owner"))
_LOCK_ACCOUNT = (
    select(*_ACCOUNT_COLUMNS)
    .where(_accounts.c.id == bindparam("account_id"))
    .with_for_update(key_share=True)
)


# The statements that pick an account's live calls out of its history are built once for
# each set of statuses, which they name as constants, never as parameters (``db.constant``).


@functools.cache
def _oldest_queued(queued: str) -> Select[Any]:
    return (
        select(*_CALL_COLUMNS)
        .where(_calls.c.account_id == bindparam("account_id"), _calls.c.status == constant(queued))
        .order_by(_calls.c.created_at, _calls.c.id)
        .limit(bindparam("count"))
        .with_for_update(skip_locked=True)
    )


@functools.cache
def _count_lines(statuses: tuple[str, ...]) -> Select[Any]:
    return (
        select(_calls.c.status, func.count())
        .where(
            _calls.c.account_id == bindparam("account_id"),
            _calls.c.status.in_(constants(statuses)),
        )
        .group_by(_calls.c.status)
    )


@functools.cache
def _count_lines_now(statuses: tuple[str, ...]) -> Prepared:
    return Prepared(_count_lines(statuses))


# The same count, row by row, each row locked: a call whose change is being written waits
# for that write, then is counted with its new status. ``FOR NO KEY UPDATE``, the lock an
# UPDATE of the row takes: enough to wait for one, and rows that merely reference these calls
# (another change's timeline steps and callbacks) are not held up.
@functools.cache
def _settled_lines(statuses: tuple[str, ...]) -> Select[Any]:
    return (
        select(_calls.c.status)
        .where(
            _calls.c.account_id == bindparam("account_id"),
            _calls.c.status.in_(constants(statuses)),
        )
        .with_for_update(key_share=True)
    )


def _statuses(active: Collection[str], queued: str) -> tuple[str, ...]:
    """The statuses that count, in one order (each set builds its statements once)."""
    return (*sorted(str(status) for status in active), str(queued))


async def lock_lines(
    session: AsyncSession,
    account_id: int,
    active: Collection[str],
    queued: str,
    settled: bool = False,
) -> AccountLines | None:
    """Lock the account's admission for this transaction and count its lines (None: no account).

    ``active`` are the statuses that hold a line, ``queued`` the status of a waiting call.
    ``settled``: count only once the changes being written to the account's calls have been
    (each counted row locked, on PostgreSQL): a call ending at this moment is not counted as
    holding its line.
    """
    row = (await session.execute(_LOCK_ACCOUNT, {"account_id": account_id})).one_or_none()
    if row is None:
        return None
    params = {"account_id": account_id}
    statuses = _statuses(active, queued)
    if settled:
        counts: dict[str, int] = {}
        for (status,) in (await session.execute(_settled_lines(statuses), params)).all():
            counts[status] = counts.get(status, 0) + 1
    else:
        count = _count_lines(statuses)
        counts = {status: n for status, n in (await session.execute(count, params))}
    return _lines(_held(Account, _ACCOUNT_COLUMNS, row), counts, active, queued)


# The lock and the count on PostgreSQL's driver (``Database.driver``, in a transaction of its
# own): what admits a batch of new calls runs for every call.
_LOCK_ACCOUNT_NOW = Prepared(_LOCK_ACCOUNT)


async def lock_lines_at_once(
    driver: Any, account_id: int, active: Collection[str], queued: str
) -> AccountLines | None:
    """``lock_lines`` (not ``settled``) on ``driver``, inside its transaction."""
    row = await _LOCK_ACCOUNT_NOW.row(driver, {"account_id": account_id})
    if row is None:
        return None
    account = _held(Account, _ACCOUNT_COLUMNS, [read_back(value) for value in row])
    count = _count_lines_now(_statuses(active, queued))
    counts = {status: n for status, n in await count.rows(driver, {"account_id": account_id})}
    return _lines(account, counts, active, queued)


# The same on SQLite, in its thread (``Database.sqlite``): the transaction begun (SQLite's write
# lock, the one that counts there), the account read, its lines counted, in one trip.
_LOCK_ACCOUNT_SQLITE = sqlite.Statement(_LOCK_ACCOUNT)


@functools.cache
def _count_lines_sqlite(statuses: tuple[str, ...]) -> sqlite.Statement:
    return sqlite.Statement(_count_lines(statuses))


def _lock_and_count(
    connection: sqlite3.Connection, account_id: int, count: sqlite.Statement
) -> tuple[Any, list[Any]]:
    sqlite.begin(connection)
    params = {"account_id": account_id}
    rows = _LOCK_ACCOUNT_SQLITE.rows(connection, params)
    return (rows[0] if rows else None), count.rows(connection, params)


async def lock_lines_in_thread(
    connection: sqlite.Connection, account_id: int, active: Collection[str], queued: str
) -> AccountLines | None:
    """``lock_lines`` (not ``settled``) on SQLite, beginning a transaction on ``connection``
    that the caller ends (``Connection.transact``)."""
    count = _count_lines_sqlite(_statuses(active, queued))
    row, counted = await connection.run(_lock_and_count, account_id, count)
    if row is None:
        return None
    account = _held(Account, _ACCOUNT_COLUMNS, row)
    return _lines(account, dict(counted), active, queued)


def _lines(
    account: Account, counts: dict[str, int], active: Collection[str], queued: str
) -> AccountLines:
    """The account's lines from its calls counted by status."""
    return AccountLines(
        account=account,
        active=sum(counts.get(status, 0) for status in active),
        queued=counts.get(queued, 0),
    )


async def oldest_queued(
    session: AsyncSession, account_id: int, queued: str, count: int
) -> list[Call]:
    """The account's ``count`` oldest waiting calls, locked (the account's lock must be held),
    read with Core and held as objects of this process, legs and all.

    A call locked by someone else is being hung up (live call control): it is skipped.
    """
    params = {"account_id": account_id, "count": count}
    rows = (await session.execute(_oldest_queued(str(queued)), params)).all()
    if not rows:
        return []
    found = [_held(Call, _CALL_COLUMNS, row) for row in rows]
    legs: dict[int, list[Leg]] = {call.id: [] for call in found}
    for leg_row in (await session.execute(_LEGS_OF, {"ids": list(legs)})).all():
        leg = _held(Leg, _LEG_COLUMNS, leg_row)
        legs[leg.call_id].append(leg)
    for call in found:
        call.legs = legs[call.id]
    return found


async def admit_queued(
    session: AsyncSession,
    call: Call,
    *,
    queued: str,
    steps: list[dict[str, Any]],
    callbacks: list[dict[str, Any]],
) -> list[int]:
    """Write the admission of a queued call (``oldest_queued``, moved to dialing in memory):
    its new status and owner, its first leg, the step and the callbacks; their ids."""
    rows = change_rows(
        call, expected=queued, legs=[1], new_legs=[], steps=steps, callbacks=callbacks
    )
    ids = await write_change(session, rows)
    assert ids is not None, f"call {call.sid} moved while locked"
    await session.execute(_SET_OWNER, {"b_id": call.id, "owner": call.owner})
    return ids


def _held(model: type[_Row], columns: list[Any], row: Any) -> _Row:
    """A row read with Core as an object of ``model`` that no session tracks."""
    return model(**{column.key: value for column, value in zip(columns, row)})


async def accounts_waiting(session: AsyncSession, queued: str) -> list[int]:
    """The accounts that have calls waiting."""
    query = select(Call.account_id).where(Call.status == constant(queued)).distinct()
    return list((await session.execute(query)).scalars())
