"""Who may sign in to the dashboard: an account with its dashboard password, or an operator.

Shared by the CLI (``ringflow accounts password``, ``ringflow operator password``), the demo and
the sign-in page. Hashing runs in a worker thread so a sign-in does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import re

from ringflow.accounts import Accounts
from ringflow.dashboard.auth import check_password_rules, hash_password, verify_password
from ringflow.errors import InvalidRequest, NotFound
from ringflow.storage import accounts as stored_accounts
from ringflow.storage import logins as stored_logins
from ringflow.storage.models import Account

_OPERATOR_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def _rules(password: str) -> None:
    try:
        check_password_rules(password)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def operator_name(name: str) -> str:
    """An operator's name, lower-cased; InvalidRequest unless it is a plain short name."""
    name = name.strip().lower()
    if not _OPERATOR_NAME.fullmatch(name):
        raise InvalidRequest("an operator name is 1-64 letters, digits, '.', '_' or '-'")
    return name


async def set_account_password(accounts: Accounts, account_sid: str, password: str) -> str:
    """Set (or replace) the account's dashboard password; returns the account SID."""
    _rules(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    async with accounts.db.session() as session:
        account = await accounts.get(session, account_sid)
        await stored_accounts.set_password_hash(session, account.id, password_hash)
        return account.sid


async def set_operator_password(accounts: Accounts, name: str, password: str) -> str:
    """Create the operator ``name`` or give it a new password; returns the name."""
    name = operator_name(name)
    _rules(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    async with accounts.db.session() as session:
        await stored_logins.set_operator_hash(session, name, password_hash, accounts.clock.wall())
    return name


async def remove_operator(accounts: Accounts, name: str) -> None:
    """Delete an operator sign-in (its open sessions end at their next request)."""
    async with accounts.db.session() as session:
        if not await stored_logins.remove_operator(session, operator_name(name)):
            raise NotFound(f"no operator {name!r}")


async def account_hash(accounts: Accounts, account_sid: str) -> tuple[Account, str] | None:
    """The account and its dashboard password hash, or None (no such account, no password)."""
    async with accounts.db.session() as session:
        account = await stored_accounts.account_by_sid(session, account_sid)
    if account is None or not account.dashboard_password_hash:
        return None
    return account, account.dashboard_password_hash


async def operator_hash(accounts: Accounts, name: str) -> str | None:
    """The operator's password hash, or None."""
    try:
        name = operator_name(name)
    except InvalidRequest:
        return None
    async with accounts.db.session() as session:
        return await stored_logins.operator_hash(session, name)


async def check_account(
    accounts: Accounts, account_sid: str, password: str
) -> tuple[Account, str] | None:
    """(account, hash) when the password opens the account's dashboard, else None."""
    found = await account_hash(accounts, account_sid)
    with accounts.clock.busy():
        ok = await asyncio.to_thread(verify_password, password, found[1] if found else None)
    return found if ok and found else None


async def check_operator(accounts: Accounts, name: str, password: str) -> str | None:
    """The operator's password hash when the password is right, else None."""
    stored = await operator_hash(accounts, name)
    with accounts.clock.busy():
        ok = await asyncio.to_thread(verify_password, password, stored)
    return stored if ok and stored else None
