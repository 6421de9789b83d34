"""The campaign form: its fields turned into a v2 create body, as the API would receive it.

Pure, so the service checks what the dashboard sends exactly as it checks the API's bodies
(``campaigns.spec``); this module only reads the form's own shapes (a pace typed as text, retry
outcomes as checkboxes, calling hours as one window a day or JSON) and names a field the way the
form labels it. What needs the database (the app and the ExoPhone are the account's, the CSV
becomes a list) is the page's work (``dashboard/campaigns.py``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ringflow.campaigns.spec import (
    MAX_CALLS_PER_SECOND,
    MAX_CONCURRENT,
    MAX_INTERVAL_MINS,
    MAX_RETRIES,
    MECHANISMS,
    RETRY_STATUSES,
)
from ringflow.errors import InvalidRequest
from ringflow.numeric import decimal, whole_number

# The day choices of the simple calling-hours window (calling_hours keys, see campaigns/hours.py).
DAY_CHOICES = (
    ("", "any time"),
    ("daily", "every day"),
    ("mon-fri", "Monday to Friday"),
    ("mon-sat", "Monday to Saturday"),
    ("sat,sun", "weekends"),
)
DETECTION_CHOICES = (("", "off"), ("Enable", "Enable"), ("DetectMessageEnd", "DetectMessageEnd"))
MAX_HOURS_JSON = 4096


@dataclasses.dataclass(frozen=True)
class CampaignForm:
    """What the form asks for: the v2 body (without ``lists``) and the app it runs."""

    body: dict[str, Any]
    app_id: int


def flow_url(account_sid: str, app_id: int) -> str:
    """The Exotel flow URL of an app, as a campaign's ``url`` names it."""
    return f"http://my.exotel.com/{account_sid}/exoml/start_voice/{app_id}"


def read_form(
    fields: Mapping[str, str], on_status: Sequence[str], account_sid: str
) -> CampaignForm:
    """The create body from the form's text fields and ticked retry outcomes; InvalidRequest
    names the first field at fault by its label."""

    def text(name: str) -> str:
        return fields.get(name, "").strip()

    if not text("app_id"):
        raise InvalidRequest("App: choose the app each call runs")
    app_id = whole_number(text("app_id"), "App", low=1, high=2**62)
    if not text("caller_id"):
        raise InvalidRequest("Caller ID: choose one of the account's ExoPhones")
    body: dict[str, Any] = {
        "caller_id": text("caller_id"),
        "url": flow_url(account_sid, app_id),
        "calls_per_second": _pace(text("calls_per_second")),
        "retries": _retries(fields, on_status),
    }
    if text("name"):
        body["name"] = text("name")
    if text("max_concurrent"):
        body["max_concurrent"] = whole_number(
            text("max_concurrent"), "Max concurrent calls", low=1, high=MAX_CONCURRENT
        )
    hours = _calling_hours(
        text("hours_days"), text("hours_from"), text("hours_until"), text("hours_json")
    )
    if hours is not None:
        body["calling_hours"] = hours
    detection = text("machine_detection")
    if detection:
        if detection not in dict(DETECTION_CHOICES):
            raise InvalidRequest("Machine detection must be off, Enable or DetectMessageEnd")
        body["machine_detection"] = detection
    return CampaignForm(body, app_id)


def _pace(raw: str) -> float:
    if not raw:
        raise InvalidRequest("Calls per second is required (for example 1, or 0.5)")
    value = decimal(raw, "Calls per second", low=0, high=MAX_CALLS_PER_SECOND)
    if value <= 0:
        raise InvalidRequest("Calls per second must be more than 0")
    return value


def _retries(fields: Mapping[str, str], on_status: Sequence[str]) -> dict[str, Any]:
    count = whole_number(
        fields.get("retries", "0").strip() or "0", "Retries", low=0, high=MAX_RETRIES
    )
    retries: dict[str, Any] = {"number_of_retries": count}
    if count == 0:
        return retries
    interval = fields.get("interval_mins", "").strip() or "30"
    retries["interval_mins"] = whole_number(
        interval, "Minutes between attempts", low=1, high=MAX_INTERVAL_MINS
    )
    mechanism = fields.get("mechanism", "").strip() or "Linear"
    if mechanism not in MECHANISMS:
        raise InvalidRequest(f"Spacing must be {' or '.join(MECHANISMS)}")
    retries["mechanism"] = mechanism
    outcomes = [s for s in on_status if s]
    if not outcomes:
        raise InvalidRequest("Retry on: tick busy, no-answer or failed (or set Retries to 0)")
    bad = [s for s in outcomes if s not in RETRY_STATUSES]
    if bad:
        raise InvalidRequest(f"Retry on: {', '.join(bad)} is not busy, no-answer or failed")
    retries["on_status"] = list(dict.fromkeys(outcomes))
    return retries


def _calling_hours(days: str, start: str, end: str, raw_json: str) -> dict[str, Any] | None:
    """``calling_hours`` from the JSON field if filled in, else from the one daily window."""
    if raw_json:
        if len(raw_json) > MAX_HOURS_JSON:
            raise InvalidRequest(f"Calling hours (JSON) may be at most {MAX_HOURS_JSON} characters")
        try:
            hours = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"Calling hours (JSON) is not JSON: {exc.msg} at line "
                f"{exc.lineno}, column {exc.colno}"
            ) from None
        if not isinstance(hours, dict):
            raise InvalidRequest(
                'Calling hours (JSON) must be an object such as {"mon-fri": "09:00-18:00"}'
            )
        return hours
    if not days:
        if start or end:
            raise InvalidRequest("Calling hours: choose the days the window applies to")
        return None
    if days not in dict(DAY_CHOICES):
        raise InvalidRequest("Calling hours: choose days from the list")
    if not start or not end:
        raise InvalidRequest("Calling hours: give the window's start and end (HH:MM)")
    return {days: f"{start}-{end}"}
