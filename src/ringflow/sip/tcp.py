"""SIP over TCP (RFC 3261 18): a listening socket and one reused connection per remote address.

``TcpLink`` is what ``SipTransport`` sends through when a trunk says ``transport=tcp``. Requests
to an address reuse the open connection to it, or open one (queueing the bytes until it is up);
a connection a peer opened to us is reused for everything we send back to that peer (18.2.2:
responses go back on the connection the request came in on). Each connection frames its stream
by Content-Length (``StreamFramer``) and is closed when framing fails, because nothing after a
bad message can be trusted. A connection that cannot be made answers each request queued on it
with a local 503 (8.1.3.1: a transport error is a 503 to the transaction user), so a call to a
dead trunk fails at once instead of after timer B.

Connections others open to us are bounded before a byte of theirs is read, because each holds a
file descriptor that HTTP and RTP share: one from a host the agent would not hear anyway
(``admits``, the same check the agent applies to every datagram) is closed as soon as it is
accepted; beyond ``max_inbound`` open at once, a new one is closed too; and one that carries
nothing either way for ``idle_timeout`` seconds is closed (the peer opens a new one when it has
something to say). Connections we open follow our calls and are not bounded here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypedDict, cast

from ringflow.sip.errors import SipParseError
from ringflow.sip.framing import StreamFramer
from ringflow.sip.message import Request, make_response, parse_message
from ringflow.sip.transaction import Address

log = logging.getLogger(__name__)
Deliver = Callable[[bytes, Address], None]
Admits = Callable[[str], bool]
IDLE_TIMEOUT = 120.0  # seconds an inbound connection may carry nothing before we close it
MAX_INBOUND = 128  # inbound connections open at once (a trunk needs a handful)


class TcpBounds(TypedDict, total=False):
    """``TcpLink.open``'s bounds by name, so a caller can pass any of them through unchanged."""

    idle_timeout: float
    max_inbound: int


def transport_error(data: bytes, why: str) -> bytes | None:
    """The local 503 for a request that could not be sent (RFC 3261 8.1.3.1); None for others."""
    try:
        request = parse_message(data)
    except SipParseError:
        return None
    if not isinstance(request, Request) or request.method == "ACK":
        return None
    return bytes(make_response(request, 503, f"Service Unavailable ({why})"))


class _Connection(asyncio.Protocol):
    """One TCP connection: frames what arrives, writes what the link sends."""

    def __init__(self, link: TcpLink, remote: Address | None = None):
        self.link = link
        self.remote = remote  # known before connecting (outgoing); from the socket (incoming)
        self.inbound = remote is None
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.refused = False
        self._active_at = 0.0  # loop time of the last bytes either way (inbound only)
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the connection under its peer's address so replies reuse it (or refuse it)."""
        # Protocol's signature names the base class; a stream connection's transport is a
        # Transport (write, abort), whichever loop made it.
        stream = cast(asyncio.Transport, transport)
        self.transport = stream
        remote = self.remote
        if remote is None:
            host, port = stream.get_extra_info("peername")[:2]
            remote = self.remote = (str(host), int(port))
        if self.inbound:
            why = self.link._refusal(remote[0])
            if why is not None:
                # A stranger is routine (debug); a trunk turned away at the cap is news.
                level = logging.WARNING if why.startswith("already") else logging.DEBUG
                log.log(level, "sip tcp: refusing %s: %s", remote, why)
                self.refused = True
                stream.abort()
                return
            self.link._inbound.add(self)
            self._touch()
            self._arm_idle(self.link.idle_timeout)
        self.link._connections[remote] = self

    def _touch(self) -> None:
        if self.inbound:
            self._active_at = asyncio.get_running_loop().time()

    def _arm_idle(self, delay: float) -> None:
        self._idle = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        """Close an inbound connection that has carried nothing for ``idle_timeout``."""
        quiet = asyncio.get_running_loop().time() - self._active_at
        if quiet < self.link.idle_timeout:
            self._arm_idle(self.link.idle_timeout - quiet)
        elif self.transport is not None and not self.transport.is_closing():
            log.debug("sip tcp: closing %s: idle for %.0f s", self.remote, quiet)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        """Hand every complete message to the agent; close the stream if framing fails."""
        if self.refused:
            return
        self._touch()
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            log.info("sip tcp: closing %s: %s", self.remote, exc)
            assert self.transport is not None
            self.transport.close()
            return
        assert self.remote is not None  # set by connection_made, before any data
        for message in messages:
            self.link._deliver(message, self.remote)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget it; the next message to that address opens a new connection."""
        if self._idle is not None:
            self._idle.cancel()
        self.link._inbound.discard(self)
        if self.remote is not None and self.link._connections.get(self.remote) is self:
            del self.link._connections[self.remote]

    @property
    def open(self) -> bool:
        """Whether bytes can still be written."""
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        """Send bytes on the stream."""
        assert self.transport is not None
        self._touch()
        self.transport.write(data)


class TcpLink:
    """A TCP listening socket plus the connections SIP messages travel on."""

    def __init__(
        self,
        deliver: Deliver,
        admits: Admits | None = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_inbound: int = MAX_INBOUND,
    ):
        self._deliver = deliver
        self._admits = admits  # None: anyone may connect (a bare link, as in tests)
        self.idle_timeout = idle_timeout
        self.max_inbound = max_inbound
        self._server: asyncio.Server | None = None
        self._connections: dict[Address, _Connection] = {}
        self._inbound: set[_Connection] = set()
        self._pending: dict[Address, list[bytes]] = {}  # bytes waiting for a connection
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        deliver: Deliver,
        admits: Admits | None = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_inbound: int = MAX_INBOUND,
    ) -> TcpLink:
        """Listen at ``host:port`` (0 picks a free port); ``admits`` says who may connect."""
        self = cls(deliver, admits, idle_timeout=idle_timeout, max_inbound=max_inbound)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        return self

    @property
    def local(self) -> Address:
        """The listening address, which Via and Contact advertise."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def inbound(self) -> int:
        """Connections others opened to us, open now."""
        return len(self._inbound)

    def _refusal(self, host: str) -> str | None:
        """Why a connection from ``host`` is closed as soon as it is accepted, if it is."""
        if self._admits is not None and not self._admits(host):
            return "from neither a trunk nor a host a call talks with"
        if len(self._inbound) >= self.max_inbound:
            return f"already {len(self._inbound)} inbound connections"
        return None

    @property
    def closing(self) -> bool:
        """Whether the link has been closed."""
        return self._server is None

    def send(self, data: bytes, addr: Address) -> None:
        """Write on the connection to ``addr``, opening one if there is none."""
        conn = self._connections.get(addr)
        if conn is not None and conn.open:
            conn.write(data)
            return
        queue = self._pending.get(addr)
        if queue is not None:
            queue.append(data)  # a connection to it is already being made
            return
        self._pending[addr] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, addr: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self, addr), *addr)
        except OSError as exc:
            log.info("sip tcp: cannot connect to %s: %s", addr, exc)
            self._fail(addr, str(exc.strerror or exc))
            return
        for data in self._pending.pop(addr, []):
            conn.write(data)

    def _fail(self, addr: Address, why: str) -> None:
        """Each request that could not go out gets a 503 from us, as RFC 3261 8.1.3.1 says."""
        for data in self._pending.pop(addr, []):
            answer = transport_error(data, f"no TCP connection: {why}")
            if answer is not None and not self.closing:
                self._deliver(answer, addr)

    def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in self._tasks:
            task.cancel()
        for conn in {*self._connections.values(), *self._inbound}:
            if conn.transport is not None:
                conn.transport.close()
        self._connections.clear()
        self._inbound.clear()
        self._pending.clear()
