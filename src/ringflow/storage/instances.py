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


async def forget(session: Session, name: str) -> None:
    """Remove the process ``name`` (it stopped, or it was found silent)."""
    await session.execute(delete(Instance).where(Instance.name == name))
