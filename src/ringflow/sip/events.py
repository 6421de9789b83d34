"""What the SIP core tells its owner about a call, besides datagrams to send.

Every event names its call by Call-ID. A call's life reads: ``Ringing``* then either
``Answered`` (then ``Dtmf``* / ``MediaChanged``* and finally ``Ended``) or ``Ended`` alone.
``Ended`` comes exactly once per call.
"""

from __future__ import annotations

import dataclasses

from ringflow.sip.outcome import Outcome
from ringflow.sip.sdp import MediaPlan


@dataclasses.dataclass(frozen=True)
class Ringing:
    """A provisional response above 100; ``plan`` is set for early media (183 with SDP)."""

    call_id: str
    status: int
    reason: str
    plan: MediaPlan | None = None


@dataclasses.dataclass(frozen=True)
class Answered:
    """The callee answered; RTP goes as ``plan`` says."""

    call_id: str
    plan: MediaPlan


@dataclasses.dataclass(frozen=True)
class Dtmf:
    """A digit the far end sent by SIP INFO."""

    call_id: str
    digit: str
    duration_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class MediaChanged:
    """A re-INVITE moved or changed the media (hold, new address, other codec)."""

    call_id: str
    plan: MediaPlan


@dataclasses.dataclass(frozen=True)
class Ended:
    """The call is over (or never connected): ``outcome`` says how; ``by_remote`` who ended it."""

    call_id: str
    outcome: Outcome
    by_remote: bool = False


@dataclasses.dataclass(frozen=True)
class RegistrationChanged:
    """A registration's state after a final response or timeout (a refresh reports too).

    ``state`` is a ``RegState`` value; ``status``/``cause`` the last final response (None and
    ``"no response"`` after a timeout); ``expires_at`` is on the ``now`` clock, None unless
    registered; ``retry_at`` is when a failed registration is tried again.
    """

    call_id: str
    state: str
    status: int | None
    cause: str
    expires_at: float | None = None
    retry_at: float | None = None


@dataclasses.dataclass(frozen=True)
class Discarded:
    """A datagram the user agent dropped (malformed, not ours, stray); for logs and metrics."""

    reason: str
    source: tuple[str, int]


CallEvent = Ringing | Answered | Dtmf | MediaChanged | Ended
