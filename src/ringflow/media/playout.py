"""The playout buffer: a bot's audio, queued as it arrives and played out one 20 ms frame a tick.

Bots send audio in bursts (a whole sentence of TTS at once, or odd-sized pieces as a model
produces them). Sending each piece on arrival would put the burst on the wire unpaced; instead
the stream pushes it here and the carrier's pacer takes exactly one frame (320 bytes of 8 kHz
16-bit PCM) per tick, so the caller hears it at its real rate with no gap between messages.

A mark is queued behind the audio pushed before it and is reported by ``take`` once the frame
holding the last of that audio has been handed to the pacer. ``clear`` drops every byte still
queued (barge-in) and returns the marks that were waiting behind it, which the bot gets back at
once. A piece shorter than a frame at the end of the queue is held one tick for more audio to
join it, then padded with silence: a bot that splits a frame in two across messages is not
heard as a click.

An RTP session takes its frames already in G.711 (``take_payload``): a piece is encoded whole
the first time a frame is cut from it, and its frames are slices of that (G.711 is one byte a
sample, each on its own), so a 100 ms message is encoded once rather than five times.

No locks: the buffer lives on the event loop, pushed by the stream and drained by the pacer.
"""

from __future__ import annotations

import collections
import dataclasses
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringflow.media.g711 import G711

FRAME_BYTES = 320  # 20 ms at 8 kHz, 16-bit mono


@dataclasses.dataclass(frozen=True)
class _Mark:
    name: str


@dataclasses.dataclass
class PlayoutStats:
    """What went through one buffer."""

    played_bytes: int = 0
    dropped_bytes: int = 0  # by clear
    underruns: int = 0  # ticks that had to pad a short last piece with silence
    empty_takes: int = 0  # ticks after the first frame played that found nothing to play
    latencies: list[float] = dataclasses.field(default_factory=list)  # push to first play, s


class Playout:
    """Bot audio and marks in order; ``take`` gives the pacer one frame and the marks it passed.

    ``now`` (seconds, any monotonic origin) times each push until its first byte is played;
    the latencies are kept for the benchmark, at most ``keep_latencies`` of them.
    """

    def __init__(self, now: Callable[[], float] | None = None, keep_latencies: int = 0) -> None:
        self._items: collections.deque[bytes | _Mark] = collections.deque()
        self._offset = 0  # bytes of the first item already played
        self._queued = 0  # audio bytes waiting
        self._held = False  # a short last piece waited one tick already
        self._marks = 0  # marks in the queue
        self._now = now
        self._keep = keep_latencies
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()
        self._position = 0  # audio bytes pushed since the start (played or not)
        self._played = 0  # audio bytes played since the start
        self._coded: tuple[bytes, G711, bytes] | None = None  # a piece, its law, its encoding
        self.stats = PlayoutStats()

    def __len__(self) -> int:
        """Audio bytes waiting to be played."""
        return self._queued

    @property
    def seconds(self) -> float:
        """Audio waiting to be played, in seconds."""
        return self._queued / (FRAME_BYTES * 50)

    def push(self, pcm: bytes) -> None:
        """Queue 8 kHz 16-bit PCM (any even length) behind what is queued."""
        if len(pcm) % 2:
            raise ValueError("PCM must be whole 16-bit samples")
        if not pcm:
            return
        if self._now is not None and len(self.stats.latencies) < self._keep:
            self._arrivals.append((self._position, self._now()))
        self._items.append(pcm)
        self._queued += len(pcm)
        self._position += len(pcm)

    def mark(self, name: str) -> None:
        """Queue a mark behind the audio pushed so far."""
        self._items.append(_Mark(name))
        self._marks += 1

    def clear(self) -> list[str]:
        """Drop every queued byte at once; returns the marks that were waiting, in order."""
        marks = [item.name for item in self._items if isinstance(item, _Mark)]
        self.stats.dropped_bytes += self._queued
        self._played += self._queued  # the dropped audio will never be played
        self._items.clear()
        self._arrivals.clear()
        self._coded = None
        self._offset = self._queued = self._marks = 0
        self._held = False
        return marks

    def take(self) -> tuple[bytes | None, list[str]]:
        """The next frame (None when nothing is queued) and the marks now fully played."""
        return self._take(None)

    def take_payload(self, law: G711) -> tuple[bytes | None, list[str]]:
        """``take``, the frame encoded in ``law``: the same bytes as ``law.encode`` of it."""
        return self._take(law)

    def _take(self, law: G711 | None) -> tuple[bytes | None, list[str]]:
        if not self._marks and self._queued >= FRAME_BYTES:
            # Taken every tick of every stream: with no mark queued and a whole frame in the
            # first piece, the frame is a slice of it (or of its encoding, made once per piece
            # and law) and nothing else is to be done.
            head = typing.cast(bytes, self._items[0])  # no mark queued: all audio
            start = self._offset
            end = start + FRAME_BYTES
            size = len(head)
            if end <= size:
                if law is None:
                    frame = head if size == FRAME_BYTES else head[start:end]
                else:
                    coded = self._coded
                    if coded is None or coded[0] is not head or coded[1] is not law:
                        coded = self._coded = (head, law, law.encode(head))
                    frame = coded[2][start >> 1 : end >> 1]
                if end == size:
                    self._items.popleft()
                    self._offset = 0
                    self._coded = None
                else:
                    self._offset = end
                self._queued -= FRAME_BYTES
                self._held = False
                self._note_played(FRAME_BYTES)
                return frame, []
        taken, marks = self._take_in_full()
        if law is not None and taken is not None:
            taken = law.encode(taken)
        return taken, marks

    def _take_in_full(self) -> tuple[bytes | None, list[str]]:
        """``take`` for every case: marks, short pieces, frames across pieces, holding."""
        marks = self._leading_marks()
        frame = self._frame(marks)
        if frame is None and self.stats.played_bytes:
            self.stats.empty_takes += 1
        marks += self._leading_marks()
        return frame, marks

    def _leading_marks(self) -> list[str]:
        marks: list[str] = []
        while self._items and isinstance(head := self._items[0], _Mark):
            self._items.popleft()
            marks.append(head.name)
        self._marks -= len(marks)
        return marks

    def _frame(self, marks: list[str]) -> bytes | None:
        if not self._queued:
            return None
        if self._queued < FRAME_BYTES and not self._held and self._audio_last():
            self._held = True  # wait one tick for the rest of the frame
            return None
        self._held = False
        parts: list[bytes] = []
        need = FRAME_BYTES
        items = self._items
        while need and items:
            head = items.popleft()
            if isinstance(head, _Mark):
                # Audio before it ends inside this frame: it has played once the frame has.
                marks.append(head.name)
                self._marks -= 1
                continue
            piece = head[self._offset : self._offset + need]
            parts.append(piece)
            need -= len(piece)
            self._offset += len(piece)
            if self._offset < len(head):
                items.appendleft(head)
            else:
                self._offset = 0
        played = FRAME_BYTES - need
        self._queued -= played
        self._note_played(played)
        if need:
            self.stats.underruns += 1
            parts.append(bytes(need))
        return b"".join(parts)

    def _audio_last(self) -> bool:
        """True when no mark waits behind the queued audio (a mark must not be held back)."""
        return not isinstance(self._items[-1], _Mark)

    def _note_played(self, count: int) -> None:
        start = self._played
        self._played += count
        self.stats.played_bytes += count
        if not self._arrivals:
            return
        while self._arrivals and self._arrivals[0][0] < self._played:
            position, arrived = self._arrivals.popleft()
            if position >= start and self._now is not None:
                self.stats.latencies.append(self._now() - arrived)
