"""SIP header fields: the ordered header list and the structured values the user agent reads.

``Headers`` keeps every field as written (name spelling, order, one entry per line) so a parsed
message serializes back byte for byte; lookups are case-insensitive and understand compact
forms (``v`` is Via). The structured types (``NameAddr``, ``Via``, ``CSeq``) pair ``parse``
with ``str``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Iterator

from ringflow.numeric import as_whole
from ringflow.sip.errors import SipParseError
from ringflow.sip.uri import Param, SipUri, find_param, format_params, replace_param, split_hostport

COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
}
TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_PARAM_VALUE = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^\s;,"<>]+)\Z')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


@functools.lru_cache(maxsize=512)
def canonical(name: str) -> str:
    """Lower-case long form of a header name (``I`` -> ``call-id``)."""
    lname = name.lower()
    return COMPACT.get(lname, lname)


class Headers:
    """Ordered (name, value) header lines with case-insensitive, compact-aware lookup."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self._items: list[tuple[str, str]] = list(items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str) -> str | None:
        """The first line's value, or None."""
        key = canonical(name)
        for n, v in self._items:
            if canonical(n) == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every line's value, in order."""
        key = canonical(name)
        return [v for n, v in self._items if canonical(n) == key]

    def values(self, name: str) -> list[str]:
        """Elements of a comma-separated list header across all its lines (Via, Contact...)."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(part.strip() for part in split_outside(value, ","))
        return [v for v in out if v]

    def add(self, name: str, value: str) -> None:
        """Append a line."""
        self._items.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace the first line of ``name`` (dropping the others) or append one."""
        key = canonical(name)
        out, done = [], False
        for n, v in self._items:
            if canonical(n) == key:
                if not done:
                    out.append((n, value))
                    done = True
            else:
                out.append((n, v))
        if not done:
            out.append((name, value))
        self._items = out

    def remove(self, name: str) -> None:
        """Drop every line of ``name``."""
        key = canonical(name)
        self._items = [(n, v) for n, v in self._items if canonical(n) != key]

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers(self._items)


_CHUNKS = {sep: re.compile(rf'"(?:[^"\\]|\\.)*"?|<[^>]*>?|[^"<{sep}]+|{sep}') for sep in ",;"}


def split_outside(text: str, sep: str) -> list[str]:
    """Split on ``sep`` (``,`` or ``;``) outside double quotes and angle brackets."""
    if '"' not in text and "<" not in text:
        return text.split(sep)  # the common case
    parts: list[str] = []
    current: list[str] = []
    for chunk in _CHUNKS[sep].findall(text):
        if chunk == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(chunk)
    parts.append("".join(current))
    return parts


def parse_header_params(text: str, what: str) -> tuple[Param, ...]:
    """Header parameters after the first ``;``: tokens, hosts or quoted strings as values."""
    params: list[Param] = []
    for part in split_outside(text, ";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not TOKEN.match(name):
            raise SipParseError(what, f"bad parameter name {name!r}")
        if eq:
            value = value.strip()
            if not _PARAM_VALUE.match(value):
                raise SipParseError(what, f"bad value for parameter {name!r}")
            params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)


def quote(text: str) -> str:
    """A quoted-string for ``text``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclasses.dataclass(frozen=True)
class NameAddr:
    """From, To, Contact, Route, Record-Route: ``"Name" <uri>;tag=x`` or bare ``uri;tag=x``."""

    uri: SipUri
    display_name: str | None = None
    params: tuple[Param, ...] = ()
    bracketed: bool = True
    quoted: bool = True

    @classmethod
    def parse(cls, text: str, what: str = "name-addr") -> NameAddr:
        """Parse one element (no commas) of a From/To/Contact/Route header."""
        text = text.strip()
        display: str | None = None
        quoted = True
        if text.startswith('"'):
            m = _QUOTED.match(text)
            if not m:
                raise SipParseError(what, "unterminated quoted display name")
            display, rest = _unquote(m.group(1)), text[m.end() :].lstrip()
            if not rest.startswith("<"):
                raise SipParseError(what, "display name not followed by <uri>")
        else:
            lt = text.find("<")
            rest = text if lt < 0 else text[lt:]
            if lt > 0:
                words = text[:lt].split()
                if not all(TOKEN.match(w) for w in words):
                    raise SipParseError(what, f"bad display name {text[:lt]!r}")
                display, quoted = " ".join(words), False
        if rest.startswith("<"):
            end = rest.find(">")
            if end < 0:
                raise SipParseError(what, "missing '>'")
            uri_text, tail, bracketed = rest[1:end], rest[end + 1 :].strip(), True
        else:
            uri_text, semi, tail = rest.partition(";")
            tail, bracketed = (";" + tail if semi else ""), False
        if tail and not tail.startswith(";"):
            raise SipParseError(what, f"junk after URI: {tail[:40]!r}")
        params = parse_header_params(tail[1:], what) if tail else ()
        uri = SipUri.parse(uri_text.strip())
        return cls(uri, display, params, bracketed, quoted)

    def __str__(self) -> str:
        if not self.bracketed and self.display_name is None:
            return f"{self.uri}{format_params(self.params)}"
        name = ""
        if self.display_name is not None:
            name = (quote(self.display_name) if self.quoted else self.display_name) + " "
        return f"{name}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter."""
        return find_param(self.params, "tag")[1]

    def with_tag(self, tag: str) -> NameAddr:
        """A copy carrying ``tag``."""
        return dataclasses.replace(self, params=replace_param(self.params, "tag", tag))

    def without_tag(self) -> NameAddr:
        """A copy without a ``tag``."""
        kept = tuple(p for p in self.params if p[0].lower() != "tag")
        return dataclasses.replace(self, params=kept)


@dataclasses.dataclass(frozen=True)
class Via:
    """One Via element: ``SIP/2.0/UDP host:port;branch=z9hG4bK..;rport;received=..``."""

    transport: str
    host: str
    port: int | None = None
    params: tuple[Param, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via element (no commas)."""
        parts = split_outside(text.strip(), ";")
        head, param_text = parts[0].strip(), ";".join(parts[1:])
        protocol, sep, sent_by = _split_sent_protocol(head)
        if not sep:
            raise SipParseError("Via", f"no sent-by in {text[:60]!r}")
        name, version, transport = protocol
        if name.upper() != "SIP" or version != "2.0" or not TOKEN.match(transport):
            raise SipParseError("Via", f"bad sent-protocol {'/'.join(protocol)!r}")
        host, port = split_hostport(sent_by, "Via")
        params = parse_header_params(param_text, "Via") if len(parts) > 1 else ()
        return cls(transport, host, port, params)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """The branch parameter (``z9hG4bK``-prefixed for RFC 3261 peers)."""
        return find_param(self.params, "branch")[1]

    @property
    def received(self) -> str | None:
        """The address the next hop saw this request come from."""
        return find_param(self.params, "received")[1]

    @property
    def rport(self) -> int | None:
        """The source port the next hop filled in (RFC 3581); None if absent or empty."""
        value = find_param(self.params, "rport")[1]
        return as_whole(value, 0, 65535)

    @property
    def sent_by(self) -> tuple[str, int]:
        """(host, port) with the default port 5060."""
        return self.host, self.port if self.port is not None else 5060

    def with_param(self, name: str, value: str | None = None) -> Via:
        """A copy with one parameter set."""
        return dataclasses.replace(self, params=replace_param(self.params, name, value))


def _split_sent_protocol(head: str) -> tuple[tuple[str, str, str], bool, str]:
    """``SIP / 2.0 / UDP  host:port`` -> ((SIP, 2.0, UDP), found, host:port)."""
    pieces = head.split("/", 2)
    if len(pieces) != 3:
        return ("", "", ""), False, ""
    transport_and_rest = pieces[2].strip().split(None, 1)
    if len(transport_and_rest) != 2:
        return ("", "", ""), False, ""
    protocol = (pieces[0].strip(), pieces[1].strip(), transport_and_rest[0])
    return protocol, True, transport_and_rest[1].strip()


@dataclasses.dataclass(frozen=True)
class CSeq:
    """``CSeq: 314159 INVITE``."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse a CSeq value."""
        parts = text.split()
        if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
            raise SipParseError("CSeq", f"expected '<number> <method>', got {text[:40]!r}")
        if len(parts[0]) > 10 or int(parts[0]) >= 2**31 or not TOKEN.match(parts[1]):
            raise SipParseError("CSeq", f"bad CSeq {text[:40]!r}")
        return cls(int(parts[0]), parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
