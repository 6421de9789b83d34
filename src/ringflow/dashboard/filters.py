"""Template filters: times in the account's zone, phone numbers as people write them,
durations, and one line per timeline step."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from jinja2 import Environment

from ringflow.calls.callbacks import call_to, on_call_seconds
from ringflow.calls.steps import describe
from ringflow.errors import InvalidRequest
from ringflow.phone import display
from ringflow.recordings import extension

_STATUS_TONE = {
    "completed": "ok",
    "in-progress": "live",
    "ringing": "live",
    "queued": "wait",
    "pending": "wait",
    "failing": "warn",
    "delivered": "ok",
    "busy": "warn",
    "no-answer": "warn",
    "failed": "bad",
    "canceled": "muted",
}


def when(value: dt.datetime | None, tz: str = "UTC", fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A stored UTC time in the account's zone ("" when unset)."""
    return value.astimezone(ZoneInfo(tz)).strftime(fmt) if value else ""


def phone(number: str | None) -> str:
    """An E.164 number as dialled in India (0...), anything else as it is."""
    if not number:
        return ""
    try:
        return display(number)
    except (InvalidRequest, ValueError):
        return number


def seconds(value: float | None) -> str:
    """A duration as 45s, 3m 05s or 1h 02m."""
    if value is None:
        return ""
    total = round(value)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def tone(status: str | None) -> str:
    """The badge colour class of a call, leg or callback status."""
    return _STATUS_TONE.get(status or "", "muted")


def offset(at: dt.datetime, start: dt.datetime) -> str:
    """``+12.3s``: how long after the first step a step came."""
    return f"+{(at - start).total_seconds():.1f}s"


def install(env: Environment) -> None:
    """Register the filters on a Jinja environment."""
    env.filters.update(
        when=when,
        phone=phone,
        seconds=seconds,
        tone=tone,
        offset=offset,
        step=describe,
        call_to=call_to,
        on_call=on_call_seconds,
        ext=extension,
    )
