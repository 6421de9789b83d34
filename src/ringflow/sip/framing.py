"""SIP message framing on a byte stream (RFC 3261 18.3), with no sockets.

On UDP a datagram is a message. On TCP the bytes of several messages arrive glued together or
cut anywhere, and only Content-Length says where a body ends, so on a stream it is mandatory:
without it (or with a bad one) the rest of the stream cannot be framed, and the connection has
to be closed. ``StreamFramer.feed`` takes whatever bytes arrived and returns the complete
messages, keeping a partial one for the next call. CRLFs between messages are keep-alives
(RFC 5626 3.5.1) and are skipped.
"""

from __future__ import annotations

import re

from ringflow.sip.errors import SipParseError
from ringflow.sip.message import MAX_MESSAGE

_CONTENT_LENGTH = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


class StreamFramer:
    """Splits one connection's byte stream into SIP messages by Content-Length."""

    def __init__(self, max_message: int = MAX_MESSAGE):
        self.max_message = max_message
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held for a message not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The messages ``data`` completes; raises ``SipParseError`` when framing is lost."""
        self._buffer += data
        messages: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]  # keep-alive CRLFs between messages
            if self._buffer[:1] == b"\n":
                del self._buffer[:1]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_message:
                    raise SipParseError("message", "header section too long for a SIP message")
                return messages
            head = bytes(self._buffer[:end])
            total = end + 4 + _content_length(head)
            if total > self.max_message:
                raise SipParseError("message", f"{total} bytes is too large")
            if len(self._buffer) < total:
                return messages  # the body is still on its way
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]


def _content_length(head: bytes) -> int:
    values = {m.group(1) for m in _CONTENT_LENGTH.finditer(head)}
    if not values:
        raise SipParseError("Content-Length", "required on a stream transport")
    if len(values) != 1:
        raise SipParseError("Content-Length", "conflicting values")
    value = values.pop()
    if not value.isdigit() or len(value) > 6:
        raise SipParseError("Content-Length", f"bad value {value[:20]!r}")
    return int(value)
