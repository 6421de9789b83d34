"""Recordings: the rows naming a call's audio files (the files themselves are recordings.py's)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from ringflow.storage.models import Call, Recording
from ringflow.storage.session import Session


async def recording_of(session: Session, account_id: int, sid: str) -> Recording | None:
    """The account's recording with this SID, or None."""
    query = select(Recording).where(
        Recording.sid == sid.lower(), Recording.account_id == account_id
    )
    return (await session.execute(query)).scalar_one_or_none()


async def recordings_of_call(session: Session, account_id: int, call_id: int) -> list[Recording]:
    """The call's recordings, oldest first."""
    query = (
        select(Recording)
        .where(Recording.call_id == call_id, Recording.account_id == account_id)
        .order_by(Recording.created_at, Recording.id)
    )
    return list((await session.execute(query)).scalars())


async def add_recording(
    session: Session,
    *,
    sid: str,
    account_id: int,
    call_id: int,
    path: str,
    fmt: str,
    channels: str,
    duration: float,
    size: int,
    url: str,
    now: dt.datetime,
) -> None:
    """Insert a recording and make ``url`` its call's RecordingUrl."""
    session.add(
        Recording(
            sid=sid,
            account_id=account_id,
            call_id=call_id,
            path=path,
            format=fmt,
            channels=channels,
            duration=duration,
            size=size,
            created_at=now,
        )
    )
    await session.execute(update(Call).where(Call.id == call_id).values(recording_url=url))
