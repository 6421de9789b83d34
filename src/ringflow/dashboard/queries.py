"""What the dashboard reads, always within one account: every lookup takes the account's id
with the object's, so another account's call, recording or callback is simply not found."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.calls.status import ACTIVE, Status
from ringflow.errors import NotFound
from ringflow.storage.models import (
    Account,
    ApiKey,
    Call,
    CallEvent,
    OutboxAttempt,
    OutboxMessage,
    Recording,
)

LIVE = (Status.QUEUED.value, *(s.value for s in ACTIVE))
_MAX_ID = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Callback:
    """A status callback of a call and every attempt to deliver it."""

    message: OutboxMessage
    attempts: list[OutboxAttempt]


@dataclasses.dataclass(frozen=True)
class CallView:
    """Everything the call page shows."""

    call: Call
    events: list[CallEvent]
    callbacks: list[Callback]
    recordings: list[Recording]

    @property
    def settled(self) -> bool:
        """Over, with no callback still to deliver: the page can stop refreshing."""
        return self.call.status not in LIVE and all(
            cb.message.state != "pending" for cb in self.callbacks
        )


async def find_call(session: AsyncSession, account_id: int, sid: str) -> Call:
    """The account's call with this SID, or NotFound."""
    call = (
        await session.execute(
            select(Call).where(Call.sid == sid.lower(), Call.account_id == account_id)
        )
    ).scalar_one_or_none()
    if call is None:
        raise NotFound(f"Call {sid} not found")
    return call


async def call_view(session: AsyncSession, account_id: int, sid: str) -> CallView:
    """A call of the account with its timeline, callbacks (and attempts) and recordings."""
    call = await find_call(session, account_id, sid)
    events = list(
        (
            await session.execute(
                select(CallEvent)
                .where(CallEvent.call_id == call.id)
                .order_by(CallEvent.at, CallEvent.id)
            )
        ).scalars()
    )
    messages = list(
        (
            await session.execute(
                select(OutboxMessage)
                .where(OutboxMessage.call_id == call.id, OutboxMessage.account_id == account_id)
                .order_by(OutboxMessage.id)
            )
        ).scalars()
    )
    attempts: dict[int, list[OutboxAttempt]] = {m.id: [] for m in messages}
    if messages:
        rows = (
            await session.execute(
                select(OutboxAttempt)
                .where(OutboxAttempt.message_id.in_(list(attempts)))
                .order_by(OutboxAttempt.at, OutboxAttempt.id)
            )
        ).scalars()
        for row in rows:
            attempts[row.message_id].append(row)
    recordings = list(
        (
            await session.execute(
                select(Recording)
                .where(Recording.call_id == call.id, Recording.account_id == account_id)
                .order_by(Recording.created_at, Recording.id)
            )
        ).scalars()
    )
    return CallView(call, events, [Callback(m, attempts[m.id]) for m in messages], recordings)


async def live_calls(session: AsyncSession, account_id: int, limit: int = 50) -> list[Call]:
    """Calls waiting, ringing or talking now, newest first."""
    query = (
        select(Call)
        .where(Call.account_id == account_id, Call.status.in_(LIVE))
        .order_by(Call.created_at.desc(), Call.id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


def start_of_day(account: Account, now: dt.datetime) -> dt.datetime:
    """Midnight of ``now``'s day in the account's time zone, as UTC."""
    local = now.astimezone(ZoneInfo(account.time_zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)


async def calls_by_status(
    session: AsyncSession, account: Account, since: dt.datetime
) -> dict[str, int]:
    """How many calls the account made since ``since``, per status."""
    query = (
        select(Call.status, func.count())
        .where(Call.account_id == account.id, Call.created_at >= since)
        .group_by(Call.status)
    )
    return {status: count for status, count in (await session.execute(query)).all()}


@dataclasses.dataclass(frozen=True)
class CallbackHealth:
    """Callbacks still to deliver, those retrying after a failure, and recent given-up ones."""

    pending: int
    failing: list[OutboxMessage]
    failed: list[OutboxMessage]


async def callback_health(
    session: AsyncSession, account_id: int, limit: int = 10
) -> CallbackHealth:
    """The account's undelivered callbacks."""
    pending = (
        await session.execute(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.account_id == account_id, OutboxMessage.state == "pending")
        )
    ).scalar_one()
    failing = (
        await session.execute(
            select(OutboxMessage)
            .where(
                OutboxMessage.account_id == account_id,
                OutboxMessage.state == "pending",
                OutboxMessage.attempts > 0,
            )
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
        )
    ).scalars()
    failed = (
        await session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.account_id == account_id, OutboxMessage.state == "failed")
            .order_by(OutboxMessage.id.desc())
            .limit(limit)
        )
    ).scalars()
    return CallbackHealth(pending, list(failing), list(failed))


async def call_sids(session: AsyncSession, call_ids: set[int]) -> dict[int, str]:
    """Call SIDs by id (to link callbacks to their calls)."""
    if not call_ids:
        return {}
    rows = await session.execute(select(Call.id, Call.sid).where(Call.id.in_(call_ids)))
    return dict(rows.all())


async def api_keys(session: AsyncSession, account_id: int) -> list[ApiKey]:
    """The account's API keys, active first, newest first."""
    query = (
        select(ApiKey)
        .where(ApiKey.account_id == account_id)
        .order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return list((await session.execute(query)).scalars())


async def find_key(session: AsyncSession, account_id: int, key_id: int) -> ApiKey:
    """The account's API key with this row id, or NotFound."""
    if not 0 < key_id <= _MAX_ID:  # the database would overflow rather than find nothing
        raise NotFound(f"no API key {key_id} in this account")
    row = (
        await session.execute(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id)
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no API key {key_id} in this account")
    return row


async def accounts_overview(
    session: AsyncSession, since: dt.datetime
) -> list[tuple[Account, int, int]]:
    """Every account with its live calls and its calls since ``since`` (the operator's list)."""
    query = (
        select(
            Account,
            func.count(Call.id).filter(Call.created_at >= since),
            func.count(Call.id).filter(Call.status.in_(LIVE)),
        )
        .outerjoin(Call, Call.account_id == Account.id)
        .group_by(Account.id)
        .order_by(Account.sid)
    )
    return [
        (account, today or 0, active or 0)
        for account, today, active in (await session.execute(query)).all()
    ]
