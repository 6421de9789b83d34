"""SIP and SIPS URIs (RFC 3261 19.1): ``sip:user:password@host:port;params?headers``.

``SipUri.parse(text)`` and ``str(uri)`` round-trip: the user part, parameter names and values
are kept exactly as written (escapes are not decoded) and looked up case-insensitively.
"""

from __future__ import annotations

import dataclasses
import re

from ringflow.sip.errors import SipParseError

Param = tuple[str, "str | None"]

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?\.?\Z")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/]+\Z")
_PASSWORD = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,]*\Z")
_PARAM_NAME = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+\Z")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]*\Z")
_HEADER_PART = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/?:+$]*\Z")
DEFAULT_PORTS = {"sip": 5060, "sips": 5061}


def parse_params(
    text: str, what: str, *, value_re: re.Pattern[str] = _PARAM_VALUE
) -> tuple[Param, ...]:
    """Parse ``;a=1;lr`` (the leading ``;`` already removed) into ordered (name, value) pairs."""
    params: list[Param] = []
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not _PARAM_NAME.match(name):
            raise SipParseError(what, f"bad parameter name {name!r}")
        if eq:
            value = value.strip()
            if not value_re.match(value):
                raise SipParseError(what, f"bad value for parameter {name!r}: {value!r}")
            params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)


def format_params(params: tuple[Param, ...]) -> str:
    """The inverse of ``parse_params``, with the leading ``;``."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def find_param(params: tuple[Param, ...], name: str) -> tuple[bool, str | None]:
    """(present, value) for a case-insensitive parameter name."""
    lname = name.lower()
    for n, v in params:
        if n.lower() == lname:
            return True, v
    return False, None


def replace_param(params: tuple[Param, ...], name: str, value: str | None) -> tuple[Param, ...]:
    """Params with ``name`` set to ``value`` (in place if present, else appended)."""
    lname = name.lower()
    out = [(n, value) if n.lower() == lname else (n, v) for n, v in params]
    if not any(n.lower() == lname for n, _ in params):
        out.append((name, value))
    return tuple(out)


def check_host(host: str, what: str) -> str:
    """Validate a hostname, IPv4 address or bracketed IPv6 reference."""
    if not (_HOSTNAME.match(host) or _IPV6.match(host)):
        raise SipParseError(what, f"bad host {host!r}")
    return host


def parse_port(text: str, what: str) -> int:
    """A decimal port number 0-65535."""
    if not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise SipParseError(what, f"bad port {text!r}")
    return int(text)


def split_hostport(text: str, what: str) -> tuple[str, int | None]:
    """``host[:port]`` with IPv6 in brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(what, f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(what, f"junk after host in {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    check_host(host, what)
    return host, (parse_port(port_text, what) if port_text is not None else None)


@dataclasses.dataclass(frozen=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI."""

    host: str
    user: str | None = None
    port: int | None = None
    params: tuple[Param, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "sip"
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI; raise ``SipParseError`` naming the bad part."""
        what = "URI"
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() not in DEFAULT_PORTS:
            raise SipParseError(what, f"not a sip: or sips: URI: {text[:80]!r}")
        rest, qmark, header_text = rest.partition("?")
        headers: tuple[tuple[str, str], ...] = ()
        if qmark:
            headers = _parse_uri_headers(header_text)
        user = password = None
        userinfo, at, hostpart = rest.rpartition("@")
        if at:
            user, pcolon, pw = userinfo.partition(":")
            if not _USER.match(user):
                raise SipParseError(what, f"bad user part {user!r}")
            if pcolon:
                if not _PASSWORD.match(pw):
                    raise SipParseError(what, "bad password part")
                password = pw
        hostport, semi, param_text = hostpart.partition(";")
        host, port = split_hostport(hostport, what)
        params = parse_params(param_text, what) if semi else ()
        return cls(host, user, port, params, headers, scheme, password)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{n}={v}" for n, v in self.headers))
        return "".join(out)

    def param(self, name: str) -> str | None:
        """A parameter's value (None if absent or valueless)."""
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        """Whether a parameter is present (``lr`` has no value)."""
        return find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """A copy with one parameter set."""
        return dataclasses.replace(self, params=replace_param(self.params, name, value))

    @property
    def transport(self) -> str:
        """The transport parameter in lower case (``udp`` when absent, ``tls`` for sips)."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme.lower() == "sips" else "udp"

    @property
    def lr(self) -> bool:
        """Loose routing flag (RFC 3261 16.12)."""
        return self.has_param("lr")

    @property
    def address(self) -> tuple[str, int]:
        """(host without brackets, port or the scheme's default) to send to."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.port if self.port is not None else DEFAULT_PORTS[self.scheme.lower()]


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in text.split("&"):
        name, eq, value = part.partition("=")
        if not eq or not name or not _HEADER_PART.match(name) or not _HEADER_PART.match(value):
            raise SipParseError("URI", f"bad URI header {part!r}")
        out.append((name, value))
    return tuple(out)
