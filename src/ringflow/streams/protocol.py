"""The AgentStream message protocol, without sockets: what ringflow sends and what a bot sends.

``StreamProtocol`` numbers every message it builds (``sequence_number`` from 1; the
``connected`` greeting carries none), counts media chunks from 1 and stamps each with the
milliseconds of audio sent on its track so far. ``start`` adds ``answered_by`` (ours) when the
call asked for answering machine detection. Keys are exactly the spec's snake_case ones:
pipecat tells Exotel from Twilio by ``start.stream_sid`` versus ``streamSid``, so a camelCase
twin would make it decode our PCM as mu-law. Every number is sent as a string, as Exotel does.

Each message is built as the UTF-8 bytes of its JSON text, ready for a text frame: a stream
sends ten media messages a second, and building them as bytes spares a copy of each chunk's
base64 into a str and back.

``parse_bot_message`` turns one frame from the bot into a ``BotMedia``, ``BotMark``,
``BotClear`` or ``Ignored`` (with the reason, for the call's timeline). It never raises: a bot
that sends garbage is logged and the call goes on. The JSON is read by orjson, which reads a
100 ms media message in about a third of ``json.loads``'s time (bench/streams.py). It is
stricter: ``NaN``, infinities, lone surrogates or nesting over 1024 deep make a frame
``Ignored`` (``json.loads`` raised ``RecursionError`` for deep nesting).
"""

from __future__ import annotations

import binascii
import dataclasses
import json
from typing import Any

import orjson
import pybase64

TRACKS = ("inbound", "outbound", "both")
DTMF_KEYS = frozenset("0123456789*#")
MAX_MARK_NAME = 256  # characters of a mark name we keep and echo


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """What the ``start`` message tells the bot."""

    stream_sid: str
    call_sid: str
    account_sid: str
    from_number: str
    to_number: str
    custom_parameters: dict[str, str]
    sample_rate: int
    answered_by: str | None = None  # answering machine detection's verdict, when it ran


@dataclasses.dataclass(frozen=True)
class BotMedia:
    """Audio from the bot, at the stream's rate."""

    pcm: bytes


@dataclasses.dataclass(frozen=True)
class BotMark:
    """A mark to send back once the audio before it has played."""

    name: str


@dataclasses.dataclass(frozen=True)
class BotClear:
    """Drop the bot's queued audio (barge-in)."""


@dataclasses.dataclass(frozen=True)
class Ignored:
    """A frame we could not use; ``reason`` says why (for the timeline)."""

    reason: str


BotEvent = BotMedia | BotMark | BotClear | Ignored


class StreamProtocol:
    """Builds ringflow's messages for one stream, numbering them as the spec says."""

    def __init__(self, info: StreamInfo) -> None:
        self.info = info
        self._sequence = 0
        self._chunks = 0
        self._track_ms: dict[str, int] = {}
        self._sid = json.dumps(info.stream_sid).encode()  # quoted and escaped once

    def _message(self, event: str, body: dict[str, Any] | None = None) -> bytes:
        self._sequence += 1
        message: dict[str, Any] = {
            "event": event,
            "sequence_number": str(self._sequence),
            "stream_sid": self.info.stream_sid,
        }
        if body is not None:
            message[event] = body
        return json.dumps(message, separators=(",", ":")).encode()

    def connected(self) -> bytes:
        """The first message, before ``start``."""
        return json.dumps({"event": "connected"}).encode()

    def start(self) -> bytes:
        """The stream's facts: who is on the call and the audio format."""
        info = self.info
        start: dict[str, Any] = {
            "stream_sid": info.stream_sid,
            "call_sid": info.call_sid,
            "account_sid": info.account_sid,
            "from": info.from_number,
            "to": info.to_number,
            "custom_parameters": dict(info.custom_parameters),
            "media_format": {
                "encoding": "audio/x-raw",
                "sample_rate": str(info.sample_rate),
                "bit_rate": "16",
            },
        }
        if info.answered_by is not None:  # ours: only on a call that asked for MachineDetection
            start["answered_by"] = info.answered_by
        return self._message("start", start)

    def media(self, pcm: bytes, track: str | None = None) -> bytes:
        """One chunk of audio (16-bit PCM at the stream's rate); ``track`` only for ``both``."""
        self._chunks += 1
        key = track or "inbound"
        elapsed = self._track_ms.get(key, 0) + len(pcm) * 1000 // (2 * self.info.sample_rate)
        self._track_ms[key] = elapsed
        self._sequence += 1
        # Ten of these a second per stream: written out rather than through json.dumps, byte
        # for byte what json.dumps of the same dict gives (the tests hold the two equal).
        tail = b"" if track is None else b',"track":%b' % json.dumps(track).encode()
        return _MEDIA % (
            self._sequence,
            self._sid,
            self._chunks,
            elapsed,
            pybase64.b64encode(pcm),
            tail,
        )

    def dtmf(self, digit: str, duration_ms: int) -> bytes:
        """A key the caller pressed."""
        return self._message("dtmf", {"digit": digit, "duration": str(duration_ms)})

    def mark(self, name: str) -> bytes:
        """A mark whose audio has played (or was cleared)."""
        return self._message("mark", {"name": name})

    def stop(self, reason: str) -> bytes:
        """The last message: ``callended`` or ``stopped``."""
        info = self.info
        return self._message(
            "stop", {"call_sid": info.call_sid, "account_sid": info.account_sid, "reason": reason}
        )


_MEDIA = (
    b'{"event":"media","sequence_number":"%d","stream_sid":%b,'
    b'"media":{"chunk":"%d","timestamp":"%d","payload":"%b"%b}}'
)


def parse_bot_message(frame: str | bytes) -> BotEvent:
    """Read one frame from the bot (a text frame's str, a binary frame's bytes); anything
    unusable comes back as ``Ignored``."""
    if isinstance(frame, bytes):
        return Ignored(f"binary frame of {len(frame)} bytes")
    try:
        message = orjson.loads(frame)
    except ValueError:
        return Ignored(f"not JSON: {frame[:60]!r}")
    if not isinstance(message, dict):
        return Ignored("not a JSON object")
    event = message.get("event")
    if event == "media":
        return _media(message.get("media"))
    if event == "mark":
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str) or not name:
            return Ignored("mark without a name")
        return BotMark(name[:MAX_MARK_NAME])
    if event == "clear":
        return BotClear()
    shown = event if isinstance(event, str) else json.dumps(event)
    return Ignored(f"unknown event {shown[:40]!r}")


def _media(media: Any) -> BotEvent:
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        return Ignored("media without a payload")
    try:
        pcm = pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return Ignored("media payload is not base64")
    if len(pcm) % 2:
        return Ignored(f"media payload of {len(pcm)} bytes is not whole 16-bit samples")
    return BotMedia(pcm)
