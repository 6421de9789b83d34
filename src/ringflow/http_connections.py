"""HTTP connections with bounds: how long a request head and body may take, how many
connections a process holds, how long an idle keep-alive connection stays open.

ringflow serves HTTP with uvicorn and its httptools protocol, extended here. uvicorn bounds
keep-alive idle time but not the time to read a request head: a client that dribbles one header
line every few seconds holds its connection (and a file descriptor) for ever, and enough of them
make the server unreachable, health check included. Hypercorn and granian were tried too: both
cut a slow head (hypercorn through its keep-alive timer, granian with
``--http1-header-read-timeout``), but neither caps connections, so 1,100 slow clients still ran a
1,024-descriptor process out of descriptors (EMFILE on accept). Keeping uvicorn also keeps what
``ringflow serve`` builds on it: the pre-bound ``SO_REUSEPORT`` socket of ``--workers``, graceful
shutdown and the orphaned-worker watch. So ``LimitedHttpProtocol`` adds, per connection:

- a head deadline (``RINGFLOW_HTTP_HEAD_TIMEOUT``) from the connection's start, or from the first
  byte of a keep-alive connection's next request, to the end of its head; and a head size cap
  (``MAX_HEAD_BYTES``), since httptools buffers a header line without limit;
- a body deadline (``RINGFLOW_HTTP_BODY_TIMEOUT``) from the end of the head to the end of the body;
- a connection cap (``RINGFLOW_MAX_CONNECTIONS``, per process). At the cap a new connection
  displaces the connection that has waited longest for a request head (a slow client, or an idle
  keep-alive one), so slow clients cannot lock out quick ones. When every connection is busy with
  a request, up to ``HEALTH_RESERVE`` more are accepted for the health check only (others get 503),
  so a full server still answers ``/healthz`` at once.

Idle keep-alive time is uvicorn's own ``timeout_keep_alive`` (``RINGFLOW_HTTP_KEEP_ALIVE``). The
timers are the event loop's, like uvicorn's keep-alive timer: they bound a socket's wall time,
not call time, so they do not read ringflow's clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; ours are a few hundred bytes
HEALTH_RESERVE = 16  # connections beyond the cap, for the health check only
HEALTH_PATHS = frozenset({"/healthz"})
LINGER = 2.0  # seconds a refused upload is read and dropped before its connection closes
SPARE_FILES = 256  # descriptors left for the database, log files, SIP and RTP sockets

_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n")
_TOO_LARGE_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                  b"content-type: text/plain; charset=utf-8\r\ncontent-length: 24\r\n"
                  b"connection: close\r\n\r\nrequest head too large\n")


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """The bounds every HTTP connection of one process keeps."""

    max_connections: int = 1000
    head_timeout: float = 10.0
    body_timeout: float = 30.0


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body deadlines and a connection cap."""

    limits = ConnectionLimits()  # replaced per server by ``protocol_class``

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_head = True
        self._head_bytes = 0
        self._lingering = False
        # Loop time since which this connection waits for a request head; None while a request
        # is in progress. The connection that has waited longest is displaced first at the cap.
        self.waiting_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self.waiting_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            if len(self.connections) > self.limits.max_connections + HEALTH_RESERVE:
                self.transport.abort()
                return
            self.app = _health_only(self.app)
        self._arm(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a refused upload: not even parsed
        if self._reading_head:
            # Counted per read: a read that also carries the end of a pipelined request's body
            # is counted whole, which only makes the cap a little stricter.
            self._head_bytes += len(data)
        super().data_received(data)
        too_large = self._head_bytes > MAX_HEAD_BYTES
        if self._reading_head and too_large and not self.transport.is_closing():
            self._refuse(_TOO_LARGE_431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_head:  # the next request of a keep-alive connection
            self._reading_head = True
            self._head_bytes = 0
            self._arm(self.limits.head_timeout)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self.waiting_since = None
        self._arm(self.limits.body_timeout)
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _CycleTransport):
            cycle.transport = _CycleTransport(self, cycle)
            cycle.on_response = functools.partial(self._responded, cycle)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        super().handle_websocket_upgrade()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _responded(self, cycle: Any) -> None:
        """A response is complete; linger if it went out before its request's body was in."""
        if cycle.more_body:
            self._linger()
        self.on_response_complete()
        if self._lingering:
            self._unset_keepalive_if_required()
        elif self.timeout_keep_alive_task is not None:  # now idle, waiting for the next request
            self.waiting_since = self.loop.time()

    def _linger(self) -> None:
        """After a refusal (413, 401...) sent while the client is still uploading: say we are
        done (FIN), drop whatever it still sends, close after LINGER. Closing at once would
        reset the connection, and a client still sending would lose the answer."""
        if self._lingering or self.transport.is_closing():
            return
        self._lingering = True
        self.waiting_since = 0.0  # the first to go at the connection cap
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head; False if none."""
        waiting = [c for c in self.connections if isinstance(c, LimitedHttpProtocol)
                   and c is not self and c.waiting_since is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.waiting_since or 0.0)
        oldest.transport.abort()
        oldest.waiting_since = None  # aborted: its connection_lost comes on the next loop turn
        return True

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        """The head or body took too long: answer 408 if nothing was answered yet, and close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._lingering:
            self.transport.close()
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        if answering and (self.cycle.response_started or self._reading_head):
            # A response is on the wire (a pipelined request is the slow one): no room for a 408.
            self.transport.close()
            return
        self._refuse(_TIMEOUT_408)

    def _refuse(self, response: bytes) -> None:
        """Answer ``response`` and end the connection, lingering: a client still sending (an
        endless header line) would otherwise get a reset instead of the answer."""
        self._disarm()
        self.transport.write(response)
        self._linger()


class _CycleTransport(asyncio.Transport):
    """The transport as one request's uvicorn cycle sees it: when the cycle closes it after a
    complete response whose request body is still arriving, the connection lingers instead."""

    def __init__(self, protocol: LimitedHttpProtocol, cycle: Any):
        super().__init__()
        self._protocol = protocol
        self._cycle = cycle

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._protocol.transport.get_extra_info(name, default)

    def close(self) -> None:
        if self._cycle.response_complete and self._cycle.more_body:
            self._protocol._linger()
        else:
            self._protocol.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits``."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


def _health_only(app: Any) -> Any:
    """An ASGI app that serves only the health check; anything else gets 503 and a close."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in HEALTH_PATHS:
            await app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"connection", b"close"), (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": b"too many connections\n"})

    return guarded


def raise_file_limit() -> int:
    """Raise this process's soft descriptor limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def check_file_limit(limits: ConnectionLimits, soft: int) -> None:
    """Warn when the connection cap leaves too few descriptors for everything else."""
    needed = limits.max_connections + HEALTH_RESERVE + SPARE_FILES
    if soft != resource.RLIM_INFINITY and needed > soft:
        log.warning("RINGFLOW_MAX_CONNECTIONS=%d is close to the open-file limit (%d): at the cap "
                    "the process may run out of descriptors", limits.max_connections, soft)
