"""Admission's statements: an account's lines counted and its queue taken, under its row lock.

Every process that admits calls for an account first locks the account's row (``FOR NO KEY
UPDATE`` on PostgreSQL, so rows that merely reference the account, such as new callbacks, are
not held up). The count of its calls in progress and the choice of the next queued ones then
happen one process at a time, which makes the account's limit exact and its queue FIFO across
processes. SQLite has a single writer and ignores the lock: one process serves it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.storage.models import Account, Call


@dataclasses.dataclass(frozen=True)
class AccountLines:
    """An account (its own limits; None: the server's default) and its calls now."""

    account: Account
    active: int  # calls ringing or in progress
    queued: int

    @property
    def max_concurrent_calls(self) -> int | None:
        return self.account.max_concurrent_calls


# Built once, with parameters: admission runs for every call (see storage/calls.py).
_accounts, _calls = Account.__table__, Call.__table__
_ACCOUNT_COLUMNS = list(_accounts.columns)
_LOCK_ACCOUNT = (
    select(*_ACCOUNT_COLUMNS)
    .where(_accounts.c.id == bindparam("account_id"))
    .with_for_update(key_share=True)
)
_COUNT_LINES = (
    select(_calls.c.status, func.count())
    .where(
        _calls.c.account_id == bindparam("account_id"),
        _calls.c.status.in_(bindparam("statuses", expanding=True)),
    )
    .group_by(_calls.c.status)
)


async def lock_lines(
    session: AsyncSession, account_id: int, active: Collection[str], queued: str
) -> AccountLines | None:
    """Lock the account's admission for this transaction and count its lines (None: no account).

    ``active`` are the statuses that hold a line, ``queued`` the status of a waiting call.
    """
    row = (await session.execute(_LOCK_ACCOUNT, {"account_id": account_id})).one_or_none()
    if row is None:
        return None
    # Read with Core and held as an object of this process (no session tracks it).
    account = Account(**{column.key: value for column, value in zip(_ACCOUNT_COLUMNS, row)})
    rows = await session.execute(
        _COUNT_LINES, {"account_id": account_id, "statuses": [*active, queued]}
    )
    counts = {status: count for status, count in rows.all()}
    return AccountLines(
        account=account,
        active=sum(counts.get(status, 0) for status in active),
        queued=counts.get(queued, 0),
    )


async def oldest_queued(
    session: AsyncSession, account_id: int, queued: str, count: int
) -> list[Call]:
    """The account's ``count`` oldest waiting calls, locked (the account's lock must be held).

    A call locked by someone else is being hung up (live call control): it is skipped.
    """
    return list(
        (
            await session.execute(
                select(Call)
                .where(Call.account_id == account_id, Call.status == queued)
                .order_by(Call.created_at, Call.id)
                .limit(count)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
    )


async def accounts_waiting(session: AsyncSession, queued: str) -> list[int]:
    """The accounts that have calls waiting."""
    query = select(Call.account_id).where(Call.status == queued).distinct()
    return list((await session.execute(query)).scalars())
