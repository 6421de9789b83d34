"""What the dashboard reads, always within one account: every lookup takes the account's id
with the object's, so another account's call, recording or callback is simply not found."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

from ringflow.calls.status import ACTIVE, Status
from ringflow.errors import NotFound
from ringflow.storage import accounts as stored_accounts
from ringflow.storage import call_views, callback_views, timeline
from ringflow.storage import streams as stored_streams
from ringflow.storage.models import (
    Account,
    ApiKey,
    Call,
    CallEvent,
    OutboxAttempt,
    OutboxMessage,
    Recording,
)
from ringflow.storage.recordings import recordings_of_call
from ringflow.storage.session import Session
from ringflow.storage.streams import StreamPlace

LIVE = (Status.QUEUED.value, *(s.value for s in ACTIVE))


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


async def find_call(session: Session, account_id: int, sid: str) -> Call:
    """The account's call with this SID, or NotFound."""
    call = await call_views.call_in_account(session, account_id, sid)
    if call is None:
        raise NotFound(f"Call {sid} not found")
    return call


async def call_view(session: Session, account_id: int, sid: str) -> CallView:
    """A call of the account with its timeline, callbacks (and attempts) and recordings."""
    call = await find_call(session, account_id, sid)
    events = await timeline.steps(session, call.id)
    callbacks = [
        Callback(message, attempts)
        for message, attempts in await callback_views.callbacks_of_call(
            session, account_id, call.id
        )
    ]
    recordings = await recordings_of_call(session, account_id, call.id)
    return CallView(call, events, callbacks, recordings)


async def live_calls(session: Session, account_id: int, limit: int = 50) -> list[Call]:
    """Calls waiting, ringing or talking now, newest first."""
    return await call_views.live_calls(session, account_id, LIVE, limit)


def start_of_day(account: Account, now: dt.datetime) -> dt.datetime:
    """Midnight of ``now``'s day in the account's time zone, as UTC."""
    local = now.astimezone(ZoneInfo(account.time_zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)


async def calls_by_status(session: Session, account: Account, since: dt.datetime) -> dict[str, int]:
    """How many calls the account made since ``since``, per status."""
    return await call_views.calls_by_status(session, account.id, since)


@dataclasses.dataclass(frozen=True)
class CallbackHealth:
    """Callbacks still to deliver, those retrying after a failure, and recent given-up ones."""

    pending: int
    failing: list[OutboxMessage]
    failed: list[OutboxMessage]


async def callback_health(session: Session, account_id: int, limit: int = 10) -> CallbackHealth:
    """The account's undelivered callbacks."""
    return CallbackHealth(
        await callback_views.pending_count(session, account_id),
        await callback_views.retrying(session, account_id, limit),
        await callback_views.given_up(session, account_id, limit),
    )


async def call_sids(session: Session, call_ids: set[int]) -> dict[int, str]:
    """Call SIDs by id (to link callbacks to their calls)."""
    return await call_views.call_sids(session, call_ids)


async def api_keys(session: Session, account_id: int) -> list[ApiKey]:
    """The account's API keys, active first, newest first."""
    return await stored_accounts.api_keys(session, account_id)


async def find_key(session: Session, account_id: int, key_id: int) -> ApiKey:
    """The account's API key with this row id, or NotFound."""
    row = await stored_accounts.key_by_row_id(session, account_id, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id} in this account")
    return row


async def open_streams(session: Session, account: Account) -> list[StreamPlace]:
    """The account's streams to bots open now, in every process, the oldest first."""
    return await stored_streams.open_streams(session, account.sid)


async def accounts_overview(session: Session, since: dt.datetime) -> list[tuple[Account, int, int]]:
    """Every account with its live calls and its calls since ``since`` (the operator's list)."""
    return await call_views.accounts_overview(session, since, LIVE)
