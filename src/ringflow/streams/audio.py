"""A stream's audio on its way between the call and the bot, at the stream's rate.

``Listener`` is the channel's tap for one stream: every 20 ms tick it gets what the caller said
(and what the caller was sent) and cuts the streamed track into equal 100 ms chunks, converted
from 8 kHz a whole chunk at a time. ``BotAudio`` takes the bot's audio the other way: converted
to 8 kHz and pushed into the ``Playout`` in whole 20 ms frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ringflow.media.playout import FRAME_BYTES, Playout
from ringflow.media.rates import RateConverter

CHUNK_SECONDS = 0.1


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
        self._size = round(8000 * CHUNK_SECONDS) * 2  # bytes of 8 kHz audio per chunk
        self._buffer = bytearray()

    def feed(self, frame: bytes) -> Sequence[bytes]:
        """The chunks this frame completes (usually none: fed every tick)."""
        buffer = self._buffer
        buffer += frame
        size = self._size
        if len(buffer) < size:
            return ()
        chunks = []
        while len(buffer) >= size:
            chunk = bytes(buffer[:size])
            del buffer[:size]
            chunks.append(chunk if self._resample is None else self._resample(chunk))
        return chunks


class Listener:
    """The channel's tap for one stream: the track it streams, cut into chunks for the bot.

    ``wants_sent`` tells the RTP session whether to decode what it sent the caller each tick;
    a stream of the caller's audio alone (every bidirectional one) does not need it.
    """

    def __init__(self, rate: int, track: str, send: Callable[[bytes, str | None], None]):
        self.wants_sent = track != "inbound"
        self._track = track
        self._send = send
        self._heard = Chunker(rate)
        self._sent = Chunker(rate)

    def __call__(self, heard: bytes, sent: bytes) -> None:
        """One 20 ms tick of the call: what the caller said and what it was sent."""
        track = self._track
        if track == "inbound":
            for chunk in self._heard.feed(heard):
                self._send(chunk, None)
        elif track == "outbound":
            for chunk in self._sent.feed(sent):
                self._send(chunk, None)
        else:
            for chunk in self._heard.feed(heard):
                self._send(chunk, "inbound")
            for chunk in self._sent.feed(sent):
                self._send(chunk, "outbound")
