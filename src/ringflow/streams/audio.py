"""A stream's audio on its way between the call and the bot, at the stream's rate.

``Listener`` is one stream's ear on the call: it gets the streamed track in equal 100 ms
chunks, converted from 8 kHz a whole chunk at a time. ``BotAudio`` takes the bot's audio the
other way: converted to 8 kHz and pushed into the ``Playout`` in whole 20 ms frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ringflow.media.pieces import Cutter
from ringflow.media.playout import FRAME_BYTES, Playout
from ringflow.media.rates import RateConverter

if TYPE_CHECKING:
    from ringflow.telephony.carrier import Channel

CHUNK_FRAMES = 5  # 20 ms frames in a chunk
CHUNK_SECONDS = CHUNK_FRAMES * 0.02


class BotAudio:
    """The bot's audio on its way to the playout buffer: converted to 8 kHz and cut into whole
    20 ms frames. A message's audio rarely ends on a frame; a short piece at the end of the
    buffer would wait a tick and then be padded with silence, a gap the caller hears every
    message when a bot sends just in time."""

    def __init__(self, rate: int, playout: Playout):
        self._resample = RateConverter(rate, 8000)
        self._playout = playout
        self._rest = b""

    def push(self, pcm: bytes) -> None:
        """Queue audio at the stream's rate; whole frames go on now, the rest waits."""
        audio = self._rest + self._resample(pcm)
        whole = len(audio) - len(audio) % FRAME_BYTES
        self._rest = audio[whole:]
        if whole:
            self._playout.push(audio[:whole])

    def mark(self, name: str) -> None:
        """A mark: the audio before it goes on whole, short end and all."""
        if self._rest:
            self._playout.push(self._rest)
            self._rest = b""
        self._playout.mark(name)

    def clear(self) -> list[str]:
        """Drop everything queued; the marks that were waiting."""
        self._rest = b""
        return self._playout.clear()


class Chunker:
    """20 ms frames in, equal chunks of CHUNK_SECONDS at the stream's rate out.

    Frames wait at 8 kHz and a whole chunk is converted at once when it is complete: the same
    audio at the same moment as converting every frame (the converter is continuous), for a
    fifth of the calls into numpy."""

    def __init__(self, rate: int):
        self._resample = RateConverter(8000, rate) if rate != 8000 else None
        self._cut = Cutter(CHUNK_FRAMES * FRAME_BYTES)  # a chunk of 8 kHz audio

    def feed(self, frame: bytes) -> Sequence[bytes]:
        """The chunks this frame completes (usually none: fed every tick)."""
        chunks = self._cut.feed(frame)
        if self._resample is None or not chunks:
            return chunks
        return [self._resample(chunk) for chunk in chunks]


class Listener:
    """One stream's ear on the call: the track it streams, in chunks for the bot.

    The caller's audio alone (``inbound``, every bidirectional stream) is heard a whole chunk
    at a time (``Channel.hear``): between chunks the call's tick does nothing for the stream.
    What the caller was sent (``outbound``, ``both``) comes 20 ms at a time with what it said
    (``Channel.listen``) and is cut into chunks here.
    """

    def __init__(self, rate: int, track: str, send: Callable[[bytes, str | None], None]):
        self._track = track
        self._send = send
        self._heard = Chunker(rate)
        self._sent = Chunker(rate)

    def attach(self, channel: Channel) -> Callable[[], None]:
        """Start listening to ``channel``; returns the function that stops it."""
        if self._track == "inbound":
            return channel.hear(self._caller_chunk, CHUNK_FRAMES)
        return channel.listen(self)

    def _caller_chunk(self, pcm: bytes) -> None:
        for chunk in self._heard.feed(pcm):  # a whole chunk: converted, not copied
            self._send(chunk, None)

    def __call__(self, heard: bytes, sent: bytes) -> None:
        """One 20 ms tick of the call: what the caller said and what it was sent."""
        track = self._track
        if track == "outbound":
            for chunk in self._sent.feed(sent):
                self._send(chunk, None)
        else:
            for chunk in self._heard.feed(heard):
                self._send(chunk, "inbound")
            for chunk in self._sent.feed(sent):
                self._send(chunk, "outbound")
