"""The ringflow error tree.

::

    RingflowError
    ├── ConfigError             bad RINGFLOW_* setting or CLI flag
    ├── NotFound                no such account, call, app, number (API: 404)
    ├── Conflict                duplicate name, number already owned (API: 409)
    │   └── CallOver            a live-call request for a call that is already over
    ├── InvalidRequest          a request parameter is missing or wrong (API: 400)
    │   └── AppInvalid          an app graph failed validation (names node and field)
    ├── AuthError               credentials missing or wrong (API: 401)
    ├── Forbidden               valid credentials, but not for this account (API: 403)
    ├── RateLimited             too many requests (API: 429)
    ├── IllegalTransition       a call or leg status change the transition table forbids
    ├── CapacityExceeded        the account's queue of waiting calls is full (API: 429)
    ├── Unavailable             a backing service (Redis) is down; retry shortly (API: 503)
    │   └── TrunkUnavailable    (telephony.sip.capacity) a trunk's shared limits are unreadable
    ├── SipError                (ringflow.sip.errors) the SIP core
    │   ├── SipParseError       a malformed SIP message (SdpParseError: a malformed SDP)
    │   ├── SipStateError       an operation the dialog or transaction state forbids
    │   └── NegotiationError    no common codec in an offer/answer
    └── MediaError              (ringflow.media) RTP media
        ├── RtpParseError       a malformed RTP packet or telephone-event payload
        └── SessionClosed       the RTP session was closed (a hang-up) while waiting on it

Foreign exceptions (SQLAlchemy, httpx, redis) are translated once, at the boundary that calls
them, with ``raise ... from``.
"""

from __future__ import annotations


class RingflowError(Exception):
    """Base of every error ringflow raises on purpose."""


class ConfigError(RingflowError):
    """A setting or command-line value that cannot work."""


class NotFound(RingflowError):
    """The named object does not exist (or belongs to another account)."""


class Conflict(RingflowError):
    """The object already exists."""


class CallOver(Conflict):
    """A hang-up or redirect asked of a call that has already ended."""


class InvalidRequest(RingflowError):
    """A request parameter is missing or invalid; the message names it."""


class AppInvalid(InvalidRequest):
    """An app graph failed validation."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class AuthError(RingflowError):
    """Credentials missing or wrong."""


class Forbidden(RingflowError):
    """Valid credentials that do not open the account asked for."""


class RateLimited(RingflowError):
    """The account made too many requests; ``headers`` tell it when to come back."""

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}


class IllegalTransition(RingflowError):
    """A status change that the transition table does not allow."""


class CapacityExceeded(RingflowError):
    """No room to hold another call."""


class Unavailable(RingflowError):
    """A service ringflow depends on is down; the request may succeed if retried."""


class MediaError(RingflowError):
    """The RTP media engine failed or refused (no free port, a codec it cannot carry)."""
