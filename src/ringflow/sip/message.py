"""SIP requests and responses (RFC 3261 7, 20): ``parse_message(data)`` and ``bytes(message)``.

A parsed message keeps its header lines as written, so ``bytes(Request.parse(data)) == data``
for canonical input (CRLF line ends, ``Name: value``, no folding, a correct Content-Length).
``bytes()`` always writes a Content-Length equal to the body's length. Parsing validates every
header the user agent relies on (Via, From, To, Call-ID, CSeq, Max-Forwards, Contact, routes,
Content-Length), so reading them later cannot fail; anything malformed raises
``SipParseError`` and nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

from ringflow.numeric import as_whole
from ringflow.sip.errors import SipParseError
from ringflow.sip.headers import TOKEN, CSeq, Headers, NameAddr, Via, canonical
from ringflow.sip.uri import SipUri

VERSION = "SIP/2.0"
# The headers of one value that the user agent reads, by canonical name.
_SINGLE = {"to": "To", "from": "From", "call-id": "Call-ID", "cseq": "CSeq"}
MAX_MESSAGE = 65535
REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


# The typed views are read several times for every message (transaction matching, dialog
# lookup, responses built from requests) and parsed values are immutable: parse each text once.
_via = functools.lru_cache(maxsize=4096)(Via.parse)
_name_addr = functools.lru_cache(maxsize=4096)(NameAddr.parse)
_cseq = functools.lru_cache(maxsize=4096)(CSeq.parse)


@dataclasses.dataclass(eq=False, kw_only=True)
class Message:
    """What requests and responses share: headers, body and the typed header views."""

    headers: Headers = dataclasses.field(default_factory=Headers)
    body: bytes = b""

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        length, lines, seen = str(len(self.body)), [self._start_line()], False
        for name, value in self.headers:
            if name.lower() in ("content-length", "l"):
                if seen:
                    continue
                value, seen = length, True
            lines.append(f"{name}: {value}" if value else f"{name}:")
        if not seen:
            lines.append(f"Content-Length: {length}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and bytes(self) == bytes(other)

    @property
    def vias(self) -> list[Via]:
        """Every Via element, top first."""
        return [_via(v) for v in self.headers.values("Via")]

    @property
    def via(self) -> Via:
        """The top Via."""
        return _via(self.headers.values("Via")[0])

    @property
    def from_(self) -> NameAddr:
        """The From header."""
        return _name_addr(self._one("From"), "From")

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return _name_addr(self._one("To"), "To")

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self._one("Call-ID")

    @property
    def cseq(self) -> CSeq:
        """The CSeq."""
        return _cseq(self._one("CSeq"))

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact elements (empty for ``*`` or none)."""
        return [NameAddr.parse(v, "Contact") for v in self.headers.values("Contact") if v != "*"]

    @property
    def record_route(self) -> list[NameAddr]:
        """Record-Route elements, top first."""
        return [NameAddr.parse(v, "Record-Route") for v in self.headers.values("Record-Route")]

    @property
    def route(self) -> list[NameAddr]:
        """Route elements, top first."""
        return [NameAddr.parse(v, "Route") for v in self.headers.values("Route")]

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards, if present."""
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        hops = as_whole(value, 0, 255)
        if hops is None:
            raise SipParseError("Max-Forwards", f"expected 0-255, got {value[:20]!r}")
        return hops

    @property
    def content_type(self) -> str | None:
        """The media type in lower case, without parameters (``application/sdp``)."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def _one(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None or not value.strip():
            raise SipParseError(name, "missing")
        return value

    def _validate(self) -> None:
        if not self.headers.values("Via"):
            raise SipParseError("Via", "missing")
        # RFC 3261 7.3.1: only a list header may come on several lines. A second To, unread
        # here, would be copied into the response (and read) later.
        lines = Counter(canonical(name) for name, _ in self.headers)
        for key, name in _SINGLE.items():
            if lines[key] > 1:
                raise SipParseError(name, f"given {lines[key]} times")
        # Parse each header the user agent reads, so that reading it later cannot fail.
        _ = (self.vias, self.from_, self.to, self.call_id, self.cseq)
        _ = (self.contacts, self.record_route, self.route, self.max_forwards)


@dataclasses.dataclass(eq=False, kw_only=True)
class Request(Message):
    """A SIP request: ``Request(method=, uri=, headers=, body=)``."""

    method: str
    uri: SipUri

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {VERSION}"

    @classmethod
    def parse(cls, data: bytes) -> Request:
        """Parse a datagram that must be a request."""
        msg = parse_message(data)
        if not isinstance(msg, Request):
            raise SipParseError("start line", "expected a request, got a response")
        return msg

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


@dataclasses.dataclass(eq=False, kw_only=True)
class Response(Message):
    """A SIP response: ``Response(status=, reason=, headers=, body=)``."""

    status: int
    reason: str

    def _start_line(self) -> str:
        return f"{VERSION} {self.status} {self.reason}"

    @classmethod
    def parse(cls, data: bytes) -> Response:
        """Parse a datagram that must be a response."""
        msg = parse_message(data)
        if not isinstance(msg, Response):
            raise SipParseError("start line", "expected a response, got a request")
        return msg

    @property
    def cause(self) -> str:
        """``486 Busy Here``: the status line as people quote it."""
        return f"{self.status} {self.reason}".strip()

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message from a datagram."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SipParseError("message", "expected bytes")
    data = bytes(data).lstrip(b"\r\n")
    if not data:
        raise SipParseError("message", "empty (keep-alive?)")
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message", f"{len(data)} bytes is too large")
    end, sep_len = data.find(b"\r\n\r\n"), 4
    if end < 0:
        end, sep_len = data.find(b"\n\n"), 2
    if end < 0:
        raise SipParseError("message", "no empty line after the headers")
    head = data[:end].decode("utf-8", "surrogateescape")
    lines = [line.removesuffix("\r") for line in head.split("\n")]
    if any("\r" in line or "\x00" in line for line in lines):
        raise SipParseError("message", "stray CR or NUL in the header section")
    headers = Headers(_unfold(lines[1:]))
    body = _body(headers, data[end + sep_len :])
    msg = _start(lines[0], headers, body)
    msg._validate()
    if isinstance(msg, Request) and msg.cseq.method != msg.method:
        raise SipParseError("CSeq", f"method {msg.cseq.method!r} differs from {msg.method!r}")
    return msg


def _start(line: str, headers: Headers, body: bytes) -> Request | Response:
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != VERSION:
            raise SipParseError("start line", f"unsupported version {version[:20]!r}")
        if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] not in "123456":
            raise SipParseError("start line", f"bad status code {code[:10]!r}")
        return Response(status=int(code), reason=reason.strip(), headers=headers, body=body)
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("start line", f"expected 'METHOD URI SIP/2.0', got {line[:60]!r}")
    method, uri_text, version = parts
    if not TOKEN.match(method):
        raise SipParseError("start line", f"bad method {method[:20]!r}")
    if version != VERSION:
        raise SipParseError("start line", f"unsupported version {version[:20]!r}")
    try:
        uri = SipUri.parse(uri_text)
    except SipParseError as exc:
        raise SipParseError("Request-URI", exc.detail) from exc
    return Request(method=method, uri=uri, headers=headers, body=body)


def _unfold(lines: list[str]) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not items:
                raise SipParseError("headers", "continuation line before any header")
            name, value = items[-1]
            items[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not TOKEN.match(name):
            raise SipParseError("headers", f"bad header line {line[:60]!r}")
        items.append((name, value.strip(" \t")))
    return items


def _body(headers: Headers, rest: bytes) -> bytes:
    values = headers.get_all("Content-Length")
    if not values:
        return rest  # optional over UDP: the body runs to the end of the datagram
    length = as_whole(values[0], 0, 10**9) if len(set(values)) == 1 else None
    if length is None:
        raise SipParseError("Content-Length", f"bad value {values[0][:20]!r}")
    if length > len(rest):
        raise SipParseError("Content-Length", f"{length} exceeds the {len(rest)} body bytes")
    return rest[:length]


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` (RFC 3261 8.2.6): Vias, From, To (+tag), Call-ID, CSeq copied."""
    out = Headers()
    for name, value in request.headers:
        if name.lower() in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            out.add(name, value)
        elif name.lower() in ("to", "t"):
            to = NameAddr.parse(value, "To")
            if to_tag and to.tag is None and status > 100:
                value = str(to.with_tag(to_tag))
            out.add(name, value)
    for name, value in headers:
        out.add(name, value)
    reason = reason if reason is not None else REASONS.get(status, "")
    return Response(status=status, reason=reason, headers=out, body=body)
