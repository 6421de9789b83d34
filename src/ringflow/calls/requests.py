"""A call as asked for, in ringflow's own terms (the API translates Exotel's names into this)."""

from __future__ import annotations

import dataclasses

DEFAULT_TIME_LIMIT = 14400  # 4 hours, Exotel's maximum
DEFAULT_TIME_OUT = 30
MAX_TIME_OUT = 60  # ring time is capped at a minute in India


@dataclasses.dataclass(frozen=True)
class CampaignTag:
    """Which campaign placed a call: its id, the number's id in it, and the attempt (1, 2 ...).
    A number has at most one call per attempt (a unique key of the calls table)."""

    campaign_id: int
    number_id: int
    attempt: int


@dataclasses.dataclass(frozen=True)
class CallRequest:
    """Everything needed to place a call; numbers are E.164 (or sip: URIs)."""

    account_id: int
    shape: str  # "flow", "numbers" or "stream"
    from_number: str
    caller_id: str
    to_number: str | None = None  # numbers shape
    app_id: int | None = None  # flow shape
    time_limit: int = DEFAULT_TIME_LIMIT
    time_out: int = DEFAULT_TIME_OUT
    status_callback: str | None = None
    callback_events: tuple[str, ...] = ()
    callback_json: bool = False
    custom_field: str | None = None
    record: bool = False
    recording_channels: str = "single"
    recording_format: str = "mp3"
    wait_url: str | None = None
    stream_url: str | None = None  # stream shape: the bot's ws(s) URL or http(s) endpoint
    stream_type: str | None = None  # bidirectional or unidirectional
    stream_name: str | None = None
    campaign: CampaignTag | None = None
    # Answering machine detection on the first leg: "Enable" or "DetectMessageEnd" (None: off).
    machine_detection: str | None = None
