"""The streams to bots open now (``live_streams``): each account's count against its limit,
shared by every process on the database.

A stream takes its place under the account's row lock (the same lock admission takes, see
``admission.py``), so two processes opening streams at the same moment cannot both take the
last place. Its row leaves when it ends; the rows of a process found silent leave with its
calls (``calls/housekeeping.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import delete, func, insert, select

from ringflow.storage.db import rowcount
from ringflow.storage.models import Account, LiveStream
from ringflow.storage.session import Session


@dataclasses.dataclass(frozen=True)
class StreamPlace:
    """A stream open now, as the API and the dashboard show it."""

    stream_sid: str
    call_sid: str
    url: str  # without credentials
    bidirectional: bool
    track: str
    started_at: dt.datetime


async def take_place(
    session: Session, account_sid: str, limit: int, place: StreamPlace, owner: str
) -> int | None:
    """Count the account's open streams under its lock and, if fewer than ``limit``, add
    ``place`` (held by process ``owner``). Returns the count before, or None when full.

    An unknown account has no place to take (None too).
    """
    account_id = (
        await session.execute(
            select(Account.id).where(Account.sid == account_sid).with_for_update(key_share=True)
        )
    ).scalar_one_or_none()
    if account_id is None:
        return None
    count = (
        await session.execute(select(func.count()).where(LiveStream.account_id == account_id))
    ).scalar_one()
    if count >= limit:
        return None
    await session.execute(
        insert(LiveStream).values(account_id=account_id, owner=owner, **dataclasses.asdict(place))
    )
    return int(count)


async def give_back(session: Session, stream_sid: str) -> None:
    """The stream ended: its place is free."""
    await session.execute(delete(LiveStream).where(LiveStream.stream_sid == stream_sid))


async def open_streams(session: Session, account_sid: str) -> list[StreamPlace]:
    """The account's streams open now, the oldest first."""
    rows = await session.execute(
        select(
            LiveStream.stream_sid,
            LiveStream.call_sid,
            LiveStream.url,
            LiveStream.bidirectional,
            LiveStream.track,
            LiveStream.started_at,
        )
        .join(Account, Account.id == LiveStream.account_id)
        .where(Account.sid == account_sid)
        .order_by(LiveStream.started_at, LiveStream.stream_sid)
    )
    return [StreamPlace(**row._mapping) for row in rows]


async def count_open(session: Session, account_sid: str) -> int:
    """How many streams the account has open now."""
    query = (
        select(func.count())
        .select_from(LiveStream)
        .join(Account, Account.id == LiveStream.account_id)
        .where(Account.sid == account_sid)
    )
    return int((await session.execute(query)).scalar_one())


async def forget_owner(session: Session, owner: str) -> int:
    """Free the places of every stream process ``owner`` held (it stopped, or went silent)."""
    return rowcount(await session.execute(delete(LiveStream).where(LiveStream.owner == owner)))
