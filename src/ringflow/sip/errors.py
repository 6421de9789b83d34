"""Errors raised by the SIP core.

::

    RingflowError                 (ringflow.errors)
    └── SipError                  anything the SIP core raises on purpose
        ├── SipParseError         a datagram, header, URI, SDP or digest challenge is malformed
        │   └── SdpParseError     the SDP body is malformed
        ├── SipStateError         an operation the current state forbids (BYE before answer)
        └── NegotiationError      no common codec, or the answer rejected the audio stream

Parsers raise only ``SipParseError`` (never IndexError, ValueError, UnicodeError...): a peer's
bytes can never crash the user agent. ``SipParseError.what`` names the offending part.
"""

from __future__ import annotations

from ringflow.errors import RingflowError


class SipError(RingflowError):
    """Base of every error the SIP core raises."""


class SipParseError(SipError):
    """Malformed input; ``what`` names the part (``"Via"``, ``"start line"``, ``"SDP m="``)."""

    def __init__(self, what: str, detail: str):
        self.what = what
        self.detail = detail
        super().__init__(f"{what}: {detail}")


class SdpParseError(SipParseError):
    """The session description body is malformed."""


class SipStateError(SipError):
    """The operation is not allowed in the current state."""


class NegotiationError(SipError):
    """Offer and answer share no usable audio stream; ``status`` is the SIP code to answer."""

    def __init__(self, detail: str, status: int = 488):
        self.status = status
        super().__init__(detail)
