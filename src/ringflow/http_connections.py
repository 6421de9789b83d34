"""HTTP connections with bounds: how long a request head and body may take, how large a head and
a chunked body's trailers may grow, how many connections a process holds, how long an idle
keep-alive connection stays open.

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
  (``MAX_HEAD_BYTES``, 431), since httptools buffers a header line without limit. Every read that
  carries head bytes is counted, so the cap holds to within the one read that crosses it.
- trailers (header fields after a chunked body, which llhttp reports like headers) are dropped:
  Starlette never reads them, and the request's headers are the app's by then. They are counted
  all the same, since httptools buffers an unfinished line, and refused past ``MAX_TRAILER_BYTES``
  (431).
- a body deadline (``RINGFLOW_HTTP_BODY_TIMEOUT``) in reading time: its clock runs while the
  server reads the body for the app, from the end of the head (from the app's first read when the
  client waits for ``100 Continue``) to the end of the body, and stops while the app holds the
  body back: uvicorn's flow control pauses reading while the app does not read (it waits for an
  upload slot, or a pipelined request waits its turn). A client is charged for its own time only.
  The deadline is a total, not an idle timeout re-armed per chunk: that would let a client that
  sends a byte every few seconds hold its connection as long as its declared length lasts. So
  every body takes at most that many seconds of the client's time, and raising the setting is
  the one knob for large uploads over slow links.
- a connection cap (``RINGFLOW_MAX_CONNECTIONS``, per process). At the cap a new connection
  displaces the connection that has held its place longest without its client doing its part:
  one lingering after a refusal, one waiting for a request head (a slow client, or an idle
  keep-alive one), or one whose body arrives slower than ``MIN_BODY_RATE`` on average once
  ``BODY_GRACE`` of its reading time has passed. A minimum rate rather than "no byte for a few
  seconds", because a byte a second is progress too: 1,000 clients dribbling bodies would hold
  every connection for a whole body deadline per wave. A body the app holds back is the server's
  wait and is never displaced. So slow clients cannot lock out quick ones. When every connection
  is busy with a request that keeps up, up to ``HEALTH_RESERVE`` more are accepted for the health
  check only (others get 503), so a full server still answers ``/healthz`` at once; a place in
  that reserve only ever goes to another of its kind, never to a slow client.

A refusal (408, 431) ends the running request for its app as a disconnect would: it reads
``http.disconnect`` and what it still sends is dropped, so its answer never follows the refusal.

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

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; ours are a few hundred bytes
MAX_TRAILER_BYTES = 8 * 1024  # after a chunked body; a checksum or two, when a client sends any
MIN_BODY_RATE = 4 * 1024  # bytes a second a body must keep up, on average, not to be displaced
BODY_GRACE = 2.0  # seconds of reading time before a body is held to MIN_BODY_RATE
HEALTH_RESERVE = 16  # connections beyond the cap, for the health check only
HEALTH_PATHS = frozenset({"/healthz"})
LINGER = 2.0  # seconds a refused upload is read and dropped before its connection closes
SPARE_FILES = 256  # descriptors left for the database, log files, SIP and RTP sockets


def _refusal(status: bytes, text: bytes) -> bytes:
    """A whole response that refuses a request and says the connection ends."""
    return (
        b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(text), text)
    )


_TIMEOUT_408 = _refusal(b"408 Request Timeout", b"request timeout\n")
_TOO_LARGE_431 = _refusal(
    b"431 Request Header Fields Too Large", b"request header fields too large\n"
)  # the head's, or trailers


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """The bounds every HTTP connection of one process keeps."""

    max_connections: int = 1000
    head_timeout: float = 10.0
    body_timeout: float = 30.0


@dataclasses.dataclass
class BodyClock:
    """The reading time of one request body: it runs while the server reads the body for the app
    and stops while the app holds the body back. Loop times are passed in."""

    spent: float = 0.0  # reading time of the runs before the current one
    running_since: float | None = None  # None while stopped
    received: int = 0  # body bytes so far

    def run(self, now: float) -> None:
        if self.running_since is None:
            self.running_since = now

    def stop(self, now: float) -> None:
        if self.running_since is not None:
            self.spent += now - self.running_since
            self.running_since = None

    def elapsed(self, now: float) -> float:
        """Reading time so far."""
        running = 0.0 if self.running_since is None else now - self.running_since
        return self.spent + running

    def behind_since(self, now: float) -> float | None:
        """When the body fell behind ``MIN_BODY_RATE`` (after ``BODY_GRACE``); None if it keeps
        up, or while its clock is stopped (the wait is the server's)."""
        if self.running_since is None:
            return None
        owed = self.elapsed(now) - BODY_GRACE - self.received / MIN_BODY_RATE
        return now - owed if owed > 0 else None


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body deadlines and a connection cap."""

    limits = ConnectionLimits()  # replaced per server by ``protocol_class``

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_head = True  # from the end of one message to the end of the next head
        self._head_bytes = 0
        self._body: BodyClock | None = None  # from the end of a head to the end of its body
        self._trailer_bytes = 0  # what reads brought since the body's last byte
        self._lingering = False
        # What the read being parsed brought: body bytes, a message's end, a message's start.
        self._read_body = 0
        self._read_completed = False
        self._read_begun = False
        # Loop time since which this connection waits for a request head; None while a request
        # is in progress.
        self.waiting_since: float | None = None
        self.reserved = False  # one of the HEALTH_RESERVE places beyond the cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self.flow = _FlowControl(self.transport, self)
        self.waiting_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._take_place():
            self.transport.abort()
            return
        self._arm(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a refused upload: not even parsed
        heading = self._reading_head
        if heading and self._deadline is None:  # the first byte of a keep-alive's next request
            self._arm(self.limits.head_timeout)
        self._read_body, self._read_completed, self._read_begun = 0, False, False
        super().data_received(data)
        if self._lingering or self.transport.is_closing():
            return
        if self._reading_head:
            if not self._read_completed:  # the whole read was head
                self._head_bytes += len(data)
            elif self._read_begun:
                # A head began after an earlier message ended in this read: what was not body
                # counts, so earlier pipelined heads and chunk framing make the cap stricter.
                self._head_bytes += len(data) - self._read_body
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(_TOO_LARGE_431)
        elif self._body is not None and not heading and not self._read_body:
            # A body in progress and a read without a body byte: chunk framing or trailers.
            self._trailer_bytes += len(data)
            if self._trailer_bytes > MAX_TRAILER_BYTES:
                self._refuse(_TOO_LARGE_431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._read_begun = True
        if self._deadline is None:  # a pipelined request's head begins within a read
            self._arm(self.limits.head_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._reading_head:  # not a trailer: those are counted in data_received and dropped
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self.waiting_since = None
        self._disarm()
        self._body = BodyClock()
        self._trailer_bytes = 0
        super().on_headers_complete()  # a pipelined request pauses reading until its turn
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _CycleTransport):
            cycle.transport = _CycleTransport(self, cycle)
            cycle.on_response = functools.partial(self._responded, cycle)
        self._run_body_clock()

    def on_body(self, body: bytes) -> None:
        self._read_body += len(body)
        self._trailer_bytes = 0
        if self._body is not None:
            self._body.received += len(body)
        super().on_body(body)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        self._body = None
        self._reading_head = False
        super().handle_websocket_upgrade()

    def on_message_complete(self) -> None:
        self._disarm()
        self._body = None
        self._reading_head = True  # the next head, from its first byte on
        self._head_bytes = 0
        self._read_completed, self._read_begun = True, False
        super().on_message_complete()

    def _run_body_clock(self) -> None:
        """Run the body's clock, and its deadline, unless the app holds the body back."""
        body, cycle = self._body, self.cycle
        if (
            body is None
            or body.running_since is not None
            or self.flow.read_paused
            or cycle is None
            or cycle.waiting_for_100_continue
        ):
            return
        now = self.loop.time()
        body.run(now)
        self._arm(self.limits.body_timeout - body.elapsed(now))

    def _stop_body_clock(self) -> None:
        if self._body is not None and self._body.running_since is not None:
            self._body.stop(self.loop.time())
            self._disarm()

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
        self._body = None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER)

    def displaceable_since(self, now: float) -> float | None:
        """Since when this connection has held its place without its client doing its part;
        None while it may not be displaced. A lingering one goes first."""
        if self._lingering:
            return 0.0
        if self._body is not None:
            return self._body.behind_since(now)
        return self.waiting_since

    def _take_place(self) -> bool:
        """At the cap: take the place of a connection that may be displaced, else one of the
        health check's (a place of the reserve only ever goes to another health-check one, so
        the reserve stays free of slow clients); False if every place is taken."""
        others = [
            conn
            for conn in self.connections
            if conn is not self
            and isinstance(conn, LimitedHttpProtocol)
            # An aborted connection stays in ``connections`` until its connection_lost.
            and not conn.transport.is_closing()
        ]
        regular = [conn for conn in others if not conn.reserved]
        if len(regular) < self.limits.max_connections or self._displace(regular):
            return True
        reserve = [conn for conn in others if conn.reserved]
        if len(reserve) < HEALTH_RESERVE or self._displace(reserve):
            self.reserved = True
            self.app = _health_only(self.app)
            return True
        return False

    def _displace(self, connections: list[LimitedHttpProtocol]) -> bool:
        """Close the connection displaceable longest (``displaceable_since``); False if none."""
        now = self.loop.time()
        oldest, oldest_since = None, now
        for conn in connections:
            since = conn.displaceable_since(now)
            if since is not None and since <= oldest_since:
                oldest, oldest_since = conn, since
        if oldest is None:
            return False
        oldest.transport.abort()
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
        self._refuse(_TIMEOUT_408)

    def _refuse(self, response: bytes) -> None:
        """Answer ``response`` and end the connection, lingering: a client still sending (an
        endless header line) would otherwise get a reset instead of the answer.

        The request in progress is over for its app, as if the client had gone (uvicorn's own
        ``disconnected``): it reads ``http.disconnect`` and what it sends is dropped, rather than
        written after our answer and our end of the stream."""
        self._disarm()
        self._body = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
            # A response already on the wire, or one still owed to an earlier request (the one
            # refused is pipelined): no room for ours.
            if cycle.response_started or self._reading_head or self.pipeline:
                self.transport.close()
                return
        self.transport.write(response)
        self._linger()


class _FlowControl(FlowControl):
    """uvicorn's flow control, which also stops a body's clock while reading is paused (the app
    does not read) and runs it again when the app reads."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpProtocol):
        super().__init__(transport)
        self._protocol = protocol

    def pause_reading(self) -> None:
        super().pause_reading()
        self._protocol._stop_body_clock()

    def resume_reading(self) -> None:
        super().resume_reading()  # also called on each of the app's reads (uvicorn's receive)
        self._protocol._run_body_clock()


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
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"connection", b"close"),
                    (b"retry-after", b"1"),
                ],
            }
        )
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
        log.warning(
            "RINGFLOW_MAX_CONNECTIONS=%d is close to the open-file limit (%d): at the cap "
            "the process may run out of descriptors",
            limits.max_connections,
            soft,
        )
