"""One outgoing call from INVITE to the end of its dialog, as a pure state machine.

``OutgoingCall`` owns its transactions and its dialog. Its owner feeds it responses and
requests (routed by ``UserAgent``) and calls ``timer(now)``; every method returns datagrams
to send and call events (``ringflow.sip.events``). ``PHASES`` is the one table of its phases.

The rules that PyPI user agents got wrong, each kept here: CANCEL only after a provisional
response (a cancel asked for earlier waits for one); CANCEL reuses the INVITE's branch; a 200
that crosses our CANCEL is ACKed and then ended with BYE; the ACK for a 2xx is built once and
re-sent for every retransmitted 2xx; a 2xx from a second fork is ACKed and sent BYE; digest
challenges (401 and 407) retry the INVITE with a new branch and CSeq; timer C (rang too long)
cancels like the API does, so the 487 is ACKed and after our own cancel ``by_remote`` is False.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ringflow.sip.dialog import ALLOW, Dialog, Endpoint, MediaState, respond
from ringflow.sip.digest import Authenticator
from ringflow.sip.errors import NegotiationError, SipParseError, SipStateError
from ringflow.sip.events import Answered, CallEvent, Ended, MediaChanged, Ringing
from ringflow.sip.headers import Headers, NameAddr
from ringflow.sip.ids import IdSource
from ringflow.sip.message import Request, Response, make_response
from ringflow.sip.outcome import Ending, Outcome, Status, outcome_of
from ringflow.sip.sdp import MediaPlan, SessionDescription, accept_answer
from ringflow.sip.transaction import (
    DEFAULT_TIMING,
    AckReceived,
    Address,
    CancelDue,
    ClientTransaction,
    Datagram,
    ResponseReceived,
    ServerTransaction,
    Timeout,
    Timing,
    Transaction,
    cancel_for,
)
from ringflow.sip.transaction import Output as TxOutput
from ringflow.sip.uri import SipUri

Output = Datagram | CallEvent


class Phase(enum.StrEnum):
    """Where an outgoing call is."""

    CALLING = "calling"  # INVITE sent, no provisional response yet
    EARLY = "early"  # a provisional response came: CANCEL is allowed
    CANCEL_PENDING = "cancel pending"  # cancel wanted before any provisional response
    CANCELING = "canceling"  # CANCEL sent
    ANSWERED = "answered"
    ENDING = "ending"  # our BYE is out
    ENDED = "ended"


class Step(enum.StrEnum):
    """What moves a call from one phase to the next."""

    PROVISIONAL = "provisional response"
    ANSWER = "2xx"
    BAD_ANSWER = "2xx without usable SDP"
    REJECT = "final response 3xx-6xx"
    CHALLENGE = "401/407 we can answer"
    TIMEOUT = "INVITE timed out"
    CANCEL = "cancel"
    HANGUP = "hang up"
    REMOTE_BYE = "BYE received"
    BYE_DONE = "our BYE finished"


P, St = Phase, Step
PHASES: dict[tuple[Phase, Step], Phase] = {
    (P.CALLING, St.PROVISIONAL): P.EARLY,
    (P.CALLING, St.ANSWER): P.ANSWERED,
    (P.CALLING, St.BAD_ANSWER): P.ENDING,
    (P.CALLING, St.REJECT): P.ENDED,
    (P.CALLING, St.CHALLENGE): P.CALLING,
    (P.CALLING, St.TIMEOUT): P.ENDED,
    (P.CALLING, St.CANCEL): P.CANCEL_PENDING,
    (P.EARLY, St.PROVISIONAL): P.EARLY,
    (P.EARLY, St.ANSWER): P.ANSWERED,
    (P.EARLY, St.BAD_ANSWER): P.ENDING,
    (P.EARLY, St.REJECT): P.ENDED,
    (P.EARLY, St.CHALLENGE): P.CALLING,
    (P.EARLY, St.TIMEOUT): P.ENDED,
    (P.EARLY, St.CANCEL): P.CANCELING,
    (P.CANCEL_PENDING, St.PROVISIONAL): P.CANCELING,
    (P.CANCEL_PENDING, St.ANSWER): P.ENDING,  # crossed: ACK, then BYE
    (P.CANCEL_PENDING, St.REJECT): P.ENDED,
    (P.CANCEL_PENDING, St.TIMEOUT): P.ENDED,
    (P.CANCELING, St.PROVISIONAL): P.CANCELING,
    (P.CANCELING, St.ANSWER): P.ENDING,  # a 200 crossed our CANCEL: ACK, then BYE
    (P.CANCELING, St.REJECT): P.ENDED,  # 487 Request Terminated, normally
    (P.CANCELING, St.TIMEOUT): P.ENDED,
    (P.ANSWERED, St.HANGUP): P.ENDING,
    (P.ANSWERED, St.REMOTE_BYE): P.ENDED,
    (P.ENDING, St.REMOTE_BYE): P.ENDING,
    (P.ENDING, St.BYE_DONE): P.ENDED,
}
_CANCELED = (P.CANCEL_PENDING, P.CANCELING)


class OutgoingCall:
    """A call we place: INVITE, ringing, answer or rejection, in-dialog requests, BYE."""

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        target: SipUri,
        from_: NameAddr,
        to: NameAddr,
        offer: SessionDescription,
        ids: IdSource,
        timing: Timing = DEFAULT_TIMING,
        authenticator: Authenticator | None = None,
        routes: tuple[NameAddr, ...] = (),
        outbound: Address | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ):
        self.endpoint, self.target, self.ids, self.timing = endpoint, target, ids, timing
        self.authenticator, self.routes, self.outbound = authenticator, routes, outbound
        self.call_id = ids.call_id()
        self.from_ = from_.with_tag(ids.tag())
        self.to, self.extra_headers = to.without_tag(), headers
        self.offer, self.media, self.phase = offer, MediaState(offer), Phase.CALLING
        self.dialog: Dialog | None = None
        self.outcome: Outcome | None = None
        self.cancel_reason: Ending | None = None
        self._auth: list[tuple[str, str]] = []  # credential lines the next INVITE carries
        self._cseq = 0
        self._ack = b""  # the ACK for the 2xx: built once, re-sent for every retransmission
        self._early: MediaPlan | None = None  # from a 183 with SDP
        self._txs: list[tuple[Transaction, str]] = []  # (transaction, role)
        self.invite = self._build_invite()
        self._invite_tx = ClientTransaction(self.invite, self._first_hop(), timing)

    def start(self, now: float) -> list[Output]:
        """Send the INVITE."""
        self._txs.append((self._invite_tx, "invite"))
        return list(self._invite_tx.send(now))

    def cancel(self, now: float, reason: Ending = Ending.CANCELED) -> list[Output]:
        """Stop ringing: CANCEL now if a provisional response came, else as soon as one does."""
        if self.phase in (P.ENDING, P.ENDED) or self.phase in _CANCELED:
            return []
        if self.phase is P.ANSWERED:
            raise SipStateError("the call is answered: hang up instead of canceling")
        self.cancel_reason = reason
        was_early = self.phase is P.EARLY
        self._move(St.CANCEL)
        return self._send_cancel(now) if was_early else []

    def hangup(self, now: float) -> list[Output]:
        """End an answered call with BYE."""
        if self.phase in (P.ENDING, P.ENDED):
            return []
        if self.phase is not P.ANSWERED:
            raise SipStateError(f"cannot hang up a call that is {self.phase}: cancel it")
        self._move(St.HANGUP)
        return self._send_bye(now) + [self._end(remote=False)]

    def receive_response(self, response: Response, now: float) -> list[Output]:
        """A response routed to this call."""
        key = (response.via.branch or "", response.cseq.method)
        for tx, role in self._txs:
            if isinstance(tx, ClientTransaction) and tx.key == key:
                return self._handle(tx, role, tx.receive(response, now), now)
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            return self._on_2xx(response, now)  # a 2xx retransmitted after the transaction
        return []

    def receive_request(self, request: Request, reply_to: Address, now: float) -> list[Output]:
        """A request from the far end inside our dialog (routed by Call-ID and tags)."""
        key = request.via.branch or "", "INVITE" if request.method == "ACK" else request.method
        for tx, role in self._txs:
            if isinstance(tx, ServerTransaction) and tx.key == key:
                return self._handle(tx, role, tx.receive(request, now), now)
        if request.method == "ACK":
            return self._route_ack(request, now)
        tx = ServerTransaction(request, reply_to, self.timing)
        self._txs.append((tx, "server"))
        if self.dialog is None or self.phase not in (P.ANSWERED, P.ENDING):
            return list(tx.respond(make_response(request, 481), now))
        if request.method == "CANCEL":
            return list(tx.respond(make_response(request, 200), now))  # already answered
        response, events = respond(self.dialog, request, self.media, self.endpoint)
        out: list[Output] = list(tx.respond(response, now))
        if request.method == "BYE" and response.status == 200:
            ended = self.phase is P.ANSWERED
            self._move(St.REMOTE_BYE)
            out += [self._end(remote=True)] if ended else []
        return out + list(events)

    def timer(self, now: float) -> list[Output]:
        """Run the timers due at ``now``."""
        out: list[Output] = []
        for tx, role in list(self._txs):
            due = tx.next_timer
            if due is not None and due <= now:
                out += self._handle(tx, role, tx.timer(now), now)
        return out

    @property
    def next_timer(self) -> float | None:
        """When ``timer`` must next be called."""
        return min((t for tx, _ in self._txs if (t := tx.next_timer) is not None), default=None)

    @property
    def transactions(self) -> list[Transaction]:
        """Live transactions (the user agent routes by their keys)."""
        self._txs = [(tx, role) for tx, role in self._txs if not tx.terminated]
        return [tx for tx, _ in self._txs]

    @property
    def peer_hosts(self) -> tuple[str, ...]:
        """Hosts this call talks with: its first hop, the dialog's remote target and routes."""
        hosts = [self._first_hop()[0]]
        if self.dialog is not None:
            hosts.append(self.dialog.remote_target.address[0])
            hosts += [route.uri.address[0] for route in self.dialog.route_set]
        return tuple(hosts)

    @property
    def finished(self) -> bool:
        """Over, with nothing left to retransmit or absorb: the owner may forget the call."""
        return self.phase is P.ENDED and not self.transactions

    def _move(self, step: Step) -> None:
        if (self.phase, step) not in PHASES:
            raise SipStateError(f"{step} is not allowed when the call is {self.phase}")
        self.phase = PHASES[self.phase, step]

    def _end(self, remote: bool, outcome: Outcome | None = None) -> Ended:
        self.outcome = outcome or self.outcome
        assert self.outcome is not None
        return Ended(self.call_id, self.outcome, remote)

    def _first_hop(self) -> Address:
        return self.outbound or (self.routes[0].uri if self.routes else self.target).address

    def _hop(self) -> Address:  # in-dialog requests: through the route set, or the proxy
        return self.outbound or (self.dialog.next_hop() if self.dialog else self._first_hop())

    def _build_invite(self) -> Request:
        self._cseq += 1
        h = Headers([("Via", str(self.endpoint.via(self.ids.branch()))), ("Max-Forwards", "70")])
        for route in self.routes:
            h.add("Route", str(route))
        for name, value in [
            ("From", str(self.from_)),
            ("To", str(self.to)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} INVITE"),
            ("Contact", str(self.endpoint.contact)),
            *self._auth,
            *self.extra_headers,
            ("Allow", ALLOW),
            ("User-Agent", self.endpoint.user_agent),
            ("Content-Type", "application/sdp"),
        ]:
            h.add(name, value)
        return Request(headers=h, body=bytes(self.offer), method="INVITE", uri=self.target)

    def _handle(
        self, tx: Transaction, role: str, outputs: Sequence[TxOutput], now: float
    ) -> list[Output]:
        out: list[Output] = []
        for item in outputs:
            if isinstance(item, Datagram):
                out.append(item)
            elif role == "invite" and isinstance(item, ResponseReceived):
                out += self._on_invite_response(item.response, now)
            elif role == "invite" and isinstance(item, CancelDue) and self.phase is P.EARLY:
                out += self.cancel(now, Ending.RING_TIMEOUT)  # timer C: it rang for minutes
            elif role == "invite" and isinstance(item, Timeout):
                out += self._on_invite_timeout()
            elif role == "bye" and isinstance(item, ResponseReceived | Timeout):
                out += self._on_bye_result(tx, item, now)
            elif role == "server" and isinstance(item, AckReceived):
                out += self._on_ack(item.ack)
        return out

    def _on_invite_response(self, response: Response, now: float) -> list[Output]:
        status = response.status
        if status < 200:
            if (self.phase, St.PROVISIONAL) not in PHASES:
                return []
            pending = self.phase is P.CANCEL_PENDING
            self._move(St.PROVISIONAL)
            if pending:
                return self._send_cancel(now)
            if status == 100:
                return []
            self._early = self._plan(response) or self._early
            return [Ringing(self.call_id, status, response.reason, self._early)]
        if status < 300:
            return self._on_2xx(response, now)
        if status in (401, 407) and self.phase in (P.CALLING, P.EARLY) and self.authenticator:
            lines = self.authenticator.respond(self.invite, response)
            if lines:
                return self._retry_with(lines, now)
        if (self.phase, St.REJECT) not in PHASES:
            return []
        by_remote = self.phase not in _CANCELED  # a 487 to our CANCEL: we ended it
        self._move(St.REJECT)
        return [self._end(by_remote, outcome_of(response, self.cancel_reason))]

    def _retry_with(self, lines: list[tuple[str, str]], now: float) -> list[Output]:
        names = {n.lower() for n, _ in lines}
        self._auth = [(n, v) for n, v in self._auth if n.lower() not in names] + lines
        self._move(St.CHALLENGE)
        self.invite = self._build_invite()
        self._invite_tx = ClientTransaction(self.invite, self._first_hop(), self.timing)
        return self.start(now)

    def _on_invite_timeout(self) -> list[Output]:
        """Timer B, or the guard after our CANCEL: no final response will come."""
        if (self.phase, St.TIMEOUT) not in PHASES:
            return []
        self._move(St.TIMEOUT)
        outcome = outcome_of(None, self.cancel_reason or Ending.TIMEOUT)
        if self.cancel_reason:
            outcome = Outcome(outcome.status, f"{self.cancel_reason}; {Ending.TIMEOUT}")
        return [self._end(False, outcome)]

    def _on_2xx(self, response: Response, now: float) -> list[Output]:
        tag = response.to.tag
        if self.dialog is not None:
            if tag == self.dialog.remote_tag:
                return [Datagram(self._ack, self._hop())]
            return self._drop_fork(response, now)
        try:
            self.dialog = Dialog.from_response(self.invite, response)
        except SipParseError as exc:
            if (self.phase, St.REJECT) not in PHASES:
                return []
            self._move(St.REJECT)
            return [self._end(True, Outcome(Status.FAILED, f"{response.cause} ({exc})", 200))]
        self._ack = bytes(self.dialog.ack(self.endpoint, self.ids.branch()))
        out: list[Output] = [Datagram(self._ack, self._hop())]
        if self.phase is P.ENDED:  # answered after we gave up (timeout, another fork's 486)
            return out + self._send_bye(now)
        if self.phase in _CANCELED:  # the callee answered as we canceled: ACK, then BYE
            self._move(St.ANSWER)
            status = outcome_of(response, self.cancel_reason).status
            crossed = Outcome(status, f"{response.cause} (crossed our CANCEL)", 200)
            return out + self._send_bye(now) + [self._end(False, crossed)]
        try:
            plan = self._plan(response, strict=True) or self._early
            if plan is None:
                raise NegotiationError("no SDP answer in the 200 or a 183")
        except (SipParseError, NegotiationError) as exc:
            self._move(St.BAD_ANSWER)
            failed = Outcome(Status.FAILED, f"{response.cause} (unusable SDP: {exc})", 200)
            return out + self._send_bye(now) + [self._end(False, failed)]
        self._move(St.ANSWER)
        self.media.plan = plan
        self.outcome = outcome_of(response)
        return out + [Answered(self.call_id, plan)]

    def _plan(self, response: Response, strict: bool = False) -> MediaPlan | None:
        if response.content_type != "application/sdp" or not response.body:
            return None
        try:
            return accept_answer(self.offer, SessionDescription.parse(response.body))
        except (SipParseError, NegotiationError):
            if strict:
                raise
            return None  # unusable early media: ringing is still ringing

    def _drop_fork(self, response: Response, now: float) -> list[Output]:
        """A 2xx from another fork: ACK it and end that dialog at once (13.2.2.4)."""
        try:
            fork = Dialog.from_response(self.invite, response)
        except SipParseError:
            return []
        hop = self.outbound or fork.next_hop()
        ack = fork.ack(self.endpoint, self.ids.branch())
        bye = ClientTransaction(
            fork.request("BYE", self.endpoint, self.ids.branch()), hop, self.timing
        )
        self._txs.append((bye, "fork-bye"))
        return [Datagram(bytes(ack), hop), *bye.send(now)]

    def _send_cancel(self, now: float) -> list[Output]:
        tx = ClientTransaction(cancel_for(self.invite), self._invite_tx.addr, self.timing)
        self._txs.append((tx, "cancel"))
        told = self._invite_tx.cancel_sent(now)  # it now waits 64*T1 for the 487
        return list(tx.send(now)) + self._handle(self._invite_tx, "invite", told, now)

    def _send_bye(self, now: float, auth: list[tuple[str, str]] | None = None) -> list[Output]:
        assert self.dialog is not None
        bye = self.dialog.request("BYE", self.endpoint, self.ids.branch())
        for name, value in auth or ():
            bye.headers.add(name, value)
        tx = ClientTransaction(bye, self._hop(), self.timing)
        self._txs.append((tx, "bye"))
        return list(tx.send(now))

    def _on_bye_result(self, tx: Transaction, item: object, now: float) -> list[Output]:
        response = item.response if isinstance(item, ResponseReceived) else None
        if response is not None and response.status < 200:
            return []
        if response is not None and response.status in (401, 407) and self.authenticator:
            lines = self.authenticator.respond(tx.request, response)
            if lines:
                return self._send_bye(now, lines)
        if self.phase is P.ENDING:
            self._move(St.BYE_DONE)
        return []

    def _route_ack(self, ack: Request, now: float) -> list[Output]:
        """An ACK for a 2xx has its own branch: find the re-INVITE by CSeq number."""
        for tx, _ in self._txs:
            if (
                tx.request.method == "INVITE"
                and isinstance(tx, ServerTransaction)
                and tx.request.cseq.seq == ack.cseq.seq
            ):
                return self._handle(tx, "server", tx.receive(ack, now), now)
        return []

    def _on_ack(self, ack: Request) -> list[Output]:
        """The ACK for our 2xx to a re-INVITE; with SDP when we made the offer in that 2xx."""
        if not (self.media.awaiting_answer and ack.body):
            return []
        self.media.awaiting_answer = False
        try:
            plan = accept_answer(self.media.local_sdp, SessionDescription.parse(ack.body))
        except (SipParseError, NegotiationError):
            return []  # keep the media as it was
        self.media.plan = plan
        return [MediaChanged(self.call_id, plan)]
