"""The ringflow error tree.

::

    RingflowError
    ├── ConfigError             bad RINGFLOW_* setting or CLI flag
    ├── NotFound                no such account, call, app, number (HTTP 404)
    ├── Conflict                duplicate name, number already owned (HTTP 409)
    │   ├── CallOver            a live-call request for a call that is already over
    │   ├── Duplicate           (ringflow.storage.session) a row with the same unique key exists
    │   └── AlreadyCalled       (ringflow.storage.campaigns) a campaign number's attempt is not
    │                           this process's to place (paused, completed or taken over)
    ├── InvalidRequest          a request parameter is missing or wrong (HTTP 400)
    │   ├── AppInvalid          an app graph failed validation (names node and field)
    │   ├── ExomlInvalid        (ringflow.flows.exoml) an ExoML document that cannot run
    │   └── SourceError         (ringflow.dashboard.editor) an app's text is not YAML or JSON
    ├── AuthError               credentials missing or wrong (HTTP 401)
    ├── Forbidden               valid credentials, but not for this account (HTTP 403)
    ├── RateLimited             too many requests (HTTP 429)
    ├── CapacityExceeded        the account's queue of waiting calls is full (HTTP 429)
    ├── Unavailable             a backing service (Redis) is down; retry shortly (HTTP 503)
    │   ├── DatabaseUnavailable (ringflow.storage.schema) the database is missing, unreachable
    │   │                       or refuses us; the message names it and what to do
    │   └── TrunkUnavailable    (ringflow.telephony.sip.capacity) a trunk's shared limits are
    │                           unreadable
    ├── IllegalTransition       a call or leg status change the transition table forbids
    ├── AudioUnavailable        (ringflow.audio_files) an audio cannot be played: not found,
    │                           fetch failed, not audio
    ├── FetchError              (ringflow.webhooks.http) a request to a customer URL failed
    │   └── FetchTimeout        no complete answer within the timeout
    ├── StreamFailed            (ringflow.streams.client) no WebSocket to a voice bot
    ├── TtsError                (ringflow.media.tts) the speech engine failed on this text
    │   └── TtsUnavailable      no speech engine is installed
    ├── SipError                (ringflow.sip.errors) the SIP core
    │   ├── SipParseError       a malformed SIP message (SdpParseError: a malformed SDP)
    │   ├── SipStateError       an operation the dialog or transaction state forbids
    │   └── NegotiationError    no common codec in an offer/answer
    └── MediaError              (ringflow.media) RTP media
        ├── RtpParseError       a malformed RTP packet or telephone-event payload
        └── SessionClosed       the RTP session was closed (a hang-up) while waiting on it

The HTTP statuses are those of the one table from this tree to HTTP answers,
``ringflow.api.errors.ANSWERS``, which the Exotel API, the admin API and the dashboard share. An
error it does not list never reaches a client as itself: where it may meet a request it is
translated first (``AudioUnavailable`` of an uploaded audio is ``NotFound``), and one that
still gets there is a fault of ours, a 500.

Foreign exceptions (SQLAlchemy, httpx, redis) are translated once, at the boundary that calls
them, with ``raise ... from``: Redis errors of the rate limiters and failed-login counters in
``ringflow.ratelimit`` (as ``Unavailable``), of a trunk's shared limits in
``ringflow.telephony.sip.capacity`` (as ``TrunkUnavailable``).
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
