"""Statements about calls used outside the call engine's own modules (live call control).

The engine's own statements move here as the storage layer grows; nothing outside ``storage/``
should need SQLAlchemy for these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.storage.models import Call, CallEvent

SIDS_PER_QUERY = 500  # SQL parameters per IN list, well under every backend's limit


async def lock_call(session: AsyncSession, sid: str, account_id: int | None = None) -> Call | None:
    """The call ``sid`` (of ``account_id`` when given), locked for this transaction, or None."""
    query = select(Call).where(Call.sid == sid.lower()).with_for_update()
    if account_id is not None:
        query = query.where(Call.account_id == account_id)
    return (await session.execute(query)).scalar_one_or_none()


async def load_call(session: AsyncSession, sid: str) -> Call:
    """The call ``sid`` (it must exist)."""
    return (await session.execute(select(Call).where(Call.sid == sid))).scalar_one()


async def steps_of_kind(
    session: AsyncSession, sids: Sequence[str], kind: str
) -> list[tuple[int, str, dict[str, Any]]]:
    """Timeline steps of ``kind`` of the calls ``sids``, oldest first: (step id, call SID, data)."""
    rows: list[tuple[int, str, dict[str, Any]]] = []
    for start in range(0, len(sids), SIDS_PER_QUERY):
        query = (
            select(CallEvent.id, Call.sid, CallEvent.data)
            .join(Call, Call.id == CallEvent.call_id)
            .where(Call.sid.in_(sids[start:start + SIDS_PER_QUERY]))
            .where(CallEvent.kind == kind)
            .order_by(CallEvent.id)
        )
        rows += [(row[0], row[1], row[2]) for row in (await session.execute(query)).all()]
    return rows
