"""A compact SIP user agent core (RFC 3261 over UDP and TCP): no sockets, no clock, no asyncio.

Everything here takes bytes and ``now`` and returns bytes to send plus events; a transport
adapter owns the sockets and calls ``UserAgent.timer(now)`` at ``UserAgent.next_timer``.

Modules, from the wire up:

- ``uri``, ``headers``, ``message``: SIP URIs, header values and messages (``parse``/``bytes``).
- ``sdp``: session descriptions and the audio offer/answer choice.
- ``digest``: digest authentication for 401 and 407.
- ``transaction``: the four RFC 3261 transaction machines, in one table.
- ``dialog``: a UAC dialog and its answers to in-dialog requests.
- ``call``: one outgoing call from INVITE to BYE, in one table of phases.
- ``registration``: REGISTER with a registrar, refreshed until stopped, in one table of states.
- ``framing``: splitting a TCP byte stream into messages by Content-Length.
- ``outcome``: the one table from SIP endings to call outcomes.
- ``sources``: the allow-list of addresses that may talk to the agent (the trunks).
- ``agent``: ``UserAgent``, routing datagrams to calls and transactions.
- ``events``, ``errors``, ``ids``: what the core reports, raises and mints.

The asyncio adapters, the only modules with sockets: ``transport`` (``SipTransport``: the
agent's clock and timers, UDP) and ``tcp`` (its TCP link).
"""

from ringflow.sip.agent import UserAgent
from ringflow.sip.call import OutgoingCall, Phase
from ringflow.sip.dialog import Endpoint
from ringflow.sip.digest import Authenticator
from ringflow.sip.errors import (
    NegotiationError,
    SdpParseError,
    SipError,
    SipParseError,
    SipStateError,
)
from ringflow.sip.events import (
    Answered,
    Discarded,
    Dtmf,
    Ended,
    MediaChanged,
    RegistrationChanged,
    Ringing,
)
from ringflow.sip.headers import NameAddr
from ringflow.sip.ids import IdSource
from ringflow.sip.message import Request, Response, parse_message
from ringflow.sip.outcome import Ending, Outcome, Status
from ringflow.sip.registration import Registration, RegState
from ringflow.sip.sdp import PCMA, PCMU, Codec, Direction, MediaPlan, SessionDescription, build_sdp
from ringflow.sip.transaction import Datagram, Timing
from ringflow.sip.uri import SipUri

__all__ = [
    "PCMA",
    "PCMU",
    "Answered",
    "Authenticator",
    "Codec",
    "Datagram",
    "Direction",
    "Discarded",
    "Dtmf",
    "Ended",
    "Ending",
    "Endpoint",
    "IdSource",
    "MediaChanged",
    "MediaPlan",
    "NameAddr",
    "NegotiationError",
    "Outcome",
    "OutgoingCall",
    "Phase",
    "RegState",
    "Registration",
    "RegistrationChanged",
    "Request",
    "Response",
    "Ringing",
    "SdpParseError",
    "SessionDescription",
    "SipError",
    "SipParseError",
    "SipStateError",
    "SipUri",
    "Status",
    "Timing",
    "UserAgent",
    "build_sdp",
    "parse_message",
]
