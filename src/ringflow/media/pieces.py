"""Audio cut into equal pieces: what a stream's 100 ms chunks and a listener's groups of frames
are made with, whatever lengths the audio comes in."""

from __future__ import annotations

from collections.abc import Sequence


class Cutter:
    """Audio in pieces of any length in, pieces of ``size`` bytes out, in order."""

    __slots__ = ("_buffer", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("pieces are at least one byte long")
        self.size = size
        self._buffer = bytearray()

    def __len__(self) -> int:
        """Bytes waiting for the rest of their piece."""
        return len(self._buffer)

    def pad(self, count: int) -> None:
        """Put ``count`` bytes of silence behind what waits (in front of what comes next)."""
        self._buffer += bytes(count)

    def feed(self, audio: bytes) -> Sequence[bytes]:
        """The pieces ``audio`` completes (none while a piece is still short)."""
        buffer, size = self._buffer, self.size
        if not buffer and len(audio) == size:
            return (audio,)  # the usual when fed whole pieces: nothing to copy
        buffer += audio
        if len(buffer) < size:
            return ()
        pieces = []
        while len(buffer) >= size:
            pieces.append(bytes(buffer[:size]))
            del buffer[:size]
        return pieces
