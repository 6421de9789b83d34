"""The one place a call or leg changes status.

``apply`` moves the call and its legs through the status table, stamps times, computes the final
durations, writes the timeline entry and the status callbacks the change causes, all in one
transaction, so a status and its callback are never out of step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from ringflow.calls import callbacks
from ringflow.calls.status import ACTIVE, Event, Status, call_next, is_terminal, leg_next
from ringflow.storage.calls import account_time_zone, carried_by
from ringflow.storage.models import Call, CallEvent, Leg, OutboxMessage
from ringflow.storage.outbox import Lease
from ringflow.storage.session import Session
from ringflow.streams.target import without_credentials
from ringflow.webhooks.outbox import enqueue

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Change:
    """What happened: an event for the call and/or events for its legs."""

    call: Event | None = None
    legs: tuple[tuple[int, Event], ...] = ()
    cause: str | None = None  # carrier cause for the legs that changed
    reason: str | None = None  # why the call ended, kept on the call


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> int:
    if start is None or end is None:
        return 0
    return max(0, round((end - start).total_seconds()))


def _apply_leg(
    leg: Leg, event: Event, now: dt.datetime, cause: str | None, detecting: bool = False
) -> None:
    leg.status = leg_next(leg.status, event)
    if event is Event.DIAL:
        leg.dialed_at = now
    elif event is Event.ANSWER:
        leg.answered_at = now
        # Exotel reports every answer as a human's; a leg under answering machine detection
        # says who answered once the detector has decided (``Timeline.detected``).
        leg.answered_by = None if detecting else "human"
    if is_terminal(leg.status):
        leg.ended_at = now
    # The carrier's cause explains a leg that failed to connect, not the others in the change.
    if cause and event not in (Event.ANSWER, Event.HANGUP):
        leg.cause = cause


def _finish(call: Call, now: dt.datetime) -> None:
    call.end_time = now
    call.duration = _seconds(call.start_time, now)
    call.price = "0"
    talk_leg = call.legs[-1] if call.shape == "numbers" else call.legs[0]
    call.conversation_duration = callbacks.on_call_seconds(talk_leg) if len(call.legs) else 0
    if call.shape == "numbers" and len(call.legs) < 2:
        call.conversation_duration = 0
    if call.stream_url:  # the bot's credentials are needed no longer: keep what may be shown
        call.stream_url = without_credentials(call.stream_url)


@dataclasses.dataclass(frozen=True)
class Callback:
    """A StatusCallback a change causes: its event, idempotency key and payload."""

    event: str
    key: str
    payload: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Advanced:
    """What a change did to a call's rows in memory, for its writer to persist."""

    before: str  # the call's status before
    step: dict[str, Any]  # the timeline's "status" step
    callbacks: list[Callback]

    @property
    def ended(self) -> bool:
        """Whether this change ended the call."""
        return is_terminal(self.step["call"]) and not is_terminal(self.before)


def advance(call: Call, change: Change, now: dt.datetime, time_zone: str) -> Advanced:
    """Move ``call`` and its legs (in memory) through the status table; what to write."""
    before = call.status
    legs = {leg.leg_no: leg for leg in call.legs}
    for leg_no, event in change.legs:
        _apply_leg(
            legs[leg_no],
            event,
            now,
            change.cause,
            detecting=leg_no == 1 and bool(call.machine_detection),
        )
    if change.call is not None:
        call.status = call_next(call.status, change.call)
        if change.call is Event.DIAL:
            call.start_time = now
    if change.reason and not call.reason:
        call.reason = change.reason
    call.updated_at = now
    if is_terminal(call.status) and not is_terminal(before):
        _finish(call, now)
    step = {
        "call": call.status,
        "legs": {str(n): legs[n].status for n, _ in change.legs},
        "cause": change.cause,
        "reason": change.reason,
    }
    log.info(
        "call %s: %s -> %s %s%s",
        call.sid,
        before or "-",
        call.status,
        " ".join(f"leg{n}={legs[n].status}" for n, _ in change.legs),
        f" ({change.reason or change.cause})" if (change.reason or change.cause) else "",
    )
    return Advanced(before, step, _callbacks(call, change, before, time_zone))


async def apply(
    session: Session,
    call: Call,
    change: Change,
    now: dt.datetime,
    lease: Lease | None = None,
    time_zone: str | None = None,
) -> list[OutboxMessage]:
    """Apply ``change`` to ``call`` (loaded in ``session``); returns the callbacks queued.

    With ``lease``, the callbacks are born leased to the deliverer that will send them.
    ``time_zone`` is the account's (read from the database when not given).
    """
    if time_zone is None and call.status_callback:
        time_zone = await account_time_zone(session, call.account_id)
    advanced = advance(call, change, now, time_zone or "UTC")
    session.add(CallEvent(call_id=call.id, at=now, kind="status", data=advanced.step))
    return [
        await enqueue(session, **callback_fields(call, callback, now, lease))
        for callback in advanced.callbacks
    ]


def callback_fields(
    call: Call, callback: Callback, now: dt.datetime, lease: Lease | None
) -> dict[str, Any]:
    """The outbox fields of one StatusCallback of ``call`` (as ``outbox_row`` takes them)."""
    return {
        "account_id": call.account_id,
        "call_id": call.id,
        "event": callback.event,
        "url": call.status_callback or "",
        "content_type": callback_content_type(call),
        "payload": callback.payload,
        "idempotency_key": f"{call.sid}:{callback.key}",
        "now": now,
        "lease": lease,
    }


def callback_content_type(call: Call) -> str:
    """How the call's StatusCallbacks are encoded."""
    return "application/json" if call.callback_json else "multipart/form-data"


def _callbacks(call: Call, change: Change, before: str, tz: str) -> list[Callback]:
    if not call.status_callback:
        return []
    events = set(call.callback_events or [])
    found: list[Callback] = []
    for leg_no, event in change.legs:
        for kind, trigger in (("ringing", Event.DIAL), ("answered", Event.ANSWER)):
            if event is trigger and kind in events:
                payload = callbacks.event_payload(call, kind, tz, list(call.legs))
                found.append(Callback(kind, f"{kind}:{leg_no}", payload))
    if is_terminal(call.status) and not is_terminal(before):
        # Without StatusCallbackEvents: the four-field POST; with them, only what was asked for.
        if not events:
            found.append(Callback("terminal", "terminal", callbacks.minimal_payload(call, tz)))
        elif "terminal" in events:
            payload = callbacks.event_payload(call, "terminal", tz, list(call.legs))
            found.append(Callback("terminal", "terminal", payload))
    return found


def interrupted(call: Call, reason: str) -> Change:
    """The change that ends a call ringflow can no longer carry (shutdown, restart, a bug).

    Answered legs hang up and ringing legs are canceled. The call is ``completed`` only if its
    conversation had begun (flow calls: the first party answered; two-number calls: the second
    did); otherwise it ``failed``, as when From hangs up while To rings (spec section 3).
    """
    talk_leg = 2 if call.shape == "numbers" else 1
    talked = any(
        leg.leg_no == talk_leg and leg.status in (Status.IN_PROGRESS, Status.COMPLETED)
        for leg in call.legs
    )
    event = Event.HANGUP if call.status == Status.IN_PROGRESS and talked else Event.FAIL
    legs = tuple(
        (leg.leg_no, Event.HANGUP if leg.status == Status.IN_PROGRESS else Event.CANCEL)
        for leg in call.legs
        if leg.status in ACTIVE
    )
    return Change(call=event, legs=legs, reason=reason)


async def finish_calls_of(session: Session, owner: str, reason: str, now: dt.datetime) -> int:
    """End every live call ``owner`` was carrying (a process that died); how many there were."""
    orphans = await carried_by(session, owner, ACTIVE)
    for call in orphans:
        await apply(session, call, interrupted(call, reason), now)
    return len(orphans)
