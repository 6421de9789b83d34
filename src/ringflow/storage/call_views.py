"""Calls as the API, the dashboard and the CLI read them: one call, pages of filtered lists,
counts and the dashboard's figures. Every lookup from a request takes the account's id with the
object's, so another account's call is simply not found."""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
from collections.abc import Callable, Collection, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Numeric, and_, cast, func, literal, or_, select, tuple_

from ringflow.storage.db import constants
from ringflow.storage.models import Account, Call
from ringflow.storage.session import Session

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
    "eq": operator.eq,
}
# (created_at, id): a position in the order lists are paged by (ix_calls_account_created).
Position = tuple[dt.datetime, int]


@dataclasses.dataclass(frozen=True)
class CallFilter:
    """Which of one account's calls a list holds; a field left empty does not filter.

    Comparisons are ``(op, value)`` pairs with an op of ``OPS``, all of which must hold.
    """

    account_id: int
    sids: Sequence[str] = ()
    created: Sequence[tuple[str, dt.datetime]] = ()
    # The callee as the API shows it: the second party of a two-number call, else the ExoPhone.
    to_numbers: Sequence[str] = ()
    from_numbers: Sequence[str] = ()
    caller_ids: Sequence[str] = ()
    statuses: Sequence[str] = ()
    directions: Sequence[str] = ()
    durations: Sequence[tuple[str, int]] = ()
    prices: Sequence[tuple[str, Decimal]] = ()
    campaign_id: int | None = None  # the calls of one campaign


def _where(f: CallFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [Call.account_id == f.account_id]
    if f.sids:
        where.append(Call.sid.in_(f.sids))
    where += [OPS[op](Call.created_at, at) for op, at in f.created]
    if f.to_numbers:
        where.append(
            or_(
                and_(Call.shape == "numbers", Call.to_number.in_(f.to_numbers)),
                and_(Call.shape != "numbers", Call.caller_id.in_(f.to_numbers)),
            )
        )
    if f.from_numbers:
        where.append(Call.from_number.in_(f.from_numbers))
    if f.caller_ids:
        where.append(Call.caller_id.in_(f.caller_ids))
    if f.statuses:
        where.append(Call.status.in_(f.statuses))
    if f.campaign_id is not None:
        where.append(Call.campaign_id == f.campaign_id)
    if f.directions:
        where.append(Call.direction.in_(f.directions))
    where += [OPS[op](Call.duration, seconds) for op, seconds in f.durations]
    # Price is stored as text (it is echoed verbatim); compare it as a number.
    price = cast(func.nullif(Call.price, ""), Numeric(18, 6))
    where += [OPS[op](price, literal(amount, Numeric(18, 6))) for op, amount in f.prices]
    return where


async def count_calls(session: Session, f: CallFilter) -> int:
    """How many calls match ``f``."""
    query = select(func.count()).select_from(Call).where(*_where(f))
    return int((await session.execute(query)).scalar_one())


async def calls_page(
    session: Session, f: CallFilter, cursor: Position | None, size: int, ascending: bool
) -> tuple[list[Call], bool]:
    """Up to ``size`` calls matching ``f`` past ``cursor`` in (created_at, id) order, ascending
    or descending, and whether more follow."""
    where = _where(f)
    if cursor is not None:
        key = tuple_(Call.created_at, Call.id)
        at = tuple_(literal(cursor[0], Call.created_at.type), literal(cursor[1], Call.id.type))
        where.append(key > at if ascending else key < at)
    if ascending:
        order = (Call.created_at.asc(), Call.id.asc())
    else:
        order = (Call.created_at.desc(), Call.id.desc())
    # One row more than the page says whether another page lies beyond it, without a query.
    query = select(Call).where(*where).order_by(*order).limit(size + 1)
    rows = list((await session.execute(query)).scalars())
    return rows[:size], len(rows) > size


async def campaign_calls(session: Session, f: CallFilter, limit: int, offset: int) -> list[Call]:
    """A page of the calls matching ``f`` (a campaign's), oldest first."""
    query = (
        select(Call)
        .where(*_where(f))
        .order_by(Call.created_at.asc(), Call.id.asc())
        .limit(limit)
        .offset(offset)
    )
    return list((await session.execute(query)).scalars())


async def call_in_account(session: Session, account_id: int, sid: str) -> Call | None:
    """The account's call with this SID (any letter case), or None."""
    query = select(Call).where(Call.sid == sid.lower(), Call.account_id == account_id)
    return (await session.execute(query)).scalar_one_or_none()


async def call_by_sid(session: Session, sid: str) -> Call | None:
    """The call with this SID in any account (the operator's CLI), or None."""
    return (await session.execute(select(Call).where(Call.sid == sid.lower()))).scalar_one_or_none()


async def call_now(session: Session, call_id: int) -> Call | None:
    """The call as stored now (re-read even if this session has it already), or None."""
    return await session.get(Call, call_id, populate_existing=True)


async def live_calls(
    session: Session, account_id: int, statuses: Collection[str], limit: int = 50
) -> list[Call]:
    """The account's calls in one of ``statuses``, newest first."""
    query = (
        select(Call)
        .where(Call.account_id == account_id, Call.status.in_(constants(statuses)))
        .order_by(Call.created_at.desc(), Call.id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def calls_by_status(session: Session, account_id: int, since: dt.datetime) -> dict[str, int]:
    """How many calls the account made since ``since``, per status."""
    query = (
        select(Call.status, func.count())
        .where(Call.account_id == account_id, Call.created_at >= since)
        .group_by(Call.status)
    )
    return {status: count for status, count in (await session.execute(query)).all()}


async def call_sids(session: Session, call_ids: Collection[int]) -> dict[int, str]:
    """Call SIDs by id."""
    if not call_ids:
        return {}
    rows = await session.execute(select(Call.id, Call.sid).where(Call.id.in_(call_ids)))
    return {row[0]: row[1] for row in rows.all()}


async def accounts_overview(
    session: Session, since: dt.datetime, live: Collection[str]
) -> list[tuple[Account, int, int]]:
    """Every account with its calls since ``since`` and its calls in one of ``live``."""
    rows = (await session.execute(accounts_overview_statement(since, live))).all()
    return [(account, today, active) for account, today, active in rows]


def accounts_overview_statement(since: dt.datetime, live: Collection[str]) -> Any:
    """The SELECT of ``accounts_overview``: each count reads only the calls it counts (by
    ``ix_calls_account_created`` and ``ix_calls_account_status``), not every call ever made."""
    mine = Call.account_id == Account.id
    today = select(func.count()).where(mine, Call.created_at >= since).scalar_subquery()
    active = select(func.count()).where(mine, Call.status.in_(constants(live))).scalar_subquery()
    return select(Account, today, active).order_by(Account.sid)
