"""Who listens to an RTP session's party: taps (heard and sent, every 20 ms) and listeners of
several frames at a time (a stream's 100 ms chunks), which a session serves lazily while they
listen alone. Over real UDP, and tick by tick against a session that serves them eagerly."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringflow.media.engine import MediaEngine
from ringflow.media.g711 import FRAME_BYTES
from ringflow.media.session import RtpSession
from tests.test_media_engine import dominant_hz, pair, sine


@pytest.fixture
async def engine():
    low = random.randrange(20000, 50000, 2)
    media = MediaEngine("127.0.0.1", low, low + 100)
    yield media
    await media.close()


async def test_a_listener_of_chunks_hears_what_a_tap_hears_in_groups(engine):
    a, b = await pair(engine)
    taped: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []
    undo_tap = b.tap(lambda heard, sent: taped.append((heard, sent)))
    stop = b.listen(chunks.append, 5)
    await asyncio.wait_for(asyncio.gather(a.play(sine(600, 0.5)), b.play(sine(1400, 0.5))), 2)
    undo_tap()
    heard = b"".join(h for h, _ in taped)
    assert abs(dominant_hz(heard) - 600) < 20
    assert abs(dominant_hz(b"".join(s for _, s in taped)) - 1400) < 20
    assert all(len(chunk) == 5 * FRAME_BYTES for chunk in chunks)
    assert b"".join(chunks) == heard[: len(chunks) * 5 * FRAME_BYTES]
    assert len(chunks) == len(taped) // 5
    # Alone now, it is served a chunk at a time and still hears the party.
    count = len(chunks)
    await asyncio.wait_for(a.play(sine(900, 0.4)), 2)
    await asyncio.sleep(0.1)
    assert len(chunks) >= count + 3
    assert abs(dominant_hz(b"".join(chunks[count + 1 :])) - 900) < 20
    stop()
    count = len(chunks)
    await asyncio.sleep(0.15)
    assert len(chunks) == count  # stopped: quiet
    assert len(b._rx) == 0  # and nothing is kept for a listener that is gone


async def test_a_listener_takes_at_least_a_frame(engine):
    session = await engine.open_session()
    with pytest.raises(ValueError):
        session.listen(lambda pcm: None, 0)


def _frame(n: int) -> bytes:
    return n.to_bytes(4, "big") * (FRAME_BYTES // 4)


class _Ear:
    """What one session's listeners got, and on which tick."""

    def __init__(self, session: RtpSession) -> None:
        self.session = session
        self.got: list[tuple[str, int, bytes]] = []
        self.stops: dict[str, object] = {}
        self.frames: dict[str, int] = {}
        self.tick = 0

    def group(self, name: str, frames: int) -> None:
        self.frames[name] = frames
        self.stops[name] = self.session.listen(
            lambda pcm: self.got.append((name, self.tick, pcm)), frames
        )

    def tap(self, name: str) -> None:
        self.stops[name] = self.session.tap(
            lambda heard, sent: self.got.append((name, self.tick, heard))
        )

    def stop(self, name: str) -> None:
        self.stops.pop(name)()  # type: ignore[operator]


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("ticks"), st.integers(1, 12)),
        st.tuples(st.just("group"), st.integers(1, 7)),
        st.tuples(st.just("tap"), st.just(0)),
        st.tuples(st.just("stop"), st.integers(0, 20)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=_STEPS)
def test_listeners_served_lazily_get_what_eager_service_gives(steps):
    # Two sessions get the same packets, one a packet a tick after 40 ms of prefill (the usual
    # flow of a call), and the same listeners at the same moments. One also has a listener of
    # single frames from the start, so its groups are fed every tick; the other's are served
    # lazily whenever only groups listen. Every listener gets the same audio on the same tick.
    # (A session keeps the party's audio only while someone listens: one group always does.)
    engine = MediaEngine("127.0.0.1", 40000, 40100)
    lazy, eager = _Ear(RtpSession(engine, ("127.0.0.1", 0))), _Ear(RtpSession(engine, ("", 1)))
    eager.session.listen(lambda pcm: None)
    for ear in (lazy, eager):
        ear.group("from the start", 5)  # so someone always listens (it is never stopped)
    names: list[str] = []
    for ear in (lazy, eager):
        ear.session._rx.put(_frame(0))
        ear.session._rx.put(_frame(1))
    packets = 2
    for number, (kind, value) in enumerate(steps):
        if kind == "ticks":
            for _ in range(value):
                for ear in (lazy, eager):
                    ear.tick += 1
                    ear.session._rx.put(_frame(packets))
                    ear.session.tick(ear.tick)
                packets += 1
        elif kind == "group":
            names.append(f"group {number} of {value}")
            for ear in (lazy, eager):
                ear.group(names[-1], value)
        elif kind == "tap":
            names.append(f"tap {number}")
            for ear in (lazy, eager):
                ear.tap(names[-1])
        elif names:
            name = names.pop(value % len(names))
            for ear in (lazy, eager):
                ear.stop(name)
        assert lazy.got == eager.got
    # Groups of several frames end on the grid of their size, whenever they started.
    sizes = lazy.frames
    assert all(tick % sizes[name] == sizes[name] - 1 for name, tick, _ in lazy.got if name in sizes)
    for ear in (lazy, eager):
        assert ear.session.stats.overflows == ear.session.stats.underruns == 0


def test_between_chunks_a_lone_listener_costs_the_tick_no_read():
    # Served lazily, the frames of a chunk stay in the jitter buffer until the tick that
    # completes it takes them at once; the ticks before it do not read the buffer. (The first
    # tick takes its frame: it places the listener's chunks on the grid.)
    session = RtpSession(MediaEngine("127.0.0.1", 40000, 40100), ("127.0.0.1", 0))
    chunks: list[tuple[int, bytes]] = []
    tick = 0
    session.listen(lambda pcm: chunks.append((tick, pcm)), 5)
    for n in range(3):
        session._rx.put(_frame(n))
    depth = []
    for tick in range(5, 15):
        session._rx.put(_frame(tick - 2))
        session.tick(tick)
        depth.append(len(session._rx) // FRAME_BYTES)
    assert depth == [3, 4, 5, 6, 3, 4, 5, 6, 7, 3]
    assert chunks == [
        (9, b"".join(_frame(n) for n in range(5))),
        (14, b"".join(_frame(n) for n in range(5, 10))),
    ]
    assert session.stats.overflows == 0


@pytest.mark.parametrize("first", [5, 6, 7, 8, 9, 10])
def test_chunks_end_on_the_grid_the_first_padded_with_silence(first):
    # Whenever a listener starts, its chunks end on frames 4 modulo 5, as every other call's:
    # its first chunk is made whole with silence in front of what it heard.
    session = RtpSession(MediaEngine("127.0.0.1", 40000, 40100), ("127.0.0.1", 0))
    chunks: list[tuple[int, bytes]] = []
    tick = 0
    session.listen(lambda pcm: chunks.append((tick, pcm)), 5)
    session._rx.put(_frame(100))
    session._rx.put(_frame(101))
    for tick in range(first, first + 10):
        session._rx.put(_frame(tick))
        session.tick(tick)
    assert [at % 5 for at, _ in chunks] == [4, 4] and chunks[0][0] < first + 5
    heard = (4 - first) % 5 + 1  # frames of the first chunk that were heard
    audio = b"".join(_frame(n) for n in (100, 101, *range(first, first + 3)))
    assert chunks[0][1] == bytes((5 - heard) * FRAME_BYTES) + audio[: heard * FRAME_BYTES]


def test_a_late_packet_lands_in_its_chunk_when_served_lazily():
    # A packet late by less than its chunk's length is taken in its place: nothing padded.
    session = RtpSession(MediaEngine("127.0.0.1", 40000, 40100), ("127.0.0.1", 0))
    chunks: list[bytes] = []
    session.listen(chunks.append, 5)
    session._rx.put(_frame(0))
    session._rx.put(_frame(1))
    session._rx.put(_frame(2))
    session.tick(5)  # places the chunks: frame 0 is the first of the chunk ending on frame 9
    arrivals = {6: [3], 7: [], 8: [], 9: [4, 5, 6, 7]}  # 3 ticks late, then a burst
    for tick in range(6, 10):
        for n in arrivals[tick]:
            session._rx.put(_frame(n))
        session.tick(tick)
    assert chunks == [b"".join(_frame(n) for n in range(5))]
    assert session.stats.underruns == 0


def test_a_listener_that_comes_after_the_last_one_left_hears_only_what_follows():
    session = RtpSession(MediaEngine("127.0.0.1", 40000, 40100), ("127.0.0.1", 0))
    first: list[bytes] = []
    stop = session.listen(first.append, 5)
    for n in range(3):
        session._audio(_frame(n), 0)
    for tick in range(5, 8):
        session._audio(_frame(tick - 2), 0)
        session.tick(tick)
    stop()  # three frames into its chunk
    assert first == [] and len(session._rx) == 0
    later: list[bytes] = []
    session.listen(later.append, 5)
    for n in range(100, 103):
        session._audio(_frame(n), 0)
    for tick in range(10, 15):
        session._audio(_frame(tick + 93), 0)
        session.tick(tick)
    assert later == [b"".join(_frame(n) for n in range(100, 105))]


def test_a_listener_that_fails_is_dropped_and_the_others_go_on():
    session = RtpSession(MediaEngine("127.0.0.1", 40000, 40100), ("127.0.0.1", 0))
    good: list[bytes] = []

    def broken(pcm: bytes) -> None:
        raise RuntimeError("a listener's bug")

    session.listen(broken, 5)
    stop_good = session.listen(good.append, 5)
    for tick in range(5, 15):
        session._audio(_frame(tick), 0)
        session.tick(tick)
    assert len(good) == 2 and len(session._groups) == 1  # broken went, good heard on
    stop_good()
    session.listen(broken, 5)
    for tick in range(15, 20):
        session._audio(_frame(tick), 0)
        session.tick(tick)
    assert not session._groups and len(session._rx) == 0  # nobody left: nothing kept
