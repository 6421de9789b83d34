"""Timing: branch on whether the business is open now, in the account's time zone.

Fields:

- ``hours``: opening hours per weekday, keys ``mon`` ``tue`` ``wed`` ``thu`` ``fri`` ``sat``
  ``sun``, each a list of ``"HH:MM-HH:MM"`` ranges (or one such text), e.g.
  ``{mon: ["09:00-13:00", "14:00-18:00"], sat: "10:00-14:00"}``. A range includes its start
  and excludes its end; ``24:00`` may end a range. A day left out is closed all day. Hours
  past midnight are written on both days (``fri: "20:00-24:00"``, ``sat: "00:00-02:00"``).
- ``holidays``: dates ``"YYYY-MM-DD"`` closed all day (optional).

The time is the call's current time in the account's time zone (``Account.time_zone``).

Exits: ``on_open``, ``on_closed``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Generator
from typing import Any

from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
MAX_HOLIDAYS = 1000


def parse_range(text: Any) -> tuple[int, int]:
    """``"09:00-18:00"`` as minutes since midnight ``(540, 1080)``; ValueError says why not."""
    match = _RANGE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a range like '09:00-18:00'")
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise ValueError(f"{text!r}: hours run from 00:00 to 24:00")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if end <= start:
        raise ValueError(
            f"{text!r}: ends before it starts (write hours past midnight on both days)"
        )
    return start, end


def day_ranges(value: Any) -> list[str]:
    """A day's ranges as a list (one range may be written as a plain text)."""
    return [value] if isinstance(value, str) else list(value)


def _hours(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must map weekdays (mon ... sun) to lists of ranges like '09:00-18:00'"
    for day, ranges in value.items():
        if day not in WEEKDAYS:
            return f"{day!r} is not a weekday ({', '.join(WEEKDAYS)})"
        if not isinstance(ranges, str | list):
            return f"{day}: must be a list of ranges like '09:00-18:00'"
        for text in day_ranges(ranges):
            try:
                parse_range(text)
            except ValueError as exc:
                return f"{day}: {exc}"
    return None


def _holidays(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list of dates like '2026-01-26'"
    if len(value) > MAX_HOLIDAYS:
        return f"at most {MAX_HOLIDAYS} dates"
    for item in value:
        try:
            dt.date.fromisoformat(item if isinstance(item, str) and len(item) == 10 else "")
        except ValueError:
            return f"{item!r} is not a date like '2026-01-26'"
    return None


def is_open(hours: dict[str, Any], holidays: list[str], local: dt.datetime) -> bool:
    """Whether the hours and holidays say open at ``local`` (a time in the account's zone)."""
    if local.date().isoformat() in holidays:
        return False
    minute = local.hour * 60 + local.minute + local.second / 60
    return any(
        start <= minute < end
        for start, end in map(parse_range, day_ranges(hours.get(WEEKDAYS[local.weekday()], [])))
    )


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Leave by ``on_open`` within the opening hours, else by ``on_closed``."""
    local = ctx.local(ctx.now())
    holidays = node.config.get("holidays", [])
    return "on_open" if is_open(node.config["hours"], holidays, local) else "on_closed"
    yield  # a generator like every applet, though it asks for nothing


SPEC = AppletSpec(
    name="timing",
    exits=("on_open", "on_closed"),
    required={"hours": _hours},
    optional={"holidays": _holidays},
    run=run,
    waits=False,
)
