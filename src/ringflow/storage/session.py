"""The transaction handle callers pass back into storage functions, and storage's own errors.

Code outside ``storage/`` opens a transaction with ``Database.session()`` and hands it to the
functions here without knowing what it is, so only storage depends on SQLAlchemy.
"""

from __future__ import annotations

from typing import TypeAlias

from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.errors import Conflict

Session: TypeAlias = AsyncSession


class Duplicate(Conflict):
    """A row with the same unique key exists already."""


def detach(session: Session, row: object) -> None:
    """Take a loaded row out of ``session``, so that it may outlive it unchanged: a rollback of
    the session would otherwise expire it (a cached row must stay readable anywhere)."""
    session.expunge(row)
