"""Registration of one address-of-record with a registrar (RFC 3261 10), as a pure state machine.

``Registration`` keeps one binding (our Contact for the AOR) alive: REGISTER, answer digest
challenges, accept the interval the registrar grants, refresh at half of it, retry with backoff
after a failure, and remove the binding with ``Expires: 0`` on ``stop``. Like ``OutgoingCall`` it
takes responses and ``now`` and returns ``Datagram``s and events (``RegistrationChanged``); its
owner calls ``timer(now)`` at ``next_timer``. ``REG_STATES`` is the one table of its states.

Every REGISTER of one registration shares the Call-ID and From tag and takes the next CSeq
(10.2), and only one is in flight at a time (10.2: a new one waits for the previous one's final
response or timeout). Each attempt starts without credentials: the ``Authenticator`` judges a
second challenge from the credentials the challenged request carried, so re-sending an old
nonce on a refresh would make an expired nonce look like a wrong password.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ringflow.numeric import as_whole
from ringflow.sip.dialog import ALLOW, Endpoint
from ringflow.sip.digest import Authenticator
from ringflow.sip.errors import SipStateError
from ringflow.sip.events import RegistrationChanged
from ringflow.sip.headers import Headers, NameAddr
from ringflow.sip.ids import IdSource
from ringflow.sip.message import Request, Response
from ringflow.sip.transaction import (
    DEFAULT_TIMING,
    Address,
    ClientTransaction,
    Datagram,
    ResponseReceived,
    State,
    Timeout,
    Timing,
)
from ringflow.sip.transaction import Output as TxOutput
from ringflow.sip.uri import SipUri

Output = Datagram | RegistrationChanged
MAX_RETRIES = 4  # challenges and 423s answered within one attempt before it counts as failed
MAX_EXPIRES = 2**32 - 1  # RFC 3261 20.19: expires values are 32-bit


class RegState(enum.StrEnum):
    """Where a registration is, as a dashboard shows it."""

    REGISTERING = "registering"  # the first attempt is in flight
    REGISTERED = "registered"  # the registrar holds our binding until ``expires_at``
    FAILED = "failed"  # the last attempt failed; another follows at ``retry_at``
    UNREGISTERING = "unregistering"  # stop asked; our Expires: 0 is in flight
    UNREGISTERED = "unregistered"  # stopped: no binding, nothing more will be sent


class RegStep(enum.StrEnum):
    """What moves a registration."""

    GRANTED = "2xx with a binding"
    REFUSED = "final failure or timeout"
    STOP = "stop"
    CLEARED = "binding removed (or never made)"


R, RS = RegState, RegStep
REG_STATES: dict[tuple[RegState, RegStep], RegState] = {
    (R.REGISTERING, RS.GRANTED): R.REGISTERED,
    (R.REGISTERING, RS.REFUSED): R.FAILED,
    (R.REGISTERED, RS.GRANTED): R.REGISTERED,  # a refresh
    (R.REGISTERED, RS.REFUSED): R.FAILED,  # a refused refresh: the binding will lapse
    (R.FAILED, RS.GRANTED): R.REGISTERED,  # a retry worked
    (R.FAILED, RS.REFUSED): R.FAILED,
    (R.REGISTERING, RS.STOP): R.UNREGISTERING,
    (R.REGISTERED, RS.STOP): R.UNREGISTERING,
    (R.FAILED, RS.STOP): R.UNREGISTERING,
    (R.UNREGISTERING, RS.CLEARED): R.UNREGISTERED,
}


class Registration:
    """One AOR bound to our Contact at one registrar, refreshed until ``stop``."""

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        aor: SipUri,
        registrar: SipUri,
        ids: IdSource,
        expires: int = 3600,
        authenticator: Authenticator | None = None,
        timing: Timing = DEFAULT_TIMING,
        outbound: Address | None = None,
        retry_base: float = 30.0,
        retry_max: float = 300.0,
    ):
        self.endpoint, self.aor, self.registrar = endpoint, aor, registrar
        self.ids, self.timing, self.authenticator = ids, timing, authenticator
        self.outbound, self.retry_base, self.retry_max = outbound, retry_base, retry_max
        self.expires = expires  # what we ask for; a 423 raises it to the registrar's minimum
        self.call_id = ids.call_id()
        self.from_ = NameAddr(aor).with_tag(ids.tag())
        self.state = R.REGISTERING
        self.status: int | None = None
        self.cause = ""
        self.granted: int | None = None  # seconds the registrar granted last time
        self.expires_at: float | None = None
        self.refresh_at: float | None = None
        self.retry_at: float | None = None
        self.failures = 0  # consecutive failed attempts, for the backoff
        self._cseq = 0
        self._tx: ClientTransaction | None = None
        self._purpose = 0  # Expires of the REGISTER in flight: 0 removes the binding
        self._tries = 0  # challenges and 423s answered in this attempt
        self._sent_at = 0.0

    def start(self, now: float) -> list[Output]:
        """Send the first REGISTER."""
        return self._attempt(self.expires, now)

    def stop(self, now: float) -> list[Output]:
        """Remove our binding (``Expires: 0``); a REGISTER in flight finishes first (10.2)."""
        if self.state in (R.UNREGISTERING, R.UNREGISTERED):
            return []
        self._move(RS.STOP)
        self.refresh_at = self.retry_at = None
        if self._in_flight:
            return []  # its final response decides whether there is a binding to remove
        if self.granted:  # registered (or lapsing): remove the binding
            return self._attempt(0, now)
        return self._cleared(self.status, self.cause)

    def receive_response(self, response: Response, now: float) -> list[Output]:
        """A response routed here by Call-ID."""
        if self._tx is None:
            return []
        return self._handle(self._tx.receive(response, now), now)

    def timer(self, now: float) -> list[Output]:
        """Run what is due at ``now``: the transaction's timers, a refresh or a retry."""
        out: list[Output] = []
        if self._tx is not None and (due := self._tx.next_timer) is not None and due <= now:
            out += self._handle(self._tx.timer(now), now)
        if self.refresh_at is not None and self.refresh_at <= now:
            self.refresh_at = None
            out += self._attempt(self.expires, now)
        if self.retry_at is not None and self.retry_at <= now:
            self.retry_at = None
            out += self._attempt(self.expires, now)
        return out

    @property
    def next_timer(self) -> float | None:
        """When ``timer`` must next be called."""
        times = [self.refresh_at, self.retry_at, self._tx.next_timer if self._tx else None]
        return min((t for t in times if t is not None), default=None)

    @property
    def peer_hosts(self) -> tuple[str, ...]:
        """Hosts this registration talks with: the registrar, or the outbound proxy."""
        return (self._first_hop()[0],)

    @property
    def finished(self) -> bool:
        """Unregistered with nothing left to absorb: the owner may forget it."""
        return self.state is R.UNREGISTERED and (self._tx is None or self._tx.terminated)

    @property
    def _in_flight(self) -> bool:
        return self._tx is not None and self._tx.state in (State.TRYING, State.PROCEEDING)

    def _move(self, step: RegStep) -> None:
        if (self.state, step) not in REG_STATES:
            raise SipStateError(f"{step} is not allowed when the registration is {self.state}")
        self.state = REG_STATES[self.state, step]

    def _attempt(self, expires: int, now: float) -> list[Output]:
        """A new attempt: a REGISTER without credentials."""
        self._tries = 0
        return self._send(expires, (), now)

    def _send(self, expires: int, auth: Sequence[tuple[str, str]], now: float) -> list[Output]:
        self._purpose, self._sent_at = expires, now
        self._tx = ClientTransaction(self._build(expires, auth), self._first_hop(), self.timing)
        return list(self._tx.send(now))

    def _first_hop(self) -> Address:
        return self.outbound or self.registrar.address

    def _build(self, expires: int, auth: Sequence[tuple[str, str]]) -> Request:
        self._cseq += 1
        contact = self.endpoint.contact
        contact = NameAddr(contact.uri, params=(("expires", str(expires)),))
        h = Headers([("Via", str(self.endpoint.via(self.ids.branch()))), ("Max-Forwards", "70")])
        for name, value in [
            ("From", str(self.from_)),
            ("To", str(NameAddr(self.aor))),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", str(contact)),
            ("Expires", str(expires)),
            *auth,
            ("Allow", ALLOW),
            ("User-Agent", self.endpoint.user_agent),
        ]:
            h.add(name, value)
        return Request(headers=h, body=b"", method="REGISTER", uri=self.registrar)

    def _handle(self, outputs: Sequence[TxOutput], now: float) -> list[Output]:
        out: list[Output] = []
        for item in outputs:
            if isinstance(item, Datagram):
                out.append(item)
            elif isinstance(item, ResponseReceived) and item.response.status >= 200:
                out += self._on_final(item.response, now)
            elif isinstance(item, Timeout):
                out += self._on_failure(None, "no response", None, now)
        return out

    def _on_final(self, response: Response, now: float) -> list[Output]:
        if response.status < 300:
            return self._on_success(response, now)
        # A REGISTER overtaken by stop() made no binding if refused: no point answering for it.
        abandoned = self.state is R.UNREGISTERING and self._purpose > 0
        retry = self._retry_for(response) if not abandoned and self._tries < MAX_RETRIES else None
        if retry is not None:
            self._tries += 1
            return self._send(*retry, now)
        retry_after = response.headers.get("Retry-After")
        return self._on_failure(response.status, response.cause, retry_after, now)

    def _retry_for(self, response: Response) -> tuple[int, list[tuple[str, str]]] | None:
        """The same REGISTER again, answering a challenge or a 423; None when we cannot."""
        assert self._tx is not None
        if response.status in (401, 407) and self.authenticator is not None:
            lines = self.authenticator.respond(self._tx.request, response)
            return (self._purpose, lines) if lines else None
        minimum = as_whole(response.headers.get("Min-Expires"), 0, MAX_EXPIRES)
        if response.status == 423 and minimum is not None and minimum > self._purpose:
            self.expires = minimum  # later refreshes ask for it too
            return self.expires, []
        return None

    def _on_success(self, response: Response, now: float) -> list[Output]:
        self.status, self.cause = response.status, response.cause
        if self._purpose == 0:
            return self._cleared(response.status, response.cause)
        granted = self._granted(response)
        if self.state is R.UNREGISTERING:  # stopped while this was in flight: take it back
            self.expires_at, self.granted = self._sent_at + granted, granted
            return self._attempt(0, now)
        if granted <= 0:
            return self._on_failure(response.status, f"{response.cause} (no binding)", None, now)
        self._move(RS.GRANTED)
        self.failures, self.granted = 0, granted
        self.expires_at = self._sent_at + granted  # counted from when we asked: conservative
        self.refresh_at = now + granted / 2
        return [self._changed()]

    def _granted(self, response: Response) -> int:
        """Our binding's lifetime (10.2.4): our Contact's expires, else Expires, else asked."""
        ours = self.endpoint.contact.uri
        mine = [
            c
            for c in response.contacts
            if (c.uri.user, c.uri.host.lower(), c.uri.port)
            == (ours.user, ours.host.lower(), ours.port)
        ]
        for contact in mine or (response.contacts if len(response.contacts) == 1 else []):
            value = as_whole(
                {n.lower(): v for n, v in contact.params}.get("expires"), 0, MAX_EXPIRES
            )
            if value is not None:
                return value
        value = as_whole(response.headers.get("Expires"), 0, MAX_EXPIRES)
        return self._purpose if value is None else value

    def _on_failure(
        self, status: int | None, cause: str, retry_after: str | None, now: float
    ) -> list[Output]:
        self.status, self.cause = status, cause
        if self.state is R.UNREGISTERING:
            return self._cleared(status, cause)
        self._move(RS.REFUSED)
        self.failures += 1
        self.expires_at = self.granted = self.refresh_at = None
        delay = min(self.retry_max, self.retry_base * 2 ** min(self.failures - 1, 16))
        seconds = as_whole((retry_after or "").split(";")[0].split("(")[0].strip(), 0, 2**31)
        if seconds is not None:
            delay = min(self.retry_max, float(seconds))  # the server says when it can serve
        self.retry_at = now + delay
        return [self._changed()]

    def _cleared(self, status: int | None, cause: str) -> list[Output]:
        self.status, self.cause = status, cause
        self._move(RS.CLEARED)
        self.expires_at = self.granted = self.refresh_at = self.retry_at = None
        return [self._changed()]

    def _changed(self) -> RegistrationChanged:
        return RegistrationChanged(
            self.call_id, self.state.value, self.status, self.cause, self.expires_at, self.retry_at
        )
