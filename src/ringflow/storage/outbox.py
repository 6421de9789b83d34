"""The outbox's statements: rows written with a transition, claimed under a lease, their
attempts recorded, a destination's rows deferred and resumed.

Claims are one UPDATE each, in a short transaction of its own, so several deliverers (several
processes) share one table: PostgreSQL skips rows another deliverer is claiming
(``FOR UPDATE SKIP LOCKED``); SQLite has a single writer. What a webhook's body is, and when
it is sent, is ``webhooks/``'s business.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.storage import sqlite
from ringflow.storage.db import Prepared, constant, rowcount, stored
from ringflow.storage.models import OutboxAttempt, OutboxMessage


@dataclasses.dataclass(frozen=True)
class Rooms:
    """How many more requests may go out now, per destination and per account."""

    per_destination: int
    destinations: dict[str, int] = dataclasses.field(default_factory=dict)  # those with less
    per_account: int | None = None  # None: no cap per account
    accounts: dict[int, int] = dataclasses.field(default_factory=dict)  # those with less

    @property
    def blocked(self) -> list[str]:
        """The destinations with no room."""
        return sorted(d for d, room in self.destinations.items() if room <= 0)

    @property
    def full(self) -> list[int]:
        """The accounts with no room."""
        return sorted(a for a, room in self.accounts.items() if room <= 0)


@dataclasses.dataclass(frozen=True)
class Lease:
    """Rows written already leased: their own process's deliverer sends them without a claim."""

    owner: str
    until: dt.datetime


async def add_message(session: AsyncSession, row: dict[str, Any]) -> OutboxMessage:
    """A pending webhook row (``webhooks.outbox.outbox_row``) in the caller's transaction."""
    message = OutboxMessage(**row)
    session.add(message)
    await session.flush()  # assigns the id; the caller's commit makes it visible to deliverers
    return message


M = OutboxMessage
# The state of the rows still to send, few among every callback ever delivered: written into
# the statements, so that no plan of theirs reads the delivered ones (``db.constant``).
PENDING = constant("pending")


# A claim ranks only this many times ``limit`` of the oldest due rows: enough to find rows of
# other destinations and accounts behind a busy one's, without sorting a backlog of thousands
# (blocked destinations and accounts are filtered out before, so each claim makes progress).
CANDIDATES_PER_SLOT = 4


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A row this deliverer holds the lease of, with what it needs to send it."""

    id: int
    account_id: int
    event: str
    url: str
    destination: str
    content_type: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int
    lease_until: dt.datetime
    created_at: dt.datetime | None = None  # None: handed over as it was written (just now)


def claimed(row: OutboxMessage) -> Claimed:
    """A row born leased (see ``Lease``), as a claim would have returned it."""
    assert row.lease_until is not None, "only a leased row is ours to send"
    return Claimed(
        id=row.id,
        account_id=row.account_id,
        event=row.event,
        url=row.url,
        destination=row.destination,
        content_type=row.content_type,
        payload=row.payload,
        idempotency_key=row.idempotency_key,
        attempts=row.attempts,
        lease_until=row.lease_until,
        created_at=row.created_at,
    )


async def release_rows(session: AsyncSession, owner: str, ids: list[int]) -> None:
    """Give up ``owner``'s leases of the rows ``ids`` (still pending) so any deliverer may send them."""
    await session.execute(
        update(M)
        .where(M.id.in_(ids), M.state == PENDING, M.lease_owner == owner)
        .values(lease_until=None, lease_owner=None)
        .execution_options(synchronize_session=False)
    )


async def claim(
    session: AsyncSession,
    *,
    owner: str,
    now: dt.datetime,
    lease_until: dt.datetime,
    limit: int,
    rooms: Rooms,
) -> list[Claimed]:
    """Lease up to ``limit`` due rows, oldest first, within each destination's and account's
    room."""
    stmt = claim_statement(owner=owner, now=now, lease_until=lease_until, limit=limit, rooms=rooms)
    rows = (await session.execute(stmt)).all()
    claimed = [Claimed(**row._mapping, lease_until=lease_until) for row in rows]
    return sorted(claimed, key=lambda c: c.id)


# What a claim returns: the fields of Claimed but its lease (rows are matched by name).
CLAIMED_COLUMNS = (
    M.id,
    M.account_id,
    M.event,
    M.url,
    M.destination,
    M.content_type,
    M.payload,
    M.idempotency_key,
    M.attempts,
    M.created_at,
)


def claim_statement(
    *, owner: str, now: dt.datetime, lease_until: dt.datetime, limit: int, rooms: Rooms
) -> Any:
    """The UPDATE ... RETURNING that ``claim`` runs."""
    due = and_(M.state == PENDING, M.next_attempt_at <= now, _lease_free(now))
    if rooms.blocked:
        due = and_(due, M.destination.not_in(rooms.blocked))
    if rooms.full:
        due = and_(due, M.account_id.not_in(rooms.full))
    # By due time alone, the order of ix_outbox_due, so the database reads just these rows;
    # a tie-break on id would make PostgreSQL read and sort every due row first.
    oldest = (
        select(M.id, M.next_attempt_at, M.destination, M.account_id)
        .where(due)
        .order_by(M.next_attempt_at)
        .limit(CANDIDATES_PER_SLOT * limit)
        .subquery()
    )
    # Rank by destination, then what fits by account, so one receiver's or one account's
    # backlog cannot fill the claim.
    by_destination = _ranked(oldest, oldest.c.destination)
    fits = (
        select(by_destination.c.id, by_destination.c.next_attempt_at, by_destination.c.account_id)
        .where(
            by_destination.c.rank
            <= _room(by_destination.c.destination, rooms.destinations, rooms.per_destination)
        )
        .subquery()
    )
    chosen = select(fits.c.id)
    if rooms.per_account is not None:
        by_account = _ranked(fits, fits.c.account_id)
        chosen = select(by_account.c.id).where(
            by_account.c.rank <= _room(by_account.c.account_id, rooms.accounts, rooms.per_account)
        )
        fits = by_account
    chosen = chosen.order_by(fits.c.next_attempt_at, fits.c.id).limit(limit)
    # Checked again on the rows themselves: PostgreSQL re-reads a row that another deliverer
    # leased or recorded meanwhile. The state is compared through coalesce so that the rows are
    # found by id: on a plain ``state = 'pending'`` SQLite reads every pending row through
    # ix_outbox_due to test its id, which is the backlog-sized work the candidates above avoid.
    still_pending = func.coalesce(M.state, "") == "pending"
    locked = (
        select(M.id)
        .where(M.id.in_(chosen), still_pending, _lease_free(now))
        # PostgreSQL: skip rows another deliverer is claiming; SQLite renders no clause.
        .with_for_update(skip_locked=True)
    )
    return (
        update(M)
        .where(M.id.in_(locked.scalar_subquery()))
        .values(lease_until=lease_until, lease_owner=owner)
        .returning(*CLAIMED_COLUMNS)
        .execution_options(synchronize_session=False)
    )


def _ranked(rows: Any, partition: Any) -> Any:
    rank = func.row_number().over(
        partition_by=partition, order_by=(rows.c.next_attempt_at, rows.c.id)
    )
    return select(*rows.c, rank.label("rank")).subquery()


def _room(key: Any, limited: dict[Any, int], default: int) -> Any:
    partial = {k: room for k, room in limited.items() if room > 0}
    return case(partial, value=key, else_=default) if partial else default


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One attempt's outcome: ``delivered``, ``failed``, or ``pending`` again at
    ``next_attempt_at``."""

    at: dt.datetime
    status_code: int | None
    error: str | None
    latency_ms: int
    state: str
    next_attempt_at: dt.datetime | None = None

    @property
    def last_error(self) -> str:
        """What the row keeps of a failed attempt."""
        return self.error or f"HTTP {self.status_code}"


def _attempt_params(message: Claimed, attempt: Attempt) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of an attempt's two statements: its row's move, the attempt's row. The
    lease is given up whatever the outcome."""
    if attempt.state == "delivered":
        # A success counts whoever reports it, since the receiver has it either way.
        moved: dict[str, Any] = {"b_id": message.id, "b_now": attempt.at}
    else:
        # Only the lease holder may reschedule or fail a row.
        moved = {"b_id": message.id, "b_lease": message.lease_until, "b_error": attempt.last_error}
        if attempt.state == "pending":
            moved["b_next"] = attempt.next_attempt_at
    return moved, {"message_id": message.id, **_attempt_row(attempt)}


def _record(
    connection: sqlite3.Connection, state: str, moved: dict[str, Any], row: dict[str, Any]
) -> None:
    _RECORD_NOW[state].execute(connection, moved)
    _INSERT_ATTEMPT_NOW.execute(connection, row)


async def record_attempt_in_thread(
    connection: sqlite.Connection, message: Claimed, attempt: Attempt
) -> None:
    """Write one attempt's outcome and its row on SQLite (``Database.sqlite``), in one trip to
    its thread."""
    await connection.transact(_record, attempt.state, *_attempt_params(message, attempt))


async def record_attempt_at_once(driver: Any, message: Claimed, attempt: Attempt) -> None:
    """``record_attempt_in_thread`` on PostgreSQL (``Database.driver``), as one statement."""
    params = {"id": message.id, **_attempt_row(attempt), "at": stored(attempt.at)}
    if attempt.state != "delivered":
        params.update(lease=stored(message.lease_until), last_error=attempt.last_error)
    if attempt.state == "pending":
        params["next"] = stored(attempt.next_attempt_at)
    await _RECORDED[attempt.state].row(driver, params)


def _attempt_row(attempt: Attempt) -> dict[str, Any]:
    return {
        "at": attempt.at,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "latency_ms": attempt.latency_ms,
    }


# An attempt's statements, built once with parameters: one runs for every callback sent.
_outbox = cast(Table, M.__table__)
_PENDING = update(_outbox).where(_outbox.c.id == bindparam("b_id"), _outbox.c.state == PENDING)
_GIVE_UP_LEASE = {
    "attempts": _outbox.c.attempts + 1,
    "lease_until": None,
    "lease_owner": None,
}
_DELIVERED = _PENDING.values(
    **_GIVE_UP_LEASE, state="delivered", delivered_at=bindparam("b_now"), last_error=None
)
_HELD = _PENDING.where(_outbox.c.lease_until == bindparam("b_lease"))
_FAILED = _HELD.values(**_GIVE_UP_LEASE, last_error=bindparam("b_error"), state="failed")
_RETRY = _HELD.values(
    **_GIVE_UP_LEASE, last_error=bindparam("b_error"), next_attempt_at=bindparam("b_next")
)
_INSERT_ATTEMPT = insert(cast(Table, OutboxAttempt.__table__))

# Run in SQLite's thread (``record_attempt_in_thread``), by the attempt's state.
_RECORD_NOW = {
    "delivered": sqlite.Statement(_DELIVERED),
    "failed": sqlite.Statement(_FAILED),
    "pending": sqlite.Statement(_RETRY),
}
_INSERT_ATTEMPT_NOW = sqlite.Statement(
    _INSERT_ATTEMPT, ["message_id", "at", "status_code", "error", "latency_ms"]
)

# The same on PostgreSQL, each outcome one statement with the attempt's row.
_ATTEMPT_ROW = """INSERT INTO outbox_attempts (message_id, at, status_code, error, latency_ms)
VALUES (:id, :at, :status_code, :error, :latency_ms)"""
_LEASE_GIVEN_UP = "attempts = attempts + 1, lease_until = NULL, lease_owner = NULL"
_HELD_BY_US = "id = :id AND state = 'pending' AND lease_until = :lease"


def _recorded(change: str, where: str) -> Prepared:
    return Prepared(
        text(
            f"WITH moved AS (UPDATE outbox SET {_LEASE_GIVEN_UP}, {change} WHERE {where}) "
            + _ATTEMPT_ROW
        )
    )


_RECORDED = {
    "delivered": _recorded(
        "state = 'delivered', delivered_at = :at, last_error = NULL",
        "id = :id AND state = 'pending'",
    ),
    "failed": _recorded("state = 'failed', last_error = :last_error", _HELD_BY_US),
    "pending": _recorded("last_error = :last_error, next_attempt_at = :next", _HELD_BY_US),
}


async def defer(
    session: AsyncSession, destination: str, until: dt.datetime, now: dt.datetime
) -> int:
    """Push the due time of ``destination``'s unleased pending rows out to ``until``."""
    return await _move_due(session, destination, now, until, M.next_attempt_at < until)


async def resume(
    session: AsyncSession, destination: str, deferred_until: dt.datetime, now: dt.datetime
) -> int:
    """Make ``destination``'s rows deferred until ``deferred_until`` due now."""
    return await _move_due(
        session, destination, now, now, M.next_attempt_at > now, M.next_attempt_at <= deferred_until
    )


async def _move_due(
    session: AsyncSession, destination: str, now: dt.datetime, to: dt.datetime, *due: Any
) -> int:
    """Set the due time of ``destination``'s unleased pending rows whose due time is in ``due``
    to ``to``; returns how many."""
    stmt = (
        update(M)
        .where(M.destination == destination, M.state == PENDING, _lease_free(now), *due)
        .values(next_attempt_at=to)
        .execution_options(synchronize_session=False)
    )
    return rowcount(await session.execute(stmt))


async def release_leases(session: AsyncSession, owner: str) -> None:
    """Free the pending rows ``owner`` holds (left behind when it died mid-delivery)."""
    await session.execute(
        update(M)
        .where(M.state == PENDING, M.lease_owner == owner)
        .values(lease_until=None, lease_owner=None)
        .execution_options(synchronize_session=False)
    )


async def next_due(
    session: AsyncSession, now: dt.datetime, blocked: list[str], full: list[int] | None = None
) -> dt.datetime | None:
    """When the earliest pending row outside ``blocked`` destinations and ``full`` accounts is
    due (or its lease runs out, if another deliverer holds it and never reports back)."""
    # SQLAlchemy types min() of a CASE as Any; both branches are UTCDateTime columns.
    return await session.scalar(next_due_statement(now, blocked, full))  # type: ignore[no-any-return]


def next_due_statement(now: dt.datetime, blocked: list[str], full: list[int] | None) -> Any:
    """The SELECT that ``next_due`` runs."""
    due_at = case((_lease_free(now), M.next_attempt_at), else_=M.lease_until)
    stmt = select(func.min(due_at)).where(M.state == PENDING)
    if blocked:
        stmt = stmt.where(M.destination.not_in(blocked))
    if full:
        stmt = stmt.where(M.account_id.not_in(full))
    return stmt


async def waiting_for_room(
    session: AsyncSession, now: dt.datetime, blocked: list[str], full: list[int]
) -> bool:
    """Whether an unleased pending row (due now or later) is of a ``blocked`` destination or
    a ``full`` account: ``next_due`` leaves those out, so their due times are unknown."""
    if not blocked and not full:
        return False
    return (await session.scalar(waiting_statement(now, blocked, full))) is not None


def waiting_statement(now: dt.datetime, blocked: list[str], full: list[int]) -> Any:
    """The SELECT that ``waiting_for_room`` runs."""
    waiting = or_(M.destination.in_(blocked), M.account_id.in_(full))
    return select(M.id).where(M.state == PENDING, _lease_free(now), waiting).limit(1)


def _lease_free(now: dt.datetime) -> Any:
    return or_(M.lease_until.is_(None), M.lease_until <= now)
