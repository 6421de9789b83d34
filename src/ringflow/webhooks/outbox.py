"""The outbox: a webhook is a row (written with the transition) before it is a request.

Besides ``enqueue``, this module holds every statement the deliverer runs on the rows: claiming
due rows under a lease, recording an attempt, deferring and resuming a destination's rows.
Claims are one UPDATE each, in a short transaction of its own, so several deliverers (several
processes) share one table: PostgreSQL skips rows another deliverer is claiming
(``FOR UPDATE SKIP LOCKED``); SQLite has a single writer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import httpx
from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.storage.models import OutboxAttempt, OutboxMessage
from ringflow.webhooks.destinations import destination_of

FORM = "multipart/form-data"
JSON = "application/json"
CONTENT_TYPES = (FORM, JSON)
LEGS = "Legs"


async def enqueue(
    session: AsyncSession,
    *,
    account_id: int,
    call_id: int | None,
    event: str,
    url: str,
    content_type: str,
    payload: dict[str, Any],
    idempotency_key: str,
    now: dt.datetime,
) -> OutboxMessage:
    """Add a pending webhook in the caller's transaction (it commits with the transition)."""
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"unsupported callback content type {content_type!r}")
    # Encode once now so a payload that cannot be sent fails the transition, not the deliverer.
    encode(payload, content_type)
    message = OutboxMessage(
        account_id=account_id,
        call_id=call_id,
        event=event,
        url=url,
        destination=destination_of(url),
        content_type=content_type,
        payload=payload,
        idempotency_key=idempotency_key,
        state="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(message)
    await session.flush()  # assigns the id; the caller's commit makes it visible to deliverers
    return message


def encode(payload: dict[str, Any], content_type: str) -> tuple[bytes, str]:
    """The request body and its Content-Type header for a callback payload."""
    if content_type == JSON:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return body, JSON
    if content_type == FORM:
        return _multipart(form_fields(payload))
    raise ValueError(f"unsupported callback content type {content_type!r}")


def form_fields(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """Flatten a payload to form fields; ``Legs`` becomes ``Legs[i][Name]`` bracket keys."""
    fields: list[tuple[str, str]] = []
    for name, value in payload.items():
        if name == LEGS:
            for index, leg in enumerate(value or []):
                if not isinstance(leg, dict):
                    raise TypeError(f"{LEGS}[{index}] must be a dict, not {type(leg).__name__}")
                fields.extend((f"{LEGS}[{index}][{k}]", _text(k, v)) for k, v in leg.items())
        else:
            fields.append((name, _text(name, value)))
    return fields


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    # Form bodies are flat: anything nested besides Legs is a bug in the payload builder.
    raise TypeError(f"form field {name!r} must be a scalar, not {type(value).__name__}")


def _multipart(fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    if not fields:
        raise ValueError("a multipart callback needs at least one field")
    # httpx writes form fields without files as multipart when each is (None, value).
    request = httpx.Request(
        "POST", "http://outbox.invalid/", files=[(name, (None, value)) for name, value in fields]
    )
    return request.read(), request.headers["Content-Type"]


M = OutboxMessage


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A row this deliverer holds the lease of, with what it needs to send it."""

    id: int
    event: str
    url: str
    destination: str
    content_type: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int
    lease_until: dt.datetime


async def claim(
    session: AsyncSession,
    *,
    owner: str,
    now: dt.datetime,
    lease_until: dt.datetime,
    limit: int,
    per_destination: int,
    rooms: dict[str, int],
) -> list[Claimed]:
    """Lease up to ``limit`` due rows, oldest first, at most ``rooms.get(d, per_destination)``
    of each destination ``d``."""
    due = and_(M.state == "pending", M.next_attempt_at <= now, _lease_free(now))
    blocked = sorted(d for d, room in rooms.items() if room <= 0)
    if blocked:
        due = and_(due, M.destination.not_in(blocked))
    # Rank each destination's due rows, so one receiver's backlog cannot fill the claim.
    rank = func.row_number().over(partition_by=M.destination, order_by=(M.next_attempt_at, M.id))
    ranked = (
        select(M.id, M.next_attempt_at, M.destination, rank.label("rank")).where(due).subquery()
    )
    partial = {d: room for d, room in rooms.items() if room > 0}
    allowed: Any = (
        case(partial, value=ranked.c.destination, else_=per_destination)
        if partial
        else per_destination
    )
    chosen = (
        select(ranked.c.id)
        .where(ranked.c.rank <= allowed)
        .order_by(ranked.c.next_attempt_at, ranked.c.id)
        .limit(limit)
    )
    locked = (
        select(M.id)
        .where(M.id.in_(chosen), M.state == "pending", _lease_free(now))
        # PostgreSQL: skip rows another deliverer is claiming; SQLite renders no clause.
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(M)
        .where(M.id.in_(locked.scalar_subquery()))
        .values(lease_until=lease_until, lease_owner=owner)
        .returning(
            M.id, M.event, M.url, M.destination, M.content_type, M.payload, M.idempotency_key,
            M.attempts,
        )  # fmt: skip
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(stmt)).all()
    claimed = [Claimed(*row, lease_until=lease_until) for row in rows]
    return sorted(claimed, key=lambda c: c.id)


async def record_attempt(
    session: AsyncSession,
    message: Claimed,
    *,
    now: dt.datetime,
    status_code: int | None,
    error: str | None,
    latency_ms: int,
    state: str,
    next_attempt_at: dt.datetime | None = None,
) -> None:
    """Write one attempt's outcome: ``delivered``, ``failed``, or ``pending`` again at
    ``next_attempt_at``; the lease is given up either way."""
    where = [M.id == message.id, M.state == "pending"]
    values: dict[str, Any] = {"attempts": M.attempts + 1, "lease_until": None, "lease_owner": None}
    if state == "delivered":
        values.update(state="delivered", delivered_at=now, last_error=None)
    else:
        # Only the lease holder may reschedule or fail a row; a success counts whoever
        # reports it, since the receiver has it either way.
        where.append(M.lease_until == message.lease_until)
        values["last_error"] = error or f"HTTP {status_code}"
        if state == "failed":
            values["state"] = "failed"
        else:
            values["next_attempt_at"] = next_attempt_at
    await session.execute(
        update(M).where(*where).values(**values).execution_options(synchronize_session=False)
    )
    session.add(
        OutboxAttempt(
            message_id=message.id,
            at=now,
            status_code=status_code,
            error=error,
            latency_ms=latency_ms,
        )
    )


async def defer(
    session: AsyncSession, destination: str, until: dt.datetime, now: dt.datetime
) -> int:
    """Push the due time of ``destination``'s unleased pending rows out to ``until``."""
    stmt = (
        update(M)
        .where(
            M.destination == destination,
            M.state == "pending",
            M.next_attempt_at < until,
            _lease_free(now),
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).rowcount  # type: ignore[attr-defined, no-any-return]


async def resume(
    session: AsyncSession, destination: str, deferred_until: dt.datetime, now: dt.datetime
) -> int:
    """Make ``destination``'s rows deferred until ``deferred_until`` due now."""
    stmt = (
        update(M)
        .where(
            M.destination == destination,
            M.state == "pending",
            M.next_attempt_at > now,
            M.next_attempt_at <= deferred_until,
            _lease_free(now),
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).rowcount  # type: ignore[attr-defined, no-any-return]


async def release_leases(session: AsyncSession, owner: str) -> None:
    """Free the pending rows ``owner`` holds (left behind when it died mid-delivery)."""
    await session.execute(
        update(M)
        .where(M.state == "pending", M.lease_owner == owner)
        .values(lease_until=None, lease_owner=None)
        .execution_options(synchronize_session=False)
    )


async def next_due(
    session: AsyncSession, now: dt.datetime, blocked: list[str]
) -> dt.datetime | None:
    """When the earliest pending row outside ``blocked`` destinations is due (or its lease
    runs out, if another deliverer holds it and never reports back)."""
    due_at = case((_lease_free(now), M.next_attempt_at), else_=M.lease_until)
    stmt = select(func.min(due_at)).where(M.state == "pending")
    if blocked:
        stmt = stmt.where(M.destination.not_in(blocked))
    return await session.scalar(stmt)  # type: ignore[no-any-return]


def _lease_free(now: dt.datetime) -> Any:
    return or_(M.lease_until.is_(None), M.lease_until <= now)
