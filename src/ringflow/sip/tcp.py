"""SIP over TCP (RFC 3261 18): a listening socket and one reused connection per remote address.

``TcpLink`` is what ``SipTransport`` sends through when a trunk says ``transport=tcp``. Requests
to an address reuse the open connection to it, or open one (queueing the bytes until it is up);
a connection a peer opened to us is reused for everything we send back to that peer (18.2.2:
responses go back on the connection the request came in on). Each connection frames its stream
by Content-Length (``StreamFramer``) and is closed when framing fails, because nothing after a
bad message can be trusted. A connection that cannot be made answers each request queued on it
with a local 503 (8.1.3.1: a transport error is a 503 to the transaction user), so a call to a
dead trunk fails at once instead of after timer B.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ringflow.sip.errors import SipParseError
from ringflow.sip.framing import StreamFramer
from ringflow.sip.message import Request, make_response, parse_message
from ringflow.sip.transaction import Address

log = logging.getLogger(__name__)
Deliver = Callable[[bytes, Address], None]


class _Connection(asyncio.Protocol):
    """One TCP connection: frames what arrives, writes what the link sends."""

    def __init__(self, link: TcpLink, remote: Address | None = None):
        self.link = link
        self.remote = remote  # known before connecting (outgoing); from the socket (incoming)
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the connection under its peer's address so replies reuse it."""
        self.transport = transport  # type: ignore[assignment]
        if self.remote is None:
            self.remote = transport.get_extra_info("peername")[:2]
        self.link._connections[self.remote] = self

    def data_received(self, data: bytes) -> None:
        """Hand every complete message to the agent; close the stream if framing fails."""
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            log.info("sip tcp: closing %s: %s", self.remote, exc)
            assert self.transport is not None
            self.transport.close()
            return
        for message in messages:
            self.link._deliver(message, self.remote)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget it; the next message to that address opens a new connection."""
        if self.link._connections.get(self.remote) is self:  # type: ignore[arg-type]
            del self.link._connections[self.remote]  # type: ignore[arg-type]

    @property
    def open(self) -> bool:
        """Whether bytes can still be written."""
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        """Send bytes on the stream."""
        assert self.transport is not None
        self.transport.write(data)


class TcpLink:
    """A TCP listening socket plus the connections SIP messages travel on."""

    def __init__(self, deliver: Deliver):
        self._deliver = deliver
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[Address, _Connection] = {}
        self._pending: dict[Address, list[bytes]] = {}  # bytes waiting for a connection
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    async def open(cls, host: str, port: int, deliver: Deliver) -> TcpLink:
        """Listen at ``host:port`` (0 picks a free port)."""
        self = cls(deliver)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        return self

    @property
    def local(self) -> Address:
        """The listening address, which Via and Contact advertise."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[:2]  # type: ignore[attr-defined]

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
            try:
                request = parse_message(data)
            except SipParseError:
                continue
            if isinstance(request, Request) and request.method != "ACK" and not self.closing:
                reason = f"Service Unavailable (no TCP connection: {why})"
                self._deliver(bytes(make_response(request, 503, reason)), addr)

    def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in self._tasks:
            task.cancel()
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        self._connections.clear()
        self._pending.clear()
