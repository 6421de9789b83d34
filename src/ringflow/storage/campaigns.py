"""Campaigns' statements: campaigns and their numbers, the driver's lease, the outcomes of the
calls it placed, and contact lists uploaded as CSV.

A campaign is driven by one process at a time: the one named in ``driver`` while
``lease_until`` lies ahead. ``claim`` hands out campaigns whose lease ran out (or that have
none), ``renew`` keeps one and reads its state in the same statement. A number is marked
called in the transaction that inserts its call (``mark_called``, conditional on the attempt
it expects), and ``calls`` has one row at most per (number, attempt): a number is never called
twice for one attempt, whichever process places it and whenever one dies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.errors import Conflict
from ringflow.storage.db import constants, rowcount
from ringflow.storage.models import (
    Call,
    Campaign,
    CampaignNumber,
    Contact,
    ContactList,
    ContactUpload,
)

ROWS_PER_INSERT = 1000  # numbers inserted per statement


class AlreadyCalled(Conflict):
    """Another process placed this attempt of the number already (it took the campaign over)."""


@dataclasses.dataclass
class NumberRow:
    """A number of a campaign as its driver keeps it."""

    id: int
    position: int
    number: str
    fields: dict[str, Any] | None
    state: str
    attempts: int
    next_attempt_at: dt.datetime | None
    call_id: int | None


@dataclasses.dataclass(frozen=True)
class Ended:
    """A campaign call that has ended: its number, the call's status and when it ended."""

    number_id: int
    status: str
    ended_at: dt.datetime | None
    call_sid: str


# -- campaigns ---------------------------------------------------------------------------------


async def add_campaign(
    session: AsyncSession,
    values: dict[str, Any],
    numbers: Sequence[tuple[str, dict[str, Any] | None]],
    now: dt.datetime,
) -> Campaign:
    """Insert a campaign and its numbers (in order); returns the campaign."""
    campaign = Campaign(**values, numbers_total=len(numbers))
    session.add(campaign)
    await session.flush()
    rows = [
        {
            "campaign_id": campaign.id,
            "position": position,
            "number": number,
            "fields": fields,
            "state": "pending",
            "attempts": 0,
            "updated_at": now,
        }
        for position, (number, fields) in enumerate(numbers, 1)
    ]
    for start in range(0, len(rows), ROWS_PER_INSERT):
        await session.execute(insert(CampaignNumber), rows[start : start + ROWS_PER_INSERT])
    return campaign


async def campaign_in_account(
    session: AsyncSession, account_id: int, sid: str, *, lock: bool = False
) -> Campaign | None:
    """The campaign ``sid`` of the account, or None (locked for this transaction if asked)."""
    query = select(Campaign).where(
        Campaign.account_id == account_id, Campaign.sid == sid.strip().lower()
    )
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def campaigns_of(
    session: AsyncSession, account_id: int, status: str | None, limit: int, offset: int
) -> tuple[list[Campaign], int]:
    """A page of the account's campaigns, newest first, and how many there are in all."""
    where = [Campaign.account_id == account_id]
    if status is not None:
        where.append(Campaign.status == status)
    total = (
        await session.execute(select(func.count()).select_from(Campaign).where(*where))
    ).scalar_one()
    rows = await session.execute(
        select(Campaign)
        .where(*where)
        .order_by(Campaign.created_at.desc(), Campaign.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), total


async def set_campaign(session: AsyncSession, campaign_id: int, values: dict[str, Any]) -> None:
    """Change a campaign's columns."""
    await session.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values))


async def delete_campaign(session: AsyncSession, campaign_id: int) -> None:
    await session.execute(delete(CampaignNumber).where(CampaignNumber.campaign_id == campaign_id))
    await session.execute(delete(Campaign).where(Campaign.id == campaign_id))


async def counts(
    session: AsyncSession, campaign_ids: Collection[int]
) -> dict[int, tuple[dict[str, int], int]]:
    """Per campaign: its numbers counted by state, and the attempts made in all."""
    found: dict[int, tuple[dict[str, int], int]] = {cid: ({}, 0) for cid in campaign_ids}
    if not campaign_ids:
        return found
    rows = await session.execute(
        select(
            CampaignNumber.campaign_id,
            CampaignNumber.state,
            func.count(),
            func.coalesce(func.sum(CampaignNumber.attempts), 0),
        )
        .where(CampaignNumber.campaign_id.in_(list(campaign_ids)))
        .group_by(CampaignNumber.campaign_id, CampaignNumber.state)
    )
    for campaign_id, state, count, attempts in rows.all():
        states, total = found[campaign_id]
        states[state] = count
        found[campaign_id] = (states, total + int(attempts))
    return found


# -- the driver's lease ------------------------------------------------------------------------


async def claim(
    session: AsyncSession, me: str, now: dt.datetime, until: dt.datetime, exclude: Collection[int]
) -> list[int]:
    """Lease to ``me`` the campaigns that need a driver now (``wake_at`` has come) and have
    none alive. Returns their ids."""
    query = (
        update(Campaign)
        .where(Campaign.wake_at <= now)
        .where(or_(Campaign.driver.is_(None), Campaign.lease_until < now, Campaign.driver == me))
        .values(driver=me, lease_until=until)
        .returning(Campaign.id)
    )
    if exclude:
        query = query.where(Campaign.id.not_in(list(exclude)))
    return [row[0] for row in (await session.execute(query)).all()]


async def next_look(session: AsyncSession, now: dt.datetime, me: str) -> dt.datetime | None:
    """When a campaign may next need a driver that ``me`` does not run: the soonest ``wake_at``
    still ahead, or the soonest lease of another process that could run out (None: neither)."""
    waking = await session.execute(select(func.min(Campaign.wake_at)).where(Campaign.wake_at > now))
    leased = await session.execute(
        select(func.min(Campaign.lease_until)).where(
            Campaign.wake_at.is_not(None), Campaign.driver.is_not(None), Campaign.driver != me
        )
    )
    moments = [m for m in (waking.scalar_one(), leased.scalar_one()) if m is not None]
    return min(moments) if moments else None


async def renew(
    session: AsyncSession, campaign_id: int, me: str, until: dt.datetime
) -> Campaign | None:
    """Extend ``me``'s lease and read the campaign; None if another process holds it now.

    The campaign is detached: the driver keeps it between transactions, and a rollback must
    not expire it."""
    rows = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.driver == me)
        .values(lease_until=until)
        .returning(Campaign)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    campaign = rows.scalar_one_or_none()
    if campaign is not None:
        session.expunge(campaign)
    return campaign


async def let_go(session: AsyncSession, campaign_id: int, me: str, **values: Any) -> None:
    """Give up ``me``'s lease at once (so no process need wait it out), setting ``values``
    (an idle campaign's ``wake_at``)."""
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.driver == me)
        .values(driver=None, lease_until=None, **values)
    )


# -- numbers -----------------------------------------------------------------------------------


async def open_numbers(
    session: AsyncSession, campaign_id: int, final: Collection[str]
) -> list[NumberRow]:
    """The campaign's numbers not yet settled, in list order."""
    rows = await session.execute(
        select(
            CampaignNumber.id,
            CampaignNumber.position,
            CampaignNumber.number,
            CampaignNumber.fields,
            CampaignNumber.state,
            CampaignNumber.attempts,
            CampaignNumber.next_attempt_at,
            CampaignNumber.call_id,
        )
        .where(CampaignNumber.campaign_id == campaign_id, CampaignNumber.state.not_in(list(final)))
        .order_by(CampaignNumber.position)
    )
    return [NumberRow(*row) for row in rows.all()]


async def mark_called(
    session: AsyncSession,
    number: NumberRow,
    attempt: int,
    call_id: int,
    *,
    campaign_id: int,
    driver: str,
    placing: str,
    waiting: Collection[str],
    state: str,
    now: dt.datetime,
) -> None:
    """Record that attempt ``attempt`` of ``number`` is the call ``call_id``.

    AlreadyCalled, undoing the call, unless the number still waits for that attempt (another
    process may have placed it, or a PUT completed the campaign) and the campaign is still
    ``placing`` under ``driver`` (a pause, or a lease lost, stops calls here at once).
    """
    driving = (
        select(Campaign.id)
        .where(Campaign.id == campaign_id, Campaign.status == placing, Campaign.driver == driver)
        .exists()
    )
    result = await session.execute(
        update(CampaignNumber)
        .where(
            CampaignNumber.id == number.id,
            CampaignNumber.attempts == attempt - 1,
            CampaignNumber.state.in_(list(waiting)),
            driving,
        )
        .values(
            state=state, attempts=attempt, call_id=call_id, next_attempt_at=None, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )
    if not rowcount(result):
        raise AlreadyCalled(
            f"attempt {attempt} of {number.number} is not this process's to "
            "place (the campaign was paused, completed or taken over)"
        )


async def ended_calls(
    session: AsyncSession, campaign_id: int, in_progress: str, terminal: Collection[str]
) -> list[Ended]:
    """The campaign's numbers ``in_progress`` whose call has ended."""
    rows = await session.execute(
        select(CampaignNumber.id, Call.status, Call.end_time, Call.sid)
        .join(Call, Call.id == CampaignNumber.call_id)
        .where(
            CampaignNumber.campaign_id == campaign_id,
            CampaignNumber.state == in_progress,
            Call.status.in_(constants(terminal)),
        )
    )
    return [Ended(*row) for row in rows.all()]


async def settle(session: AsyncSession, changes: Iterable[dict[str, Any]]) -> None:
    """Write numbers' new states: each change holds ``id``, ``state``, ``next_attempt_at``,
    ``last_status`` and ``updated_at``."""
    rows = [{"b_id": c["id"], **{k: v for k, v in c.items() if k != "id"}} for c in changes]
    if rows:
        table = CampaignNumber.metadata.tables[CampaignNumber.__tablename__]
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                state=bindparam("state"),
                next_attempt_at=bindparam("next_attempt_at"),
                last_status=bindparam("last_status"),
                updated_at=bindparam("updated_at"),
            ),
            rows,
        )


async def give_up_rest(
    session: AsyncSession, campaign_id: int, waiting: Collection[str], state: str, now: dt.datetime
) -> int:
    """Settle the numbers still ``waiting`` (not called, or waiting for a retry) as ``state``."""
    result = await session.execute(
        update(CampaignNumber)
        .where(CampaignNumber.campaign_id == campaign_id, CampaignNumber.state.in_(list(waiting)))
        .values(state=state, next_attempt_at=None, updated_at=now)
    )
    return rowcount(result)


# -- contact lists -----------------------------------------------------------------------------


async def add_list(
    session: AsyncSession, account_id: int, sid: str, name: str, now: dt.datetime
) -> ContactList:
    contact_list = ContactList(
        sid=sid, account_id=account_id, name=name, row_count=0, created_at=now
    )
    session.add(contact_list)
    await session.flush()
    return contact_list


async def list_named(session: AsyncSession, account_id: int, name: str) -> ContactList | None:
    return (
        await session.execute(
            select(ContactList)
            .where(ContactList.account_id == account_id, ContactList.name == name)
            .order_by(ContactList.id)
            .limit(1)
        )
    ).scalar_one_or_none()


async def add_contacts(
    session: AsyncSession,
    contact_list: ContactList,
    rows: Sequence[tuple[str, dict[str, Any] | None]],
) -> None:
    """Append rows (number, other columns) to the list."""
    first = contact_list.row_count + 1
    values = [
        {"list_id": contact_list.id, "position": first + i, "number": number, "fields": fields}
        for i, (number, fields) in enumerate(rows)
    ]
    for start in range(0, len(values), ROWS_PER_INSERT):
        await session.execute(insert(Contact), values[start : start + ROWS_PER_INSERT])
    contact_list.row_count += len(rows)


async def numbers_in_list(session: AsyncSession, list_id: int) -> set[str]:
    return set(
        (await session.execute(select(Contact.number).where(Contact.list_id == list_id))).scalars()
    )


async def add_upload(session: AsyncSession, values: dict[str, Any]) -> ContactUpload:
    upload = ContactUpload(**values)
    session.add(upload)
    await session.flush()
    return upload


async def upload_in_account(
    session: AsyncSession, account_id: int, sid: str
) -> tuple[ContactUpload, ContactList] | None:
    row = (
        await session.execute(
            select(ContactUpload, ContactList)
            .join(ContactList, ContactList.id == ContactUpload.list_id)
            .where(ContactUpload.account_id == account_id, ContactUpload.sid == sid.strip().lower())
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def lists_in_account(
    session: AsyncSession, account_id: int, sids: Collection[str]
) -> dict[str, int]:
    """The ids of those of ``sids`` that are contact lists of the account."""
    rows = await session.execute(
        select(ContactList.sid, ContactList.id).where(
            ContactList.account_id == account_id, ContactList.sid.in_([sid.lower() for sid in sids])
        )
    )
    return {sid: list_id for sid, list_id in rows.all()}


async def contacts_of(
    session: AsyncSession, list_ids: Sequence[int]
) -> list[tuple[str, dict[str, Any] | None]]:
    """The rows of the lists, list by list in the order given, each in upload order."""
    found: list[tuple[str, dict[str, Any] | None]] = []
    for list_id in list_ids:
        rows = await session.execute(
            select(Contact.number, Contact.fields)
            .where(Contact.list_id == list_id)
            .order_by(Contact.position)
        )
        found += [(number, fields) for number, fields in rows.all()]
    return found
