"""DTMF keys: RFC 4733 events in and out, and in-band tones (generated and detected).

Receiving RFC 4733 (``EventReceiver``): an event is named by its RTP source and timestamp (the
timestamp is the instant the key went down, the same in every packet of that press, including
the three retransmitted end packets). A key is reported once, on the *first* packet seen of a
new (SSRC, timestamp): an IVR wants the key at once, and the report survives the loss of every
end packet. The last few (SSRC, timestamp) pairs are remembered, so retransmissions, reordered
packets and a replayed recording of the same press count once. Not handled: an event longer
than 8 s, which a sender splits into segments with new timestamps, is reported per segment.

Detecting in-band tones (``ToneDetector``): each 20 ms block of 8 kHz PCM is measured at the
eight DTMF frequencies (each at its nominal value and 1.5% either side, keeping the best). That
is the Goertzel algorithm's output (the power of one DFT bin at an arbitrary frequency),
computed as a numpy matrix product because the per-sample recurrence would be a Python loop;
``ToneBatch`` does it for every session of an engine in one product per tick. A block holds a
key only if all of these hold, the checks of ITU-T Q.24 receivers (values as in common PBX
detectors):

* level: each of the two tones is above -36 dBFS (quieter is line noise, not a keypad);
* twist: the high-group tone is at most 4 dB louder or 8 dB quieter than the low-group tone;
* the strongest tone of each group is 8 dB above the others of its group;
* the two tones carry at least 70% of the block's energy: speech and music spread their energy
  over many frequencies, so a vowel whose harmonics graze two DTMF frequencies still fails;
* duration: the same key in two consecutive blocks (40 ms; Q.24 accepts 40 ms tones) is
  reported once; it is reported again only after a block without it.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable

import numpy as np

from ringflow.media.g711 import FRAME_SAMPLES, RATE
from ringflow.media.rtp import TelephoneEvent, event_of, key_of

LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
LAYOUT = ("123A", "456B", "789C", "*0#D")  # LAYOUT[row][column]: rows LOW, columns HIGH
KEYS = "0123456789*#ABCD"

MIN_TONE_DBFS = -36.0
MAX_HIGH_OVER_LOW_DB = 4.0
MAX_LOW_OVER_HIGH_DB = 8.0
GROUP_MARGIN_DB = 8.0
MIN_TONE_SHARE = 0.70
MIN_BLOCKS = 2
BATCH = 32  # blocks per matrix product: 32 x 160 x 48 stays under OpenBLAS's threading size


def _db(value: float) -> float:
    """A power ratio for ``value`` decibels."""
    return math.pow(10.0, value / 10.0)  # float ** float may be complex, so its type is Any


def frequencies(key: str) -> tuple[float, float]:
    """The (low, high) frequencies of a keypad key."""
    for row, keys in enumerate(LAYOUT):
        column = keys.find(key.upper()) if len(key) == 1 else -1
        if column >= 0:
            return LOW[row], HIGH[column]
    raise ValueError(f"not a DTMF key: {key!r}")


def tone(key: str, seconds: float = 0.1, dbfs: float = -10.0, deviation: float = 0.0) -> bytes:
    """The dual tone of ``key`` as 8 kHz 16-bit PCM, each tone at ``dbfs`` (``deviation``: a
    relative frequency error, e.g. 0.015 for the 1.5% Q.24 allows)."""
    low, high = frequencies(key)
    t = np.arange(round(seconds * RATE)) / RATE
    amplitude = 32767.0 * math.pow(10.0, dbfs / 20.0)
    scale = 1.0 + deviation
    wave = amplitude * (np.sin(2 * np.pi * low * scale * t) + np.sin(2 * np.pi * high * scale * t))
    return np.clip(np.rint(wave), -32768, 32767).astype("<i2").tobytes()


def tones(keys: str, on: float = 0.1, off: float = 0.1, dbfs: float = -10.0) -> bytes:
    """Keys dialled one after another: ``on`` seconds of tone, ``off`` of silence, each."""
    gap = bytes(2 * round(off * RATE))
    return b"".join(tone(k, on, dbfs) + gap for k in keys)


class ToneDetector:
    """In-band DTMF: feed received 8 kHz 16-bit PCM, get the keys pressed (each once)."""

    BLOCK = FRAME_SAMPLES
    # Each frequency is probed at its nominal value and 1.5% either side (the deviation Q.24
    # receivers must accept), and its power is the best of the three: a 20 ms block's bins are
    # 50 Hz wide, so a tone 1.5% off would otherwise lose half its measured power.
    _PROBES = np.array([f * d for f in LOW + HIGH for d in (0.985, 1.0, 1.015)])
    _omega = 2 * np.pi * _PROBES / RATE
    _n = np.arange(FRAME_SAMPLES)
    # Columns 0-23 give the real parts, 24-47 the imaginary parts of the 24 probes.
    _BASIS = np.ascontiguousarray(
        np.concatenate(
            [np.cos(np.outer(_n, _omega)), -np.sin(np.outer(_n, _omega))], axis=1
        ).astype(np.float32)
    )
    # A tone of amplitude A gives |X| = A*N/2 at its bin; compare powers against that.
    _MIN_POWER = (32768.0 * 10 ** (MIN_TONE_DBFS / 20) * FRAME_SAMPLES / 2) ** 2
    _MIN_RMS = 32768.0 * 10 ** (MIN_TONE_DBFS / 20)

    _FLAT = np.array([list(keys) for keys in LAYOUT]).ravel()  # [row][column] at 4 * row + column

    def __init__(self) -> None:
        self._pending = b""
        self._last: str | None = None
        self._run = 0
        self._reported = False

    def feed(self, pcm: bytes) -> str:
        """Analyse more audio; returns the keys that completed in it (usually "")."""
        blocks = self.blocks(pcm)
        keys = self.classify_many(blocks) if blocks else []
        return "".join(k for k in map(self.step, keys) if k)

    def blocks(self, pcm: bytes) -> list[bytes]:
        """Cut audio into whole 20 ms blocks, keeping the rest for the next call."""
        data = self._pending + pcm if self._pending else pcm
        size = 2 * self.BLOCK
        whole = len(data) - len(data) % size
        self._pending = data[whole:]
        return [data[start : start + size] for start in range(0, whole, size)]

    @classmethod
    def classify(cls, block: bytes) -> str | None:
        """The key one 20 ms block holds, or None (silence, speech, noise, a single tone)."""
        return cls.classify_many([block])[0]

    @classmethod
    def classify_many(cls, blocks: list[bytes]) -> list[str | None]:
        """``classify`` for many blocks at once: one matrix product for a batch of them, so the
        cost of a block is a few microseconds instead of a dozen numpy calls of its own."""
        # OpenBLAS spreads a matrix product over threads (which spin while they wait) once it
        # exceeds about 260k multiply-adds; the media loop must stay on its one core.
        return [
            key
            for start in range(0, len(blocks), BATCH)
            for key in cls._classify_batch(blocks[start : start + BATCH])
        ]

    @classmethod
    def _classify_batch(cls, blocks: list[bytes]) -> list[str | None]:
        x = np.frombuffer(b"".join(blocks), dtype="<i2").astype(np.float32)
        x = x.reshape(len(blocks), cls.BLOCK)
        energy = (x * x).sum(axis=1)
        found: list[str | None] = [None] * len(blocks)
        # Most received audio is silence or quiet line noise: skip the spectrum of those.
        loud = np.flatnonzero(energy >= cls._MIN_RMS**2 * cls.BLOCK)
        if not len(loud):
            return found
        y = x[loud] @ cls._BASIS
        # Re^2 + Im^2 of each probe, then the best probe of each of the eight frequencies.
        power = (y * y).reshape(len(loud), 2, 8, 3).sum(axis=1).max(axis=2)
        low, high = np.sort(power[:, :4], axis=1), np.sort(power[:, 4:], axis=1)
        p_low, p_high = low[:, -1], high[:, -1]
        margin = _db(GROUP_MARGIN_DB)
        ok = (
            (p_low >= cls._MIN_POWER)
            & (p_high >= cls._MIN_POWER)
            & (p_high <= p_low * _db(MAX_HIGH_OVER_LOW_DB))
            & (p_low <= p_high * _db(MAX_LOW_OVER_HIGH_DB))
            & (low[:, -2] * margin <= p_low)
            & (high[:, -2] * margin <= p_high)
            # A tone's energy over the block is 2|X|^2/N; the block's is the sum of squares.
            & (2.0 * (p_low + p_high) / cls.BLOCK >= MIN_TONE_SHARE * energy[loud])
        )
        hits = np.flatnonzero(ok)
        if len(hits):
            keys = cls._FLAT[4 * power[hits, :4].argmax(axis=1) + power[hits, 4:].argmax(axis=1)]
            for index, key in zip(loud[hits].tolist(), keys.tolist(), strict=True):
                found[index] = key
        return found

    def step(self, key: str | None) -> str | None:
        """Debounce one block's result: a key held for MIN_BLOCKS blocks is reported once."""
        if key is None or key != self._last:
            self._run, self._reported = 0, False
        self._last = key
        if key is None:
            return None
        self._run += 1
        if self._run >= MIN_BLOCKS and not self._reported:
            self._reported = True
            return key
        return None


class ToneBatch:
    """In-band detection for every session of an engine, classified together once per tick.

    A session submits the audio it received; ``flush`` (the pacer calls it every 5 ms) runs
    one ``classify_many`` over all blocks waiting and hands each session's results to its
    detector in order. Per block, that is several times cheaper than classifying each on
    arrival, and it delays a key by at most one tick.
    """

    def __init__(self) -> None:
        self._blocks: list[bytes] = []
        self._owners: list[tuple[ToneDetector, Callable[[str], None]]] = []

    def submit(self, detector: ToneDetector, pcm: bytes, found: Callable[[str], None]) -> None:
        """Queue received audio; ``found(key)`` is called for each key it completes."""
        for block in detector.blocks(pcm):
            self._blocks.append(block)
            self._owners.append((detector, found))

    def flush(self) -> None:
        """Classify everything queued and report completed keys."""
        if not self._blocks:
            return
        blocks, owners = self._blocks, self._owners
        self._blocks, self._owners = [], []
        for (detector, found), key in zip(owners, ToneDetector.classify_many(blocks), strict=True):
            completed = detector.step(key)
            if completed:
                found(completed)


class EventReceiver:
    """RFC 4733 receiver: each key press reported once, on its first packet (see module doc)."""

    def __init__(self, memory: int = 32) -> None:
        self._memory = memory
        self.seen = False  # any event at all: the party signals keys out of band
        self._seen: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()

    def feed(self, ssrc: int, timestamp: int, event: TelephoneEvent) -> str | None:
        """One received event packet; the key if it starts a new press, else None."""
        self.seen = True
        press = (ssrc, timestamp)
        if press in self._seen:
            return None
        self._seen[press] = None
        if len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        return event.key

    def reset(self) -> None:
        """Forget past presses (a new stream)."""
        self._seen.clear()


class KeyStream:
    """The keys one party pressed, from every source, in order; read one at a time.

    A gateway may signal one press twice, as RFC 4733 events and as tones left in the audio:
    a key equal to the last one, from the other of those two sources, within SAME_PRESS frames
    of it is that same press and is dropped. (A person cannot press a key, release it and press
    it again within 160 ms: tone and pause each last at least 40 ms, and keypads send 70+.)
    """

    SAME_PRESS = 8  # frames (20 ms)

    def __init__(self) -> None:
        self._keys: collections.deque[str] = collections.deque()
        self._waiters: list[asyncio.Future[str]] = []
        self._last: tuple[str, str, int] = ("", "", -self.SAME_PRESS - 1)
        self._error: Exception | None = None

    def put(self, key: str, source: str, frame: int) -> bool:
        """A key from ``source`` ("rtp", "tone", "info") at ``frame``; False if dropped."""
        last_key, last_source, last_frame = self._last
        self._last = (key, source, frame)
        if (
            key == last_key
            and {source, last_source} == {"rtp", "tone"}
            and frame - last_frame <= self.SAME_PRESS
        ):
            return False
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(key)
                return True
        self._keys.append(key)
        return True

    async def next(self) -> str:
        """The next key; raises the ``close`` error once closed and drained."""
        if self._keys:
            return self._keys.popleft()
        if self._error is not None:
            raise self._error
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # A key handed over in the same instant as the cancellation is not lost.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._keys.appendleft(waiter.result())
            raise
        finally:
            self._waiters.remove(waiter)

    def clear(self) -> None:
        """Forget keys pressed but not yet read."""
        self._keys.clear()

    def close(self, error: Exception) -> None:
        """No more keys: waiting readers, and later ones, get ``error``."""
        self._error = error
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)


def event_packets(
    key: str, duration_ms: int = 160, ptime: int = 20, volume: int = 10
) -> list[TelephoneEvent]:
    """The payloads that send one key press: an update per packet, then the end three times."""
    code = event_of(key)
    step = RATE * ptime // 1000
    total = max(step, min(0xFFFF, step * math.ceil(duration_ms / ptime)))
    updates = [TelephoneEvent(code, False, volume, d) for d in range(step, total, step)]
    return updates + [TelephoneEvent(code, True, volume, total)] * 3


__all__ = [
    "EventReceiver",
    "KeyStream",
    "ToneBatch",
    "ToneDetector",
    "event_packets",
    "frequencies",
    "key_of",
    "tone",
    "tones",
]
