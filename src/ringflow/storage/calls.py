"""The call engine's statements on calls: locking one for a change, finding the calls a
process was carrying, the queued calls past their age, and the timeline requests of live call
control. (What the API, dashboard and CLI read is in ``call_views``; admission in
``admission``.)"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.storage import sqlite
from ringflow.storage.db import constant, constants, rowcount
from ringflow.storage.models import (
    CONTROL_REQUEST,
    Account,
    Call,
    CallEvent,
    Leg,
    OutboxMessage,
)
from ringflow.storage.session import Duplicate

SIDS_PER_QUERY = 500  # SQL parameters per IN list, well under every backend's limit


async def lock_call(session: AsyncSession, sid: str, account_id: int | None = None) -> Call | None:
    """The call ``sid`` (of ``account_id`` when given), locked for this transaction, or None."""
    query = select(Call).where(Call.sid == sid.lower()).with_for_update()
    if account_id is not None:
        query = query.where(Call.account_id == account_id)
    return (await session.execute(query)).scalar_one_or_none()


async def insert_call(session: AsyncSession, call: Call) -> None:
    """Insert a new call built in memory, and its legs, with Core statements; sets ``call.id``.

    ``call`` stays an object of this process (the session does not track it): its carrier
    writes its changes (``write_change``). Duplicate if its campaign attempt has a call already.
    """
    try:
        inserted = await session.execute(_INSERT_CALL, call_values(call))
    except IntegrityError as exc:
        raise duplicate_attempt(call) from exc
    call.id = inserted.scalar_one()
    await session.execute(
        _INSERT_LEGS, [{"call_id": call.id, **leg_row(call, leg.leg_no)} for leg in call.legs]
    )


def duplicate_attempt(call: Call) -> Duplicate:
    """The error of a call whose campaign attempt has a call already (a unique index)."""
    return Duplicate(
        f"call {call.sid}: its campaign number has a call for attempt "
        f"{call.campaign_attempt} already"
    )


def call_values(call: Call) -> dict[str, Any]:
    """What a new call's row holds (every column but its id), from the call in memory."""
    return {column.key: getattr(call, column.key) for column in INSERTED_COLUMNS}


async def load_call(session: AsyncSession, sid: str) -> Call:
    """The call ``sid`` (it must exist)."""
    return (await session.execute(select(Call).where(Call.sid == sid))).scalar_one()


async def control_requests(
    session: AsyncSession, sids: Sequence[str]
) -> list[tuple[int, str, dict[str, Any]]]:
    """The live call control requests on the calls ``sids``, oldest first: (step id, call SID,
    data)."""
    rows: list[tuple[int, str, dict[str, Any]]] = []
    for start in range(0, len(sids), SIDS_PER_QUERY):
        query = control_requests_statement(sids[start : start + SIDS_PER_QUERY])
        rows += [(row[0], row[1], row[2]) for row in (await session.execute(query)).all()]
    return rows


def control_requests_statement(sids: Sequence[str]) -> Select[tuple[int, str, dict[str, Any]]]:
    """``control_requests``' query for one batch of SIDs. The kind is written into the SQL, so
    that every plan may read the requests by their own index (``ix_call_events_control_
    requests``) rather than the calls' whole timelines."""
    return (
        select(CallEvent.id, Call.sid, CallEvent.data)
        .join(Call, Call.id == CallEvent.call_id)
        .where(Call.sid.in_(sids))
        .where(CallEvent.kind == constant(CONTROL_REQUEST))
        .order_by(CallEvent.id)
    )


async def carried_by(session: AsyncSession, owner: str, live: Collection[str]) -> list[Call]:
    """The calls in a ``live`` status that process ``owner`` carries, locked (those locked
    elsewhere are being ended already: skipped)."""
    query = (
        select(Call)
        .where(Call.owner == owner, Call.status.in_(constants(live)))
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def queued_before(session: AsyncSession, queued: str, cutoff: dt.datetime) -> list[Call]:
    """Calls waiting since before ``cutoff``, locked (those locked elsewhere are skipped)."""
    query = (
        select(Call)
        .where(Call.status == constant(queued), Call.created_at < cutoff)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def add_leg(session: AsyncSession, call: Call, number: str) -> int:
    """A new leg of ``call`` (locked) to ``number``; its number (leg_no)."""
    leg_no = max(leg.leg_no for leg in call.legs) + 1
    call.legs.append(Leg(leg_no=leg_no, number=number, status=""))
    await session.flush()
    return leg_no


async def account_time_zone(session: AsyncSession, account_id: int) -> str:
    """The time zone of the call's account (callbacks give times in it)."""
    query = select(Account.time_zone).where(Account.id == account_id)
    return str((await session.execute(query)).scalar_one())


# What a status change may alter on a call and on a leg.
CALL_CHANGES = (
    "status",
    "reason",
    "updated_at",
    "start_time",
    "end_time",
    "duration",
    "conversation_duration",
    "price",
    "stream_url",
)
LEG_CHANGES = ("status", "cause", "answered_by", "dialed_at", "answered_at", "ended_at")

# The statements of every call, built once: a statement built per call costs SQLAlchemy a
# cache key over each of its values (a few hundred microseconds), where these pass values as
# parameters of one cached, compiled statement. On tables, not entities: no ORM bulk logic.
_calls, _legs = cast(Table, Call.__table__), cast(Table, Leg.__table__)
_events = cast(Table, CallEvent.__table__)
_outbox = cast(Table, OutboxMessage.__table__)
INSERTED_COLUMNS = [column for column in _calls.columns if column.key != "id"]
_INSERT_CALL = insert(_calls).returning(_calls.c.id)
_INSERT_LEGS = insert(_legs)
_INSERT_STEPS = insert(_events)
_INSERT_CALLBACKS = insert(_outbox).returning(_outbox.c.id, sort_by_parameter_order=True)
_MOVE_CALL = (
    update(_calls)
    .where(_calls.c.id == bindparam("b_id"), _calls.c.status == bindparam("b_expected"))
    .values({name: bindparam(name) for name in CALL_CHANGES})
)
_CHANGE_LEG = (
    update(_legs)
    .where(_legs.c.call_id == bindparam("b_call"), _legs.c.leg_no == bindparam("b_leg"))
    .values({name: bindparam(name) for name in LEG_CHANGES})
)


def leg_row(call: Call, leg_no: int) -> dict[str, Any]:
    """Leg ``leg_no`` of ``call`` (held in memory) as the values a change writes."""
    leg = next(leg for leg in call.legs if leg.leg_no == leg_no)
    return {
        "leg_no": leg_no,
        "number": leg.number,
        **{name: getattr(leg, name) for name in LEG_CHANGES},
    }


async def write_change(session: AsyncSession, rows: ChangeRows) -> list[int] | None:
    """Persist a change made to a call in memory (``change_rows``), with Core statements and
    no reads: the callbacks' ids, or None (nothing written) if the call had moved."""
    if rowcount(await session.execute(_MOVE_CALL, rows.move)) != 1:
        return None
    if rows.new_legs:
        await session.execute(_INSERT_LEGS, rows.new_legs)
    for leg in rows.changed_legs:  # one statement per leg: rarely more than two change at once
        await session.execute(_CHANGE_LEG, leg)
    await add_steps(session, rows.steps)
    return await add_callbacks(session, rows.callbacks)


@dataclasses.dataclass
class ChangeRows:
    """The parameters of the statements that write a change (``write_change``)."""

    move: dict[str, Any]  # the call's row, if its status is still the one expected
    new_legs: list[dict[str, Any]]
    changed_legs: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]


def change_rows(
    call: Call,
    *,
    expected: str,
    legs: Collection[int],
    new_legs: Collection[int],
    steps: list[dict[str, Any]],
    callbacks: list[dict[str, Any]],
) -> ChangeRows:
    """What writes a change made to ``call`` in memory, read from it now.

    The call's row changes only if its status is still ``expected`` (no other writer moved
    it); otherwise nothing is written. ``legs`` are the leg numbers whose row changed,
    ``new_legs`` those to insert; ``steps`` are timeline rows and ``callbacks`` outbox rows
    to insert.
    """
    changed = []
    for n in legs:
        if n not in new_legs:
            changes = leg_row(call, n)
            del changes["leg_no"], changes["number"]
            changed.append({"b_call": call.id, "b_leg": n, **changes})
    return ChangeRows(
        move={
            "b_id": call.id,
            "b_expected": expected,
            **{name: getattr(call, name) for name in CALL_CHANGES},
        },
        new_legs=[{"call_id": call.id, **leg_row(call, n)} for n in new_legs],
        changed_legs=changed,
        steps=steps,
        callbacks=callbacks,
    )


# The same statements run in SQLite's thread (``sqlite.Connection.run``), one trip a change.
_MOVE_CALL_NOW = sqlite.Statement(_MOVE_CALL)
_CHANGE_LEG_NOW = sqlite.Statement(_CHANGE_LEG)


@functools.cache
def _insert_now(table: Table, keys: tuple[str, ...], ids: bool) -> sqlite.Statement:
    """An INSERT into ``table`` of rows with ``keys`` (``ids``: returning the row's id), for
    SQLite's thread."""
    statement = insert(table)
    return sqlite.Statement(statement.returning(table.c.id) if ids else statement, keys)


def insert_now(
    connection: sqlite3.Connection, table: Table, rows: Sequence[dict[str, Any]]
) -> list[int]:
    """In SQLite's thread: insert ``rows`` (dicts with the same keys) into ``table``; their
    ids, in order."""
    if not rows:
        return []
    statement = _insert_now(table, tuple(rows[0]), True)
    return [statement.rows(connection, row)[0][0] for row in rows]


def add_now(connection: sqlite3.Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """``insert_now`` of rows whose ids nobody needs (legs, steps): one statement for all."""
    if rows:
        _insert_now(table, tuple(rows[0]), False).executemany(connection, rows)


def write_change_now(connection: sqlite3.Connection, rows: ChangeRows) -> list[int] | None:
    """``write_change`` in SQLite's thread, inside a transaction begun there: the callbacks'
    ids, or None (nothing written) if the call had moved."""
    if _MOVE_CALL_NOW.execute(connection, rows.move) != 1:
        return None
    add_now(connection, _legs, rows.new_legs)
    for leg in rows.changed_legs:
        _CHANGE_LEG_NOW.execute(connection, leg)
    add_now(connection, _events, rows.steps)
    return insert_now(connection, _outbox, rows.callbacks)


async def add_callbacks(session: AsyncSession, callbacks: list[dict[str, Any]]) -> list[int]:
    """Insert outbox rows (``webhooks.outbox.outbox_row``); their ids, in order."""
    if not callbacks:
        return []
    ids = await session.execute(_INSERT_CALLBACKS, callbacks)
    return [row[0] for row in ids.all()]


async def write_detection(
    session: AsyncSession,
    call_id: int,
    leg_no: int,
    answered_by: str,
    ms: int,
    steps: list[dict[str, Any]],
) -> None:
    """Who answered leg ``leg_no`` (answering machine detection's verdict), the call's time to
    it, and the timeline steps held. No status changes: the call's carrier is its only writer,
    so there is nothing to check first."""
    await session.execute(
        update(Leg)
        .where(Leg.call_id == call_id, Leg.leg_no == leg_no)
        .values(answered_by=answered_by)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Call)
        .where(Call.id == call_id)
        .values(machine_detection_ms=ms)
        .execution_options(synchronize_session=False)
    )
    await add_steps(session, steps)


async def add_steps(session: AsyncSession, steps: list[dict[str, Any]]) -> None:
    """Insert timeline steps (rows of call_events, as dicts)."""
    if steps:
        await session.execute(_INSERT_STEPS, steps)


def copy_into(source: Call, target: Call) -> None:
    """Make ``target`` (a call held in memory) what ``source`` (just read) says, legs too."""
    for column in Call.__table__.columns:
        setattr(target, column.key, getattr(source, column.key))
    held = {leg.leg_no: leg for leg in target.legs}
    for leg in source.legs:
        mine = held.get(leg.leg_no)
        if mine is None:
            mine = Leg(leg_no=leg.leg_no, number=leg.number, status=leg.status)
            target.legs.append(mine)
        for column in Leg.__table__.columns:
            setattr(mine, column.key, getattr(leg, column.key))
