"""DTMF keys: RFC 4733 events in and out, and in-band tones (generated and detected).

A key press is known in two steps: when it starts (an IVR wants the key at once) and when it
is released (a bot is told then, with how long the key was held). Every source reports what it
hears of a press as ``KeyNews``: it started, it is still held (with its length so far), or it
ended (with its length); ``KeyStream`` turns that into keys read at their start
(``KeyStream.next``) or at their release (``KeyStream.next_released``, a ``Key`` with its
duration in ms).

Receiving RFC 4733 (``EventReceiver``): an event is named by its RTP source and timestamp (the
timestamp is the instant the key went down, the same in every packet of that press, including
the three retransmitted end packets). A press starts on the *first* packet seen of a new
(SSRC, timestamp), so the start survives the loss of every end packet; it ends on its first end
packet, whose duration field (in timestamp units of the event's 8 kHz clock) is the key's
length. A press whose end packets were all lost ends when the sender starts another, or after
HELD_TIMEOUT without a packet, with the length its last packet gave. The last few
(SSRC, timestamp) pairs are remembered, so retransmissions, reordered packets and a replayed
recording of the same press count once. Not handled: an event longer than 8 s, which a sender
splits into segments with new timestamps, is reported per segment.

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
* duration: the same key in two consecutive blocks (40 ms; Q.24 accepts 40 ms tones) starts a
  press; the first block without it ends the press, whose length is its blocks' (20 ms each).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
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
MIN_BLOCKS = 2  # must stay above 1: a block then ends one press or starts one, never both
BLOCK_MS = 20
BATCH = 32  # blocks per matrix product: 32 x 160 x 48 stays under OpenBLAS's threading size


NOMINAL_MS = 100  # a key's length when its source does not tell (an INFO without Duration)
MIN_INFO_MS, MAX_INFO_MS = 40, 10_000  # an INFO's Duration is the network's word: bounded


@dataclasses.dataclass(frozen=True)
class Key:
    """A released key: which, and how long it was held (ms)."""

    digit: str
    duration_ms: int


@dataclasses.dataclass(frozen=True)
class KeyNews:
    """What one RTP event packet or tone block tells of a press: the ``key`` of a press that
    ``started`` here, is still held, or ``ended`` here (both, when one packet is all there
    is); ``ms`` is its length so far."""

    key: str
    ms: int
    started: bool = False
    ended: bool = False


def info_duration(duration_ms: int | None) -> int:
    """The length of a key signalled by SIP INFO: its Duration, bounded (NOMINAL_MS without)."""
    if not duration_ms:  # some gateways say Duration=0 for "not known"
        return NOMINAL_MS
    return max(MIN_INFO_MS, min(MAX_INFO_MS, duration_ms))


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
        """Analyse more audio; returns the keys whose press started in it (usually "")."""
        return "".join(news.key for news in self.hear(pcm) if news.started)

    def hear(self, pcm: bytes) -> list[KeyNews]:
        """Analyse more audio; returns what it tells of key presses, block by block."""
        blocks = self.blocks(pcm)
        keys = self.classify_many(blocks) if blocks else []
        return [news for news in map(self.step, keys) if news is not None]

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

    def step(self, key: str | None) -> KeyNews | None:
        """Debounce one block's result: a key in MIN_BLOCKS blocks in a row starts a press,
        later blocks of it say it is held, and the first block without it ends it."""
        news = None
        if key != self._last:
            if self._reported and self._last is not None:
                news = KeyNews(self._last, self._run * BLOCK_MS, ended=True)
            self._run, self._reported = 0, False
        self._last = key
        if key is None:
            return news
        self._run += 1
        if self._run < MIN_BLOCKS:
            return news
        started, self._reported = not self._reported, True
        return KeyNews(key, self._run * BLOCK_MS, started=started)


class ToneBatch:
    """In-band detection for every session of an engine, classified together once per frame.

    A session submits the audio it received; ``flush`` (the pacer calls it every 20 ms) runs
    one ``classify_many`` over all blocks waiting and hands each session's results to its
    detector in order. Per block, that is several times cheaper than classifying each on
    arrival (a batch's fixed cost is most of a small one's), and it delays a key by at most
    one frame, next to the two blocks (40 ms) a press needs to be heard at all.
    """

    def __init__(self) -> None:
        self._blocks: list[bytes] = []
        self._owners: list[tuple[ToneDetector, Callable[[KeyNews], None]]] = []

    def submit(self, detector: ToneDetector, pcm: bytes, heard: Callable[[KeyNews], None]) -> None:
        """Queue received audio; ``heard(news)`` is called for what each block tells of keys."""
        for block in detector.blocks(pcm):
            self._blocks.append(block)
            self._owners.append((detector, heard))

    def flush(self) -> None:
        """Classify everything queued and report what it tells of keys."""
        if not self._blocks:
            return
        blocks, owners = self._blocks, self._owners
        self._blocks, self._owners = [], []
        for (detector, heard), key in zip(owners, ToneDetector.classify_many(blocks), strict=True):
            news = detector.step(key)
            if news is not None:
                heard(news)


class EventReceiver:
    """RFC 4733 receiver: each press started once, on its first packet, and ended once, on its
    first end packet (see module doc)."""

    def __init__(self, memory: int = 32) -> None:
        self._memory = memory
        self.seen = False  # any event at all: the party signals keys out of band
        self._seen: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
        self._open: tuple[int, int] | None = None  # the press started and not ended yet
        self._open_key = ""

    def feed(self, ssrc: int, timestamp: int, event: TelephoneEvent) -> KeyNews | None:
        """One received event packet: what it tells of a press, or None (a press already
        ended or superseded, or an event that is not a key)."""
        self.seen = True
        press = (ssrc, timestamp)
        ms = event.duration * 1000 // RATE  # the event clock is 8 kHz (telephone-event/8000)
        if press == self._open:
            if event.end:
                self._open = None
            return KeyNews(self._open_key, ms, ended=event.end)
        if press in self._seen:
            return None
        self._seen[press] = None
        if len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        key = event.key
        if key is None:
            return None
        # A new press supersedes the one before: late packets of that one are ignored.
        self._open, self._open_key = (None if event.end else press), key
        return KeyNews(key, ms, started=True, ended=event.end)

    def reset(self) -> None:
        """Forget past presses (a new stream)."""
        self._seen.clear()
        self._open = None


class Press:
    """One key press in a ``KeyStream``: its key and source, its length so far (final once
    ``released``), and ``seen``, the last frame its source said it was held."""

    __slots__ = ("key", "ms", "released", "seen", "source")

    def __init__(self, key: str, source: str, frame: int, ms: int) -> None:
        self.key, self.source, self.seen, self.ms = key, source, frame, ms
        self.released = False


class KeyStream:
    """The keys one party pressed, from every source, in order; read one at a time, either at
    the start of each press (``next``) or at its release (``next_released``). A press read
    either way is gone for the other.

    A gateway may signal one press twice, as RFC 4733 events and as tones left in the audio:
    a key equal to the last one, from the other of those two sources, within SAME_PRESS frames
    of it is that same press (``press`` returns it, so either source may end it). A person
    cannot press a key, release it and press it again within 160 ms: tone and pause each last
    at least 40 ms, and keypads send 70+.

    A press is released by its source (an end packet, a block without the tone, an INFO at
    once), by the next press from that source (its end was lost), or HELD_TIMEOUT frames after
    its source last said it was held (``expire``, which the session's tick calls): each with
    the length last heard, so a key whose end never comes still reaches ``next_released``.
    """

    SAME_PRESS = 8  # frames (20 ms)
    HELD_TIMEOUT = 25  # frames (500 ms): RFC 4733 senders repeat a held key every 20-50 ms

    def __init__(self) -> None:
        self._presses: collections.deque[Press] = collections.deque()  # not read yet
        self.held: list[Press] = []  # not released yet (read or not)
        self._starts: list[asyncio.Future[Press]] = []
        self._releases: list[asyncio.Future[Press]] = []
        self._last: tuple[str, int, Press] | None = None  # the last report: source, frame, press
        self._error: Exception | None = None

    def press(self, key: str, source: str, frame: int, ms: int = 0) -> tuple[Press, bool]:
        """A press from ``source`` ("rtp", "tone", "info") started at ``frame``: the press, and
        False if it is the last press again (heard from the other source), else True."""
        if self._last is not None:
            last_source, last_frame, last = self._last
            if (
                key == last.key
                and {source, last_source} == {"rtp", "tone"}
                and frame - last_frame <= self.SAME_PRESS
            ):
                self._last = (source, frame, last)
                return last, False
        for held in [p for p in self.held if p.source == source]:
            self.release(held, held.ms)  # its end was lost: the next press ends it
        press = Press(key, source, frame, ms)
        self._last = (source, frame, press)
        self.held.append(press)
        for waiter in self._starts:
            if not waiter.done():
                waiter.set_result(press)
                return press, True
        self._presses.append(press)
        return press, True

    def hold(self, press: Press, frame: int, ms: int) -> None:
        """``press`` is still held at ``frame``, for ``ms`` so far."""
        if not press.released:
            press.seen, press.ms = frame, max(press.ms, ms)

    def release(self, press: Press, ms: int) -> None:
        """``press`` ended after ``ms`` (a second release of it is ignored)."""
        if press.released:
            return
        press.released, press.ms = True, ms
        self.held.remove(press)
        self._hand_released()

    def expire(self, frame: int) -> None:
        """Release the presses whose source has said nothing of them for HELD_TIMEOUT frames."""
        for press in [p for p in self.held if frame - p.seen > self.HELD_TIMEOUT]:
            self.release(press, press.ms)

    def _hand_released(self) -> None:
        presses = self._presses
        for waiter in self._releases:
            if not presses or not presses[0].released:
                return
            if not waiter.done():
                waiter.set_result(presses.popleft())

    async def next(self) -> str:
        """The next key, as soon as it is pressed; raises the ``close`` error once closed and
        drained."""
        if self._presses:
            return self._presses.popleft().key
        if self._error is not None:
            raise self._error
        return (await self._wait(self._starts)).key

    async def next_released(self) -> Key:
        """The next key once it is released, with its length; raises the ``close`` error once
        closed and drained."""
        if self._presses and self._presses[0].released:
            press = self._presses.popleft()
            return Key(press.key, press.ms)
        if self._error is not None and not self._presses:
            raise self._error
        press = await self._wait(self._releases)
        return Key(press.key, press.ms)

    async def _wait(self, waiters: list[asyncio.Future[Press]]) -> Press:
        waiter: asyncio.Future[Press] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # A press handed over in the same instant as the cancellation is not lost.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._presses.appendleft(waiter.result())
            raise
        finally:
            waiters.remove(waiter)

    def clear(self) -> None:
        """Forget keys pressed but not yet read."""
        self._presses.clear()

    def close(self, error: Exception) -> None:
        """No more keys: presses still held are released as they are, and waiting readers, and
        later ones, get ``error`` once the keys pressed before are read."""
        for press in list(self.held):
            self.release(press, press.ms)
        self._error = error
        for waiter in (*self._starts, *self._releases):
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
    "NOMINAL_MS",
    "EventReceiver",
    "Key",
    "KeyNews",
    "KeyStream",
    "Press",
    "ToneBatch",
    "ToneDetector",
    "event_packets",
    "frequencies",
    "info_duration",
    "key_of",
    "tone",
    "tones",
]
