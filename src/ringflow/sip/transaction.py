"""SIP transactions (RFC 3261 17, RFC 6026) as pure state machines driven by ``now``.

Each transaction takes messages and the current time and returns what to do: ``Datagram``s to
send and events for its owner (``ResponseReceived``, ``AckReceived``, ``Timeout``). It never
reads a clock or touches a socket: the owner calls ``timer(now)`` at ``next_timer``.

Every state change of all four kinds is in ``TRANSITIONS``; ``LIVE_TIMERS`` says which timers run
in each state (entering a state starts its timers and stops the others). Additions to the RFC
3261 machines, with reasons:

* INVITE client and server have RFC 6026's Accepted state, so retransmitted 2xx still reach the
  owner (to re-send the same ACK) and retransmitted INVITEs are absorbed.
* The INVITE client runs timer C in Proceeding (RFC 3261 16.6 gives it to proxies), so a callee
  that rings forever cannot pin a transaction. It does not end the transaction: it reports
  ``CancelDue`` and moves to Canceling, because the 487 that answers our CANCEL must still be
  matched and ACKed here. Any CANCEL of ours enters Canceling, where timer C is a fresh 64*T1
  guard (RFC 3261 9.1) that ends the transaction with ``Timeout`` if no final response comes.
* The INVITE server retransmits its 2xx with timer G in Accepted until the ACK arrives (the UAS
  core's duty in RFC 3261 13.3.1.4, kept here).
"""

from __future__ import annotations

import dataclasses
import enum

from ringflow.sip.errors import SipStateError
from ringflow.sip.headers import Headers
from ringflow.sip.message import Request, Response

Address = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class Datagram:
    """Bytes to send to ``addr``."""

    data: bytes
    addr: Address
    # A retransmission (a timer's, or the answer to a repeated request), for the metrics; the
    # same bytes to the same place compare equal whether repeated or not.
    again: bool = dataclasses.field(default=False, compare=False)


@dataclasses.dataclass(frozen=True)
class ResponseReceived:
    """A response for the owner (client transactions)."""

    response: Response


@dataclasses.dataclass(frozen=True)
class AckReceived:
    """The ACK for our 2xx to an INVITE arrived (INVITE server)."""

    ack: Request


@dataclasses.dataclass(frozen=True)
class Timeout:
    """No response (client) or no ACK (INVITE server) in time."""


@dataclasses.dataclass(frozen=True)
class CancelDue:
    """Timer C fired after a provisional response: the owner must send CANCEL (16.6 step 11)."""


Output = Datagram | ResponseReceived | AckReceived | Timeout | CancelDue


@dataclasses.dataclass(frozen=True)
class Timing:
    """Timer base values (RFC 3261 table 4) and whether the transport is reliable."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    c: float = 180.0
    reliable: bool = False

    def duration(self, timer: str) -> float:
        """Initial duration of a timer by its RFC letter."""
        t1, wait = self.t1, (0.0 if self.reliable else None)
        table = {
            "A": t1,
            "B": 64 * t1,
            "C": self.c,
            "D": 32.0 if wait is None else wait,
            "E": t1,
            "F": 64 * t1,
            "G": t1,
            "H": 64 * t1,
            "I": self.t4 if wait is None else wait,
            "J": 64 * t1 if wait is None else wait,
            "K": self.t4 if wait is None else wait,
            "L": 64 * t1,
            "M": 64 * t1,
        }
        return table[timer]


DEFAULT_TIMING = Timing()


class Kind(enum.StrEnum):
    """The four transaction machines of RFC 3261 17."""

    INVITE_CLIENT = "INVITE client"
    NON_INVITE_CLIENT = "non-INVITE client"
    INVITE_SERVER = "INVITE server"
    NON_INVITE_SERVER = "non-INVITE server"


class State(enum.StrEnum):
    """Transaction states (RFC 3261 17, RFC 6026)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    CANCELING = "Canceling"  # INVITE client: Proceeding after our CANCEL, awaiting the 487
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Input(enum.StrEnum):
    """What a transaction reacts to, besides its timers (named by RFC letter)."""

    PROVISIONAL = "1xx"  # received by a client, sent by a server
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    REQUEST = "request again"  # a retransmission reaching a server
    ACK = "ACK"
    CANCEL_SENT = "CANCEL sent"


class Act(enum.StrEnum):
    """What a transition does."""

    RETRANSMIT = "retransmit request"
    SEND_ACK = "send ACK"
    PASS_UP = "pass to owner"
    TIMEOUT = "report timeout"
    SEND = "send response"
    RESEND = "resend last response"
    RESTART_C = "restart timer C"
    GUARD_C = "timer C becomes the 64*T1 guard"
    CANCEL_DUE = "tell the owner to CANCEL"


IC, NIC, IS, NIS = Kind
S, I = State, Input
_TIMERS = "ABCDEFGHIJKLM"

# (kind, state, input or timer letter) -> (next state, actions). Absent: input is absorbed.
TRANSITIONS: dict[tuple[Kind, State, str], tuple[State, tuple[Act, ...]]] = {
    (IC, S.CALLING, "A"): (S.CALLING, (Act.RETRANSMIT,)),
    (IC, S.CALLING, "B"): (S.TERMINATED, (Act.TIMEOUT,)),
    (IC, S.CALLING, I.PROVISIONAL): (S.PROCEEDING, (Act.PASS_UP,)),
    (IC, S.CALLING, I.SUCCESS): (S.ACCEPTED, (Act.PASS_UP,)),
    (IC, S.CALLING, I.FAILURE): (S.COMPLETED, (Act.SEND_ACK, Act.PASS_UP)),
    (IC, S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (Act.PASS_UP, Act.RESTART_C)),
    (IC, S.PROCEEDING, I.SUCCESS): (S.ACCEPTED, (Act.PASS_UP,)),
    (IC, S.PROCEEDING, I.FAILURE): (S.COMPLETED, (Act.SEND_ACK, Act.PASS_UP)),
    (IC, S.PROCEEDING, I.CANCEL_SENT): (S.CANCELING, (Act.GUARD_C,)),
    (IC, S.PROCEEDING, "C"): (S.CANCELING, (Act.GUARD_C, Act.CANCEL_DUE)),
    (IC, S.CANCELING, I.PROVISIONAL): (S.CANCELING, (Act.PASS_UP,)),  # ringing: no new C
    (IC, S.CANCELING, I.SUCCESS): (S.ACCEPTED, (Act.PASS_UP,)),  # crossed our CANCEL
    (IC, S.CANCELING, I.FAILURE): (S.COMPLETED, (Act.SEND_ACK, Act.PASS_UP)),  # the 487
    (IC, S.CANCELING, "C"): (S.TERMINATED, (Act.TIMEOUT,)),
    (IC, S.COMPLETED, I.FAILURE): (S.COMPLETED, (Act.SEND_ACK,)),
    (IC, S.COMPLETED, "D"): (S.TERMINATED, ()),
    (IC, S.ACCEPTED, I.SUCCESS): (S.ACCEPTED, (Act.PASS_UP,)),
    (IC, S.ACCEPTED, "M"): (S.TERMINATED, ()),
    (NIC, S.TRYING, "E"): (S.TRYING, (Act.RETRANSMIT,)),
    (NIC, S.TRYING, "F"): (S.TERMINATED, (Act.TIMEOUT,)),
    (NIC, S.TRYING, I.PROVISIONAL): (S.PROCEEDING, (Act.PASS_UP,)),
    (NIC, S.TRYING, I.SUCCESS): (S.COMPLETED, (Act.PASS_UP,)),
    (NIC, S.TRYING, I.FAILURE): (S.COMPLETED, (Act.PASS_UP,)),
    (NIC, S.PROCEEDING, "E"): (S.PROCEEDING, (Act.RETRANSMIT,)),
    (NIC, S.PROCEEDING, "F"): (S.TERMINATED, (Act.TIMEOUT,)),
    (NIC, S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (Act.PASS_UP,)),
    (NIC, S.PROCEEDING, I.SUCCESS): (S.COMPLETED, (Act.PASS_UP,)),
    (NIC, S.PROCEEDING, I.FAILURE): (S.COMPLETED, (Act.PASS_UP,)),
    (NIC, S.COMPLETED, "K"): (S.TERMINATED, ()),
    (IS, S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (Act.RESEND,)),
    (IS, S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (Act.SEND,)),
    (IS, S.PROCEEDING, I.SUCCESS): (S.ACCEPTED, (Act.SEND,)),
    (IS, S.PROCEEDING, I.FAILURE): (S.COMPLETED, (Act.SEND,)),
    (IS, S.COMPLETED, I.REQUEST): (S.COMPLETED, (Act.RESEND,)),
    (IS, S.COMPLETED, "G"): (S.COMPLETED, (Act.RESEND,)),
    (IS, S.COMPLETED, "H"): (S.TERMINATED, (Act.TIMEOUT,)),
    (IS, S.COMPLETED, I.ACK): (S.CONFIRMED, ()),
    (IS, S.CONFIRMED, "I"): (S.TERMINATED, ()),
    (IS, S.ACCEPTED, "G"): (S.ACCEPTED, (Act.RESEND,)),
    (IS, S.ACCEPTED, "L"): (S.TERMINATED, (Act.TIMEOUT,)),
    (IS, S.ACCEPTED, I.ACK): (S.CONFIRMED, (Act.PASS_UP,)),
    (NIS, S.TRYING, I.PROVISIONAL): (S.PROCEEDING, (Act.SEND,)),
    (NIS, S.TRYING, I.SUCCESS): (S.COMPLETED, (Act.SEND,)),
    (NIS, S.TRYING, I.FAILURE): (S.COMPLETED, (Act.SEND,)),
    (NIS, S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (Act.RESEND,)),
    (NIS, S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (Act.SEND,)),
    (NIS, S.PROCEEDING, I.SUCCESS): (S.COMPLETED, (Act.SEND,)),
    (NIS, S.PROCEEDING, I.FAILURE): (S.COMPLETED, (Act.SEND,)),
    (NIS, S.COMPLETED, I.REQUEST): (S.COMPLETED, (Act.RESEND,)),
    (NIS, S.COMPLETED, "J"): (S.TERMINATED, ()),
}

LIVE_TIMERS: dict[tuple[Kind, State], str] = {
    (IC, S.CALLING): "AB",
    (IC, S.PROCEEDING): "C",
    (IC, S.CANCELING): "C",
    (IC, S.COMPLETED): "D",
    (IC, S.ACCEPTED): "M",
    (NIC, S.TRYING): "EF",
    (NIC, S.PROCEEDING): "EF",
    (NIC, S.COMPLETED): "K",
    (IS, S.COMPLETED): "GH",
    (IS, S.ACCEPTED): "GL",
    (IS, S.CONFIRMED): "I",
    (NIS, S.COMPLETED): "J",
}
INITIAL = {IC: S.CALLING, NIC: S.TRYING, IS: S.PROCEEDING, NIS: S.TRYING}
_RETRANSMIT_TIMERS = "AEG"


def classify(status: int) -> Input:
    """The input a response status is."""
    return I.PROVISIONAL if status < 200 else I.SUCCESS if status < 300 else I.FAILURE


class Transaction:
    """Shared machinery: the table interpreter and the timers."""

    kind: Kind

    def __init__(self, request: Request, addr: Address, timing: Timing):
        self.request = request
        self.addr = addr
        self.timing = timing
        self.state = INITIAL[self.kind]
        self._deadlines: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._response: bytes | None = None
        self._request_bytes = b""  # what RETRANSMIT sends (client transactions)

    @property
    def key(self) -> tuple[str, str]:
        """(branch, method) this transaction matches (ACK matches its INVITE)."""
        method = self.request.method
        return self.request.via.branch or "", "INVITE" if method == "ACK" else method

    @property
    def terminated(self) -> bool:
        """Whether the transaction is over."""
        return self.state is S.TERMINATED

    @property
    def next_timer(self) -> float | None:
        """When ``timer`` must next be called, or None."""
        return min(self._deadlines.values(), default=None)

    def timer(self, now: float) -> list[Output]:
        """Fire every timer due at ``now``."""
        out: list[Output] = []
        while self._deadlines:
            name = min(self._deadlines, key=self._deadlines.__getitem__)
            if self._deadlines[name] > now:
                break
            del self._deadlines[name]
            if name in _RETRANSMIT_TIMERS:
                cap = self.timing.t2 if name != "A" else float("inf")
                if self.state is S.PROCEEDING:
                    self._intervals[name] = self.timing.t2  # 17.1.2.2: E is T2 in Proceeding
                else:
                    self._intervals[name] = min(self._intervals[name] * 2, cap)
                self._deadlines[name] = now + self._intervals[name]
            out += self._step(name, now)
        return out

    def _step(
        self, event: str, now: float, message: Request | Response | None = None
    ) -> list[Output]:
        entry = TRANSITIONS.get((self.kind, self.state, event))
        if entry is None:
            return []
        new_state, actions = entry
        if new_state is not self.state:
            self._enter(new_state, now)
        out: list[Output] = []
        for act in actions:
            out += self._do(act, now, message)
        return out

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        live = LIVE_TIMERS.get((self.kind, state), "")
        self._deadlines = {k: v for k, v in self._deadlines.items() if k in live}
        for name in live:
            if name in self._deadlines:
                continue
            if name in _RETRANSMIT_TIMERS and self.timing.reliable:
                continue
            self._intervals[name] = self.timing.duration(name)
            self._deadlines[name] = now + self._intervals[name]

    def _do(self, act: Act, now: float, message: Request | Response | None) -> list[Output]:
        if act is Act.RETRANSMIT:
            return [Datagram(self._request_bytes, self.addr, again=True)]
        if act is Act.TIMEOUT:
            return [Timeout()]
        if act is Act.RESEND:
            return [Datagram(self._response, self.addr, again=True)] if self._response else []
        if act is Act.SEND and isinstance(message, Response):
            self._response = bytes(message)
            return [Datagram(self._response, self.addr)]
        if act is Act.CANCEL_DUE:
            return [CancelDue()]
        if act is Act.RESTART_C:
            self._deadlines["C"] = now + self.timing.c
        elif act is Act.GUARD_C:
            self._deadlines["C"] = now + 64 * self.timing.t1
        return self._extra(act, now, message)

    def _extra(self, act: Act, now: float, message: Request | Response | None) -> list[Output]:
        return []


class ClientTransaction(Transaction):
    """INVITE (17.1.1) or non-INVITE (17.1.2) client transaction, chosen by the method."""

    def __init__(self, request: Request, addr: Address, timing: Timing = DEFAULT_TIMING):
        self.kind = IC if request.method == "INVITE" else NIC
        super().__init__(request, addr, timing)
        self._request_bytes = bytes(request)
        self._ack: bytes | None = None
        self._sent = False

    def send(self, now: float) -> list[Datagram]:
        """The first transmission; starts timers A/B or E/F."""
        if self._sent:
            raise SipStateError(f"{self.kind} transaction already sent")
        self._sent = True
        self._enter(self.state, now)
        return [Datagram(self._request_bytes, self.addr)]

    def receive(self, response: Response, now: float) -> list[Output]:
        """A response whose top Via branch and CSeq method match ``key``."""
        if (response.via.branch or "", response.cseq.method) != self.key:
            return []
        return self._step(classify(response.status), now, response)

    def cancel_sent(self, now: float) -> list[Output]:
        """Our CANCEL for this INVITE went out: wait 64*T1 for the final response, then give up."""
        return self._step(I.CANCEL_SENT, now)

    @property
    def ack(self) -> bytes | None:
        """The ACK this transaction sent for a non-2xx final response."""
        return self._ack

    def _extra(self, act: Act, now: float, message: Request | Response | None) -> list[Output]:
        if not isinstance(message, Response):
            return []
        if act is Act.PASS_UP:
            return [ResponseReceived(message)]
        if act is Act.SEND_ACK:
            if self._ack is None:
                self._ack = bytes(non2xx_ack(self.request, message))
            return [Datagram(self._ack, self.addr)]
        return []


class ServerTransaction(Transaction):
    """INVITE (17.2.1) or non-INVITE (17.2.2) server transaction for a received request."""

    def __init__(self, request: Request, addr: Address, timing: Timing = DEFAULT_TIMING):
        self.kind = IS if request.method == "INVITE" else NIS
        super().__init__(request, addr, timing)

    def receive(self, request: Request, now: float) -> list[Output]:
        """A retransmission of the request, or the ACK for our final response."""
        return self._step(I.ACK if request.method == "ACK" else I.REQUEST, now, request)

    def respond(self, response: Response, now: float) -> list[Datagram]:
        """Send a response from the owner.

        Only datagrams: a response from the owner is an input whose transitions all just SEND
        (see TRANSITIONS), so the filter drops nothing; it gives the callers, which only send
        what comes back, that as a type."""
        event = classify(response.status)
        if (self.kind, self.state, event) not in TRANSITIONS:
            raise SipStateError(f"cannot send {response.status} in {self.kind} {self.state}")
        return [out for out in self._step(event, now, response) if isinstance(out, Datagram)]

    def _extra(self, act: Act, now: float, message: Request | Response | None) -> list[Output]:
        if act is Act.PASS_UP and isinstance(message, Request):
            return [AckReceived(message)]
        return []


def cancel_for(invite: Request) -> Request:
    """CANCEL (9.1): the INVITE's Request-URI, top Via (same branch), Route, From, To, Call-ID."""
    headers = Headers([("Via", invite.headers.values("Via")[0]), ("Max-Forwards", "70")])
    for value in invite.headers.get_all("Route"):
        headers.add("Route", value)
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
    return Request(headers=headers, body=b"", method="CANCEL", uri=invite.uri)


def non2xx_ack(invite: Request, response: Response) -> Request:
    """ACK for a non-2xx final response (17.1.1.3): the INVITE's branch, the response's To."""
    headers = Headers()
    headers.add("Via", invite.headers.values("Via")[0])
    for value in invite.headers.get_all("Route"):
        headers.add("Route", value)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} ACK")
    return Request(headers=headers, body=b"", method="ACK", uri=invite.uri)
