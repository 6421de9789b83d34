"""G.711 (PCMU and PCMA): 8 kHz 16-bit PCM to one byte a sample and back, with ``audioop``.

``audioop`` is C and costs about half a microsecond per 20 ms frame; numpy lookup tables are
5-15 times slower at this size. It is deprecated in Python 3.11-3.12 and removed in 3.13, where
the ``audioop-lts`` package provides the same module name.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable

from ringflow.errors import MediaError

with warnings.catch_warnings():
    # The deprecation is known and planned for (audioop-lts); it must not fail strict test runs.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000  # 160 samples: one packet
FRAME_BYTES = 2 * FRAME_SAMPLES  # 320 bytes of 16-bit PCM
SILENCE_PCM = bytes(FRAME_BYTES)
CACHED_PROMPT_BYTES = 30 * 2 * RATE  # prompts up to 30 s keep their encoding for the next play


@dataclasses.dataclass(frozen=True, slots=True)
class G711:
    """One G.711 law: its encoder, decoder and the byte that decodes to silence."""

    name: str
    payload_type: int  # the static RTP payload type (RFC 3551)
    encode: Callable[[bytes], bytes]  # 16-bit PCM -> one byte a sample
    decode: Callable[[bytes], bytes]  # one byte a sample -> 16-bit PCM
    silence_byte: int
    silence: bytes = b""  # one 20 ms frame of silence, encoded (built once: sent every tick)

    def __post_init__(self) -> None:
        object.__setattr__(self, "silence", bytes([self.silence_byte]) * FRAME_SAMPLES)


def level(pcm: bytes) -> int:
    """The RMS level of 16-bit PCM (a frame at a time: C, well under a microsecond)."""
    return audioop.rms(pcm, 2)


def _ulaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


def _ulaw_decode(payload: bytes) -> bytes:
    return audioop.ulaw2lin(payload, 2)


def _alaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2alaw(pcm, 2)


def _alaw_decode(payload: bytes) -> bytes:
    return audioop.alaw2lin(payload, 2)


PCMU = G711("PCMU", 0, _ulaw_encode, _ulaw_decode, 0xFF)
PCMA = G711("PCMA", 8, _alaw_encode, _alaw_decode, 0xD5)
BY_NAME = {"PCMU": PCMU, "PCMA": PCMA}
BY_STATIC_PT = {0: PCMU, 8: PCMA}


def law(name: str) -> G711:
    """The G.711 law called ``name`` (PCMU or PCMA); MediaError for any other codec."""
    try:
        return BY_NAME[name.upper()]
    except KeyError:
        raise MediaError(f"codec {name!r} is not G.711 (PCMU or PCMA)") from None


def transcode(payload: bytes, source: G711, target: G711) -> bytes:
    """A G.711 payload in the other law (the same bytes when the laws match)."""
    if source is target:
        return payload
    return target.encode(source.decode(payload))


def frames(payload: bytes, silence_byte: int, size: int = FRAME_SAMPLES) -> list[bytes]:
    """Split an encoded payload into packets of ``size`` bytes, the last padded with silence."""
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    if chunks and len(chunks[-1]) < size:
        chunks[-1] = chunks[-1].ljust(size, bytes([silence_byte]))
    return chunks


def payloads(law: G711, pcm: bytes) -> tuple[bytes, ...]:
    """``pcm`` as ready 20 ms payloads in ``law``; prompts up to 30 s are encoded once per
    process (the same greeting plays on every call; longer audio is not worth the memory)."""
    if len(pcm) <= CACHED_PROMPT_BYTES:
        return _cached_payloads(law, pcm)
    return tuple(frames(law.encode(pcm), law.silence_byte))


@functools.lru_cache(maxsize=64)
def _cached_payloads(law: G711, pcm: bytes) -> tuple[bytes, ...]:
    return tuple(frames(law.encode(pcm), law.silence_byte))
