"""The asyncio adapter that drives the sans-IO ``UserAgent``: sockets, clock and timers.

One ``SipTransport`` owns one link (a UDP socket, or a TCP listener with its connections from
``ringflow.sip.tcp``) and one ``UserAgent``. Every call into the agent is followed by the same
step: send its datagrams, hand events to their calls and registrations, and re-arm the single
``loop.call_at`` timer to ``ua.next_timer``. Calls are ``OutgoingCallHandle``s whose
``next_event()`` yields ``Ringing``/``Answered``/``Dtmf``/``MediaChanged`` and finally
``Ended``; registrations are ``RegistrationHandle``s whose state a dashboard can read.

The receive path and the timer serve every call of the process, so neither may die of one bad
datagram or one bug: a step that raises is logged with its traceback and dropped, each output is
dispatched on its own, and the loop timer is re-armed whatever happened (``try``/``finally``).
Calls made through the API (dial, cancel, hang up, register) still raise to their caller.

Host names are looked up here, never in the agent and never by ``sendto`` (a blocking lookup on
the loop): a datagram for a name waits for its lookup (``NameCache``), goes to one of the
addresses found, and the agent is told (``UserAgent.resolved``) so that answers from there are
heard. Names the agent's calls talk with but we have sent nothing to yet (a Contact, a
Record-Route) are looked up after each step too. A request for a name that cannot be looked up
gets a local 503, as for a TCP connection that cannot be made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from typing import cast

from ringflow.metrics import SIP_RETRANSMISSIONS, count_sip
from ringflow.sip.agent import AgentOutput, UserAgent
from ringflow.sip.dialog import Endpoint
from ringflow.sip.digest import Authenticator
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
from ringflow.sip.outcome import Ending
from ringflow.sip.registration import Registration, RegState
from ringflow.sip.resolver import NameCache
from ringflow.sip.sdp import SessionDescription
from ringflow.sip.sources import Sources, ip_of
from ringflow.sip.tcp import TcpBounds, TcpLink, transport_error
from ringflow.sip.transaction import DEFAULT_TIMING, Address, Datagram, Timing
from ringflow.sip.uri import SipUri

log = logging.getLogger(__name__)
TRANSPORTS = ("udp", "tcp")
CALL_EVENTS = (Ringing, Answered, Dtmf, MediaChanged, Ended)
REARM_AFTER_FAILURE = 1.0  # seconds: when the agent cannot say its next timer, look again then
RETRY_LOOKUP_AFTER = 30.0  # seconds before a peer name that could not be looked up is tried again


class OutgoingCallHandle:
    """One placed call: its events in order, and the ways to end it."""

    def __init__(self, transport: SipTransport, call_id: str):
        self.transport = transport
        self.call_id = call_id
        self.events: asyncio.Queue[object] = asyncio.Queue()
        self.ended: Ended | None = None

    async def next_event(self) -> object:
        """The call's next event (``Ended`` comes last, exactly once)."""
        return await self.events.get()

    def cancel(self, reason: Ending = Ending.CANCELED) -> None:
        """Stop ringing with CANCEL (sent once a provisional response has come)."""
        self.transport._run(lambda now: self.transport.agent.cancel(self.call_id, now, reason))

    def hangup(self) -> None:
        """End the answered call with BYE."""
        self.transport._run(lambda now: self.transport.agent.hangup(self.call_id, now))


class RegistrationHandle:
    """One kept registration: its state for a dashboard, and ways to wait for it or end it."""

    def __init__(self, transport: SipTransport, registration: Registration):
        self.transport = transport
        self.registration = registration
        self.call_id = registration.call_id
        self.changes: list[RegistrationChanged] = []  # every report, oldest first
        self._waiters: list[asyncio.Future[RegistrationChanged]] = []

    @property
    def state(self) -> RegState:
        """``registering``, ``registered``, ``failed``, ``unregistering`` or ``unregistered``."""
        return self.registration.state

    @property
    def registered(self) -> bool:
        """Whether the registrar holds our binding now."""
        return self.registration.state is RegState.REGISTERED

    @property
    def status(self) -> int | None:
        """The last final response's status code (None: none yet, or a timeout)."""
        return self.registration.status

    @property
    def cause(self) -> str:
        """The last final response as people quote it (``403 Forbidden``), or why none came."""
        return self.registration.cause

    @property
    def expires_at(self) -> float | None:
        """When the binding lapses, in wall-clock seconds (``time.time()``), if registered."""
        return self.transport._wall(self.registration.expires_at)

    @property
    def retry_at(self) -> float | None:
        """When a failed registration is tried again, in wall-clock seconds."""
        return self.transport._wall(self.registration.retry_at)

    async def wait(self, *states: str) -> RegState:
        """Wait until the state is one of ``states``; with none given, for the next report."""
        while not states or self.state not in states:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            await future
            if not states:
                break
        return self.state

    async def unregister(self) -> RegState:
        """Remove the binding (``Expires: 0``) and wait until done (a silent registrar: 64*T1)."""
        self.transport._run(lambda now: self.transport.agent.unregister(self.call_id, now))
        if self.state is not RegState.UNREGISTERED and not self.transport.closed:
            await self.wait(RegState.UNREGISTERED)
        return self.state

    def _report(self, change: RegistrationChanged) -> None:
        self.changes.append(change)
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(change)


class _UdpLink(asyncio.DatagramProtocol):
    """A UDP socket: each datagram is one message."""

    def __init__(self, deliver: Callable[[bytes, Address], None]):
        self._deliver = deliver
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(
        cls, host: str, port: int, deliver: Callable[[bytes, Address], None]
    ) -> _UdpLink:
        """Bind ``host:port`` (0 picks a free port)."""
        loop = asyncio.get_running_loop()
        _, self = await loop.create_datagram_endpoint(lambda: cls(deliver), local_addr=(host, port))
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Socket bound."""
        # Protocol's signature names the base class; a datagram endpoint's is a DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Hand the datagram to the agent."""
        self._deliver(data, addr[:2])

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable) are left to SIP retransmission and timeouts."""
        log.debug("sip socket error: %s", exc)

    @property
    def local(self) -> Address:
        """The bound address."""
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def closing(self) -> bool:
        """Whether the socket is closed or closing."""
        return self._transport is None or self._transport.is_closing()

    def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram."""
        assert self._transport is not None
        self._transport.sendto(data, addr)

    def close(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()


class SipTransport:
    """A ``UserAgent`` on a UDP socket or TCP connections, with its timers on the event loop."""

    def __init__(
        self,
        endpoint_user: str = "ringflow",
        *,
        timing: Timing = DEFAULT_TIMING,
        ids: IdSource | None = None,
        transport: str = "udp",
        sources: Sources | None = None,
        tcp: TcpBounds | None = None,
    ):
        if transport.lower() not in TRANSPORTS:
            raise ValueError(f"SIP transport must be one of {TRANSPORTS}, not {transport!r}")
        self.protocol = transport.lower()
        self._user = endpoint_user
        # No retransmissions on a reliable transport (17.1.1.2): timers A, E and G stay off.
        self._timing = dataclasses.replace(timing, reliable=self.protocol != "udp")
        self._ids = ids
        self._sources = sources
        self.ua: UserAgent | None = None  # built once the bound port is known
        self.handles: dict[str, OutgoingCallHandle] = {}
        self.registrations: dict[str, RegistrationHandle] = {}
        self._link: _UdpLink | TcpLink | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tcp: TcpBounds = tcp or {}  # TcpLink bounds (idle_timeout, max_inbound), for tests
        self._names = NameCache(socket.AF_INET)  # re-made for the bound address's family
        self._waiting: dict[str, list[tuple[bytes, int]]] = {}  # name -> datagrams (and ports)
        self._lookups: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, float] = {}  # name -> loop time its last lookup failed

    @classmethod
    async def open(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        endpoint_user: str = "ringflow",
        *,
        timing: Timing = DEFAULT_TIMING,
        ids: IdSource | None = None,
        transport: str = "udp",
        sources: Sources | None = None,
        tcp: TcpBounds | None = None,
    ) -> SipTransport:
        """Listen at ``host:port`` (0 picks a free port); ``transport="tcp"`` for TCP."""
        self = cls(
            endpoint_user, timing=timing, ids=ids, transport=transport, sources=sources, tcp=tcp
        )
        if self.protocol == "tcp":
            self._link = await TcpLink.open(host, port, self._deliver, self._admits, **self._tcp)
        else:
            self._link = await _UdpLink.open(host, port, self._deliver)
        bound_host, bound_port = self._link.local
        self._names = NameCache(socket.AF_INET6 if ":" in bound_host else socket.AF_INET)
        endpoint = Endpoint(
            bound_host, bound_port, transport=self.protocol.upper(), user=self._user
        )
        self.ua = UserAgent(endpoint, timing=self._timing, ids=self._ids, sources=self._sources)
        return self

    def trust(self, sources: Sources | None) -> None:
        """Answer requests only from ``sources`` (None: from anyone); see ``UserAgent``."""
        self._sources = sources
        if self.ua is not None:
            self.ua.sources = sources

    @property
    def agent(self) -> UserAgent:
        """The user agent: ``open`` builds it before it returns, so only a transport made
        without ``open`` (a misuse) has none."""
        if self.ua is None:
            raise RuntimeError("SipTransport has no user agent: make it with SipTransport.open")
        return self.ua

    @property
    def link(self) -> _UdpLink | TcpLink:
        """The socket; like the agent, there from ``open`` on."""
        if self._link is None:
            raise RuntimeError("SipTransport has no socket: make it with SipTransport.open")
        return self._link

    @property
    def local(self) -> tuple[str, int]:
        """The bound address, as the agent advertises it in Via and Contact."""
        assert self._link is not None
        return self._link.local

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (nothing more is sent or received)."""
        return self._link is None or self._link.closing

    async def dial(
        self,
        target_uri: str,
        from_uri: str,
        offer: SessionDescription,
        *,
        to: NameAddr | None = None,
        authenticator: Authenticator | None = None,
        routes: tuple[NameAddr, ...] = (),
        outbound: Address | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> OutgoingCallHandle:
        """Place a call; the keywords are ``UserAgent.dial``'s."""
        handle: OutgoingCallHandle | None = None

        def start(now: float) -> list[AgentOutput]:
            nonlocal handle
            call, out = self.agent.dial(
                SipUri.parse(target_uri),
                NameAddr.parse(from_uri),
                offer,
                now,
                to=to,
                authenticator=authenticator,
                routes=routes,
                outbound=outbound,
                headers=headers,
            )
            # Register before dispatch so events from this very step find their handle.
            handle = self.handles[call.call_id] = OutgoingCallHandle(self, call.call_id)
            return out

        self._run(start)
        assert handle is not None
        return handle

    async def register(
        self,
        aor: str,
        registrar: str | None = None,
        *,
        authenticator: Authenticator | None = None,
        expires: int = 3600,
        outbound: Address | None = None,
        retry_base: float = 30.0,
        retry_max: float = 300.0,
    ) -> RegistrationHandle:
        """Start keeping ``aor`` registered at ``registrar`` (default: the AOR's domain)."""
        handle: RegistrationHandle | None = None

        def start(now: float) -> list[AgentOutput]:
            nonlocal handle
            reg, out = self.agent.register(
                SipUri.parse(aor),
                SipUri.parse(registrar) if registrar else None,
                authenticator,
                expires,
                now,
                outbound=outbound,
                retry_base=retry_base,
                retry_max=retry_max,
            )
            handle = self.registrations[reg.call_id] = RegistrationHandle(self, reg)
            return out

        self._run(start)
        assert handle is not None
        return handle

    def close(self) -> None:
        """Stop the timer and close the link; calls and registrations still up are dropped."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._lookups.values():
            task.cancel()
        self._waiting.clear()
        if self._link is not None:
            self._link.close()

    def _admits(self, host: str) -> bool:
        """Whether a TCP connection from ``host`` may stay open: the agent would hear it."""
        return self.ua is not None and self.ua.admits(host)

    def _deliver(self, data: bytes, source: Address) -> None:
        """Feed the agent every message; a failure is logged and the next datagram goes on."""
        count_sip(data, "in")  # with the 503 a send that failed makes up: the agent gets it
        self._run(lambda now: self.agent.receive(data, source, now), contained=True)

    def _wall(self, at: float | None) -> float | None:
        """A loop-clock instant as wall-clock seconds."""
        if at is None:
            return None
        return time.time() + (at - asyncio.get_running_loop().time())

    def _run(self, step: Callable[[float], list[AgentOutput]], *, contained: bool = False) -> None:
        """Call into the agent at loop time, then send, dispatch and re-arm.

        ``contained``: the receive path and the timer, where a failing step is logged and
        dropped; an API call gets its exception. Either way the timer is re-armed.
        """
        if self.closed:
            return
        try:
            try:
                outputs = step(asyncio.get_running_loop().time())
            except Exception:
                if not contained:
                    raise
                log.exception("sip: a step of the user agent failed; going on")
                return
            for item in outputs:
                try:
                    self._dispatch(item)
                except Exception:
                    log.exception("sip: could not dispatch %r; going on", type(item).__name__)
            if self.ua is not None and self.ua.unresolved:
                self._resolve_peers()
        finally:
            self._rearm()

    def _dispatch(self, item: object) -> None:
        """One output of the agent: send it, or hand it to its call or registration."""
        if isinstance(item, Datagram):
            if not self.closed:
                if item.again:
                    kind = "response" if item.data.startswith(b"SIP/2.0 ") else "request"
                    SIP_RETRANSMISSIONS.labels(kind).inc()
                self._send(item.data, item.addr)
        elif isinstance(item, Discarded):
            log.debug("sip discarded from %s: %s", item.source, item.reason)
        elif isinstance(item, RegistrationChanged):
            if (reg := self.registrations.get(item.call_id)) is not None:
                reg._report(item)
                if item.state == RegState.UNREGISTERED:
                    del self.registrations[item.call_id]
        elif isinstance(item, CALL_EVENTS):
            if (handle := self.handles.get(item.call_id)) is not None:
                handle.events.put_nowait(item)
                if isinstance(item, Ended):
                    handle.ended = item
                    del self.handles[item.call_id]  # the agent may linger; the handle is done
        else:
            log.warning("sip: the user agent gave an output nobody handles: %r", item)

    def _send(self, data: bytes, addr: Address) -> None:
        """Send to an address, or to a name's address once it is looked up."""
        host, port = addr
        if ip_of(host) is not None:
            count_sip(data, "out")
            self.link.send(data, addr)
            return
        addresses = self._names.get(host)
        if addresses is None:
            self._waiting.setdefault(host.lower(), []).append((data, port))
            self._look_up(host)
            return
        # Whatever DNS says next time, the address this went to may answer it.
        self.agent.resolved(host, addresses[:1])
        count_sip(data, "out")
        self.link.send(data, (addresses[0], port))

    def _resolve_peers(self) -> None:
        """Tell the agent the addresses of its peers' names, looking up those not known yet."""
        now = asyncio.get_running_loop().time()
        for name in self.agent.unresolved:
            addresses = self._names.get(name)
            if addresses is not None:
                self.agent.resolved(name, addresses)
            elif now >= self._failed.get(name, now - RETRY_LOOKUP_AFTER) + RETRY_LOOKUP_AFTER:
                self._look_up(name)

    def _look_up(self, name: str) -> None:
        key = name.lower()
        if key not in self._lookups and not self.closed:
            task = asyncio.get_running_loop().create_task(self._lookup(key))
            self._lookups[key] = task
            task.add_done_callback(lambda _: self._lookups.pop(key, None))

    async def _lookup(self, name: str) -> None:
        """Look ``name`` up, then tell the agent and send what waited (or answer it 503)."""
        try:
            addresses = await self._names.lookup(name)
        except OSError as exc:
            if len(self._failed) >= 1024:  # names of our peers; forget old failures wholesale
                self._failed.clear()
            self._failed[name] = asyncio.get_running_loop().time()
            waiting = self._waiting.pop(name, [])
            log.warning(
                "sip: cannot look up %s (%s); %d message(s) not sent", name, exc, len(waiting)
            )
            for data, port in waiting:
                if (answer := transport_error(data, f"cannot look up {name}")) is not None:
                    self._deliver(answer, (name, port))
            return
        self._failed.pop(name, None)

        def learn(now: float) -> list[AgentOutput]:
            self.agent.resolved(name, addresses)
            return [Datagram(data, (name, port)) for data, port in self._waiting.pop(name, [])]

        self._run(learn, contained=True)

    def _rearm(self) -> None:
        """Keep exactly one loop timer, at ``ua.next_timer`` (in a second if it cannot say)."""
        if self.closed:
            return
        try:
            due = self.ua.next_timer if self.ua is not None else None
        except Exception:
            log.exception("sip: the user agent cannot say when its next timer is due")
            due = asyncio.get_running_loop().time() + REARM_AFTER_FAILURE
        if due == self._timer_at and self._timer is not None:
            return  # already armed for that instant
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, due
        if due is not None:
            self._timer = asyncio.get_running_loop().call_at(due, self._fire)

    def _fire(self) -> None:
        """The loop timer: run what is due (the handle is spent, so forget it first)."""
        due, self._timer, self._timer_at = self._timer_at or 0.0, None, None
        # asyncio may fire up to one clock resolution early: never pass a ``now`` before ``due``.
        self._run(lambda now: self.agent.timer(max(now, due)), contained=True)
