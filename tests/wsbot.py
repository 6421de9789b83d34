"""A scriptable voice bot for tests: the WebSocket server side of Exotel's AgentStream protocol.

ringflow is the WebSocket client; this bot is what it connects to. It records everything ringflow
sends, per connection (the request target and headers of the handshake, each message with its
arrival time on ``time.monotonic()``, binary frames, the close code), and a test scripts its
answers with a handler coroutine::

    async def greet(conn: BotConnection) -> None:
        start = await conn.wait_for(event="start", timeout=5)
        await conn.send_media(pcm_tone(440, 1.0, conn.sample_rate))
        await conn.send_mark("greeting-done")

    async with WsBot(greet, params={"lang": "en"}) as bot:
        ...  # place a call with StreamUrl=bot.url
        await bot.wait_for(event="stop", timeout=10)
        assert bot.events()[:2] == ["connected", "start"]

The handshake can be scripted per attempt (``handshakes=["stall", "accept"]``: the first attempt
never gets an HTTP answer, the second is accepted), to test the 10 s handshake limit and its one
retry; ``bot.attempts`` counts every attempt, answered or not.

``url_endpoint(ws_url)`` serves the http(s) form of a stream URL: it answers ``{"url": ws_url}``
to every GET and records the query (the call's Passthru parameters).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from tests.support import serve as serve_asgi

Handler = Callable[["BotConnection"], Awaitable[None]]
# One entry per handshake attempt: "accept", "stall" (never answer the HTTP upgrade until the bot
# stops), ("stall", seconds) (answer 503 after that long), or an HTTP status to refuse with.
Handshake = str | int | tuple[str, float]

SAMPLE_WIDTH = 2


@dataclasses.dataclass(frozen=True)
class Received:
    """One WebSocket message the bot received."""

    at: float  # time.monotonic() on arrival
    raw: str | bytes
    data: dict[str, Any] | None  # the parsed JSON object; None for binary or malformed frames

    @property
    def event(self) -> str | None:
        """The message's ``event`` field, if it is a JSON object with one."""
        return None if self.data is None else self.data.get("event")


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One opening handshake the bot saw, whatever it answered."""

    at: float
    target: str  # the request line's path and query: credentials must never appear here
    headers: dict[str, str]  # lower-cased names
    answer: str  # "accept", "stall" or "refuse <status>"


class BotConnection:
    """One accepted WebSocket connection: what came in, and how to answer."""

    def __init__(self, ws: ServerConnection, notify: asyncio.Event | None = None):
        request = ws.request
        assert request is not None
        self.ws = ws
        self.opened_at = time.monotonic()
        self.target = request.path
        split = urlsplit(request.path)
        self.path = split.path
        self.query = dict(parse_qsl(split.query, keep_blank_values=True))
        self.headers = _lower(request.headers)
        self.messages: list[Received] = []
        self.close_code: int | None = None  # as received from ringflow (1006: no close frame)
        self.close_reason: str | None = None
        self.closed_at: float | None = None
        self.closed_by_bot = False
        self._changed = asyncio.Event()
        self._notify = notify  # the bot's own signal, so bot-wide waiters wake too

    # What came in.

    def events(self) -> list[str | None]:
        """The ``event`` of every message, in order (None for frames that are not JSON objects)."""
        return [m.event for m in self.messages]

    def of(self, event: str) -> list[dict[str, Any]]:
        """Every JSON message of this ``event``, in order."""
        return [m.data for m in self.messages if m.data is not None and m.event == event]

    def binary(self) -> list[bytes]:
        """Binary frames received (the protocol has none; ringflow must not send them)."""
        return [m.raw for m in self.messages if isinstance(m.raw, bytes)]

    def media_pcm(self) -> bytes:
        """The caller's audio: every ``media`` payload received, decoded and concatenated."""
        payloads = (m["media"]["payload"] for m in self.of("media"))
        return b"".join(base64.b64decode(p, validate=True) for p in payloads)

    @property
    def start(self) -> dict[str, Any]:
        """The ``start`` message's ``start`` object (KeyError-free: {} before it came)."""
        found = self.of("start")
        return found[0].get("start", {}) if found else {}

    @property
    def stream_sid(self) -> str | None:
        """The stream SID announced in ``start``."""
        return self.start.get("stream_sid")

    @property
    def sample_rate(self) -> int:
        """The PCM rate announced in ``start`` (8000 until it came)."""
        return int(self.start.get("media_format", {}).get("sample_rate", 8000))

    def basic_auth(self) -> tuple[str, str] | None:
        """The ``Authorization: Basic`` credentials of the handshake, decoded, if any."""
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(token).decode("utf-8").partition(":")
        return user, password

    @property
    def closed(self) -> bool:
        """Whether the connection is over."""
        return self.closed_at is not None

    async def wait_for(
        self,
        event: str | None = None,
        *,
        timeout: float,
        count: int = 1,
        where: Callable[[Received], bool] | None = None,
    ) -> Received:
        """The ``count``-th message of ``event`` matching ``where``, waiting up to ``timeout``."""
        return await _wait(lambda: self.messages, self._changed, event, count, where, timeout)

    async def wait_closed(self, timeout: float) -> None:
        """Wait until the connection is over."""
        async with asyncio.timeout(timeout):
            while not self.closed:
                await _changed(self._changed)

    # Answers (bidirectional streams).

    async def send_json(self, message: dict[str, Any]) -> None:
        """Send one JSON text frame."""
        await self.ws.send(json.dumps(message))

    async def send_media(self, pcm: bytes, *, chunk: int | None = None, sid: bool = True) -> None:
        """Send PCM16 as ``media`` messages, in pieces of ``chunk`` bytes (one message if None)."""
        step = chunk or max(len(pcm), 1)
        for offset in range(0, len(pcm), step):
            payload = base64.b64encode(pcm[offset : offset + step]).decode("ascii")
            message = {"event": "media", "media": {"payload": payload}}
            await self.send_json(self._with_sid(message, sid))

    async def send_mark(self, name: str, *, sid: bool = True) -> None:
        """Send a ``mark``: ringflow echoes it once the audio sent before it has played."""
        await self.send_json(self._with_sid({"event": "mark", "mark": {"name": name}}, sid))

    async def send_clear(self, *, sid: bool = True) -> None:
        """Send ``clear`` (barge-in): ringflow drops queued audio and returns its marks."""
        await self.send_json(self._with_sid({"event": "clear"}, sid))

    async def send_raw(self, frame: str | bytes) -> None:
        """Send a frame as is: malformed JSON, a binary frame, an unknown event."""
        await self.ws.send(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket from the bot's side (a voicebot applet then exits by ``next``)."""
        self.closed_by_bot = True
        await self.ws.close(code, reason)

    def _with_sid(self, message: dict[str, Any], sid: bool) -> dict[str, Any]:
        if sid and self.stream_sid is not None:
            message["stream_sid"] = self.stream_sid
        return message

    # Recording, driven by the server.

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                data: dict[str, Any] | None = None
                if isinstance(frame, str):
                    with contextlib.suppress(ValueError):
                        parsed = json.loads(frame)
                        data = parsed if isinstance(parsed, dict) else None
                self.messages.append(Received(time.monotonic(), frame, data))
                self._signal()
        except ConnectionClosed:
            pass
        finally:
            # A close that the bot started also passes through here once the handshake ends.
            await self.ws.wait_closed()
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self.closed_at = time.monotonic()
            self._signal()

    def _signal(self) -> None:
        self._changed.set()
        if self._notify is not None:
            self._notify.set()


class WsBot:
    """A WebSocket server on a free loopback port recording each connection (async with)."""

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        path: str = "/",
        params: dict[str, str] | None = None,
        sample_rate: int | None = None,
        handshakes: Iterable[Handshake] = (),
        ping_interval: float | None = None,
        receive_buffer: int | None = None,
    ):
        self.handler = handler
        self.path = path
        self.params = dict(params or {})
        if sample_rate is not None:
            self.params["sample-rate"] = str(sample_rate)
        self.handshakes: list[Handshake] = list(handshakes)  # then "accept" for every attempt
        self.ping_interval = ping_interval
        # SO_RCVBUF of every connection (set on the listening socket, which they inherit it
        # from): a small one keeps loopback from taking megabytes a bot does not read.
        self.receive_buffer = receive_buffer
        self.attempts: list[Attempt] = []
        self.connections: list[BotConnection] = []
        self.handler_errors: list[BaseException] = []
        self.port = 0
        self._server: Server | None = None
        self._release = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        """ws://127.0.0.1:PORT/path, with the custom and ``sample-rate`` query parameters."""
        return self.url_with()

    def url_with(
        self,
        path: str | None = None,
        params: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> str:
        """This bot's URL with another path or query, or with ``KEY:TOKEN@`` credentials."""
        query = urlencode(self.params if params is None else params)
        userinfo = f"{auth[0]}:{auth[1]}@" if auth else ""
        return f"ws://{userinfo}127.0.0.1:{self.port}{path or self.path}" + (
            f"?{query}" if query else ""
        )

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            0,
            process_request=self._handshake,
            ping_interval=self.ping_interval,
            open_timeout=None,  # a stalled handshake is the test's to time out, not the bot's
        )
        listening = next(iter(self._server.sockets))
        if self.receive_buffer is not None:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        self.port = listening.getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 10)

    # What came in, over every connection in order.

    @property
    def last(self) -> BotConnection:
        """The latest accepted connection."""
        if not self.connections:
            raise AssertionError(f"no connection accepted ({len(self.attempts)} attempts)")
        return self.connections[-1]

    def messages(self) -> list[Received]:
        """Every message received, over all connections."""
        return [m for c in self.connections for m in c.messages]

    def events(self) -> list[str | None]:
        """The ``event`` of every message received, over all connections."""
        return [m.event for m in self.messages()]

    def media_pcm(self) -> bytes:
        """All caller audio received, decoded and concatenated, over all connections."""
        return b"".join(c.media_pcm() for c in self.connections)

    async def wait_connection(self, timeout: float, count: int = 1) -> BotConnection:
        """The ``count``-th accepted connection, waiting up to ``timeout``."""
        async with asyncio.timeout(timeout):
            while len(self.connections) < count:
                await _changed(self._changed)
        return self.connections[count - 1]

    async def wait_attempts(self, count: int, timeout: float) -> None:
        """Wait until ``count`` handshakes were attempted."""
        async with asyncio.timeout(timeout):
            while len(self.attempts) < count:
                await _changed(self._changed)

    async def wait_for(
        self,
        event: str | None = None,
        *,
        timeout: float,
        count: int = 1,
        where: Callable[[Received], bool] | None = None,
    ) -> Received:
        """The ``count``-th message of ``event`` on any connection, waiting up to ``timeout``."""
        return await _wait(self.messages, self._changed, event, count, where, timeout)

    async def wait_closed(self, timeout: float) -> BotConnection:
        """Wait until the latest connection (or the first to come) is over; returns it."""
        async with asyncio.timeout(timeout):
            conn = await self.wait_connection(timeout)
            await conn.wait_closed(timeout)
        return self.last

    # Server internals.

    async def _handshake(self, ws: ServerConnection, request: WsRequest) -> WsResponse | None:
        answer = self.handshakes.pop(0) if self.handshakes else "accept"
        if isinstance(answer, int):
            label = f"refuse {answer}"
        else:
            label = "accept" if answer == "accept" else "stall"
        self.attempts.append(
            Attempt(time.monotonic(), request.path, _lower(request.headers), label)
        )
        self._changed.set()
        if answer == "accept":
            return None
        if isinstance(answer, int):
            return ws.respond(HTTPStatus(answer), f"refused by the test bot ({answer})\n")
        seconds = answer[1] if isinstance(answer, tuple) else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)
        return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "stalled by the test bot\n")

    async def _serve(self, ws: ServerConnection) -> None:
        conn = BotConnection(ws, self._changed)
        self.connections.append(conn)
        self._changed.set()
        reader = asyncio.create_task(conn._read())
        try:
            if self.handler is not None:
                await self.handler(conn)
        except ConnectionClosed:
            pass  # the handler was sending when ringflow closed: the recording says so
        # The handler is the test's own code, so any failure is possible; kept in handler_errors
        # for the test to re-raise, since raising here would only end this connection.
        except Exception as exc:  # noqa: BLE001 - re-raised by the test, see handler_errors
            self.handler_errors.append(exc)
            await ws.close(1011, f"test bot handler failed: {exc!r}"[:120])
        await reader


async def _changed(event: asyncio.Event) -> None:
    """Wait for the next change signalled on ``event``."""
    await event.wait()
    event.clear()


async def _wait(
    messages: Callable[[], list[Received]],
    signal: asyncio.Event,
    event: str | None,
    count: int,
    where: Callable[[Received], bool] | None,
    timeout: float,
) -> Received:
    def found() -> Received | None:
        hits = [
            m
            for m in messages()
            if (event is None or m.event == event) and (where is None or where(m))
        ]
        return hits[count - 1] if len(hits) >= count else None

    try:
        async with asyncio.timeout(timeout):
            while (hit := found()) is None:
                await _changed(signal)
    except TimeoutError:
        seen = [m.event for m in messages()]
        raise AssertionError(
            f"no {event or 'message'} #{count} within {timeout:g} s; received events {seen}"
        ) from None
    return hit


def _lower(headers: Headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.raw_items()}


# Audio helpers.


def pcm_tone(freq: float, seconds: float, rate: int = 8000, amplitude: float = 0.3) -> bytes:
    """A sine tone as PCM16 little-endian mono."""
    n = int(seconds * rate)
    peak = amplitude * 32767
    return b"".join(
        int(peak * math.sin(2 * math.pi * freq * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )


def pcm_silence(seconds: float, rate: int = 8000) -> bytes:
    """Silence as PCM16."""
    return bytes(int(seconds * rate) * SAMPLE_WIDTH)


def decode_payload(payload: str) -> bytes:
    """A media payload as PCM bytes; AssertionError if it is not base64 of whole 16-bit samples."""
    try:
        pcm = base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise AssertionError(f"media payload is not base64: {payload[:40]!r}") from exc
    assert len(pcm) % SAMPLE_WIDTH == 0, f"odd-length PCM payload ({len(pcm)} bytes)"
    return pcm


def tone_power(pcm: bytes, freq: float, rate: int) -> float:
    """Goertzel: the share of the signal's energy at ``freq`` (0..1; a pure tone gives ~1)."""
    samples = [
        int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm) - 1, 2)
    ]
    if not samples:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    energy = sum(x * x for x in samples)
    return 0.0 if energy == 0 else min(1.0, 2 * power / (len(samples) * energy))


# The http(s) form of a stream URL.


@dataclasses.dataclass(frozen=True)
class UrlRequest:
    """One request to the URL endpoint."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class UrlEndpoint:
    """Answers every GET with ``{"url": ws_url}``, or with ``answer`` (status, type, body)."""

    def __init__(self, ws_url: str):
        self.ws_url = ws_url
        self.answer: tuple[int, str, str] | None = None
        self.seen: list[UrlRequest] = []
        self.url = ""
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])

    async def _handle(self, request: Request) -> Response:
        self.seen.append(
            UrlRequest(
                request.method,
                request.url.path,
                dict(request.query_params),
                dict(request.headers),
            )
        )
        if self.answer is not None:
            status, ctype, body = self.answer
            return PlainTextResponse(body, status_code=status, media_type=ctype)
        return JSONResponse({"url": self.ws_url})


@contextlib.asynccontextmanager
async def url_endpoint(ws_url: str, path: str = "/bot") -> AsyncIterator[UrlEndpoint]:
    """A running UrlEndpoint; ``.url`` is http://127.0.0.1:PORT + ``path``."""
    endpoint = UrlEndpoint(ws_url)
    async with serve_asgi(endpoint.app, lifespan="off") as base:
        endpoint.url = base + path
        yield endpoint
