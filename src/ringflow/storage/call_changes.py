"""A status change written in one statement on PostgreSQL: one round trip, no transaction of
our own (the statement commits by itself). Also the new calls of one admission at once, with
their legs, steps and callbacks (``insert_calls_at_once``), in the transaction that admitted
them.

The call's row moves only if its status is still the one its carrier held; the legs, the
timeline steps and the callbacks are written in the same statement only then (PostgreSQL runs
every data-modifying part of a WITH to completion, read or not). The change that ends a call is
the same statement; the account's queue is then looked at, and admitted under the account's
lock only if calls wait (``Line.free_after``). SQLite has no data-modifying WITH: there a change
is the statements of ``calls.write_change``, run in one trip to the connection's thread
(``sqlite.Connection.transact``), and so are new calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, cast

from asyncpg.exceptions import UniqueViolationError
from sqlalchemy import String, Table, bindparam, exists, select, text

from ringflow.storage import sqlite
from ringflow.storage.calls import (
    CALL_CHANGES,
    INSERTED_COLUMNS,
    ChangeRows,
    add_now,
    call_values,
    change_rows,
    duplicate_attempt,
    insert_now,
    leg_row,
    write_change_now,
)
from ringflow.storage.db import Prepared, constant, postgresql_type, quoted, stored
from ringflow.storage.models import Call, CallEvent, Leg, OutboxMessage

_calls, _legs = cast(Table, Call.__table__), cast(Table, Leg.__table__)
_events, _outbox = cast(Table, CallEvent.__table__), cast(Table, OutboxMessage.__table__)
_LEG_COLUMNS = (
    "leg_no int, number text, status text, cause text, answered_by text, "
    "dialed_at timestamp, answered_at timestamp, ended_at timestamp"
)


# The rows a change adds, read from JSON record sets, when ``guard`` (an SQL condition) holds;
# each a data-modifying part of a WITH. Their call is ``call_id`` (an SQL expression), or with
# ``by_sid`` the new call (``new_calls``) whose SID each record names.
def _call_of(call_id: str, by_sid: bool) -> tuple[str, str, str]:
    """(the call's id, the records' leading columns, the join that finds the new call)."""
    if by_sid:
        return "c.id", "sid text, ", " JOIN new_calls AS c ON c.sid = v.sid"
    return call_id, "", ""


def _added_legs(call_id: str, records: str, guard: str, by_sid: bool = False) -> str:
    call, keyed, join = _call_of(call_id, by_sid)
    return f"""INSERT INTO legs (call_id, leg_no, number, status, cause, answered_by, dialed_at,
                      answered_at, ended_at)
    SELECT {call}, v.leg_no, v.number, v.status, v.cause, v.answered_by, v.dialed_at,
           v.answered_at, v.ended_at
    FROM jsonb_to_recordset(CAST({records} AS jsonb)) AS v({keyed}{_LEG_COLUMNS}){join}
    WHERE {guard}"""


def _steps(call_id: str, guard: str, by_sid: bool = False) -> str:
    call, keyed, join = _call_of(call_id, by_sid)
    return f"""INSERT INTO call_events (call_id, at, kind, data)
    SELECT {call}, v.at, v.kind, v.data
    FROM jsonb_to_recordset(CAST(:steps AS jsonb))
        AS v({keyed}n int, at timestamp, kind text, data json){join}
    WHERE {guard}
    ORDER BY v.n"""


def _callbacks(call_id: str, guard: str, by_sid: bool = False) -> str:
    call, keyed, join = _call_of(call_id, by_sid)
    return f"""INSERT INTO outbox (account_id, call_id, event, url, destination, content_type, payload,
                        idempotency_key, state, attempts, next_attempt_at, created_at,
                        lease_owner, lease_until)
    SELECT v.account_id, {call}, v.event, v.url, v.destination, v.content_type, v.payload,
           v.idempotency_key, v.state, v.attempts, v.next_attempt_at, v.created_at,
           v.lease_owner, v.lease_until
    FROM jsonb_to_recordset(CAST(:callbacks AS jsonb)) AS v({keyed}
        n int, account_id bigint, event text, url text, destination text,
        content_type text, payload json, idempotency_key text, state text, attempts int,
        next_attempt_at timestamp, created_at timestamp, lease_owner text,
        lease_until timestamp){join}
    WHERE {guard}
    ORDER BY v.n
    RETURNING id"""


_MOVED = "EXISTS (SELECT 1 FROM moved)"
_CHANGE = f"""
WITH moved AS (
    UPDATE calls SET status = :status, reason = :reason, updated_at = :updated_at,
        start_time = :start_time, end_time = :end_time, duration = :duration,
        conversation_duration = :conversation_duration, price = :price, stream_url = :stream_url
    WHERE id = :call_id AND status = :expected
    RETURNING id
), changed_legs AS (
    UPDATE legs SET status = v.status, cause = v.cause, answered_by = v.answered_by,
        dialed_at = v.dialed_at, answered_at = v.answered_at, ended_at = v.ended_at
    FROM jsonb_to_recordset(CAST(:legs AS jsonb)) AS v({_LEG_COLUMNS})
    WHERE legs.call_id = :call_id AND legs.leg_no = v.leg_no AND {_MOVED}
), added_legs AS (
    {_added_legs(":call_id", ":new_legs", _MOVED)}
), steps AS (
    {_steps(":call_id", _MOVED)}
), sent AS (
    {_callbacks(":call_id", _MOVED)}
)
SELECT (SELECT count(*) FROM moved) AS moved,
       ARRAY(SELECT id FROM sent ORDER BY id) AS callback_ids"""
_ONE_CHANGE = Prepared(text(_CHANGE))


@functools.cache
def _last_change(queued: str) -> Prepared:
    """The change that ends a call, which also says whether the account has calls in status
    ``queued`` (as of the statement's start: see ``Line.free_after`` for why that is enough),
    that status written in (``db.constant``)."""
    return Prepared(
        text(
            _CHANGE
            + f""",
       EXISTS (SELECT 1 FROM calls WHERE account_id = :account_id AND status = {quoted(queued)})
           AS waiting"""
        )
    )


# New calls admitted at once, in one statement: the calls, in the order given (so their ids
# follow the order of admission), their legs, their first steps and the callbacks those cause.
# Each record carries every column of its call, typed as the column is (strings as text: the
# insert checks their length against the column).
_CALL_RECORD = ", ".join(
    f"{column.name} {'text' if isinstance(column.type, String) else postgresql_type(column)}"
    for column in INSERTED_COLUMNS
)
_CALL_NAMES = ", ".join(column.name for column in INSERTED_COLUMNS)
_ACCEPT = Prepared(
    text(f"""
WITH new_calls AS (
    INSERT INTO calls ({_CALL_NAMES})
    SELECT {", ".join("v." + column.name for column in INSERTED_COLUMNS)}
    FROM jsonb_to_recordset(CAST(:calls AS jsonb)) AS v(n int, {_CALL_RECORD})
    ORDER BY v.n
    RETURNING id, sid
), added_legs AS (
    {_added_legs("", ":legs", "TRUE", by_sid=True)}
), steps AS (
    {_steps("", "TRUE", by_sid=True)}
), sent AS (
    {_callbacks("", "TRUE", by_sid=True)}
)
SELECT sid, id AS call_id FROM new_calls
""")
)


@dataclasses.dataclass
class NewCall:
    """A call built in memory to be inserted: its first timeline steps and the callbacks they
    cause (none for a queued call)."""

    call: Call
    steps: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]


async def insert_calls_at_once(driver: Any, new: Sequence[NewCall]) -> None:
    """``calls.insert_call`` of new calls, with their steps and callbacks, as one statement on
    ``driver`` inside the admission's transaction (PostgreSQL: ``Database.driver``, or
    ``driver_of`` a session); sets each ``call.id``. Duplicate if a campaign attempt has a call
    already (such a call is admitted alone)."""
    params = {
        "calls": _records(call_values(n.call) for n in new),
        "legs": _json(
            [{"sid": n.call.sid, **leg_row(n.call, leg.leg_no)} for n in new for leg in n.call.legs]
        ),
        "steps": _records({**step, "sid": n.call.sid} for n in new for step in n.steps),
        "callbacks": _records({**row, "sid": n.call.sid} for n in new for row in n.callbacks),
    }
    try:
        rows = await _ACCEPT.rows(driver, params)
    except UniqueViolationError as exc:
        raise duplicate_attempt(new[0].call) from exc
    ids = {row["sid"]: row["call_id"] for row in rows}
    for n in new:
        n.call.id = ids[n.call.sid]


async def write_change_at_once(driver: Any, call: Call, **written: Any) -> list[int] | None:
    """``calls.write_change`` in one statement (PostgreSQL, on ``Database.driver``), with its
    arguments (``expected``, ``legs``, ``new_legs``, ``steps``, ``callbacks``): the callbacks'
    ids, or None if the call had moved."""
    row = await _ONE_CHANGE.row(driver, _change_params(call, **written))
    if row["moved"] != 1:
        return None
    return list(row["callback_ids"])


async def write_end_at_once(
    driver: Any, call: Call, *, queued: str, **written: Any
) -> tuple[list[int] | None, bool]:
    """``write_change_at_once`` (same arguments) of the change that ends ``call``, which also
    reads whether its account has calls in status ``queued``: (callback ids or None if the call
    had moved, whether calls wait)."""
    params = _change_params(call, **written)
    params["account_id"] = call.account_id
    row = await _last_change(str(queued)).row(driver, params)
    if row["moved"] != 1:
        return None, False
    return list(row["callback_ids"]), bool(row["waiting"])


# -- SQLite: the same work, each in one trip to the connection's thread ----------------------


@functools.cache
def _waiting_now(queued: str) -> sqlite.Statement:
    """Whether an account has calls in status ``queued`` (written in), for SQLite's thread."""
    calls = Call.__table__.c
    return sqlite.Statement(
        select(
            exists().where(
                calls.account_id == bindparam("account_id"), calls.status == constant(queued)
            )
        )
    )


def _change(
    connection: sqlite3.Connection,
    rows: ChangeRows,
    waiting: sqlite.Statement | None,
    account_id: int,
) -> tuple[list[int] | None, bool | None]:
    ids = write_change_now(connection, rows)
    if waiting is None:
        return ids, None
    if ids is None:
        return None, False
    return ids, bool(waiting.rows(connection, {"account_id": account_id})[0][0])


async def write_change_in_thread(
    connection: sqlite.Connection, call: Call, *, queued: str | None = None, **written: Any
) -> tuple[list[int] | None, bool | None]:
    """``write_change_at_once`` on SQLite (``Database.sqlite``): the change in a transaction of
    its own, in one trip. With ``queued`` (the change that ends the call, as
    ``write_end_at_once``), it also reads whether the account has calls in that status.
    (Callback ids or None if the call had moved; whether calls wait, None if not asked.)"""
    rows = change_rows(call, **written)  # read from the call here, not in the thread
    waiting = None if queued is None else _waiting_now(str(queued))
    outcome: tuple[list[int] | None, bool | None] = await connection.transact(
        _change, rows, waiting, call.account_id
    )
    return outcome


# A new call's rows: the call's, its legs', its steps' and its callbacks'.
_Rows = list[dict[str, Any]]
_NewRows = tuple[dict[str, Any], _Rows, _Rows, _Rows]


def _insert_calls(connection: sqlite3.Connection, new: list[_NewRows]) -> list[int]:
    ids = []
    for values, legs, steps, callbacks in new:
        [call_id] = insert_now(connection, _calls, [values])
        add_now(connection, _legs, [{**row, "call_id": call_id} for row in legs])
        add_now(connection, _events, [{**row, "call_id": call_id} for row in steps])
        insert_now(connection, _outbox, [{**row, "call_id": call_id} for row in callbacks])
        ids.append(call_id)
    return ids


async def insert_calls_in_thread(connection: sqlite.Connection, new: Sequence[NewCall]) -> None:
    """``insert_calls_at_once`` on SQLite (``Database.sqlite``), in one trip that also commits
    the admission's transaction (begun by ``admission.lock_lines_in_thread``)."""
    rows: list[_NewRows] = [
        (
            call_values(n.call),
            [leg_row(n.call, leg.leg_no) for leg in n.call.legs],
            n.steps,
            n.callbacks,
        )
        for n in new
    ]
    try:
        ids: list[int] = await connection.transact(_insert_calls, rows)
    except sqlite3.IntegrityError as exc:
        raise duplicate_attempt(new[0].call) from exc
    for n, call_id in zip(new, ids, strict=True):
        n.call.id = call_id


def _change_params(
    call: Call,
    *,
    expected: str,
    legs: list[int],
    new_legs: list[int],
    steps: list[dict[str, Any]],
    callbacks: list[dict[str, Any]],
) -> dict[str, Any]:
    params: dict[str, Any] = {name: _column(getattr(call, name)) for name in CALL_CHANGES}
    params.update(
        call_id=call.id,
        expected=str(expected),
        legs=_json([leg_row(call, n) for n in legs if n not in new_legs]),
        new_legs=_json([leg_row(call, n) for n in new_legs]),
        steps=_records(steps),
        callbacks=_records(callbacks),
    )
    return params


def _records(rows: Iterable[dict[str, Any]]) -> str:
    """``rows`` as a JSON record set, each numbered ``n`` in order (the statements insert them
    in that order, so their ids follow it)."""
    return _json([{"n": n, **row} for n, row in enumerate(rows)])


def _column(value: Any) -> Any:
    """A value as its column keeps it (this statement is text: no column types convert it)."""
    if isinstance(value, dt.datetime):
        return stored(value)
    if isinstance(value, str):
        return str(value)  # a status enum member as the plain text it stands for
    return value


def _json(rows: list[dict[str, Any]]) -> str:
    return _ENCODER.encode(rows)


def _utc_naive(value: object) -> str:
    """Times as the columns keep them: naive UTC (see models.UTCDateTime)."""
    if isinstance(value, dt.datetime):
        return stored(value).isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# One encoder for every statement: json.dumps with options builds a new one each time, which
# cost more than encoding a change's few rows.
_ENCODER = json.JSONEncoder(default=_utc_naive, separators=(",", ":"))
