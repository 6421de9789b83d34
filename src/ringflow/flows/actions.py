"""What an applet may ask the engine to do. Applets yield these and receive the results."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Say:
    """Speak text to the caller. Result: None."""

    text: str
    voice: str | None = None


@dataclasses.dataclass(frozen=True)
class Play:
    """Play an audio URL to the caller. Result: None, or why it could not be played."""

    url: str


@dataclasses.dataclass(frozen=True)
class HttpGet:
    """GET a customer URL with query parameters. Result: HttpResult."""

    url: str
    params: dict[str, str]
    timeout: float
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    wait: bool = True  # False: fire and forget (async Passthru); the result is None
    method: str = "GET"  # or "HEAD" (a dynamic greeting asks HEAD first)


@dataclasses.dataclass(frozen=True)
class HttpResult:
    """What a customer URL answered (status None when it never answered)."""

    status: int | None
    content_type: str = ""
    text: str = ""
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class CollectDigits:
    """Wait for keys from the caller. Result: the digits (str, "" when none came)."""

    max_digits: int
    timeout: float  # seconds to wait for the first key, and between keys
    finish_on: str = "#"  # keys that end the input early (not included in the result)


@dataclasses.dataclass(frozen=True)
class Dial:
    """Connect the caller to the first of ``numbers`` to answer. Result: DialResult."""

    numbers: tuple[str, ...]  # E.164 or sip: URIs, tried in order unless ``simultaneous``
    ring_timeout: float
    simultaneous: bool = False
    caller_id: str | None = None  # E.164; None: the call's ExoPhone
    max_conversation: float | None = None
    announce: str | None = None  # spoken to the callee before the parties are connected
    record: bool = False  # record the conversation
    recording_channels: str | None = None  # "single" or "dual"; None: the call's own setting
    music: str | None = None  # a Play URL looped to the caller while the numbers ring


@dataclasses.dataclass(frozen=True)
class DialResult:
    """How a Dial ended. ``status``: completed, busy, no-answer or failed."""

    status: str
    number: str | None = None  # who answered (or the last number tried)
    duration: int = 0  # seconds the two parties talked
    recording_url: str | None = None  # the conversation's recording, when it was recorded


@dataclasses.dataclass(frozen=True)
class Record:
    """Record what the caller says (a voicemail). Result: RecordResult."""

    max_length: float  # seconds
    finish_on: str = "#"  # keys that end the recording (not part of it)
    beep: bool = True  # play a beep first, so the caller knows when to speak
    silence_timeout: float = 5.0  # seconds of silence that end the recording


@dataclasses.dataclass(frozen=True)
class RecordResult:
    """How a Record ended. ``url`` is None when nothing but silence was heard (no file kept)."""

    url: str | None
    duration: float = 0.0  # seconds of audio in the file
    digits: str = ""  # the finish key that ended it, if one did
    ended_by: str = ""  # key, silence, max-length or hangup
    sid: str | None = None  # the recording's id


@dataclasses.dataclass(frozen=True)
class StreamAudio:
    """Stream the call's audio to a bot over WebSocket.

    Bidirectional (a voicebot): waits until the bot or the caller ends it; result: the stream's
    outcome (``StreamOutcome``). Unidirectional (``wait`` False): runs beside the flow until the
    call ends; result: None.
    """

    url: str
    bidirectional: bool = True
    track: str = "inbound"  # unidirectional: inbound, outbound or both
    wait: bool = True
    record: bool = False  # bidirectional: record the caller and the bot while the stream runs
    recording_channels: str | None = None  # single or dual; None: the call's own


@dataclasses.dataclass(frozen=True)
class TransferTo:
    """Returned by an applet (not yielded): continue in another app of the account."""

    app_id: int


Action = Say | Play | HttpGet | CollectDigits | Dial | Record | StreamAudio

# Applets return the name of the exit they leave by, HANGUP to end the call, or a TransferTo.
HANGUP = "__hangup__"
