"""One stream: an answered call's audio to a bot over WebSocket, and the bot's audio back.

``Stream.run`` opens the socket (``client.py``), sends ``connected`` and ``start``, and then
carries the call until one side ends it:

- the caller's audio (and, for a unidirectional ``both`` stream, what the caller is sent) comes
  from ``Channel.listen`` 20 ms at a time, is cut into equal 100 ms chunks (``audio.py``,
  converted when the stream's rate is not 8 kHz) and leaves in ``media`` messages, written to
  the socket right after the tick that completed them;
- the bot's audio (bidirectional only) is resampled to 8 kHz and pushed into a ``Playout``
  buffer that the carrier drains one frame per tick (``Channel.play_out``): the bot may burst,
  the caller hears it paced. ``mark`` is queued behind that audio and sent back when it has
  played; ``clear`` empties the buffer at once and sends back the marks it held;
- the caller's keys (``Channel.next_key``: RFC 4733, INFO, in-band or a sandbox phone's keys)
  go to the bot as ``dtmf`` when each is released, with how long it was held.

It ends when the bot closes the socket (``disconnected_by`` ``bot``), the caller hangs up
(``stop`` with ``callended``), ``stop()`` is called or the call is hung up by request (the
flow ended, or the hang-up API: ``stopped``) or the 60-minute limit passes. Frames the bot sends that cannot be used are put
on the call's timeline (the first few) and ignored. The bot's messages are handled where the
socket reads them (``BotConnection.hand_over``). Sending never blocks the media: when the socket
holds a backlog, caller audio waits in a bounded queue, and when a stalled bot lets it fill the
oldest chunks go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from ringflow.clock import Clock
from ringflow.media.playout import Playout
from ringflow.streams.audio import BotAudio, Listener
from ringflow.streams.client import BotConnection, StreamFailed, open_socket
from ringflow.streams.protocol import (
    BotClear,
    BotMark,
    BotMedia,
    Ignored,
    StreamInfo,
    StreamProtocol,
    parse_bot_message,
)
from ringflow.streams.target import StreamTarget
from ringflow.telephony.carrier import Channel

log = logging.getLogger(__name__)

MAX_SECONDS = 3600.0
MAX_OUTGOING = 100  # messages waiting for a slow bot (10 s of caller audio) before dropping
WRITE_BACKLOG = 32 * 1024  # bytes the socket may hold unsent before messages wait in the queue
MAX_LOGGED_PROBLEMS = 10  # unusable bot frames put on the timeline; the rest are counted
MAX_LOGGED_MARKS = 200  # marks put on the timeline; the rest are counted

Record = Callable[[str, dict[str, Any]], Awaitable[None]]


def new_stream_sid() -> str:
    """A stream's id: MZ and 32 hex digits, as Exotel's look."""
    return "MZ" + secrets.token_hex(16)


@dataclasses.dataclass
class StreamOutcome:
    """How a stream went, for the timeline, the Passthru after it and the API."""

    stream_sid: str
    url: str  # without credentials
    status: str = "failed"  # completed or failed
    disconnected_by: str = ""  # bot or user ("" when it never opened)
    detailed_status: str = ""
    duration: float = 0.0
    bytes_to_bot: int = 0  # caller audio sent, at the stream's rate
    bytes_from_bot: int = 0  # bot audio received, at the stream's rate
    marks: int = 0
    clears: int = 0
    dtmf: int = 0
    ignored: int = 0
    recording_url: str = ""  # the voicebot applet's own recording of the stream, if it made one

    def passthru_fields(self) -> dict[str, str]:
        """The ``Stream[...]`` fields of a Passthru after the stream (spec section 4)."""
        return {
            "Stream[StreamSID]": self.stream_sid,
            "Stream[Status]": self.status,
            "Stream[Duration]": str(round(self.duration)),
            "Stream[StreamUrl]": self.url,
            "Stream[DisconnectedBy]": self.disconnected_by,
            "Stream[DetailedStatus]": self.detailed_status,
        } | ({"Stream[RecordingUrl]": self.recording_url} if self.recording_url else {})


class Stream:
    """One stream on one answered channel; ``run`` once, ``stop`` from outside to end it."""

    def __init__(
        self,
        *,
        target: StreamTarget,
        info: StreamInfo,
        channel: Channel,
        clock: Clock,
        record: Record,
        bidirectional: bool = True,
        track: str = "inbound",
        allow_private: bool = False,
        max_seconds: float = MAX_SECONDS,
        connect: Callable[[StreamTarget], Awaitable[BotConnection]] | None = None,
        keep_latencies: int = 0,
        by_request: Callable[[], bool] = lambda: False,
    ):
        self.target = target
        self._by_request = by_request  # the call is ending by a hang-up request (API)
        self.info = info
        self.channel = channel
        self.clock = clock
        self.record = record
        self.bidirectional = bidirectional
        self.track = track
        self.max_seconds = max_seconds
        self._connect = connect or (lambda t: open_socket(t, allow_private=allow_private))
        self.protocol = StreamProtocol(info)
        self.outcome = StreamOutcome(info.stream_sid, target.shown)
        self.playout = Playout(now=clock.now, keep_latencies=keep_latencies)
        self._outgoing: collections.deque[bytes] = collections.deque()  # UTF-8 JSON texts
        self._wake = asyncio.Event()
        self._socket: BotConnection | None = None
        self._flush_due = False
        self._loop: asyncio.AbstractEventLoop  # the running loop, set by run()
        self._steps: set[asyncio.Task[None]] = set()  # timeline writes under way
        self._stopping: asyncio.Future[str] | None = None
        self._stop_asked: str | None = None  # a stop asked for before run() began
        self._dropped = 0
        self._from_bot = BotAudio(target.sample_rate, self.playout)

    def stop(self, reason: str = "stopped") -> None:
        """End the stream (``stop`` with ``reason`` goes to the bot); also before it opened."""
        if self._stopping is None:
            self._stop_asked = self._stop_asked or reason
        elif not self._stopping.done():
            self._stopping.set_result(reason)

    async def run(self) -> StreamOutcome:
        """Open the stream and carry it to its end; never raises for the bot's faults."""
        # Kept: asyncio.get_running_loop() costs a getpid() system call when its cache misses,
        # which it does on nearly every one of the ten sends a second of each stream.
        self._loop = asyncio.get_running_loop()
        self._stopping = self._loop.create_future()
        if self._stop_asked is not None:
            self._stopping.set_result(self._stop_asked)
        outcome = self.outcome
        socket = await self._open()
        if socket is None:
            return outcome
        started = self.clock.now()
        await self.record(
            "stream.start",
            {
                "stream_sid": self.info.stream_sid,
                "url": self.target.shown,
                "direction": "bidirectional" if self.bidirectional else "unidirectional",
                "track": None if self.bidirectional else self.track,
                "sample_rate": self.target.sample_rate,
            },
        )
        try:
            await self._carry(socket)
        finally:
            outcome.duration = self.clock.now() - started
            with contextlib.suppress(Exception):
                await socket.close()
        if self._steps:  # the stream's own lines go on the timeline before its end
            await asyncio.wait(set(self._steps))
        if self._dropped:
            outcome.detailed_status += (
                f"; {self._dropped} audio chunks dropped (the bot fell behind)"
            )
        await self.record(
            "stream.end",
            {
                "stream_sid": outcome.stream_sid,
                "status": outcome.status,
                "disconnected_by": outcome.disconnected_by,
                "reason": outcome.detailed_status,
                "duration": round(outcome.duration, 2),
                "bytes_to_bot": outcome.bytes_to_bot,
                "bytes_from_bot": outcome.bytes_from_bot,
                "marks": outcome.marks,
                "clears": outcome.clears,
                "dtmf": outcome.dtmf,
                "ignored": outcome.ignored,
            },
        )
        return outcome

    async def _open(self) -> BotConnection | None:
        opening = asyncio.ensure_future(self._connect(self.target))
        closed = asyncio.ensure_future(self.channel.wait_closed())
        assert self._stopping is not None
        # Futures of different results: asyncio.wait needs to be told they are all futures.
        racers: set[asyncio.Future[Any]] = {opening, closed, self._stopping}
        try:
            with self.clock.busy():  # a handshake is a wait on the outside world
                await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not opening.done():
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, StreamFailed):
                await opening
            self.outcome.detailed_status = "the call ended before the stream opened"
            self.outcome.disconnected_by = "user"
            return None
        try:
            return opening.result()
        except StreamFailed as exc:
            self.outcome.detailed_status = str(exc)
            await self.record(
                "stream.failed",
                {"stream_sid": self.info.stream_sid, "url": self.target.shown, "reason": str(exc)},
            )
            return None

    async def _carry(self, socket: BotConnection) -> None:
        outcome = self.outcome
        self._socket = socket
        socket.hand_over(self._arrived)
        self._send(self.protocol.connected())
        self._send(self.protocol.start())
        track = "inbound" if self.bidirectional else self.track
        undo: list[Callable[[], None]] = [
            Listener(self.target.sample_rate, track, self._send_media).attach(self.channel)
        ]
        tasks = [asyncio.ensure_future(self._sender(socket))]
        receiving = asyncio.ensure_future(self._receiver(socket))
        if self.bidirectional:
            undo.append(self.channel.play_out(self.playout, self._marks_played))
            tasks.append(asyncio.ensure_future(self._keys()))
        closed = asyncio.ensure_future(self.channel.wait_closed())
        limit = asyncio.ensure_future(self.clock.sleep(self.max_seconds))
        assert self._stopping is not None
        try:
            waits: set[asyncio.Future[Any]] = {receiving, closed, limit, self._stopping}
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for fn in undo:
                fn()
            if receiving in done:
                outcome.status, outcome.disconnected_by = "completed", "bot"
                outcome.detailed_status = _close_reason(socket)
            else:
                reason = "stopped"
                if self._stopping.done():
                    reason = self._stopping.result()
                    outcome.detailed_status = f"stopped: {reason}"
                elif closed in done and self._by_request():
                    outcome.detailed_status = "the call was hung up by request"
                elif closed in done:
                    reason = "callended"
                    outcome.detailed_status = "the call ended"
                else:
                    outcome.detailed_status = f"stream time limit ({self.max_seconds:g}s)"
                outcome.status, outcome.disconnected_by = "completed", "user"
                await self._finish(socket, reason)
        finally:
            socket.hand_over(None)
            for fn in undo:
                fn()
            for task in (*tasks, receiving, closed, limit):
                task.cancel()
            for task in (*tasks, receiving):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _finish(self, socket: BotConnection, reason: str) -> None:
        """Send what is queued and ``stop``, then close; bounded, the bot may be gone."""
        self._send(self.protocol.stop("callended" if reason == "callended" else "stopped"))
        with contextlib.suppress(Exception), self.clock.busy():
            async with asyncio.timeout(2.0):
                while self._outgoing:
                    await socket.send(self._outgoing.popleft(), text=True)
                await socket.close()

    def _send(self, message: bytes) -> None:
        self._outgoing.append(message)
        if not self._flush_due:
            # Written once the current callback (usually the pacer's tick) is done, so a tick
            # never waits on the socket and a stream's messages of one tick go out together.
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write what is queued while the socket takes it; a backlog goes to the sender."""
        self._flush_due = False
        socket, outgoing = self._socket, self._outgoing
        if socket is None:
            return
        while outgoing and socket.write_text(outgoing[0], WRITE_BACKLOG):
            outgoing.popleft()
        if outgoing:
            self._wake.set()  # the sender waits for the socket to drain, as send() does

    def _send_media(self, chunk: bytes, track: str | None) -> None:
        if len(self._outgoing) >= MAX_OUTGOING:
            self._outgoing.popleft()  # real-time audio: the oldest is the least useful
            self._dropped += 1
        self.outcome.bytes_to_bot += len(chunk)
        self._send(self.protocol.media(chunk, track))

    async def _sender(self, socket: BotConnection) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outgoing:
                await socket.send(self._outgoing.popleft(), text=True)

    async def _receiver(self, socket: BotConnection) -> None:
        """Read the bot's frames until it closes the socket (those ``_arrived`` did not take)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in socket:
                self._handle(parse_bot_message(frame))

    def _arrived(self, text: str) -> None:
        """A text message, handed over by the connection as it is read."""
        try:
            self._handle(parse_bot_message(text))
        except Exception:  # the connection's reading must go on whatever happens here
            log.exception("stream %s: handling a bot message failed", self.info.stream_sid)

    def _handle(self, event: Any) -> None:
        outcome = self.outcome
        if isinstance(event, Ignored) or not self.bidirectional:
            outcome.ignored += 1
            if outcome.ignored <= MAX_LOGGED_PROBLEMS:
                reason = (
                    event.reason
                    if isinstance(event, Ignored)
                    else ("a unidirectional stream takes nothing from the bot")
                )
                log.info("stream %s: ignored a frame: %s", self.info.stream_sid, reason)
                self._later(self.record("stream.ignored", {"reason": reason}))
        elif isinstance(event, BotMedia):
            outcome.bytes_from_bot += len(event.pcm)
            self._from_bot.push(event.pcm)
        elif isinstance(event, BotMark):
            self._from_bot.mark(event.name)
        elif isinstance(event, BotClear):
            dropped = self.playout.seconds
            marks = self._from_bot.clear()
            outcome.clears += 1
            self._later(
                self.record("stream.clear", {"dropped_ms": round(dropped * 1000), "marks": marks})
            )
            self._marks_played(marks)

    def _marks_played(self, marks: list[str]) -> None:
        for name in marks:
            self.outcome.marks += 1
            self._send(self.protocol.mark(name))
            if self.outcome.marks <= MAX_LOGGED_MARKS:
                self._later(self.record("stream.mark", {"name": name}))

    def _later(self, work: Awaitable[None]) -> None:
        # Called from the pacer's tick or the socket's reading: the timeline write must not
        # run inside them. Tasks start in order, so the lines keep the order of the events.
        task = asyncio.ensure_future(work)
        self._steps.add(task)
        task.add_done_callback(self._steps.discard)
        task.add_done_callback(_log_failure)

    async def _keys(self) -> None:
        while (key := await self.channel.next_key()) is not None:
            self.outcome.dtmf += 1
            self._send(self.protocol.dtmf(key.digit, key.duration_ms))
            await self.record("stream.dtmf", {"digit": key.digit, "duration_ms": key.duration_ms})


def _close_reason(socket: BotConnection) -> str:
    code, reason = socket.close_code, socket.close_reason
    if code is None:
        return "the bot closed the connection"
    text = f"the bot closed the stream (code {code}"
    return text + (f": {reason[:80]})" if reason else ")")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a stream's timeline step failed", exc_info=task.exception())
