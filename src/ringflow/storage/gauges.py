"""What a metrics scrape and a readiness check read from the database, bounded in cost.

Both counts walk an index range (``ix_calls_status_owner`` for queued calls, ``ix_outbox_due``
for pending callbacks) and stop at ``CAP`` rows, so a scrape during a large backlog costs at
most that many index entries rather than a table scan.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.storage.db import constant
from ringflow.storage.models import Account, Call, OutboxMessage
from ringflow.storage.outbox import PENDING

CAP = 100_000  # rows counted at most per family and scrape


async def ping(session: AsyncSession) -> None:
    """One round trip: raises if the database does not answer."""
    await session.execute(text("SELECT 1"))


async def queued_by_account(session: AsyncSession, queued: str) -> dict[str, int]:
    """Calls waiting in the queue (status ``queued``), by account SID."""
    waiting = select(Call.account_id).where(Call.status == constant(queued)).limit(CAP).subquery()
    rows = await session.execute(
        select(Account.sid, func.count())
        .select_from(waiting.join(Account, Account.id == waiting.c.account_id))
        .group_by(Account.sid)
    )
    return {sid: count for sid, count in rows}


_PENDING_CALLBACKS = select(func.count()).select_from(
    select(OutboxMessage.id).where(OutboxMessage.state == PENDING).limit(CAP).subquery()
)


async def callbacks_pending(session: AsyncSession) -> int:
    """Callbacks not yet delivered and not given up on (due now or later)."""
    return int((await session.execute(_PENDING_CALLBACKS)).scalar_one())
