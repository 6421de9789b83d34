"""Session descriptions (RFC 4566) and the audio offer/answer choice (RFC 3264).

``SessionDescription.parse`` pairs with ``bytes()``; lines are written back in RFC 4566 order,
so SDP from real peers (which use that order) round-trips byte for byte. The offer/answer
functions read only what an audio leg needs: the remote RTP address, PCMU or PCMA, the
telephone-event payload type (dynamic: 101 and 96 both occur; we send with the number the
answer uses and accept both), ptime and direction.
"""

from __future__ import annotations

import dataclasses
import enum

from ringflow.numeric import as_whole
from ringflow.sip.errors import NegotiationError, SdpParseError

Attribute = tuple[str, "str | None"]
SESSION_TYPES, MEDIA_TYPES = set("iuepcbtrzka"), set("icbka")
STATIC = {0: "PCMU", 8: "PCMA"}


def _int(text: str, what: str, limit: int = 2**59) -> int:
    value = as_whole(text, 0, limit - 1)
    if value is None:
        raise SdpParseError(what, f"expected a number, got {text[:20]!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Connection:
    """``c=IN IP4 192.0.2.1``."""

    address: str
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, text: str) -> Connection:
        """Parse a c= value."""
        parts = text.split(" ")
        if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6") or not parts[2]:
            raise SdpParseError("SDP c=", f"bad connection {text[:60]!r}")
        return cls(parts[2], parts[1])

    def __str__(self) -> str:
        return f"IN {self.addrtype} {self.address}"


@dataclasses.dataclass(frozen=True)
class Origin:
    """``o=- 1716902338 1716902339 IN IP4 127.0.0.1``."""

    session_id: int
    version: int
    address: str
    username: str = "-"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, text: str) -> Origin:
        """Parse an o= value."""
        parts = text.split(" ")
        if len(parts) != 6 or parts[3] != "IN" or not parts[0]:
            raise SdpParseError("SDP o=", f"bad origin {text[:80]!r}")
        sid, ver = _int(parts[1], "SDP o="), _int(parts[2], "SDP o=")
        return cls(sid, ver, parts[5], parts[0], parts[4])

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.version} IN {self.addrtype} {self.address}"


class Direction(enum.StrEnum):
    """Media direction attribute (RFC 3264 5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reverse(self) -> Direction:
        """The direction the other side of the stream has."""
        swap = {"sendonly": "recvonly", "recvonly": "sendonly"}
        return Direction(swap.get(self.value, self.value))


def _attr_value(attributes: list[Attribute], name: str) -> str | None:
    return next((v for n, v in attributes if n == name), None)


def _direction(attributes: list[Attribute]) -> Direction | None:
    values = {d.value for d in Direction}
    return next((Direction(n) for n, _ in attributes if n in values), None)


@dataclasses.dataclass
class Media:
    """One m= section with its c=, b= and a= lines."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: Connection | None = None
    attributes: list[Attribute] = dataclasses.field(default_factory=list)
    bandwidths: list[str] = dataclasses.field(default_factory=list)
    other: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # i= k=
    port_count: int | None = None

    def lines(self) -> list[str]:
        """The section's lines in RFC 4566 order."""
        count = f"/{self.port_count}" if self.port_count is not None else ""
        out = [f"m={self.kind} {self.port}{count} {self.proto} {' '.join(self.formats)}"]
        out += [f"i={v}" for t, v in self.other if t == "i"]
        out += [f"c={self.connection}"] if self.connection else []
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"k={v}" for t, v in self.other if t == "k"]
        out += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        return out

    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """payload type -> (encoding name, clock rate), static types included."""
        out = {pt: (name, 8000) for pt, name in STATIC.items() if str(pt) in self.formats}
        for name, value in self.attributes:
            if name == "rtpmap" and value:
                pt, _, enc = value.partition(" ")
                codec, _, rate = enc.partition("/")
                number, clock = as_whole(pt, 0, 127), as_whole(rate.split("/")[0], 1, 10**6)
                if number is not None and codec and clock is not None:
                    out[number] = (codec, clock)
        return out

    @property
    def ptime(self) -> int | None:
        """a=ptime in milliseconds."""
        value = _attr_value(self.attributes, "ptime")
        return as_whole(value, 1, 1000)


@dataclasses.dataclass
class SessionDescription:
    """A whole SDP body."""

    origin: Origin
    name: str = "-"
    connection: Connection | None = None
    times: list[tuple[str, str]] = dataclasses.field(default_factory=lambda: [("t", "0 0")])
    attributes: list[Attribute] = dataclasses.field(default_factory=list)
    media: list[Media] = dataclasses.field(default_factory=list)
    bandwidths: list[str] = dataclasses.field(default_factory=list)
    other: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # i= u= e= p= k=

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body; raise ``SdpParseError`` naming the bad line."""
        text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        for line in lines:
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise SdpParseError("SDP", f"bad line {line[:40]!r}")
        if len(lines) < 3 or lines[0] != "v=0" or lines[1][0] != "o" or lines[2][0] != "s":
            raise SdpParseError("SDP", "must start with v=0, o=, s=")
        sdp = cls(Origin.parse(lines[1][2:]), lines[2][2:], times=[])
        current: Media | None = None
        for line in lines[3:]:
            kind, value = line[0], line[2:]
            if kind == "m":
                current = _parse_m(value)
                sdp.media.append(current)
            elif current is None:
                sdp._add_session_line(kind, value)
            else:
                _add_media_line(current, kind, value)
        if not any(t == "t" for t, _ in sdp.times):
            raise SdpParseError("SDP t=", "missing")
        return sdp

    def _add_session_line(self, kind: str, value: str) -> None:
        if kind not in SESSION_TYPES:
            raise SdpParseError("SDP", f"unexpected {kind}= line at session level")
        if kind == "c":
            self.connection = Connection.parse(value)
        elif kind == "b":
            self.bandwidths.append(value)
        elif kind in "trz":
            self.times.append((kind, value))
        elif kind == "a":
            self.attributes.append(_parse_a(value))
        else:
            self.other.append((kind, value))

    def __str__(self) -> str:
        out = ["v=0", f"o={self.origin}", f"s={self.name}"]
        out += [f"{t}={v}" for t, v in self.other if t in "iuep"]
        out += [f"c={self.connection}"] if self.connection else []
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"{t}={v}" for t, v in self.times]
        out += [f"k={v}" for t, v in self.other if t == "k"]
        out += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        for media in self.media:
            out += media.lines()
        return "\r\n".join(out) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")

    def audio(self) -> Media:
        """The first audio stream."""
        for media in self.media:
            if media.kind == "audio":
                return media
        raise NegotiationError("no audio stream in the SDP")


def _parse_m(value: str) -> Media:
    parts = value.split(" ")
    if len(parts) < 4 or not parts[0] or not parts[2] or not all(parts[3:]):
        raise SdpParseError("SDP m=", f"bad media line {value[:60]!r}")
    port_text, _, count = parts[1].partition("/")
    port = _int(port_text, "SDP m=", 65536)
    return Media(
        parts[0],
        port,
        parts[2],
        parts[3:],
        port_count=_int(count, "SDP m=", 65536) if count else None,
    )


def _add_media_line(media: Media, kind: str, value: str) -> None:
    if kind not in MEDIA_TYPES:
        raise SdpParseError("SDP", f"unexpected {kind}= line in a media section")
    if kind == "c":
        media.connection = Connection.parse(value)
    elif kind == "b":
        media.bandwidths.append(value)
    elif kind == "a":
        media.attributes.append(_parse_a(value))
    else:
        media.other.append((kind, value))


def _parse_a(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name or " " in name:
        raise SdpParseError("SDP a=", f"bad attribute {value[:40]!r}")
    return (name, rest if colon else None)


@dataclasses.dataclass(frozen=True)
class Codec:
    """An audio encoding and the payload type it travels with."""

    name: str
    payload_type: int
    clock_rate: int = 8000


PCMU, PCMA = Codec("PCMU", 0), Codec("PCMA", 8)
TELEPHONE_EVENT = "telephone-event"


@dataclasses.dataclass(frozen=True)
class MediaPlan:
    """What one leg's RTP needs after offer/answer."""

    remote: tuple[str, int]  # where to send RTP (and, symmetric RTP, where it comes from)
    codec: Codec  # with the payload type to send
    dtmf_pt: int | None  # telephone-event payload type to send with
    dtmf_receive: frozenset[int]  # telephone-event payload types to accept
    ptime: int  # milliseconds of audio per packet we send
    direction: Direction  # ours


def build_sdp(
    address: str,
    port: int,
    *,
    session_id: int,
    version: int,
    codecs: tuple[Codec, ...],
    dtmf_pt: int | None = 101,
    ptime: int = 20,
    direction: Direction = Direction.SENDRECV,
) -> SessionDescription:
    """Our SDP: one audio stream with ``codecs`` and telephone-event."""
    formats = [str(c.payload_type) for c in codecs]
    attrs: list[Attribute] = [
        ("rtpmap", f"{c.payload_type} {c.name}/{c.clock_rate}") for c in codecs
    ]
    if dtmf_pt is not None:
        formats.append(str(dtmf_pt))
        attrs += [("rtpmap", f"{dtmf_pt} {TELEPHONE_EVENT}/8000"), ("fmtp", f"{dtmf_pt} 0-16")]
    attrs += [("ptime", str(ptime)), (direction.value, None)]
    addrtype = "IP6" if ":" in address else "IP4"
    return SessionDescription(
        Origin(session_id, version, address, "ringflow", addrtype),
        "ringflow",
        Connection(address, addrtype),
        media=[Media("audio", port, "RTP/AVP", formats, attributes=attrs)],
    )


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> MediaPlan:
    """The plan from the answer to our offer: its codec choice and telephone-event number."""
    offered = {name.upper() for name, _ in offer.audio().rtpmap().values()}
    offered &= {PCMU.name, PCMA.name}
    plan = _plan(answer, offered, prefer=None)
    ours = offer.audio().rtpmap()
    extra = {pt for pt, (name, _) in ours.items() if name.lower() == TELEPHONE_EVENT}
    return dataclasses.replace(plan, dtmf_receive=plan.dtmf_receive | extra)


def answer_offer(
    offer: SessionDescription,
    last_sent: SessionDescription,
    prefer: Codec | None = None,
) -> tuple[SessionDescription, MediaPlan]:
    """Answer a re-offer with our current SDP, narrowed to what the offer can take.

    The o= version only moves when the body changes, so a session refresh is answered with
    exactly the SDP we sent last.
    """
    plan = _plan(offer, {PCMU.name, PCMA.name}, prefer)
    ours = last_sent.audio()
    conn = ours.connection or last_sent.connection
    address = conn.address if conn else last_sent.origin.address
    body = build_sdp(
        address,
        ours.port,
        session_id=last_sent.origin.session_id,
        version=last_sent.origin.version,
        codecs=(plan.codec,),
        dtmf_pt=plan.dtmf_pt,
        ptime=ours.ptime or 20,
        direction=plan.direction,
    )
    body.origin = dataclasses.replace(body.origin, username=last_sent.origin.username)
    if str(body) != str(last_sent):
        body.origin = dataclasses.replace(body.origin, version=last_sent.origin.version + 1)
    return body, plan


def _plan(remote: SessionDescription, names: set[str], prefer: Codec | None) -> MediaPlan:
    """Read the peer's SDP: the codec (among ``names``) and where and how to send."""
    media = remote.audio()
    if media.port == 0:
        raise NegotiationError("the audio stream was rejected (port 0)")
    conn = media.connection or remote.connection
    if conn is None:
        raise NegotiationError("no connection address for the audio stream", 400)
    rtpmap = media.rtpmap()
    choices = []
    for fmt in media.formats:
        if (number := as_whole(fmt, 0, 127)) is not None and number in rtpmap:
            name, rate = rtpmap[number]
            if name.upper() in names and rate == 8000:
                choices.append(Codec(name.upper(), int(fmt)))
    if not choices:
        raise NegotiationError("no common codec (PCMU or PCMA)")
    codec = next((c for c in choices if prefer and c.name == prefer.name), choices[0])
    dtmf = sorted(
        pt
        for pt, (name, rate) in rtpmap.items()
        if name.lower() == TELEPHONE_EVENT and rate == 8000 and str(pt) in media.formats
    )
    theirs = _direction(media.attributes) or _direction(remote.attributes) or Direction.SENDRECV
    return MediaPlan(
        (conn.address, media.port),
        codec,
        dtmf[0] if dtmf else None,
        frozenset(dtmf),
        media.ptime or 20,
        theirs.reverse(),
    )
