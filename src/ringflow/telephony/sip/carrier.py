"""The ``sip`` carrier: legs placed as SIP calls through a trunk, with RTP from the media engine.

Each attempt opens an RTP session first (its port goes into the SDP offer), waits for room on
its trunk (channels and calls per second), and sends the INVITE. One pump task per attempt reads
the SIP events: before the answer they become ``Ringing``/``Answered``/``Rejected``; after it,
INFO digits, re-INVITEs and the final BYE go to the ``SipChannel``. The trunk's slot and the
RTP port are released when the SIP call ends, however it ends.

The SIP sockets answer only the trunks (``peers.TrunkPeers`` resolves their names into the
agent's allow-list; a call or registration also hears the address its own requests went to),
and each leg's RTP hears only the host of the callee's SDP address (any port: gateways often
send from another) unless its trunk asks for symmetric RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

from ringflow.clock import Clock
from ringflow.errors import MediaError
from ringflow.media.engine import MediaEngine, RtpSession
from ringflow.redis_client import connect, follow
from ringflow.sip import events as sip_events
from ringflow.sip.digest import Authenticator
from ringflow.sip.outcome import Ending, Status
from ringflow.sip.sdp import PCMA, PCMU, build_sdp
from ringflow.sip.sources import Sources
from ringflow.sip.transport import OutgoingCallHandle, RegistrationHandle, SipTransport
from ringflow.telephony.carrier import (
    Answered,
    AttemptEvent,
    DialRequest,
    Outcome,
    Placed,
    Rejected,
    Ringing,
    TrunkStatus,
    Waiting,
)
from ringflow.telephony.sip.capacity import (
    ROOM_CHANNEL,
    Hold,
    SharedTrunkGate,
    TrunkGate,
    TrunkUnavailable,
)
from ringflow.telephony.sip.channel import SipChannel, Speech
from ringflow.telephony.sip.peers import TrunkPeers
from ringflow.telephony.sip.trunks import Trunk, choose_trunk

log = logging.getLogger(__name__)

# The SIP endings that are more than a failure for a leg that never answered.
_REJECTED = {Status.BUSY: Outcome.BUSY, Status.NO_ANSWER: Outcome.NO_ANSWER}


class SipCarrier:
    """Places legs over SIP. ``start()`` binds the SIP socket; ``close()`` ends everything."""

    name = "sip"

    def __init__(
        self,
        clock: Clock,
        trunks: tuple[Trunk, ...],
        *,
        sip_host: str = "127.0.0.1",
        sip_port: int = 5060,
        rtp_ports: tuple[int, int] = (16384, 32766),
        speech: Speech | None = None,
        redis_url: str | None = None,
    ):
        self.clock = clock
        self.trunks = trunks
        self._trunk_names = {trunk.name for trunk in trunks}
        self.sip_host, self.sip_port = sip_host, sip_port
        self.rtp_ports = rtp_ports
        self.speech = speech
        # With Redis, every process dialling through a trunk shares its channels and pace.
        self._redis_url = redis_url
        self._redis = connect(redis_url) if redis_url else None
        self._room_news: asyncio.Task[None] | None = None
        self.gates: dict[str, TrunkGate | SharedTrunkGate] = {
            trunk.name: SharedTrunkGate(trunk, clock, self._redis, on_room=self._room)
            if self._redis
            else TrunkGate(trunk, clock, on_room=self._room)
            for trunk in trunks
        }
        self.held: dict[str, Hold] = {}  # by call SID: channels taken at admission
        self._room_listeners: list[Callable[[], None]] = []
        # One SIP transport per protocol the trunks use (UDP and TCP share the port number).
        self.transports: dict[str, SipTransport] = {}
        self.registrations: dict[str, RegistrationHandle] = {}
        self.media: MediaEngine | None = None
        self.attempts: set[SipAttempt] = set()
        self.peers = TrunkPeers(trunks, clock, self._trust)

    async def start(self) -> None:
        """Bind the SIP sockets, start the media engine and register where trunks ask to."""
        # Resolved before the sockets open, so there is no moment when anyone may talk.
        sources = await self.peers.start()
        for protocol in sorted({t.transport for t in self.trunks}):
            port = self.sip_port
            if port == 0 and self.transports:  # tests: the same free port for both protocols
                port = next(iter(self.transports.values())).local[1]
            self.transports[protocol] = await SipTransport.open(
                self.sip_host, port, transport=protocol, sources=sources
            )
        self.media = MediaEngine(self.sip_host, *self.rtp_ports)
        for trunk in self.trunks:
            if trunk.register:
                self.registrations[trunk.name] = await self.transports[trunk.transport].register(
                    trunk.aor,
                    trunk.registrar,
                    authenticator=_authenticator(trunk),
                    expires=trunk.register_expires,
                    outbound=trunk.outbound_proxy,
                )
        if self._redis_url:
            self._room_news = asyncio.ensure_future(
                follow(self._redis_url, ROOM_CHANNEL, self._room_elsewhere, what="trunk room")
            )
        for protocol, transport in self.transports.items():
            log.info("sip carrier on %s:%d/%s", *transport.local, protocol)
        log.info("trunks: %s", ", ".join(t.name for t in self.trunks))

    async def close(self) -> None:
        """Hang up what is still up, unregister, then close the sockets."""
        await asyncio.gather(*(attempt.abandon() for attempt in list(self.attempts)))
        await self.peers.close()
        for name, registration in self.registrations.items():
            try:
                await asyncio.wait_for(registration.unregister(), 5.0)
            except TimeoutError:
                log.warning("trunk %s: no answer to the unregister; closing anyway", name)
        if self.media is not None:
            await self.media.close()
        for transport in self.transports.values():
            transport.close()
        if self._room_news is not None:
            self._room_news.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._room_news
        if self._redis is not None:
            await self._redis.aclose()

    async def trunk_status(self, account_sid: str) -> TrunkStatus | None:
        """The load and registration of the trunk that carries ``account_sid``'s calls."""
        trunk = choose_trunk(self.trunks, account_sid)
        if trunk is None:
            return None
        registration = self.registrations.get(trunk.name)
        return TrunkStatus(
            trunk=trunk,
            active=await self.gates[trunk.name].active(),
            registration=str(registration.state) if registration else None,
            registration_cause=registration.cause if registration else "",
            registered_until=registration.expires_at if registration else None,
            retry_at=registration.retry_at if registration else None,
        )

    def over_sip(self, account_sid: str) -> bool:
        """Always: every account's legs go through a trunk (fail when none serves it)."""
        return True

    async def reserve(self, account_sid: str, call_sid: str) -> bool:
        """Take a channel of the account's trunk for the call's first leg (see Carrier).

        An account no trunk serves gets True: its leg fails when dialled, with the reason.
        """
        if call_sid in self.held:
            return True
        trunk = choose_trunk(self.trunks, account_sid)
        if trunk is None:
            return True
        hold = await self.gates[trunk.name].try_hold()
        if hold is None:
            return False
        self.held[call_sid] = hold
        return True

    async def unreserve(self, call_sid: str) -> None:
        """Give back a channel reserved for a call whose first leg never took it."""
        hold = self.held.pop(call_sid, None)
        if hold is not None:
            await hold.release()

    def listen_for_room(self, listener: Callable[[], None]) -> None:
        """Tell ``listener`` when a channel is given back (by this process, or with Redis by
        any process dialling through the same trunks)."""
        self._room_listeners.append(listener)

    def _room_elsewhere(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        data = message["data"]
        name = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        if name in self._trunk_names:
            self._room()

    def _room(self) -> None:
        for listener in self._room_listeners:
            listener()

    def dial(self, request: DialRequest) -> SipAttempt:
        """Start placing a leg through the account's trunk."""
        return SipAttempt(self, request)

    def _trust(self, sources: Sources) -> None:
        """The trunks' addresses changed (a re-resolve): every SIP socket answers the new ones."""
        for transport in self.transports.values():
            transport.trust(sources)


def _authenticator(trunk: Trunk) -> Authenticator | None:
    return Authenticator(trunk.username, trunk.password or "") if trunk.username else None


class SipAttempt:
    """One leg being placed over SIP, and the pump that follows it until the call ends."""

    def __init__(self, carrier: SipCarrier, request: DialRequest):
        self.carrier = carrier
        self.request = request
        self.events: asyncio.Queue[AttemptEvent] = asyncio.Queue()
        self.handle: OutgoingCallHandle | None = None
        self.session: RtpSession | None = None
        self.channel: SipChannel | None = None
        self.trunk: Trunk | None = None
        self.rang = False  # a 180 or 183 came
        self._canceled = False
        self._task = asyncio.ensure_future(self._run())
        carrier.attempts.add(self)

    async def next_event(self) -> AttemptEvent:
        """Wait for the next progress event."""
        return await self.events.get()

    async def cancel(self) -> Rejected | None:
        """Give the leg up: CANCEL while it rings, BYE if its answer crossed our giving up.

        A leg that never rang (no 180 or 183: a trunk that is down, or one that could not reach
        the callee) is not a callee who did not answer: that leg failed.
        """
        self._canceled = True
        if self.channel is not None:  # answered, though the caller never took the answer
            await self.channel.hangup("canceled")
        elif self.handle is not None:
            self.handle.cancel(Ending.CANCELED)
            if not self.rang and self.trunk is not None:
                return Rejected(
                    Outcome.FAILED, f"sip: trunk {self.trunk.name} never rang the callee"
                )
        else:
            self._task.cancel()  # still waiting for room on the trunk
        return None

    async def abandon(self) -> None:
        """Shutting down: end the leg whichever state it is in, and wait for the pump."""
        await self.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), 5.0)

    async def _run(self) -> None:
        trunk = choose_trunk(self.carrier.trunks, self.request.account_sid)
        if trunk is None:
            self._finish()
            await self.events.put(Rejected(Outcome.FAILED, "sip: no trunk serves this account"))
            return
        self.trunk = trunk
        gate = self.carrier.gates[trunk.name]
        waited = False

        def waiting(reason: str) -> None:
            nonlocal waited
            waited = True
            self.events.put_nowait(Waiting(reason))

        try:
            # A first leg dials with the channel its call was admitted with, if it has one.
            hold = (
                self.carrier.held.pop(self.request.call_sid, None)
                if self.request.leg_no == 1
                else None
            )
            async with gate.slot(on_wait=waiting, hold=hold):
                if waited:
                    await self.events.put(Placed())
                await self._place(trunk)
        except asyncio.CancelledError:
            if not self._canceled:
                raise
        except (OSError, MediaError, TrunkUnavailable) as exc:
            # No RTP port, the SIP socket refused to send, or the shared limits are unreadable.
            log.warning("sip leg to %s failed: %s", self.request.number, exc)
            await self.events.put(Rejected(Outcome.FAILED, f"sip: {exc}"))
        finally:
            if self.session is not None:
                self.session.close()
            self._finish()

    def _finish(self) -> None:
        self.carrier.attempts.discard(self)

    async def _place(self, trunk: Trunk) -> None:
        carrier = self.carrier
        assert carrier.media is not None
        self.session = await carrier.media.open_session(latch=trunk.symmetric_rtp)
        offer = build_sdp(
            self.session.local[0],
            self.session.local[1],
            session_id=secrets.randbelow(2**62),
            version=1,
            codecs=(PCMU, PCMA),
        )
        headers = (("X-Ringflow-Call", self.request.call_sid),)
        self.handle = await carrier.transports[trunk.transport].dial(
            trunk.request_uri(self.request.number),
            trunk.from_header(self.request.caller_id),
            offer,
            authenticator=_authenticator(trunk),
            outbound=trunk.outbound_proxy,
            headers=headers,
        )
        if self._canceled:
            self.handle.cancel(Ending.CANCELED)
        await self._pump(self.handle)

    async def _pump(self, handle: OutgoingCallHandle) -> None:
        """Follow the SIP call until it ends."""
        while True:
            event = await handle.next_event()
            if isinstance(event, sip_events.Ringing) and not self.rang and self.channel is None:
                self.rang = True
                await self.events.put(Ringing())
            elif isinstance(event, sip_events.Answered) and self.channel is None:
                assert self.session is not None
                self.session.start(event.plan)
                self.channel = SipChannel(
                    self.carrier.clock,
                    self.request.number,
                    handle,
                    self.session,
                    self.carrier.speech,
                )
                await self.events.put(Answered(self.channel))
            elif isinstance(event, sip_events.Dtmf) and self.channel is not None:
                self.channel.on_digit(event.digit, event.duration_ms)
            elif isinstance(event, sip_events.MediaChanged) and self.channel is not None:
                self.channel.on_media(event.plan)
            elif isinstance(event, sip_events.Ended):
                self._ended(event)
                return

    def _ended(self, event: sip_events.Ended) -> None:
        outcome = event.outcome
        if self.channel is not None:
            self.channel.on_ended(event.by_remote)
            return
        cause = f"sip: {outcome.cause}" if outcome.cause else "sip: call ended"
        self.events.put_nowait(Rejected(_REJECTED.get(outcome.status, Outcome.FAILED), cause))
