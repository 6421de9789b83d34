"""Accounts, their API keys and their own limits."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from ringflow.storage.models import Account, ApiKey
from ringflow.storage.session import Session

# An account's own limits (None: the server's default applies), in the order they are shown.
LIMITS = (
    "max_concurrent_calls",
    "max_queued_calls",
    "rate_limit_per_minute",
    "max_concurrent_streams",
)
_MAX_ID = 2**63 - 1  # ids are BIGINT: a larger one names no row (the driver would overflow)


async def account_by_sid(session: Session, sid: str) -> Account | None:
    """The account with this SID (SIDs compare case-insensitively), or None."""
    query = select(Account).where(Account.sid == sid.strip().lower())
    return (await session.execute(query)).scalar_one_or_none()


async def account_by_id(session: Session, account_id: int) -> Account | None:
    """The account with this row id, or None."""
    return await session.get(Account, account_id)


async def sids_starting(session: Session, prefix: str) -> set[str]:
    """Every account SID that starts with ``prefix`` (to pick a free one)."""
    query = select(Account.sid).where(Account.sid.like(f"{prefix}%"))
    return set((await session.execute(query)).scalars())


async def add_account(
    session: Session, sid: str, name: str, time_zone: str, now: dt.datetime
) -> Account:
    """Insert an account; its id is set on return."""
    account = Account(sid=sid, name=name, time_zone=time_zone, created_at=now)
    session.add(account)
    await session.flush()
    return account


def add_key(session: Session, account_id: int, key: str, token_hash: str, now: dt.datetime) -> None:
    """Insert an API key (its token only hashed)."""
    session.add(ApiKey(account_id=account_id, key=key, token_hash=token_hash, created_at=now))


async def revoke_key(session: Session, account_id: int, key: str, now: dt.datetime) -> bool:
    """Mark the account's key revoked (a revoked key keeps its first date); False: no such key."""
    row = (
        await session.execute(
            select(ApiKey).where(ApiKey.account_id == account_id, ApiKey.key == key)
        )
    ).scalar_one_or_none()
    if row is None:
        return False
    row.revoked_at = row.revoked_at or now
    return True


async def active_keys(session: Session, username: str) -> list[tuple[str, int]]:
    """(token hash, account id) of the unrevoked keys a Basic username names: the key id, or,
    when no key has that id, every key of the account with that SID."""
    rows = (
        await session.execute(
            select(ApiKey.token_hash, ApiKey.account_id).where(
                ApiKey.key == username, ApiKey.revoked_at.is_(None)
            )
        )
    ).all()
    if not rows:
        rows = (
            await session.execute(
                select(ApiKey.token_hash, ApiKey.account_id)
                .join(Account, Account.id == ApiKey.account_id)
                .where(Account.sid == username.lower(), ApiKey.revoked_at.is_(None))
            )
        ).all()
    return [(row[0], row[1]) for row in rows]


async def api_keys(session: Session, account_id: int) -> list[ApiKey]:
    """The account's API keys, active first, newest first."""
    query = (
        select(ApiKey)
        .where(ApiKey.account_id == account_id)
        .order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return list((await session.execute(query)).scalars())


async def key_by_row_id(session: Session, account_id: int, key_id: int) -> ApiKey | None:
    """The account's API key with this row id, or None."""
    if not 0 < key_id <= _MAX_ID:
        return None
    query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id)
    return (await session.execute(query)).scalar_one_or_none()


async def set_limits(session: Session, account_id: int, values: dict[str, int | None]) -> None:
    """Store some of the account's own limits (names from ``LIMITS``; None: the default)."""
    unknown = set(values) - set(LIMITS)
    if unknown:
        raise ValueError(f"not an account limit: {', '.join(sorted(unknown))}")
    if values:
        await session.execute(update(Account).where(Account.id == account_id).values(**values))


async def set_password_hash(session: Session, account_id: int, password_hash: str) -> None:
    """Store the account's dashboard password hash."""
    await session.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(dashboard_password_hash=password_hash)
    )
