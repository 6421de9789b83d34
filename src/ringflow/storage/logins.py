"""Operators: dashboard sign-ins that see every account (an account's own is on its row)."""

from __future__ import annotations

import datetime as dt

from ringflow.storage.models import Operator
from ringflow.storage.session import Session


async def operator_hash(session: Session, name: str) -> str | None:
    """The operator's password hash, or None when there is no such operator."""
    row = await session.get(Operator, name)
    return row.password_hash if row is not None else None


async def set_operator_hash(
    session: Session, name: str, password_hash: str, now: dt.datetime
) -> None:
    """Create the operator ``name`` or replace its password hash."""
    row = await session.get(Operator, name)
    if row is None:
        session.add(
            Operator(name=name, password_hash=password_hash, created_at=now, updated_at=now)
        )
    else:
        row.password_hash, row.updated_at = password_hash, now


async def remove_operator(session: Session, name: str) -> bool:
    """Delete the operator ``name``; False when there is none."""
    row = await session.get(Operator, name)
    if row is None:
        return False
    await session.delete(row)
    return True
