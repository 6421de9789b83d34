"""Apps (flows): validated graphs of applets, versioned as they are replaced."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from ringflow.storage.models import App
from ringflow.storage.session import Session

_MAX_ID = 2**63 - 1  # ids are BIGINT: a larger one names no app (the driver would overflow)


async def app_of(session: Session, account_id: int, app_id: int) -> App | None:
    """The account's app ``app_id``, or None (another account's app is not found either)."""
    if not 0 < app_id <= _MAX_ID:
        return None
    query = select(App).where(App.id == app_id, App.account_id == account_id)
    return (await session.execute(query)).scalar_one_or_none()


async def apps_of(session: Session, account_id: int) -> list[App]:
    """The account's apps, oldest first."""
    query = select(App).where(App.account_id == account_id).order_by(App.id)
    return list((await session.execute(query)).scalars())


async def app_ids_in(session: Session, account_id: int, ids: Iterable[int]) -> set[int]:
    """Those of ``ids`` that name apps of the account."""
    wanted = {i for i in ids if 0 < i <= _MAX_ID}
    if not wanted:
        return set()
    query = select(App.id).where(App.account_id == account_id, App.id.in_(wanted))
    return set((await session.execute(query)).scalars())


async def add_app(
    session: Session, account_id: int, name: str, graph: dict[str, Any], now: dt.datetime
) -> App:
    """Insert version 1 of an app; its id is set on return."""
    app = App(
        account_id=account_id, name=name, graph=graph, version=1, created_at=now, updated_at=now
    )
    session.add(app)
    await session.flush()
    return app


async def replace_app(
    session: Session, app: App, name: str, graph: dict[str, Any], now: dt.datetime
) -> App:
    """Store ``graph`` as the next version of ``app`` (loaded in this session)."""
    app.graph, app.name, app.version, app.updated_at = graph, name, app.version + 1, now
    await session.flush()
    return app
