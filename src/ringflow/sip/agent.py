"""The user agent: routes datagrams to calls and transactions, answers what belongs to no call.

``UserAgent`` is what a transport adapter drives, with no I/O of its own::

    out = ua.receive(data, source, now)   # a datagram arrived
    out = ua.timer(now)                   # at ua.next_timer
    call, out = ua.dial(..., now=now)     # place a call
    out = ua.cancel(call_id, now) / ua.hangup(call_id, now)
    reg, out = ua.register(aor, registrar, authenticator, expires, now)  # keep a binding
    out = ua.unregister(reg.call_id, now)

Each returns ``Datagram``s to send, call events and ``RegistrationChanged``, and nothing
else: the transactions it answers on its own (outside any call) keep their timeouts to
themselves. Calls and registrations are keyed by Call-ID, which routes responses to them and
names them in the one timer heap. It never raises on a peer's bytes: malformed or stray
datagrams become ``Discarded`` events. Requests that match no dialog get 481, OPTIONS gets 200,
an INVITE for a new call gets 480 (ringflow only places calls so far).

Who may talk to it: with ``sources`` set (the carrier always sets its trunks' addresses), a
request outside a dialog is answered only if it comes from ``sources``; anything else gets no
answer at all, not even a 403, so a spoofed UDP source can never make us send (let alone
retransmit) a response, and a scanner learns nothing. A request inside a dialog, and a response
to a call or registration, must come from ``sources`` or from a host that call or registration
talks with (its first hop, the dialog's Contact and Record-Route). A datagram from a host that
is none of these is dropped before it is parsed, so a flood of them costs one lookup each.
Without ``sources`` (a bare agent, as in the core's own tests) everyone may talk.

Those hosts may be names (a trunk's ``pbx.example``, a Contact naming ``localhost``), while a
datagram's source is always an IP address. The agent never looks a name up: the adapter that
sends resolves each name itself, sends to one of its addresses and tells the agent which
(``resolved``), so a name speaks from exactly the addresses we resolved it to and sent to, even
when its DNS answers round-robin or the trunks' own lookup at start failed. What is learnt for a
name is forgotten once no call or registration talks with it.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
from collections.abc import Iterable, Sequence

from ringflow.sip.call import OutgoingCall, Output
from ringflow.sip.dialog import ACCEPT, ALLOW, Endpoint
from ringflow.sip.digest import Authenticator
from ringflow.sip.errors import SipParseError
from ringflow.sip.events import Discarded, RegistrationChanged
from ringflow.sip.headers import NameAddr, Via, split_outside
from ringflow.sip.ids import IdSource
from ringflow.sip.message import Request, Response, make_response, parse_message
from ringflow.sip.outcome import Ending
from ringflow.sip.registration import Registration
from ringflow.sip.sdp import SessionDescription
from ringflow.sip.sources import IpAddress, Sources, host_key, ip_of
from ringflow.sip.transaction import DEFAULT_TIMING, Address, Datagram, ServerTransaction, Timing
from ringflow.sip.transaction import Output as TxOutput
from ringflow.sip.uri import SipUri

log = logging.getLogger(__name__)

AgentOutput = Output | Discarded | RegistrationChanged
Owner = OutgoingCall | Registration | ServerTransaction


class UserAgent:
    """Every call and transaction of one SIP endpoint, driven by datagrams and ``now``."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timing: Timing = DEFAULT_TIMING,
        ids: IdSource | None = None,
        sources: Sources | None = None,
    ):
        self.endpoint = endpoint
        self.timing = timing
        self.ids = ids or IdSource()
        self.sources = sources  # None: anyone may talk; the adapter replaces it on re-resolve
        self.calls: dict[str, OutgoingCall] = {}
        self.registrations: dict[str, Registration] = {}
        self._server: dict[tuple[str, str], ServerTransaction] = {}
        # (deadline, seq, owner): a lazy heap, so a timer tick touches only what is due.
        self._heap: list[tuple[float, int, str | tuple[str, str]]] = []
        self._seq = itertools.count()
        # The hosts live calls and registrations talk with, counted, for the check before parsing.
        self._peers: dict[str, frozenset[IpAddress | str]] = {}
        self._peer_count: collections.Counter[IpAddress | str] = collections.Counter()
        # Peer host names -> the addresses the adapter resolved them to (and sent to).
        self._learned: dict[str, frozenset[IpAddress]] = {}
        self._learned_ips: frozenset[IpAddress] = frozenset()
        self._unresolved: set[str] = set()  # peer names not in _learned: kept, not searched for

    def dial(
        self,
        target: SipUri,
        from_: NameAddr,
        offer: SessionDescription,
        now: float,
        *,
        to: NameAddr | None = None,
        authenticator: Authenticator | None = None,
        routes: tuple[NameAddr, ...] = (),
        outbound: Address | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> tuple[OutgoingCall, list[AgentOutput]]:
        """Place a call to ``target``; returns the call and the INVITE to send."""
        call = OutgoingCall(
            endpoint=self.endpoint,
            target=target,
            from_=from_,
            to=to or NameAddr(target),
            offer=offer,
            ids=self.ids,
            timing=self.timing,
            authenticator=authenticator,
            routes=routes,
            outbound=outbound,
            headers=headers,
        )
        self.calls[call.call_id] = call
        out: list[AgentOutput] = list(call.start(now))
        self._after(call.call_id)
        return call, out

    def cancel(
        self, call_id: str, now: float, reason: Ending = Ending.CANCELED
    ) -> list[AgentOutput]:
        """Cancel a call that is not answered yet."""
        call = self.calls.get(call_id)
        return self._after(call_id, call.cancel(now, reason)) if call else []

    def hangup(self, call_id: str, now: float) -> list[AgentOutput]:
        """Hang up an answered call."""
        call = self.calls.get(call_id)
        return self._after(call_id, call.hangup(now)) if call else []

    def register(
        self,
        aor: SipUri,
        registrar: SipUri | None,
        authenticator: Authenticator | None,
        expires: int,
        now: float,
        *,
        outbound: Address | None = None,
        retry_base: float = 30.0,
        retry_max: float = 300.0,
    ) -> tuple[Registration, list[AgentOutput]]:
        """Bind our Contact to ``aor`` at ``registrar`` (default: the AOR's domain) and keep it."""
        registrar = registrar or SipUri(aor.host, port=aor.port, params=aor.params)
        reg = Registration(
            endpoint=self.endpoint,
            aor=aor,
            registrar=registrar,
            ids=self.ids,
            expires=expires,
            authenticator=authenticator,
            timing=self.timing,
            outbound=outbound,
            retry_base=retry_base,
            retry_max=retry_max,
        )
        self.registrations[reg.call_id] = reg
        return reg, self._after(reg.call_id, reg.start(now))

    def unregister(self, call_id: str, now: float) -> list[AgentOutput]:
        """Remove a registration's binding (Expires: 0) and stop refreshing it."""
        reg = self.registrations.get(call_id)
        return self._after(call_id, reg.stop(now)) if reg else []

    def admits(self, host: str) -> bool:
        """Whether ``host`` may talk at all: a trunk, or a host a call or registration talks with."""
        if self.sources is None or self.sources.allows(host):
            return True
        key = host_key(host)
        return key in self._peer_count or key in self._learned_ips

    @property
    def unresolved(self) -> frozenset[str]:
        """Peer host names with no address learnt yet, for the adapter to look up."""
        return frozenset(self._unresolved)

    def resolved(self, name: str, addresses: Iterable[str]) -> None:
        """``name`` resolved to ``addresses`` (the adapter sends there): they may speak for it."""
        key = host_key(name)
        if not isinstance(key, str) or key not in self._peer_count:
            return  # an address, or a name no call talks with any more
        ips = frozenset(ip for ip in map(ip_of, addresses) if ip is not None)
        known = self._learned.get(key, frozenset())
        if ips and not ips <= known:
            self._learned[key] = known | ips
            self._unresolved.discard(key)
            self._learned_ips = frozenset().union(*self._learned.values())

    def receive(self, data: bytes, source: Address, now: float) -> list[AgentOutput]:
        """A datagram from ``source``."""
        if not self.admits(source[0]):
            return [Discarded("from neither a trunk nor a host a call talks with", source)]
        try:
            message = parse_message(data)
        except SipParseError as exc:
            return [Discarded(f"malformed: {exc}", source)]
        if isinstance(message, Response):
            return self._on_response(message, source, now)
        return self._on_request(message, source, now)

    def timer(self, now: float) -> list[AgentOutput]:
        """Run every timer due at ``now``."""
        out: list[AgentOutput] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, key = heapq.heappop(self._heap)
            owner = self._owner(key)
            due = owner.next_timer if owner is not None else None
            if owner is not None and due is not None and due <= now:
                try:
                    if isinstance(owner, ServerTransaction):
                        out += self._after_server(owner, owner.timer(now))
                    else:
                        out += self._after(key, owner.timer(now))
                except Exception:
                    # One owner's bug must not starve every other call's timers.
                    log.exception("sip: the timers of %s failed", owner)
                    self._reschedule(key, now)
        return out

    @property
    def next_timer(self) -> float | None:
        """When ``timer`` must next be called."""
        while self._heap:
            deadline, _, key = self._heap[0]
            owner = self._owner(key)
            due = owner.next_timer if owner is not None else None
            if due is not None and due <= deadline:
                return due
            heapq.heappop(self._heap)  # stale: the owner is gone or rescheduled later
        return None

    def _owner(self, key: str | tuple[str, str]) -> Owner | None:
        if isinstance(key, str):
            return self.calls.get(key) or self.registrations.get(key)
        return self._server.get(key)

    def _after_server(self, tx: ServerTransaction, out: Sequence[TxOutput]) -> list[AgentOutput]:
        """``_after`` for a transaction the agent answers itself: its Timeout (no ACK for our
        480) and AckReceived concern nobody above; only what it sends leaves."""
        return self._after(tx.key, [item for item in out if isinstance(item, Datagram)])

    def _after(
        self, key: str | tuple[str, str], out: Sequence[AgentOutput] = ()
    ) -> list[AgentOutput]:
        """Forget a finished call or transaction, or note when it next needs ``timer``."""
        owner = self._owner(key)
        if isinstance(owner, OutgoingCall | Registration):
            self._note_peers(owner.call_id, () if owner.finished else owner.peer_hosts)
        if isinstance(owner, OutgoingCall) and owner.finished:
            del self.calls[owner.call_id]
        elif isinstance(owner, Registration) and owner.finished:
            del self.registrations[owner.call_id]
        elif isinstance(owner, ServerTransaction) and owner.terminated:
            del self._server[owner.key]
        elif owner is not None and (due := owner.next_timer) is not None:
            heapq.heappush(self._heap, (due, next(self._seq), key))
        return list(out)

    def _note_peers(self, call_id: str, hosts: tuple[str, ...]) -> None:
        """Keep ``_peer_count`` in step with the hosts one call or registration talks with."""
        new = frozenset(host_key(h) for h in hosts)
        old = self._peers.get(call_id, frozenset())
        if new == old:
            return
        for key in old - new:
            self._peer_count[key] -= 1
            if self._peer_count[key] <= 0:
                del self._peer_count[key]
                if isinstance(key, str):
                    self._unresolved.discard(key)
                    if self._learned.pop(key, None) is not None:
                        self._learned_ips = frozenset().union(*self._learned.values())
        for key in new - old:
            self._peer_count[key] += 1
            if isinstance(key, str) and key not in self._learned:
                self._unresolved.add(key)
        if new:
            self._peers[call_id] = new
        else:
            self._peers.pop(call_id, None)

    def _reschedule(self, key: str | tuple[str, str], now: float) -> None:
        """After a failed ``timer``: keep later timers, but never one that would fail at once."""
        owner = self._owner(key)
        due = owner.next_timer if owner is not None else None
        if due is not None and due > now:
            heapq.heappush(self._heap, (due, next(self._seq), key))

    def _talks_with(self, source: Address, owner: OutgoingCall | Registration) -> bool:
        """A request in a dialog or a response: from the trunks, or from the owner's peers."""
        if self.sources is None or self.sources.allows(source[0]):
            return True
        key = host_key(source[0])
        for host in owner.peer_hosts:
            peer = host_key(host)
            if peer == key or (isinstance(peer, str) and key in self._learned.get(peer, ())):
                return True
        return False

    def _on_response(self, response: Response, source: Address, now: float) -> list[AgentOutput]:
        via = response.via
        if (via.host.lower(), via.port or 5060) != (self.endpoint.host.lower(), self.endpoint.port):
            return [Discarded("response whose top Via is not ours", source)]
        owner = self.calls.get(response.call_id) or self.registrations.get(response.call_id)
        if owner is None:
            return [Discarded(f"stray {response.status} for no call", source)]
        if not self._talks_with(source, owner):
            return [
                Discarded(f"{response.status} from a host this call does not talk with", source)
            ]
        return self._after(response.call_id, owner.receive_response(response, now))

    def _on_request(self, request: Request, source: Address, now: float) -> list[AgentOutput]:
        request = _stamp_via(request, source)
        reply_to = reply_address(request.via, source)
        call = self.calls.get(request.call_id)
        if (
            call is not None
            and request.to.tag == call.from_.tag
            and (call.dialog is None or request.from_.tag == call.dialog.remote_tag)
        ):
            if not self._talks_with(source, call):
                return [
                    Discarded(
                        f"{request.method} in a dialog from a host that is not its peer", source
                    )
                ]
            return self._after(call.call_id, call.receive_request(request, reply_to, now))
        if self.sources is not None and not self.sources.allows(source[0]):
            return [Discarded(f"{request.method} from a source that is not a trunk", source)]
        method = "INVITE" if request.method == "ACK" else request.method
        tx = self._server.get((request.via.branch or "", method))
        if tx is not None:
            return self._after_server(tx, tx.receive(request, now))
        if request.method == "ACK":
            return [Discarded("ACK matching no transaction", source)]
        tx = ServerTransaction(request, reply_to, self.timing)
        self._server[tx.key] = tx
        return self._after_server(tx, tx.respond(self._out_of_dialog(request), now))

    def _out_of_dialog(self, request: Request) -> Response:
        tag = self.ids.tag()
        if request.to.tag is not None or request.method in ("BYE", "CANCEL"):
            return make_response(request, 481, to_tag=tag)
        if request.method == "OPTIONS":
            return make_response(
                request, 200, to_tag=tag, headers=(("Allow", ALLOW), ("Accept", ACCEPT))
            )
        if request.method == "INVITE":
            return make_response(request, 480, to_tag=tag)
        return make_response(request, 405, to_tag=tag, headers=(("Allow", ALLOW),))


RELIABLE = {"TCP", "TLS", "SCTP", "WS", "WSS"}


def reply_address(via: Via, source: Address) -> Address:
    """Where responses go (RFC 3261 18.2.2, RFC 3581): the source IP; its port if rport.

    On a connection-oriented transport the response goes back on the connection the request
    came in on, which the adapter knows by the peer's address: ``source`` itself.
    """
    if via.transport.upper() in RELIABLE or any(n.lower() == "rport" for n, _ in via.params):
        return source
    return source[0], via.port or 5060


def _stamp_via(request: Request, source: Address) -> Request:
    """Add ``received`` and fill ``rport`` in the top Via, as a server transport must."""
    via = request.via
    stamped = via
    if any(n.lower() == "rport" for n, _ in via.params):
        stamped = stamped.with_param("rport", str(source[1]))
    if stamped.host != source[0] or stamped is not via:
        stamped = stamped.with_param("received", source[0])
    if stamped is via:
        return request
    headers, done = [], False
    for name, value in request.headers:
        if not done and name.lower() in ("via", "v"):
            rest = split_outside(value, ",")[1:]
            value = ",".join([str(stamped), *rest])
            done = True
        headers.append((name, value))
    request.headers = type(request.headers)(headers)
    return request
