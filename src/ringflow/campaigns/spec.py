"""A campaign as asked for: the v2 create and update bodies checked and turned into ringflow's
terms (``CampaignSpec``, ``Retries``). Pure: what needs the database (the caller id is an
ExoPhone of the account, the app and the lists exist) is checked by ``campaigns.service``.

Decisions where Exotel's documents are silent:

- ``retries.on_status`` defaults to busy and no-answer (a failed number is usually wrong, not
  away); ``interval_mins`` to 30, ``mechanism`` to Linear. Exponential doubles the wait after
  each attempt: ``interval_mins``, then twice that, then four times.
- pacing: ``calls_per_second`` (ours) wins over ``throttle`` (calls a minute, ``mode:
  custom``); with neither, one call a second. ``max_concurrent`` defaults to the account's own
  concurrency limit.
- a field this version does not know is refused by name, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ringflow.campaigns.hours import CallingHours
from ringflow.errors import InvalidRequest
from ringflow.media.amd import parse_mode
from ringflow.phone import normalize
from ringflow.streams.target import check_stream_url
from ringflow.webhooks.http import validate_url

MAX_INLINE_NUMBERS = 5000
MAX_LISTS = 5
MAX_RETRIES = 3
MAX_INTERVAL_MINS = 7 * 24 * 60
MAX_CALLS_PER_SECOND = 200.0
MAX_CONCURRENT = 10000
MAX_NAME = 200
MIN_NAME = 3
MAX_CUSTOM_FIELD = 128
RETRY_STATUSES = ("busy", "no-answer", "failed")
MECHANISMS = ("Linear", "Exponential")
DEFAULT_CALLS_PER_SECOND = 1.0
STREAM_TYPES = ("bidirectional", "unidirectional")

CREATE_FIELDS = frozenset(
    {
        "from",
        "lists",
        "caller_id",
        "url",
        "name",
        "type",
        "call_duplicate_numbers",
        "retries",
        "schedule",
        "mode",
        "throttle",
        "calls_per_second",
        "max_concurrent",
        "calling_hours",
        "custom_field",
        "status_callback",
        "call_status_callback",
        "call_schedule_callback",
        "StreamUrl",
        "StreamType",
        "flow_type",
        "read_via_text",
        "machine_detection",
    }
)
# What a PUT may change once the campaign has started (besides ``action``).
LIVE_FIELDS = frozenset({"status_callback", "call_status_callback", "call_schedule_callback"})
CALLBACK_FIELDS = ("status_callback", "call_status_callback", "call_schedule_callback")
ACTIONS = {"pause": "pause", "resume": "resume", "complete": "complete", "stop": "complete"}


@dataclasses.dataclass(frozen=True)
class Retries:
    """When a number is called again: after an outcome in ``on_status``, up to ``count`` times."""

    count: int = 0
    interval_mins: int = 30
    mechanism: str = "Linear"
    on_status: tuple[str, ...] = ("busy", "no-answer")

    @classmethod
    def parse(cls, value: Any) -> Retries:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InvalidRequest(
                'retries must be an object such as {"number_of_retries": 2, '
                '"interval_mins": 10, "mechanism": "Linear", '
                '"on_status": ["busy", "no-answer"]}'
            )
        unknown = set(value) - {"number_of_retries", "interval_mins", "mechanism", "on_status"}
        if unknown:
            raise InvalidRequest(f"retries: unknown fields {', '.join(sorted(unknown))}")
        count = _whole(
            value.get("number_of_retries", 0), "retries.number_of_retries", 0, MAX_RETRIES
        )
        interval = _whole(
            value.get("interval_mins", cls.interval_mins),
            "retries.interval_mins",
            1,
            MAX_INTERVAL_MINS,
        )
        mechanism = str(value.get("mechanism", "Linear")).strip().capitalize()
        if mechanism not in MECHANISMS:
            raise InvalidRequest("retries.mechanism must be Linear or Exponential")
        on_status = value.get("on_status", list(cls.on_status))
        if isinstance(on_status, str):
            on_status = [part.strip() for part in on_status.split(",") if part.strip()]
        if not isinstance(on_status, list) or not on_status:
            raise InvalidRequest("retries.on_status must list busy, no-answer or failed")
        statuses = [str(s).strip().lower().replace("_", "-") for s in on_status]
        bad = [s for s in statuses if s not in RETRY_STATUSES]
        if bad:
            raise InvalidRequest(
                f"retries.on_status: {', '.join(bad)} is not busy, no-answer or failed"
            )
        return cls(count, interval, mechanism, tuple(dict.fromkeys(statuses)))

    def to_json(self) -> dict[str, Any]:
        return {
            "number_of_retries": self.count,
            "interval_mins": self.interval_mins,
            "mechanism": self.mechanism,
            "on_status": list(self.on_status),
        }

    def wait_after(self, attempts: int) -> dt.timedelta:
        """How long after the end of attempt ``attempts`` (1, 2, ...) the next one is due."""
        factor = 1 if self.mechanism == "Linear" else 2 ** (attempts - 1)
        return dt.timedelta(minutes=self.interval_mins * factor)

    def again(self, attempts: int, status: str) -> bool:
        """Whether a number whose attempt ``attempts`` ended ``status`` is called again."""
        return status in self.on_status and attempts <= self.count


@dataclasses.dataclass(frozen=True)
class CampaignSpec:
    """A campaign's settings, checked (numbers in E.164, URLs validated)."""

    numbers: tuple[str, ...]
    lists: tuple[str, ...]
    caller_id: str
    stream_url: str | None
    stream_type: str | None
    name: str | None
    call_duplicate_numbers: bool
    retries: Retries
    send_at: dt.datetime | None
    end_at: dt.datetime | None
    calls_per_second: float
    max_concurrent: int | None
    calling_hours: CallingHours | None
    custom_field: str | None
    machine_detection: str | None  # Enable or DetectMessageEnd, as MachineDetection
    callbacks: dict[str, str | None]


def unwrap(body: Any) -> dict[str, Any]:
    """The campaign object of a body sent wrapped (``{"campaigns": [{...}]}``) or bare."""
    if isinstance(body, dict) and set(body) == {"campaigns"}:
        items = body["campaigns"]
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            raise InvalidRequest("campaigns must be a list of exactly one campaign object")
        return items[0]
    if not isinstance(body, dict):
        raise InvalidRequest(
            'the body must be a JSON object (a campaign, or {"campaigns": [campaign]})'
        )
    return body


def parse_create(body: dict[str, Any], *, allow_private: bool) -> CampaignSpec:
    """Check a create body; InvalidRequest names the first field at fault."""
    unknown = set(body) - CREATE_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    if body.get("flow_type") is not None or body.get("read_via_text") is not None:
        raise InvalidRequest(
            "flow_type and read_via_text are not supported: give url (an app "
            "whose greeting speaks the text) instead"
        )
    campaign_type = body.get("type")
    if campaign_type is not None and str(campaign_type).lower() != "trans":
        raise InvalidRequest("type must be trans")
    numbers = _numbers(body.get("from"))
    lists = _lists(body.get("lists"))
    if not numbers and not lists:
        raise InvalidRequest("from (numbers) or lists (contact list SIDs) is required")
    caller_id = body.get("caller_id")
    if not isinstance(caller_id, str | int) or not str(caller_id).strip():
        raise InvalidRequest("caller_id is required: one of the account's ExoPhones")
    url, stream = body.get("url"), body.get("StreamUrl")
    if url and stream:
        raise InvalidRequest(
            "url and StreamUrl cannot be used together: a campaign runs an app or streams to a bot"
        )
    if not url and not stream:
        raise InvalidRequest("url (the app to run) or StreamUrl (a bot) is required")
    if url is not None and not isinstance(url, str):
        raise InvalidRequest("url must be a string")
    stream_url = stream_type = None
    if stream:
        stream_url = check_stream_url(str(stream), allow_private=allow_private)
        stream_type = str(body.get("StreamType") or "bidirectional").strip().lower()
        if stream_type not in STREAM_TYPES:
            raise InvalidRequest(f"StreamType must be {' or '.join(STREAM_TYPES)}")
    elif body.get("StreamType") is not None:
        raise InvalidRequest("StreamType needs StreamUrl")
    send_at, end_at = _schedule(body.get("schedule"))
    return CampaignSpec(
        numbers=numbers,
        lists=lists,
        caller_id=normalize(str(caller_id), field="caller_id"),
        stream_url=stream_url,
        stream_type=stream_type,
        name=_name(body.get("name")),
        call_duplicate_numbers=_bool(
            body.get("call_duplicate_numbers", False), "call_duplicate_numbers"
        ),
        retries=Retries.parse(body.get("retries")),
        send_at=send_at,
        end_at=end_at,
        calls_per_second=_pace(body),
        max_concurrent=(
            None
            if body.get("max_concurrent") is None
            else _whole(body["max_concurrent"], "max_concurrent", 1, MAX_CONCURRENT)
        ),
        calling_hours=(
            None if body.get("calling_hours") is None else CallingHours.parse(body["calling_hours"])
        ),
        custom_field=_custom(body.get("custom_field")),
        machine_detection=_detection(body.get("machine_detection")),
        callbacks=callback_urls(body, allow_private=allow_private),
    )


def parse_changes(fields: dict[str, Any], *, allow_private: bool) -> dict[str, Any]:
    """A PUT's settings for a campaign that has not started, as column values (``url`` is
    the caller's: it names an app; numbers cannot change)."""
    unknown = set(fields) - CREATE_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    for name in ("from", "lists", "call_duplicate_numbers"):
        if name in fields:
            raise InvalidRequest(f"{name} cannot change: create another campaign for other numbers")
    for name in ("flow_type", "read_via_text", "type"):
        if name in fields:
            raise InvalidRequest(f"{name} cannot change")
    if fields.get("url") and fields.get("StreamUrl"):
        raise InvalidRequest("url and StreamUrl cannot be used together")
    values: dict[str, Any] = {}
    if "name" in fields:
        values["name"] = _name(fields["name"])
        if values["name"] is None:
            raise InvalidRequest(f"name must be {MIN_NAME} to {MAX_NAME} characters")
    if "caller_id" in fields:
        values["caller_id"] = normalize(str(fields["caller_id"] or ""), field="caller_id")
    if fields.get("StreamUrl"):
        stream_type = str(fields.get("StreamType") or "bidirectional").strip().lower()
        if stream_type not in STREAM_TYPES:
            raise InvalidRequest(f"StreamType must be {' or '.join(STREAM_TYPES)}")
        values.update(
            app_id=None,
            stream_type=stream_type,
            stream_url=check_stream_url(str(fields["StreamUrl"]), allow_private=allow_private),
        )
    if "retries" in fields:
        values["retries"] = Retries.parse(fields["retries"]).to_json()
    if "schedule" in fields:
        values["send_at"], values["end_at"] = _schedule(fields["schedule"])
    if {"calls_per_second", "throttle", "mode"} & set(fields):
        values["calls_per_second"] = _pace(fields)
    if "max_concurrent" in fields:
        values["max_concurrent"] = _whole(
            fields["max_concurrent"], "max_concurrent", 1, MAX_CONCURRENT
        )
    if "calling_hours" in fields:
        hours = fields["calling_hours"]
        values["calling_hours"] = None if hours is None else CallingHours.parse(hours).to_json()
    if "custom_field" in fields:
        values["custom_field"] = _custom(fields["custom_field"])
    if "machine_detection" in fields:
        values["machine_detection"] = _detection(fields["machine_detection"])
    values.update(callback_urls(fields, allow_private=allow_private))
    return values


def callback_urls(body: dict[str, Any], *, allow_private: bool) -> dict[str, str | None]:
    """The callback URLs given in ``body``, validated (absent ones are left out)."""
    found: dict[str, str | None] = {}
    for name in CALLBACK_FIELDS:
        if name in body:
            value = body[name]
            found[name] = (
                validate_url(value, allow_private=allow_private, field=name) if value else None
            )
    return found


def parse_action(value: Any) -> str:
    """``pause``, ``resume`` or ``complete`` (``stop`` is taken for ``complete``)."""
    action = ACTIONS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if action is None:
        raise InvalidRequest("action must be pause, resume or complete (stop)")
    return action


def _numbers(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raw = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        raw = [str(v) for v in value]
    else:
        raise InvalidRequest("from must be a list of numbers or a comma-separated string")
    if len(raw) > MAX_INLINE_NUMBERS:
        raise InvalidRequest(
            f"from holds {len(raw)} numbers: at most {MAX_INLINE_NUMBERS}; "
            "upload a list (contacts/csv-upload) for more"
        )
    return tuple(normalize(number, field=f"from[{index}]") for index, number in enumerate(raw))


def _lists(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest("lists must be a list of contact list SIDs")
    if len(value) > MAX_LISTS:
        raise InvalidRequest(f"lists: at most {MAX_LISTS} lists")
    return tuple(dict.fromkeys(value))


def _schedule(value: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict) or set(value) - {"send_at", "end_at"}:
        raise InvalidRequest('schedule must be {"send_at": RFC 3339 time, "end_at": RFC 3339 time}')
    send_at, end_at = (_time(value.get(name), f"schedule.{name}") for name in ("send_at", "end_at"))
    if send_at and end_at and end_at <= send_at:
        raise InvalidRequest("schedule.end_at must be after schedule.send_at")
    return send_at, end_at


def _time(value: Any, field: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be an RFC 3339 time such as 2026-12-24T10:00:00+05:30")
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(
            f"{field}: {value!r} is not an RFC 3339 time such as 2026-12-24T10:00:00+05:30"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{field} must carry its offset (Z or +05:30)")
    return moment.astimezone(dt.UTC)


def _pace(body: dict[str, Any]) -> float:
    if body.get("calls_per_second") is not None:
        value = body["calls_per_second"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (0 < value <= MAX_CALLS_PER_SECOND)
        ):
            raise InvalidRequest(
                f"calls_per_second must be a number above 0 and at most {MAX_CALLS_PER_SECOND:g}"
            )
        return float(value)
    mode = str(body.get("mode") or "auto").strip().lower()
    if mode not in ("auto", "custom"):
        raise InvalidRequest("mode must be auto or custom")
    if body.get("throttle") is not None:
        if mode != "custom":
            raise InvalidRequest("throttle needs mode custom")
        per_minute = _whole(body["throttle"], "throttle", 1, int(MAX_CALLS_PER_SECOND * 60))
        return per_minute / 60
    if mode == "custom":
        raise InvalidRequest("mode custom needs throttle (calls a minute)")
    return DEFAULT_CALLS_PER_SECOND


def _name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not MIN_NAME <= len(value.strip()) <= MAX_NAME:
        raise InvalidRequest(f"name must be {MIN_NAME} to {MAX_NAME} characters")
    return value.strip()


def _custom(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CUSTOM_FIELD:
        raise InvalidRequest(
            f"custom_field must be a string of at most {MAX_CUSTOM_FIELD} characters"
        )
    return value


def _detection(value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return parse_mode(str(value)).value
    except ValueError:
        raise InvalidRequest("machine_detection must be Enable or DetectMessageEnd") from None


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{field} must be a whole number from {low} to {high}")
    return value


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidRequest(f"{field} must be true or false")
