"""The bulk call list of spec section 4: filters, sort order and keyset cursors, one account.

``list_calls`` turns the lenient Exotel parameters into one count query and one page query.
Pages are cut by keyset on ``(created_at, id)`` (the ``ix_calls_account_created`` index), so a
page costs the same at the millionth call as at the first and calls created while a client
pages do not shift the pages it has yet to read. ``Before``/``After`` are opaque cursors: a
position in that order, base64url of JSON, which the server decodes and never trusts.

Range filters (``DateCreated``, ``Duration``, ``Price``) take ``op:value`` conditions joined by
``;`` with the operators ``gte``, ``gt``, ``lte``, ``lt`` and ``eq``. DateCreated is read in the
account's time zone and compared at whole-second precision, as it is echoed: ``lte:...:59``
includes a call created at ``:59.7``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from ringflow.api.params import Params
from ringflow.calls.callbacks import EXOTEL_DATE
from ringflow.calls.status import Status
from ringflow.errors import InvalidRequest
from ringflow.phone import normalize
from ringflow.storage.call_views import OPS, CallFilter, calls_page, count_calls
from ringflow.storage.models import Account, Call
from ringflow.storage.session import Session

T = TypeVar("T")
UTC = dt.UTC

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_SIDS = 100
MAX_NUMBERS = 5
STATUSES = tuple(s.value for s in Status if s.value)
DIRECTIONS = ("inbound", "outbound-api", "outbound-dial")

_SECOND = dt.timedelta(seconds=1)
_SID = re.compile(r"[0-9a-z]{1,64}")
_DURATION = re.compile(r"([0-9]{1,9})\s*s?", re.IGNORECASE)
_PRICE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
_MAX_CURSOR = 200
# Cursor ids stay well inside BIGINT, so a forged one cannot overflow the database driver
# (a 500) and the one-step nudge in _links cannot either.
_MAX_ID = 2**62

_DATE_FORM = "gte:2026-01-01 00:00:00;lte:2026-01-31 23:59:59"
_OP_NOTE = "(operators gte, gt, lte, lt, eq)"

Condition = tuple[str, T]


@dataclass(frozen=True)
class CallPage:
    """One page of calls and the ``Metadata`` block describing it."""

    calls: list[Call]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Position:
    """A point in the (created_at, id) order; a cursor names one."""

    created_at: dt.datetime
    id: int


async def list_calls(
    session: Session, account: Account, params: Params, *, base_path: str
) -> CallPage:
    """One page of ``account``'s calls matching the filters in ``params``, with Metadata."""
    filters, echo = _filters(account, params)
    page_size = params.get_int("PageSize", min=1, max=MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
    descending = _descending(params.get("SortBy"))
    if params.get("SortBy") is not None:
        echo.append(("SortBy", "DateCreated:desc" if descending else "DateCreated:asc"))
    echo.append(("PageSize", str(page_size)))
    before, after = _cursor(params, "Before"), _cursor(params, "After")
    if before and after:
        raise InvalidRequest(
            "give Before or After, not both (one cursor from PrevPageUri or NextPageUri)"
        )
    backward = before is not None
    cursor = before or after

    total = await count_calls(session, filters)
    # Reading backwards walks the index the other way from the cursor; the rows are flipped.
    at = (cursor.created_at, cursor.id) if cursor else None
    rows, more = await calls_page(session, filters, at, page_size, descending == backward)
    if backward:
        rows.reverse()

    def uri(name: str | None = None, position: _Position | None = None) -> str:
        pairs = echo + ([(name, _encode(position))] if name and position else [])
        return f"{base_path}?{urlencode(pairs, quote_via=quote, safe=':,')}"

    prev_at, next_at = _links(rows, cursor, backward, more, descending)
    metadata = {
        "Total": total,
        "PageSize": page_size,
        "FirstPageUri": uri(),
        "PrevPageUri": uri("Before", prev_at) if prev_at else None,
        "NextPageUri": uri("After", next_at) if next_at else None,
    }
    return CallPage(calls=rows, metadata=metadata)


def _links(
    rows: list[Call], cursor: _Position | None, backward: bool, more: bool, descending: bool
) -> tuple[_Position | None, _Position | None]:
    """The positions behind PrevPageUri and NextPageUri (None: no such page)."""
    first = _Position(rows[0].created_at, rows[0].id) if rows else None
    last = _Position(rows[-1].created_at, rows[-1].id) if rows else None
    if cursor is None:  # the first page
        return None, last if more else None
    if not rows:
        # An empty page (its calls deleted or no longer matching): the way back starts one id
        # past the cursor, so that the cursor's own call is on it. Ids are integers, so no call
        # sits between the two positions.
        step = -1 if descending != backward else 1
        nudged = _Position(cursor.created_at, cursor.id + step)
        return (None, nudged) if backward else (nudged, None)
    # The cursor came from a call on the page we arrived from, so that side has a page.
    if backward:
        return (first if more else None), last
    return first, (last if more else None)


def _filters(account: Account, params: Params) -> tuple[CallFilter, list[tuple[str, str]]]:
    """The filters given, and the (name, value) pairs to echo in links."""
    echo: list[tuple[str, str]] = []
    found: dict[str, Any] = {}

    def raw(name: str, sep: str) -> str | None:
        # Repeats (To=a&To=b) mean the same as one comma list, as clients encode lists both ways.
        values = [v.strip() for v in params.get_all(name)]
        if not values:
            return None
        echo.append((name, sep.join(values)))
        return sep.join(values)

    if (text := raw("Sid", ",")) is not None:
        found["sids"] = [_sid(item) for item in _items(text, "Sid", MAX_SIDS)]
    if (text := raw("DateCreated", ";")) is not None:
        zone = ZoneInfo(account.time_zone)
        found["created"] = [
            bound
            for op, local in _conditions(text, "DateCreated", _DATE_FORM, _local_time)
            for bound in _date_bounds(op, local.replace(tzinfo=zone).astimezone(UTC))
        ]
    if (text := raw("To", ",")) is not None:
        found["to_numbers"] = _numbers(text, "To")
    if (text := raw("From", ",")) is not None:
        found["from_numbers"] = _numbers(text, "From")
    if (text := raw("PhoneNumber", ",")) is not None:
        found["caller_ids"] = _numbers(text, "PhoneNumber")
    if (text := raw("Status", ",")) is not None:
        found["statuses"] = _words(text, "Status", STATUSES)
    if (text := raw("Direction", ",")) is not None:
        found["directions"] = _words(text, "Direction", DIRECTIONS)
    if (text := raw("Duration", ";")) is not None:
        found["durations"] = _conditions(text, "Duration", "gte:10s;lte:45s", _seconds)
    if (text := raw("Price", ";")) is not None:
        found["prices"] = _conditions(text, "Price", "gte:0.5;lte:2", _amount)
    return CallFilter(account_id=account.id, **found), echo


def _date_bounds(op: str, at: dt.datetime) -> list[Condition[dt.datetime]]:
    """A whole-second comparison as bounds: the second ``at`` names runs to ``at`` + 1s."""
    if op == "gt":
        return [("gte", at + _SECOND)]
    if op == "lte":
        return [("lt", at + _SECOND)]
    if op == "eq":
        return [("gte", at), ("lt", at + _SECOND)]
    return [(op, at)]  # gte and lt are bounds already


def _items(text: str, name: str, limit: int | None = None) -> list[str]:
    items = list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not items:
        raise InvalidRequest(f"{name} must be a comma-separated list, got {_show(text)}")
    if limit is not None and len(items) > limit:
        raise InvalidRequest(
            f"{name} takes at most {limit} comma-separated values, got {len(items)}"
        )
    return items


def _sid(item: str) -> str:
    sid = item.lower()
    if not _SID.fullmatch(sid):
        raise InvalidRequest(
            f"Sid must be comma-separated call SIDs (letters and digits), got {_show(item)}"
        )
    return sid


def _numbers(text: str, name: str) -> list[str]:
    return [normalize(item, field=name) for item in _items(text, name, MAX_NUMBERS)]


def _words(text: str, name: str, allowed: tuple[str, ...]) -> list[str]:
    # No count limit: the words are checked, and repeats were dropped.
    words = [item.lower() for item in _items(text, name)]
    for word in words:
        if word not in allowed:
            raise InvalidRequest(
                f"{name} must be a comma-separated list of {', '.join(allowed)}; got {_show(word)}"
            )
    return words


def _conditions(
    text: str, name: str, form: str, parse: Callable[[str], T | None]
) -> list[Condition[T]]:
    """``op:value;op:value`` as (op, parsed value) pairs; every one must hold."""
    conditions: list[Condition[T]] = []
    for part in text.split(";"):
        if not part.strip():
            continue  # a trailing ';' is harmless
        op, sep, value = part.partition(":")
        parsed = parse(value.strip()) if sep and op.strip().lower() in OPS else None
        if parsed is None:
            raise InvalidRequest(
                f"{name} must look like {form} {_OP_NOTE}, got {_show(part.strip())}"
            )
        conditions.append((op.strip().lower(), parsed))
    if not conditions:
        raise InvalidRequest(f"{name} must look like {form} {_OP_NOTE}, got {_show(text)}")
    return conditions


def _local_time(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value, EXOTEL_DATE)
    except ValueError:
        return None


def _seconds(value: str) -> int | None:
    match = _DURATION.fullmatch(value)
    return int(match[1]) if match else None


def _amount(value: str) -> Decimal | None:
    return Decimal(value) if _PRICE.fullmatch(value) else None


def _descending(value: str | None) -> bool:
    if value is None:
        return True
    field, _, direction = value.strip().lower().partition(":")
    if field.strip() == "datecreated" and direction.strip() in ("", "asc", "desc"):
        return direction.strip() != "asc"
    raise InvalidRequest(f"SortBy must be DateCreated:asc or DateCreated:desc, got {_show(value)}")


def _encode(position: _Position) -> str:
    data = json.dumps(
        {"t": position.created_at.isoformat(), "i": position.id}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _cursor(params: Params, name: str) -> _Position | None:
    """The position a Before/After cursor names; InvalidRequest for anything we did not issue."""
    text = params.get(name)
    if text is None:
        return None
    bad = InvalidRequest(
        f"{name} must be a cursor copied from PrevPageUri or NextPageUri, got {_show(text)}"
    )
    text = text.strip()
    if len(text) > _MAX_CURSOR:
        raise bad
    try:
        data = json.loads(
            base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        )
        parsed = dt.datetime.fromisoformat(data["t"])
        call_id = data["i"]
        # A naive time would be read in the server's zone: not one we issued.
        created_at = parsed.astimezone(UTC) if parsed.tzinfo else None
    except (binascii.Error, ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and a bad timestamp.
        raise bad from exc
    if created_at is None or type(call_id) is not int or not -_MAX_ID < call_id < _MAX_ID:
        raise bad
    return _Position(created_at, call_id)


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")
