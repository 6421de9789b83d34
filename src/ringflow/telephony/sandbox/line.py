"""A sandbox line's audio in time: the tape a recording is cut from, and the live line a stream
listens to.

A virtual phone does not produce audio frame by frame: it knows a whole utterance (or a whole
prompt it hears) when it starts. Both classes here keep such pieces with the clock time they
began at. ``Tape`` lays them out into two aligned tracks when a recording ends. ``LiveLine``
serves listeners (a stream to a bot) the way an RTP session does: every 20 ms of clock time it
cuts the current frame out of the pieces, takes one frame from a bot's playout buffer (so the
phone hears the bot at its real pace, exactly as a SIP party would), and hands both to every
listener. It runs only while someone listens or plays out; under a ManualClock its ticks are
ordinary clock timers, so a test can step a stream 20 ms at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ringflow.clock import Clock
from ringflow.media.audio import RATE, SAMPLE_WIDTH
from ringflow.media.pieces import Cutter
from ringflow.media.playout import FRAME_BYTES, Playout
from ringflow.telephony.carrier import ConversationTap

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.02
Piece = tuple[float, bytearray]


def _place(pieces: list[Piece], at: float, pcm: bytes) -> None:
    """Add ``pcm`` at ``at``, joining it to the last piece when it follows on directly."""
    if pieces:
        start, last = pieces[-1]
        end = start + len(last) / (RATE * SAMPLE_WIDTH)
        if abs(end - at) < 0.5 / RATE:
            last += pcm
            return
    pieces.append((at, bytearray(pcm)))


class Tape:
    """A sandbox call's audio by time: pieces placed where they happened on the clock."""

    def __init__(self, start: float):
        self.start = start
        self._heard: list[Piece] = []
        self._sent: list[Piece] = []

    def heard(self, at: float, pcm: bytes) -> None:
        """The phone said ``pcm``, starting at ``at``."""
        _place(self._heard, at, pcm)

    def sent(self, at: float, pcm: bytes) -> None:
        """The phone was sent ``pcm``, starting at ``at``."""
        _place(self._sent, at, pcm)

    def write(self, tap: ConversationTap, end: float) -> None:
        """Write both tracks, from the tape's start to ``end``, into ``tap``."""
        size = round((end - self.start) * RATE) * SAMPLE_WIDTH
        tap.write(self._track(self._heard, size), self._track(self._sent, size))

    def _track(self, pieces: list[Piece], size: int) -> bytes:
        track = bytearray(size)
        for at, pcm in pieces:
            offset = round((at - self.start) * RATE) * SAMPLE_WIDTH
            piece = pcm[: max(0, size - offset)]
            track[offset : offset + len(piece)] = piece
        return bytes(track)


def _frame_at(pieces: list[Piece], at: float) -> bytes:
    """The 20 ms frame starting at ``at`` cut out of ``pieces`` (silence where there are none);
    pieces over before ``at`` are dropped."""
    frame = bytearray(FRAME_BYTES)
    keep = []
    for start, pcm in pieces:
        offset = round((at - start) * RATE) * SAMPLE_WIDTH
        if offset >= len(pcm):
            continue  # over
        keep.append((start, pcm))
        if offset + FRAME_BYTES <= 0:
            continue  # not begun
        lo, hi = max(0, offset), min(len(pcm), offset + FRAME_BYTES)
        frame[lo - offset : hi - offset] = pcm[lo:hi]
    pieces[:] = keep
    return bytes(frame)


class InGroups:
    """A listener of the line's heard audio ``frames`` frames at a time, as a ``listen`` sink."""

    def __init__(self, sink: Callable[[bytes], None], frames: int):
        if frames < 1:
            raise ValueError("a listener takes at least one frame at a time")
        self._sink, self._cut = sink, Cutter(frames * FRAME_BYTES)

    def __call__(self, heard: bytes, sent: bytes) -> None:
        for group in self._cut.feed(heard):
            self._sink(group)


class LiveLine:
    """Frames of a sandbox line as they happen, for listeners and a bot's playout buffer.

    ``on_played(at, frame)`` is told of every frame of bot audio the phone heard (for its tape).
    """

    def __init__(self, clock: Clock, on_played: Callable[[float, bytes], None]):
        self.clock = clock
        self._on_played = on_played
        self._sinks: dict[object, Callable[[bytes, bytes], None]] = {}
        self._heard: list[Piece] = []
        self._sent: list[Piece] = []
        self._playout: Playout | None = None
        self._on_marks: Callable[[list[str]], None] = lambda marks: None
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """True while someone listens or plays out."""
        return bool(self._sinks) or self._playout is not None

    def heard(self, at: float, pcm: bytes) -> None:
        """The phone says ``pcm`` from ``at``."""
        self._keep(self._heard, at, pcm)

    def sent(self, at: float, pcm: bytes) -> None:
        """The phone is sent ``pcm`` from ``at`` (a prompt)."""
        self._keep(self._sent, at, pcm)

    def _keep(self, pieces: list[Piece], at: float, pcm: bytes) -> None:
        # Kept while they sound even with no listener yet: a stream that opens in the middle
        # of a prompt hears the rest of it, as it would on a real line.
        now = self.clock.now()
        pieces[:] = [
            (start, piece)
            for start, piece in pieces
            if start + len(piece) / (RATE * SAMPLE_WIDTH) > now
        ]
        _place(pieces, at, pcm)

    def listen(self, sink: Callable[[bytes, bytes], None]) -> Callable[[], None]:
        """Give ``sink(heard, sent)`` every 20 ms of clock time; returns the unsubscribe."""
        token = object()
        self._sinks[token] = sink
        self._run()

        def unsubscribe() -> None:
            self._sinks.pop(token, None)

        return unsubscribe

    def play_out(
        self, playout: Playout, on_marks: Callable[[list[str]], None]
    ) -> Callable[[], None]:
        """Play ``playout`` to the phone one frame a tick; returns the undo."""
        self._playout, self._on_marks = playout, on_marks
        self._run()

        def undo() -> None:
            if self._playout is playout:
                self._playout = None

        return undo

    def close(self) -> None:
        """The line hung up: no more ticks."""
        self._sinks.clear()
        self._playout = None
        if self._task is not None:
            self._task.cancel()

    def _run(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._ticks())

    async def _ticks(self) -> None:
        # Deadlines are absolute (t0 + n frames) so a late tick never adds up to drift.
        t0, n = self.clock.now(), 0
        while self.active:
            n += 1
            await self.clock.sleep(t0 + n * FRAME_SECONDS - self.clock.now())
            try:
                self._tick(t0 + (n - 1) * FRAME_SECONDS)
            except Exception:  # a listener's bug must not stop the line's clock for the others
                log.exception("a sandbox line tick failed")

    def _tick(self, at: float) -> None:
        playout = self._playout
        if playout is not None:
            frame, marks = playout.take()
            if frame is not None:
                self._on_played(at, frame)
                _place(self._sent, at, frame)
            if marks:
                self._on_marks(marks)
        if not self._sinks:
            return
        heard, sent = _frame_at(self._heard, at), _frame_at(self._sent, at)
        for sink in tuple(self._sinks.values()):
            sink(heard, sent)
