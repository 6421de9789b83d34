"""Status callbacks as the dashboard reads them: a call's, with every delivery attempt, and an
account's undelivered ones. (The outbox's own delivery statements are the deliverer's.)"""

from __future__ import annotations

from sqlalchemy import func, select

from ringflow.storage.models import OutboxAttempt, OutboxMessage
from ringflow.storage.outbox import PENDING
from ringflow.storage.session import Session


async def callbacks_of_call(
    session: Session, account_id: int, call_id: int
) -> list[tuple[OutboxMessage, list[OutboxAttempt]]]:
    """The call's callbacks, oldest first, each with its attempts in the order made."""
    messages = list(
        (
            await session.execute(
                select(OutboxMessage)
                .where(OutboxMessage.call_id == call_id, OutboxMessage.account_id == account_id)
                .order_by(OutboxMessage.id)
            )
        ).scalars()
    )
    attempts: dict[int, list[OutboxAttempt]] = {m.id: [] for m in messages}
    if messages:
        rows = (
            await session.execute(
                select(OutboxAttempt)
                .where(OutboxAttempt.message_id.in_(list(attempts)))
                .order_by(OutboxAttempt.at, OutboxAttempt.id)
            )
        ).scalars()
        for row in rows:
            attempts[row.message_id].append(row)
    return [(m, attempts[m.id]) for m in messages]


async def pending_count(session: Session, account_id: int) -> int:
    """How many of the account's callbacks are still to deliver."""
    query = (
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.account_id == account_id, OutboxMessage.state == PENDING)
    )
    return int((await session.execute(query)).scalar_one())


async def retrying(session: Session, account_id: int, limit: int) -> list[OutboxMessage]:
    """The account's callbacks waiting to retry after a failed attempt, next due first."""
    query = (
        select(OutboxMessage)
        .where(
            OutboxMessage.account_id == account_id,
            OutboxMessage.state == PENDING,
            OutboxMessage.attempts > 0,
        )
        .order_by(OutboxMessage.next_attempt_at)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def given_up(session: Session, account_id: int, limit: int) -> list[OutboxMessage]:
    """The account's callbacks that were given up on, newest first."""
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.account_id == account_id, OutboxMessage.state == "failed")
        .order_by(OutboxMessage.id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())
