"""What an applet knows about the call it runs on."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

EXOTEL_DATE = "%Y-%m-%d %H:%M:%S"
CREATED_FORMAT = "%a, %d %b %Y %H:%M:%S"


@dataclasses.dataclass
class FlowContext:
    """Call facts plus the variables applets hand on to later applets."""

    call_sid: str
    account_id: int
    app_id: int
    customer: str  # as echoed on the wire, e.g. 09052161119
    exophone: str  # as echoed on the wire
    direction: str  # "outbound-dial" for API-started calls
    created_at: dt.datetime
    started_at: dt.datetime
    time_zone: str
    custom_field: str | None
    now: Callable[[], dt.datetime]
    vars: dict[str, str] = dataclasses.field(default_factory=dict)

    def local(self, when: dt.datetime) -> dt.datetime:
        """``when`` in the account's time zone."""
        return when.astimezone(ZoneInfo(self.time_zone))

    def fmt(self, when: dt.datetime) -> str:
        """Exotel's date format, in the account's time zone."""
        return self.local(when).strftime(EXOTEL_DATE)
