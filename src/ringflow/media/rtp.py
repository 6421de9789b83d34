"""RTP packets (RFC 3550) and telephone-event payloads (RFC 4733), without I/O.

``RtpPacket.parse(data)`` pairs with ``bytes(packet)``, and so does ``TelephoneEvent``: a packet
from a real peer is written back byte for byte (padding is written as zeros followed by its
count, which is what every sender puts there). Parsers raise only ``RtpParseError``, never
IndexError or struct.error, so a stray datagram can never crash a session.

The session's hot paths do not build ``RtpPacket`` objects for every datagram: they use
``HEADER`` (the fixed 12 bytes) directly, which is also what ``bytes(packet)`` writes, so the two
cannot disagree about the layout.
"""

from __future__ import annotations

import dataclasses
import struct

from ringflow.errors import MediaError

VERSION = 2
HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
EVENT = struct.Struct("!BBH")  # event, E/R/volume, duration
_EXTENSION = struct.Struct("!HH")  # profile-defined id, length in 32-bit words


class RtpParseError(MediaError):
    """A datagram that is not a well-formed RTP packet or telephone-event payload."""


@dataclasses.dataclass(slots=True)
class RtpPacket:
    """One RTP packet: the fixed header, CSRCs, an optional header extension, the payload."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile id, data: a multiple of 4 bytes)
    padding: int = 0  # padding bytes after the payload, counting the final count byte

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse a datagram; ``RtpParseError`` if it is not RTP version 2 or is truncated."""
        if len(data) < HEADER.size:
            raise RtpParseError(f"RTP packet of {len(data)} bytes is shorter than its header")
        first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
        if first >> 6 != VERSION:
            raise RtpParseError(f"RTP version {first >> 6}, expected {VERSION}")
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0:
                raise RtpParseError("RTP padding bit set but padding count is 0")
            end -= padding
            if end < HEADER.size:
                raise RtpParseError(f"RTP padding of {padding} bytes runs into the header")
        pos = HEADER.size
        count = first & 0x0F
        if pos + 4 * count > end:
            raise RtpParseError(f"RTP packet too short for {count} CSRCs")
        csrc = struct.unpack_from(f"!{count}I", data, pos)
        pos += 4 * count
        extension = None
        if first & 0x10:
            if pos + _EXTENSION.size > end:
                raise RtpParseError("RTP packet too short for its header extension")
            profile, words = _EXTENSION.unpack_from(data, pos)
            pos += _EXTENSION.size
            if pos + 4 * words > end:
                raise RtpParseError("RTP header extension runs past the packet")
            extension = (profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        if pos > end:
            raise RtpParseError("RTP padding runs into the header extension or CSRCs")
        return cls(
            second & 0x7F,
            sequence,
            timestamp,
            ssrc,
            bytes(data[pos:end]),
            bool(second & 0x80),
            csrc,
            extension,
            padding,
        )

    def __bytes__(self) -> bytes:
        first = VERSION << 6 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        parts = [
            HEADER.pack(
                first,
                self.marker << 7 | self.payload_type,
                self.sequence,
                self.timestamp,
                self.ssrc,
            )
        ]
        parts += [struct.pack(f"!{len(self.csrc)}I", *self.csrc)] if self.csrc else []
        if self.extension is not None:
            profile, data = self.extension
            parts.append(_EXTENSION.pack(profile, len(data) // 4) + data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


# RFC 4733 section 3.2: events 0-9 are the digits, 10 '*', 11 '#', 12-15 'A'-'D', 16 flash.
KEYS = "0123456789*#ABCD"


def key_of(event: int) -> str | None:
    """The keypad key for an event code, or None for events that are not keys (flash...)."""
    return KEYS[event] if 0 <= event < len(KEYS) else None


def event_of(key: str) -> int:
    """The event code for a keypad key; ValueError for anything else."""
    index = KEYS.find(key.upper()) if len(key) == 1 else -1
    if index < 0:
        raise ValueError(f"not a DTMF key: {key!r}")
    return index


@dataclasses.dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The payload of an RFC 4733 named-event packet (a DTMF key being held down)."""

    event: int
    end: bool = False
    volume: int = 10  # power level as -dBm0 (0..63)
    duration: int = 0  # in RTP timestamp units (samples at 8 kHz) since the event began
    reserved: bool = False  # the R bit: senders write 0, receivers ignore it; kept to round-trip

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse the first four bytes (a payload may carry more, with RFC 2198 redundancy)."""
        if len(payload) < EVENT.size:
            raise RtpParseError(f"telephone-event payload of {len(payload)} bytes, expected 4")
        event, flags, duration = EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration, bool(flags & 0x40))

    def __bytes__(self) -> bytes:
        flags = self.end << 7 | self.reserved << 6 | (self.volume & 0x3F)
        return EVENT.pack(self.event, flags, self.duration)

    @property
    def key(self) -> str | None:
        """The keypad key this event is, or None."""
        return key_of(self.event)
