"""Opening a stream's WebSocket: the URL endpoint asked first if there is one, the address guard,
the 10 s handshake limit and one retry.

Errors::

    RingflowError
    └── StreamFailed        no socket: the endpoint, the address guard or the handshake failed

The host is resolved here and every address it resolves to must be public (unless private URLs
are allowed); the socket then connects to exactly an address that was checked, as the HTTP
client does, so a DNS answer that changes between check and connect cannot reach inside.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State
from websockets.typing import Data

try:  # websockets' C masking, as its own frames use when it is built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

from ringflow import __version__
from ringflow.errors import InvalidRequest, RingflowError
from ringflow.streams.target import StreamTarget, is_endpoint, parse_target
from ringflow.webhooks.http import OutboundHttp, PrivateAddress, checked_addresses

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0
ATTEMPTS = 2  # the handshake, and one retry
RETRY_PAUSE = 0.5
MAX_MESSAGE = 1 << 20  # a bot's audio message: Exotel allows 100 KB; we take up to 1 MiB
ENDPOINT_TIMEOUT = 5.0
USER_AGENT = f"ringflow/{__version__}"

Resolver = Callable[[str, int], Awaitable[list[str]]]


class StreamFailed(RingflowError):
    """The stream could not be opened; the message is the short reason for the timeline."""


class BotConnection(ClientConnection):
    """A client connection that can hand each whole text message over as soon as it is read.

    websockets queues every message for ``recv`` and wakes the reading task for it; a stream
    takes ten a second, and handling them where they are read saves that round trip. Only
    single-frame text messages go this way, and only while nothing waits in ``recv``'s queue
    (binary, fragmented or non-UTF-8 messages, or any that came before ``hand_over``): until
    those have been read, later ones queue behind them, so nothing overtakes.

    Once messages are handed over, frames are also cut out of the byte stream here
    (``data_received``): a whole single-frame text message, the usual frame, goes over without
    websockets' frame parser, and every other frame goes to websockets whole, so its parser
    always starts on a frame. Anything unusual (a fragment, a masked frame or reserved bits from
    the server, a frame over the size limit) stops the cutting: from there on websockets parses
    everything, and judges it, as before.
    """

    _on_text: Callable[[str], None] | None = None
    _direct = False  # hand messages over now
    _queued = 0  # whole messages waiting for recv
    _masks = b""  # random masking keys, fetched a few hundred at a time
    _mask_at = 0
    _cutting = False  # frames are cut out of the stream here
    _partial: bytearray  # the start of a frame not yet whole, while cutting

    def write_text(self, data: bytes, backlog: int) -> bool:
        """Write one text message (its UTF-8 bytes) to the socket now, as websockets' ``send``
        would frame it; False (nothing written) when the connection is not open, websockets is
        in the middle of a send, or ``backlog`` bytes already wait in the socket: then
        ``send`` it."""
        transport = self.transport
        if (
            self.protocol.state is not State.OPEN
            or self.send_in_progress is not None
            or self.protocol.expect_continuation_frame
            or transport.is_closing()
            or transport.get_write_buffer_size() >= backlog
        ):
            return False
        # A client masks every frame with a fresh unpredictable key (RFC 6455 5.3); taken from
        # the OS in bulk, since one getrandom per message is a system call ten times a second
        # per stream.
        at = self._mask_at
        if at >= len(self._masks):
            self._masks, at = os.urandom(_MASKS), 0
        mask = self._masks[at : at + 4]
        self._mask_at = at + 4
        size = len(data)
        if size < 126:
            head = _HEAD.pack(0x81, 0x80 | size)
        elif size < 65536:
            head = _HEAD_16.pack(0x81, 0x80 | 126, size)
        else:
            head = _HEAD_64.pack(0x81, 0x80 | 127, size)
        transport.write(head + mask + apply_mask(data, mask))
        return True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is open (asyncio calls this)."""
        self._partial = bytearray()
        super().connection_made(transport)

    def hand_over(self, on_text: Callable[[str], None] | None) -> None:
        """Give whole text messages to ``on_text`` as they are read (after those already
        queued have been read with ``recv``); None puts every message back on ``recv``.
        ``on_text`` runs inside the socket's reading and must not raise."""
        self._on_text = on_text
        self._direct = on_text is not None and not self._queued
        if on_text is not None and not self._cutting:
            self._cutting = self._at_frame_start()

    def data_received(self, data: bytes) -> None:
        """Cut whole frames out of what the socket read: text messages go straight to
        ``on_text`` while they may, every other frame goes to websockets whole."""
        size = len(data)
        if (
            size > 4
            and data[0] == _TEXT
            and data[1] == 126  # a 16-bit length: a bot's 100 ms of audio at any rate
            and (data[2] << 8 | data[3]) == size - 4
            and self._direct
            and self._cutting
            and not self._partial
        ):
            # The usual read: exactly one whole text message, nothing before or after it.
            try:
                text = data[4:].decode()
            except UnicodeDecodeError:
                pass  # websockets judges it, below
            else:
                assert self._on_text is not None
                self._on_text(text)
                return
        if not self._cutting:
            super().data_received(data)
            if self._on_text is not None:
                self._cutting = self._at_frame_start()
            return
        partial = self._partial
        source: bytes | bytearray = data
        if partial:  # a frame's start waits: the read joins it (amortized, however it trickles)
            partial += data
            source = partial
        at, end = 0, len(source)
        usual = True  # only frames cut here so far
        with memoryview(source) as view:
            while usual and end - at >= 2:
                first, size = source[at], source[at + 1]
                head = 2
                if size == 126:
                    if end - at < 4:
                        break
                    size, head = source[at + 2] << 8 | source[at + 3], 4
                elif size == 127:
                    if end - at < 10:
                        break
                    size, head = _LENGTH_64.unpack_from(source, at + 2)[0], 10
                elif size > 127:  # masked: a server must not (websockets says so and closes)
                    first = 0
                if first not in _WHOLE or size > MAX_MESSAGE:
                    usual = False
                    break
                stop = at + head + size
                if stop > end:
                    break
                if first == _TEXT and self._direct:
                    try:
                        text = str(view[at + head : stop], "utf-8")
                    except UnicodeDecodeError:  # websockets closes the connection for it
                        super().data_received(bytes(view[at:stop]))
                    else:
                        assert self._on_text is not None
                        self._on_text(text)
                else:
                    super().data_received(bytes(view[at:stop]))
                    # Closing: websockets takes (and discards) whatever follows.
                    usual = self.protocol.state is State.OPEN
                at = stop
        if source is partial:
            del partial[:at]
        elif at < end:
            partial += source[at:]
        if not usual:
            self._stop_cutting()

    def _stop_cutting(self) -> None:
        """From here on websockets parses everything, starting with what waits here."""
        self._cutting = False
        rest = bytes(self._partial)
        self._partial.clear()
        if rest:
            super().data_received(rest)

    def _at_frame_start(self) -> bool:
        """Whether websockets' parser waits for the first byte of a frame, nothing buffered.

        Read from websockets' own state (its parser is a chain of generators, the innermost
        waiting in the reader's ``at_eof`` between frames); if that ever reads differently,
        frames are not cut here and websockets parses them all."""
        protocol = self.protocol
        if (
            protocol.state is not State.OPEN
            or protocol.reader.buffer
            or protocol.current_size is not None
        ):
            return False
        waiting = protocol.parser  # the innermost generator it waits in
        while (inner := getattr(waiting, "gi_yieldfrom", None)) is not None:
            waiting = inner
        return getattr(getattr(waiting, "gi_code", None), "co_name", "") == "at_eof"

    def process_event(self, event: Event) -> None:
        """Hand a whole text message over when it may be; anything else to websockets."""
        if isinstance(event, Frame) and event.opcode in _DATA:
            if self._direct and event.opcode is Opcode.TEXT and event.fin:
                try:
                    text = str(event.data, "utf-8")
                except UnicodeDecodeError:
                    pass
                else:
                    assert self._on_text is not None
                    self._on_text(text)
                    return
            self._direct = False
            if event.fin:
                self._queued += 1
        super().process_event(event)

    async def recv(self, decode: bool | None = None) -> Data:  # type: ignore[override]
        """The next message that was not handed over (websockets' ``recv``)."""
        message = await super().recv(decode)
        self._queued -= 1
        if not self._queued and self._on_text is not None:
            self._direct = True
        return message


_DATA = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.CONT))
_TEXT = 0x81  # FIN and text, no reserved bits: a whole text message in one frame
# First bytes of the frames cut out whole: a single-frame text or binary message, close, ping
# and pong. Fragments and reserved bits are left to websockets.
_WHOLE = frozenset((_TEXT, 0x82, 0x88, 0x89, 0x8A))
_LENGTH_64 = struct.Struct("!Q")
_MASKS = 4 * 256
_HEAD = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


async def _getaddrinfo(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_target(
    url: str, *, http: OutboundHttp | None, params: Mapping[str, str], allow_private: bool
) -> StreamTarget:
    """The WebSocket to open: ``url`` itself, or what its http(s) endpoint answers."""
    if not is_endpoint(url):
        return parse_target(url, allow_private=allow_private)
    if http is None:
        raise StreamFailed("the stream URL is an http endpoint, and no HTTP client is wired")
    try:
        answer = await http.get(url, params=params, timeout=ENDPOINT_TIMEOUT, field="StreamUrl")
    except RingflowError as exc:
        raise StreamFailed(f"stream URL endpoint failed: {exc}") from exc
    if not answer.ok:
        raise StreamFailed(f"stream URL endpoint answered {answer.status_code}")
    try:
        found = json.loads(answer.body)
    except ValueError:
        found = None
    ws_url = found.get("url") if isinstance(found, dict) else None
    if not isinstance(ws_url, str):
        raise StreamFailed('stream URL endpoint did not answer {"url": "wss://..."}')
    try:
        return parse_target(ws_url, allow_private=allow_private, field="the endpoint's url")
    except InvalidRequest as exc:
        raise StreamFailed(str(exc)) from exc


async def open_socket(
    target: StreamTarget,
    *,
    allow_private: bool,
    resolver: Resolver = _getaddrinfo,
    handshake_seconds: float = HANDSHAKE_SECONDS,
    attempts: int = ATTEMPTS,
) -> BotConnection:
    """Connect and complete the handshake, retrying once; StreamFailed says why not."""
    reason = ""
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(RETRY_PAUSE)
        try:
            return await _connect(target, allow_private, resolver, handshake_seconds)
        except PrivateAddress as exc:
            raise StreamFailed(
                f"the stream URL points to a private address ({exc.address}); "
                "set RINGFLOW_ALLOW_PRIVATE_URLS=1 to allow it"
            ) from None
        except TimeoutError:
            reason = f"no handshake within {handshake_seconds:g}s"
        except websockets.InvalidStatus as exc:
            reason = f"the bot refused the handshake with HTTP {exc.response.status_code}"
        except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            reason = f"cannot connect: {exc or type(exc).__name__}"
        log.info("stream to %s: attempt %d failed: %s", target.shown, attempt + 1, reason)
    raise StreamFailed(f"{reason} (after {attempts} attempts)")


async def _connect(
    target: StreamTarget, allow_private: bool, resolver: Resolver, handshake_seconds: float
) -> BotConnection:
    parts = urlsplit(target.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "wss" else 80)
    async with asyncio.timeout(handshake_seconds):
        addresses = await checked_addresses(resolver, host, port, allow_private=allow_private)
        error: OSError | None = None
        for address in addresses:
            try:
                # websockets sends the URL's credentials as Basic auth; the request line has
                # only the path and query.
                connection = await websockets.connect(
                    target.url,
                    host=address,
                    port=port,
                    proxy=None,
                    open_timeout=None,  # bounded by the timeout around the whole attempt
                    max_size=MAX_MESSAGE,
                    max_queue=64,
                    compression=None,
                    user_agent_header=USER_AGENT,
                    create_connection=BotConnection,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                )
            except OSError as exc:
                error = exc
            else:
                assert isinstance(connection, BotConnection)  # create_connection says so
                return connection
        assert error is not None
        raise error
