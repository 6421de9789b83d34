"""Heartbeats of the ringflow processes sharing a database (see ``calls/housekeeping.py``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select

from ringflow.storage.models import Instance
from ringflow.storage.session import Session


async def beat(session: Session, name: str, now: dt.datetime) -> None:
    """Record that the process ``name`` is alive at ``now``."""
    me = await session.get(Instance, name)
    if me is None:
        session.add(Instance(name=name, started_at=now, heartbeat_at=now))
    else:
        me.heartbeat_at = now


async def silent_since(session: Session, cutoff: dt.datetime, but: str) -> list[str]:
    """The processes (other than ``but``) whose last heartbeat is older than ``cutoff``."""
    query = select(Instance.name).where(Instance.heartbeat_at < cutoff, Instance.name != but)
    return list((await session.execute(query)).scalars())


async def is_silent(session: Session, name: str, cutoff: dt.datetime) -> bool:
    """Whether the process ``name`` is gone: no heartbeat since ``cutoff``, or none at all."""
    query = select(Instance.heartbeat_at).where(Instance.name == name)
    last = (await session.execute(query)).scalar_one_or_none()
    return last is None or last < cutoff


async def forget(session: Session, name: str) -> None:
    """Remove the process ``name`` (it stopped, or it was found silent)."""
    await session.execute(delete(Instance).where(Instance.name == name))
