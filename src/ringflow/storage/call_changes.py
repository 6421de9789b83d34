"""A status change written in one statement on PostgreSQL: one round trip, no transaction of
our own (the statement commits by itself).

The call's row moves only if its status is still the one its carrier held; the legs, the
timeline steps and the callbacks are written in the same statement only then (PostgreSQL runs
every data-modifying part of a WITH to completion, read or not). The change that ends a call is
the same statement inside a transaction (``write_change_in``), which then admits the next queued
calls under the account's lock. SQLite has no data-modifying WITH: there a change is the
statements of ``calls.write_change`` in one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ringflow.storage.calls import CALL_CHANGES, leg_row
from ringflow.storage.models import Call

_LEG_COLUMNS = (
    "leg_no int, number text, status text, cause text, answered_by text, "
    "dialed_at timestamp, answered_at timestamp, ended_at timestamp"
)

_ONE_CHANGE = text(f"""
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
    WHERE legs.call_id = :call_id AND legs.leg_no = v.leg_no AND EXISTS (SELECT 1 FROM moved)
), added_legs AS (
    INSERT INTO legs (call_id, leg_no, number, status, cause, answered_by, dialed_at,
                      answered_at, ended_at)
    SELECT :call_id, v.leg_no, v.number, v.status, v.cause, v.answered_by, v.dialed_at,
           v.answered_at, v.ended_at
    FROM jsonb_to_recordset(CAST(:new_legs AS jsonb)) AS v({_LEG_COLUMNS})
    WHERE EXISTS (SELECT 1 FROM moved)
), steps AS (
    INSERT INTO call_events (call_id, at, kind, data)
    SELECT :call_id, v.at, v.kind, v.data
    FROM jsonb_to_recordset(CAST(:steps AS jsonb)) AS v(n int, at timestamp, kind text, data json)
    WHERE EXISTS (SELECT 1 FROM moved)
    ORDER BY v.n
), sent AS (
    INSERT INTO outbox (account_id, call_id, event, url, destination, content_type, payload,
                        idempotency_key, state, attempts, next_attempt_at, created_at,
                        lease_owner, lease_until)
    SELECT v.account_id, v.call_id, v.event, v.url, v.destination, v.content_type, v.payload,
           v.idempotency_key, v.state, v.attempts, v.next_attempt_at, v.created_at,
           v.lease_owner, v.lease_until
    FROM jsonb_to_recordset(CAST(:callbacks AS jsonb)) AS v(
        n int, account_id bigint, call_id bigint, event text, url text, destination text,
        content_type text, payload json, idempotency_key text, state text, attempts int,
        next_attempt_at timestamp, created_at timestamp, lease_owner text,
        lease_until timestamp)
    WHERE EXISTS (SELECT 1 FROM moved)
    ORDER BY v.n
    RETURNING id
)
SELECT (SELECT count(*) FROM moved) AS moved,
       ARRAY(SELECT id FROM sent ORDER BY id) AS callback_ids
""")


async def write_change_at_once(
    conn: AsyncConnection,
    call: Call,
    *,
    expected: str,
    legs: list[int],
    new_legs: list[int],
    steps: list[dict[str, Any]],
    callbacks: list[dict[str, Any]],
) -> list[int] | None:
    """``calls.write_change`` in one statement (PostgreSQL): the callbacks' ids, or None if the
    call had moved."""
    params: dict[str, Any] = {name: _column(getattr(call, name)) for name in CALL_CHANGES}
    params.update(
        call_id=call.id,
        expected=str(expected),
        legs=_json([leg_row(call, n) for n in legs if n not in new_legs]),
        new_legs=_json([leg_row(call, n) for n in new_legs]),
        steps=_json(
            [
                {"n": i, "at": s["at"], "kind": s["kind"], "data": s["data"]}
                for i, s in enumerate(steps)
            ]
        ),
        callbacks=_json([{"n": i, **row} for i, row in enumerate(callbacks)]),
    )
    row = (await conn.execute(_ONE_CHANGE, params)).one()
    if row.moved != 1:
        return None
    return list(row.callback_ids)


async def write_change_in(session: AsyncSession, call: Call, **written: Any) -> list[int] | None:
    """``write_change_at_once`` (same arguments) as one statement of ``session``'s transaction:
    the end of a call, whose transaction goes on to free its account line."""
    return await write_change_at_once(await session.connection(), call, **written)


def _column(value: Any) -> Any:
    """A value as its column keeps it (this statement is text: no column types convert it)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, str):
        return str(value)  # a status enum member as the plain text it stands for
    return value


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_utc_naive, separators=(",", ":"))


def _utc_naive(value: object) -> str:
    """Times as the columns keep them: naive UTC (see models.UTCDateTime)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
