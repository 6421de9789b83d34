"""The call engine's statements on calls: locking one for a change, finding the calls a
process was carrying, the queued calls past their age, and the timeline requests of live call
control. (What the API, dashboard and CLI read is in ``call_views``; admission in
``admission``.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.storage.models import Account, Call, CallEvent, Leg

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


async def carried_by(session: AsyncSession, owner: str, live: Collection[str]) -> list[Call]:
    """The calls in a ``live`` status that process ``owner`` carries, locked (those locked
    elsewhere are being ended already: skipped)."""
    query = (
        select(Call)
        .where(Call.owner == owner, Call.status.in_(list(live)))
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def queued_before(session: AsyncSession, queued: str, cutoff: dt.datetime) -> list[Call]:
    """Calls waiting since before ``cutoff``, locked (those locked elsewhere are skipped)."""
    query = (
        select(Call)
        .where(Call.status == queued, Call.created_at < cutoff)
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
