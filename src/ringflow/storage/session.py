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
