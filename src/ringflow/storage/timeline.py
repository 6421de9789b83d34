"""Reading a call's timeline: its steps (leg events, applets entered, requests made)."""

from __future__ import annotations

from sqlalchemy import select

from ringflow.storage.models import CallEvent
from ringflow.storage.session import Session


async def steps(session: Session, call_id: int, *, after: int | None = None) -> list[CallEvent]:
    """The call's steps, oldest first; with ``after`` (a step id), only the later ones in the
    order they were recorded, for following a call as it goes."""
    query = select(CallEvent).where(CallEvent.call_id == call_id)
    if after is not None:
        return list(
            (
                await session.execute(query.where(CallEvent.id > after).order_by(CallEvent.id))
            ).scalars()
        )
    return list((await session.execute(query.order_by(CallEvent.at, CallEvent.id))).scalars())
