"""Calling hours: the daily windows in which a campaign may place calls, in the account's zone.

Given as ``{"mon-fri": "09:00-18:00", "sat": "10:00-14:00"}``: keys are days (``mon`` ...
``sun``), ranges of days (``mon-fri``), lists (``sat,sun``) or ``daily``; values one window
``HH:MM-HH:MM`` or a list of them. A window ends before it starts on the next day is not
allowed (split it in two: ``"mon-fri": ["00:00-02:00", "22:00-24:00"]``). Days not named have no
window: the campaign waits through them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
from typing import Any
from zoneinfo import ZoneInfo

from ringflow.errors import InvalidRequest

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
MINUTES_A_DAY = 24 * 60
MAX_WINDOWS = 8  # per day


@dataclasses.dataclass(frozen=True)
class CallingHours:
    """Windows per weekday (0 = Monday), as (start, end) minutes after midnight."""

    windows: tuple[tuple[tuple[int, int], ...], ...]

    @classmethod
    def parse(cls, value: Any) -> CallingHours:
        """The windows given as JSON; InvalidRequest says what is wrong with them."""
        if not isinstance(value, dict) or not value:
            raise InvalidRequest(
                'calling_hours must be an object such as {"mon-fri": "09:00-18:00"}'
            )
        days: list[list[tuple[int, int]]] = [[] for _ in DAYS]
        for key, spans in value.items():
            spans = [spans] if isinstance(spans, str) else spans
            if not isinstance(spans, list) or not all(isinstance(s, str) for s in spans):
                raise InvalidRequest(
                    f'calling_hours[{key!r}] must be a window "HH:MM-HH:MM" or a list of them'
                )
            for day in _days(str(key)):
                days[day].extend(_window(key, span) for span in spans)
        for day, spans in enumerate(days):
            spans.sort()
            if len(spans) > MAX_WINDOWS:
                raise InvalidRequest(f"calling_hours: at most {MAX_WINDOWS} windows a day")
            for (_, end), (start, _) in itertools.pairwise(spans):
                if start < end:
                    raise InvalidRequest(f"calling_hours: windows on {DAYS[day]} overlap")
        return cls(tuple(tuple(spans) for spans in days))

    def to_json(self) -> dict[str, list[str]]:
        """One key per day with windows, each window as ``HH:MM-HH:MM`` (stored and shown)."""
        return {
            DAYS[day]: [f"{_hhmm(start)}-{_hhmm(end)}" for start, end in spans]
            for day, spans in enumerate(self.windows)
            if spans
        }

    def is_open(self, at: dt.datetime, zone: str) -> bool:
        """Whether ``at`` (aware) falls in a window, on the clock of ``zone``."""
        local = at.astimezone(ZoneInfo(zone))
        minute = local.hour * 60 + local.minute + local.second / 60
        return any(start <= minute < end for start, end in self.windows[local.weekday()])

    def next_change(self, at: dt.datetime, zone: str) -> dt.datetime | None:
        """When the window state next changes after ``at`` (the open window's end, or the next
        window's start), in UTC; None if no day has a window."""
        if not any(self.windows):
            return None
        tz = ZoneInfo(zone)
        local = at.astimezone(tz)
        open_now = self.is_open(at, zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        for offset in range(8):
            day = midnight + dt.timedelta(days=offset)
            for start, end in self.windows[day.weekday()]:
                edge = end if open_now else start
                # Wall-clock times of the zone; a time skipped by a DST change is taken as it
                # resolves forward (fold=0), good enough for business hours.
                moment = (day + dt.timedelta(minutes=edge)).replace(tzinfo=tz)
                if moment.astimezone(dt.UTC) > at.astimezone(dt.UTC):
                    if open_now and end == MINUTES_A_DAY and self._continues(day):
                        continue
                    return moment.astimezone(dt.UTC)
        return None

    def _continues(self, day: dt.datetime) -> bool:
        """Whether a window ending at midnight goes on in the next day's window from 00:00."""
        following = self.windows[(day.weekday() + 1) % 7]
        return bool(following) and following[0][0] == 0


def _days(key: str) -> list[int]:
    names = key.strip().lower()
    if names in ("daily", "all", "everyday"):
        return list(range(7))
    days: list[int] = []
    for part in names.split(","):
        part = part.strip()
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise InvalidRequest(
                f"calling_hours: {key!r} is not a day (mon ... sun), a range "
                "of days (mon-fri), a list (sat,sun) or daily"
            )
        a, b = DAYS.index(first), DAYS.index(last or first)
        days += list(range(a, b + 1)) if a <= b else [*range(a, 7), *range(b + 1)]
    return days


def _window(key: str, span: str) -> tuple[int, int]:
    match = _WINDOW.match(span)
    if match is None:
        raise InvalidRequest(f"calling_hours[{key!r}]: {span!r} is not a window HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > MINUTES_A_DAY:
        raise InvalidRequest(f"calling_hours[{key!r}]: {span!r} is not a time of day")
    if end <= start:
        raise InvalidRequest(
            f"calling_hours[{key!r}]: {span!r} must end after it starts "
            "(split a window across midnight in two)"
        )
    return start, end


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
