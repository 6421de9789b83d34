"""Where a stream goes: its URL checked and taken apart (credentials, custom parameters, rate).

A stream URL is ``ws://`` or ``wss://``, or an ``http(s)://`` endpoint that answers JSON
``{"url": "wss://..."}`` when the stream starts (per-call bot routing). Up to three custom query
parameters (256 characters in all) are echoed to the bot in ``start.custom_parameters``, and
``sample-rate`` picks the PCM rate; the URL is opened with all of them. Credentials written in
the URL (``wss://KEY:TOKEN@host/path``) go in an ``Authorization: Basic`` header on the
handshake, never in the request line, and never into the timeline or a log: ``shown`` is the URL
without them.

The text is checked here without DNS (scheme, host, literal private addresses); the addresses a
host name resolves to are checked again when the socket opens (``client.py``).
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ringflow.errors import InvalidRequest
from ringflow.webhooks.http import validate_url

MAX_URL = 600
MAX_CUSTOM = 3
MAX_CUSTOM_CHARS = 256
RATES = (8000, 16000, 24000)
RATE_PARAMETER = "sample-rate"


@dataclasses.dataclass(frozen=True)
class StreamTarget:
    """A checked WebSocket URL and what it says about the stream."""

    url: str  # as given, credentials included: what the client opens
    shown: str  # without credentials: for the timeline, Passthru and logs
    custom_parameters: dict[str, str]
    sample_rate: int


def is_endpoint(url: str) -> bool:
    """True for an http(s) URL that answers with the WebSocket URL to use."""
    return urlsplit(url.strip()).scheme.lower() in ("http", "https")


def check_stream_url(url: str, *, allow_private: bool, field: str = "StreamUrl") -> str:
    """Check a stream URL as given (ws, wss, or an http(s) endpoint); return it trimmed."""
    text = url.strip() if isinstance(url, str) else ""
    if len(text) > MAX_URL:
        raise InvalidRequest(f"{field} must be at most {MAX_URL} characters")
    if is_endpoint(text):
        return validate_url(text, allow_private=allow_private, field=field)
    return parse_target(text, allow_private=allow_private, field=field).url


def parse_target(url: str, *, allow_private: bool, field: str = "StreamUrl") -> StreamTarget:
    """Take a ws(s) URL apart; InvalidRequest names what is wrong with it."""
    text = url.strip() if isinstance(url, str) else ""
    if len(text) > MAX_URL:
        raise InvalidRequest(f"{field} must be at most {MAX_URL} characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise InvalidRequest(f"{field} must be a ws://, wss:// or http(s):// URL")
    # The address guard reads an http URL; the host rules are the same.
    http_twin = urlunsplit(
        ("http" if scheme == "ws" else "https", parts.netloc, parts.path, parts.query, "")
    )
    validate_url(http_twin, allow_private=allow_private, field=field)
    custom: dict[str, str] = {}
    rate = RATES[0]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == RATE_PARAMETER:
            rate = _rate(value, field)
        else:
            custom[name] = value
    if len(custom) > MAX_CUSTOM:
        raise InvalidRequest(f"{field} may carry at most {MAX_CUSTOM} custom parameters")
    if sum(len(k) + len(v) for k, v in custom.items()) > MAX_CUSTOM_CHARS:
        raise InvalidRequest(
            f"{field}: custom parameters must be at most {MAX_CUSTOM_CHARS} characters in all"
        )
    return StreamTarget(
        url=text, shown=without_credentials(text), custom_parameters=custom, sample_rate=rate
    )


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` taken out (for the timeline, Passthru and logs)."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _rate(value: str, field: str) -> int:
    if value not in {str(r) for r in RATES}:
        choices = ", ".join(str(r) for r in RATES)
        raise InvalidRequest(f"{field}: sample-rate must be one of {choices}, not {value[:20]!r}")
    return int(value)
