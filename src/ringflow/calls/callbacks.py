"""StatusCallback payloads (spec section 5), built from the call as it stands at the event.

This is Exotel's wire format for callbacks, kept beside the calls it describes so that a
transition and the callback it causes are written in one transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from ringflow.phone import display
from ringflow.storage.models import Call, Leg

EXOTEL_DATE = "%Y-%m-%d %H:%M:%S"


def fmt_date(when: dt.datetime | None, tz: str) -> str:
    """Exotel's ``YYYY-MM-DD HH:MM:SS`` in the account's zone, or "" when unset."""
    return when.astimezone(ZoneInfo(tz)).strftime(EXOTEL_DATE) if when else ""


def on_call_seconds(leg: Leg) -> int:
    """How long a leg was answered, whole seconds."""
    if leg.answered_at is None:
        return 0
    end = leg.ended_at or leg.answered_at
    return max(0, round((end - leg.answered_at).total_seconds()))


def call_to(call: Call) -> str:
    """``To`` as echoed: the ExoPhone for flow calls, the second party for two-number calls."""
    return call.to_number if call.shape == "numbers" else call.caller_id


def minimal_payload(call: Call, tz: str) -> dict[str, Any]:
    """The four fields sent when no StatusCallbackEvents were asked for (and the detection's,
    for a call placed with MachineDetection)."""
    return {
        "CallSid": call.sid,
        "Status": call.status,
        "RecordingUrl": call.recording_url or "",
        "DateUpdated": fmt_date(call.updated_at, tz),
        **detection_fields(call),
    }


def detection_fields(call: Call) -> dict[str, Any]:
    """``AnsweredBy`` and ``MachineDetectionDuration`` (milliseconds from the answer to the
    verdict) of a call placed with MachineDetection, "" until it has decided; nothing for
    other calls, whose callbacks stay exactly Exotel's."""
    if not call.machine_detection:
        return {}
    leg = next((leg for leg in call.legs if leg.leg_no == 1), None)
    ms = call.machine_detection_ms
    return {
        "AnsweredBy": (leg.answered_by if leg is not None else None) or "",
        "MachineDetectionDuration": "" if ms is None else ms,
    }


def event_payload(call: Call, event: str, tz: str, legs: list[Leg]) -> dict[str, Any]:
    """The full field set of an ``answered`` or ``terminal`` (or ``ringing``) event."""
    payload: dict[str, Any] = {
        "EventType": event,
        "CallSid": call.sid,
        "Status": call.status,
        "DateCreated": fmt_date(call.created_at, tz),
        "DateUpdated": fmt_date(call.updated_at, tz),
        "To": display(call_to(call)),
        "From": display(call.from_number),
        "PhoneNumberSid": display(call.caller_id),
        "StartTime": fmt_date(call.start_time, tz),
        "EndTime": fmt_date(call.end_time, tz),
        "ConversationDuration": call.conversation_duration or 0,
        "Direction": call.direction,
        "RecordingUrl": call.recording_url or "",
        **detection_fields(call),
    }
    if event == "terminal":
        payload["CustomField"] = call.custom_field or ""
    payload["Legs"] = [
        {
            "OnCallDuration": on_call_seconds(leg),
            "Status": leg.status,
            "AnsweredBy": leg.answered_by or "",
        }
        for leg in legs
    ]
    return payload
