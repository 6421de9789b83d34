"""An asyncio UDP adapter that drives the sans-IO ``UserAgent``: sockets, clock and timers.

One ``SipTransport`` owns one UDP socket and one ``UserAgent``. Every call into the agent is
followed by the same step: send its datagrams, hand call events to their calls, and re-arm the
single ``loop.call_at`` timer to ``ua.next_timer``. Calls are ``OutgoingCallHandle``s whose
``next_event()`` yields ``Ringing``/``Answered``/``Dtmf``/``MediaChanged`` and finally ``Ended``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ringflow.sip.agent import AgentOutput, UserAgent
from ringflow.sip.dialog import Endpoint
from ringflow.sip.events import Discarded, Ended
from ringflow.sip.headers import NameAddr
from ringflow.sip.ids import IdSource
from ringflow.sip.outcome import Ending
from ringflow.sip.sdp import SessionDescription
from ringflow.sip.transaction import DEFAULT_TIMING, Datagram, Timing
from ringflow.sip.uri import SipUri

log = logging.getLogger(__name__)


class OutgoingCallHandle:
    """One placed call: its events in order, and the ways to end it."""

    def __init__(self, transport: SipTransport, call_id: str):
        self.transport = transport
        self.call_id = call_id
        self.events: asyncio.Queue = asyncio.Queue()
        self.ended: Ended | None = None

    async def next_event(self) -> object:
        """The call's next event (``Ended`` comes last, exactly once)."""
        return await self.events.get()

    def cancel(self, reason: Ending = Ending.CANCELED) -> None:
        """Stop ringing with CANCEL (sent once a provisional response has come)."""
        self.transport._run(lambda now: self.transport.ua.cancel(self.call_id, now, reason))

    def hangup(self) -> None:
        """End the answered call with BYE."""
        self.transport._run(lambda now: self.transport.ua.hangup(self.call_id, now))


class SipTransport(asyncio.DatagramProtocol):
    """A ``UserAgent`` on a UDP socket, with its timers on the event loop."""

    def __init__(self, endpoint_user: str = "ringflow", *, timing: Timing = DEFAULT_TIMING,
                 ids: IdSource | None = None):
        self._user = endpoint_user
        self._timing = timing
        self._ids = ids
        self.ua: UserAgent | None = None  # built once the bound port is known
        self.handles: dict[str, OutgoingCallHandle] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0, **kwargs: object) -> SipTransport:
        """Bind a UDP socket at ``host:port`` (0 picks a free port) and start serving."""
        loop = asyncio.get_running_loop()
        _, self = await loop.create_datagram_endpoint(lambda: cls(**kwargs),  # type: ignore
                                                      local_addr=(host, port))
        return self

    @property
    def local(self) -> tuple[str, int]:
        """The bound address, as the agent advertises it in Via and Contact."""
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Socket bound: now the Endpoint can name the real port."""
        self._transport = transport  # type: ignore[assignment]
        host, port = self.local
        self.ua = UserAgent(Endpoint(host, port, user=self._user), timing=self._timing,
                            ids=self._ids)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Feed the agent every datagram; it never raises on a peer's bytes."""
        self._run(lambda now: self.ua.receive(data, addr[:2], now))  # type: ignore[union-attr]

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable) are left to SIP retransmission and timeouts."""
        log.debug("sip socket error: %s", exc)

    async def dial(self, target_uri: str, from_uri: str, offer: SessionDescription,
                   **dial: object) -> OutgoingCallHandle:
        """Place a call; extra keywords go to ``UserAgent.dial``."""
        handle: OutgoingCallHandle | None = None

        def start(now: float) -> list[AgentOutput]:
            nonlocal handle
            call, out = self.ua.dial(SipUri.parse(target_uri),  # type: ignore[union-attr]
                                     NameAddr.parse(from_uri), offer, now, **dial)  # type: ignore
            # Register before dispatch so events from this very step find their handle.
            handle = self.handles[call.call_id] = OutgoingCallHandle(self, call.call_id)
            return out

        self._run(start)
        assert handle is not None
        return handle

    def close(self) -> None:
        """Stop the timer and close the socket; calls still up are simply dropped."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()

    def _run(self, step: Callable[[float], list[AgentOutput]]) -> None:
        """Call into the agent at loop time, then send, dispatch and re-arm."""
        if self._transport is None or self._transport.is_closing():
            return
        for item in step(asyncio.get_running_loop().time()):
            if isinstance(item, Datagram):
                self._transport.sendto(item.data, item.addr)
            elif isinstance(item, Discarded):
                log.debug("sip discarded from %s: %s", item.source, item.reason)
            elif (handle := self.handles.get(item.call_id)) is not None:
                handle.events.put_nowait(item)
                if isinstance(item, Ended):
                    handle.ended = item
                    del self.handles[item.call_id]  # the agent may linger; the handle is done
        self._rearm()

    def _rearm(self) -> None:
        """Keep exactly one loop timer, at ``ua.next_timer``."""
        due = self.ua.next_timer if self.ua is not None else None
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
        self._run(lambda now: self.ua.timer(max(now, due)))  # type: ignore[union-attr]
