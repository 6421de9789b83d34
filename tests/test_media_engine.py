"""The media engine over real UDP on loopback: sessions play, listen, send and receive keys,
bridge with transcoding, latch, survive garbage, and release their ports.

Paced RTP is real time, so each test carries well under two seconds of audio and every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringflow.media.dtmf import Key, KeyStream, tones
from ringflow.media.engine import MediaEngine, RtpSession, SessionClosed
from ringflow.media.rtp import RtpPacket, TelephoneEvent
from ringflow.sip.sdp import PCMA, PCMU, Codec, Direction, MediaPlan
from tests.pcap import SIPP_SHARE, udp_payloads

RATE = 8000


def plan(
    remote: tuple[str, int],
    codec: Codec = PCMU,
    dtmf: int | None = 101,
    direction: Direction = Direction.SENDRECV,
) -> MediaPlan:
    receive = frozenset() if dtmf is None else frozenset({dtmf})
    return MediaPlan(remote, codec, dtmf, receive, 20, direction)


@pytest.fixture
async def engine():
    low = random.randrange(20000, 50000, 2)
    media = MediaEngine("127.0.0.1", low, low + 400)
    yield media
    await media.close()
    assert media.sessions == 0 and media.pacer._handle is None
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running


async def pair(
    engine: MediaEngine, codec: Codec = PCMU, dtmf: int | None = 101
) -> tuple[RtpSession, RtpSession]:
    a, b = await engine.open_session(), await engine.open_session()
    a.start(plan(b.local, codec, dtmf))
    b.start(plan(a.local, codec, dtmf))
    return a, b


async def receive(sock: socket.socket, count: int, until=lambda p: True) -> list[RtpPacket]:
    """Read RTP from a plain socket without blocking the loop, until ``count`` match ``until``."""
    packets: list[RtpPacket] = []
    async with asyncio.timeout(2):
        while len([p for p in packets if until(p)]) < count:
            try:
                packets.append(RtpPacket.parse(sock.recv(2048)))
            except BlockingIOError:
                await asyncio.sleep(0.005)
    return packets


def listener() -> socket.socket:
    """A plain UDP socket on loopback standing in for a phone."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def recorder(session: RtpSession) -> bytearray:
    heard = bytearray()
    session.listen(heard.extend)
    return heard


def sine(hz: float, seconds: float, amplitude: float = 8000) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def chirp(seconds: float = 0.5) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    return (9000 * np.sin(2 * np.pi * (300 + 2700 * t / seconds / 2) * t)).astype("<i2").tobytes()


def samples(pcm: bytes | bytearray) -> np.ndarray:
    return np.frombuffer(bytes(pcm), dtype="<i2").astype(float)


def alignment(sent: bytes, heard: bytes | bytearray) -> tuple[float, float]:
    """(normalised correlation, delay in seconds) of ``sent`` at its best place in ``heard``."""
    x, y = samples(sent), samples(heard)
    n = len(x) + len(y)
    c = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)[: len(y) - len(x) + 1]
    lag = int(np.argmax(c))
    window = y[lag : lag + len(x)]
    return float(c[lag] / (np.linalg.norm(x) * np.linalg.norm(window) + 1e-9)), lag / RATE


def dominant_hz(pcm: bytes | bytearray) -> float:
    x = samples(pcm)
    return float(np.argmax(np.abs(np.fft.rfft(x))) * RATE / len(x))


def rms(pcm: bytes | bytearray) -> float:
    x = samples(pcm)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=["PCMU", "PCMA"])
async def test_play_reaches_the_listener_in_real_time(engine, codec):
    a, b = await pair(engine, codec)
    heard = recorder(b)
    prompt = chirp(0.5)
    started = time.monotonic()
    await asyncio.wait_for(a.play(prompt), 2)
    took = time.monotonic() - started
    await asyncio.sleep(0.1)
    assert 0.46 <= took <= 0.6  # paced: a prompt takes as long as it lasts
    score, delay = alignment(prompt, heard)
    assert score > 0.95  # G.711 is lossy; the shape is what must arrive
    assert delay < 0.15
    assert a.stats.sent >= 25 and b.stats.received >= 25 and b.stats.lost == 0


async def test_plays_queue_in_order(engine):
    a, b = await pair(engine)
    heard = recorder(b)
    await asyncio.wait_for(asyncio.gather(a.play(sine(440, 0.3)), a.play(sine(1000, 0.3))), 2)
    await asyncio.sleep(0.1)
    _, start = alignment(sine(440, 0.3), heard)
    at = round(start * RATE) * 2
    first, second = heard[at + 800 : at + 4000], heard[at + 5600 : at + 8800]
    assert abs(dominant_hz(first) - 440) < 30 and abs(dominant_hz(second) - 1000) < 30


async def test_idle_session_sends_silence_continuously(engine):
    a = await engine.open_session()
    with listener() as peer:
        a.start(plan(peer.getsockname()))
        packets = await receive(peer, 10)
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert {p.payload_type for p in packets} == {0} and len({p.ssrc for p in packets}) == 1
    assert all(p.payload == b"\xff" * 160 for p in packets)
    for before, after in itertools.pairwise(packets):
        assert after.sequence == (before.sequence + 1) & 0xFFFF
        assert after.timestamp == (before.timestamp + 160) & 0xFFFFFFFF


async def test_cancelled_play_stops_promptly(engine):
    a, b = await pair(engine)
    heard = recorder(b)
    playing = asyncio.ensure_future(a.play(sine(700, 1.5)))
    await asyncio.sleep(0.3)
    playing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await playing
    mark, sent = len(heard), a.stats.sent
    await asyncio.sleep(0.3)
    assert a.stats.sent >= sent + 12  # RTP goes on, as silence
    after = heard[mark + 2 * 800 :]  # allow 100 ms for what was already on its way
    assert len(after) >= 1600 and rms(after) < 50
    assert rms(heard[:mark]) > 2000
    await asyncio.wait_for(a.play(sine(700, 0.1)), 1)  # the session still plays


async def test_digits_sent_arrive_once_each(engine):
    a, b = await pair(engine)
    for key in "1#1":
        await asyncio.wait_for(a.send_digit(key), 1)
    got = [await asyncio.wait_for(b.next_digit(), 1) for _ in range(3)]
    assert got == ["1", "#", "1"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(b.next_digit(), 0.2)
    assert b.stats.digits == 3


async def test_keys_released_with_the_length_they_were_sent_with(engine):
    a, b = await pair(engine)
    for key, ms in (("1", 240), ("#", 100)):
        await asyncio.wait_for(a.send_digit(key, duration_ms=ms), 1)
    got = [await asyncio.wait_for(b.next_key(), 1) for _ in range(2)]
    assert got == [Key("1", 240), Key("#", 100)]


async def test_inband_key_released_with_its_measured_length(engine):
    a, b = await pair(engine, dtmf=None)
    await asyncio.wait_for(a.send_digit("4", duration_ms=300), 2)  # sent as a 300 ms tone
    key = await asyncio.wait_for(b.next_key(), 1)
    assert key.digit == "4" and abs(key.duration_ms - 300) <= 20, key


async def test_digit_on_the_wire(engine):
    a = await engine.open_session()
    with listener() as peer:
        a.start(plan(peer.getsockname(), dtmf=96))
        sending = asyncio.ensure_future(a.send_digit("9", duration_ms=100))
        packets = await receive(peer, 3, lambda p: p.payload_type == 0)
        await asyncio.wait_for(sending, 1)
        packets += await receive(peer, 3, lambda p: p.payload_type == 0)
    events = [p for p in packets if p.payload_type == 96]
    assert len({p.timestamp for p in events}) == 1 and events[0].marker
    payloads = [TelephoneEvent.parse(p.payload) for p in events]
    assert [(e.event, e.end, e.duration) for e in payloads] == [
        (9, False, 160),
        (9, False, 320),
        (9, False, 480),
        (9, False, 640),
        (9, True, 800),
        (9, True, 800),
        (9, True, 800),
    ]
    sequences = [p.sequence for p in packets]
    assert sequences == [(sequences[0] + i) & 0xFFFF for i in range(len(sequences))]
    # Audio after the press carries on at the wall clock's timestamp, past the event.
    after = next(p for p in packets[packets.index(events[-1]) :] if p.payload_type == 0)
    assert (after.timestamp - events[0].timestamp) & 0xFFFFFFFF >= 7 * 160


async def test_inband_keys_when_no_telephone_event(engine):
    a, b = await pair(engine, dtmf=None)
    await asyncio.wait_for(a.send_digit("4"), 1)  # no telephone-event: sent as tones
    await asyncio.wait_for(a.play(tones("2")), 1)
    assert [await asyncio.wait_for(b.next_digit(), 1) for _ in range(2)] == ["4", "2"]


async def test_pushed_digits_join_and_clear(engine):
    _a, b = await pair(engine)
    b.push_digit("9")
    b.push_digit("a")
    assert await asyncio.wait_for(b.next_digit(), 1) == "9"
    b.clear_digits()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(b.next_digit(), 0.05)
    with pytest.raises(ValueError):
        b.push_digit("x")
    b.push_digit("5", 250)
    b.push_digit("6")  # an INFO without Duration
    b.push_digit("7", 999_999)  # the network's word, bounded
    got = [await asyncio.wait_for(b.next_key(), 1) for _ in range(3)]
    assert got == [Key("5", 250), Key("6", 100), Key("7", 10_000)]


@pytest.mark.skipif(
    not (SIPP_SHARE / "dtmf_2833_1.pcap").exists(),
    reason="SIPp's recordings are missing (scripts/ensure-services sip-tester)",
)
async def test_recorded_presses_over_udp_count_once(engine):
    session = await engine.open_session()
    with listener() as phone:
        session.start(plan(phone.getsockname()))

        async def replay(name: str) -> None:
            for data in udp_payloads(SIPP_SHARE / f"dtmf_2833_{name}.pcap"):
                phone.sendto(data, session.local)
                await asyncio.sleep(0.002)

        await replay("1")
        await replay("1")  # the same recording again: the same press
        await replay("pound")
        await replay("star")  # its sequence numbers run backwards from pound's
        got = [await asyncio.wait_for(session.next_digit(), 1) for _ in range(3)]
        assert got == ["1", "#", "*"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.next_digit(), 0.2)


@pytest.mark.skipif(
    not (SIPP_SHARE / "dtmf_2833_5.pcap").exists(),
    reason="SIPp's recordings are missing (scripts/ensure-services sip-tester)",
)
async def test_a_press_whose_end_packets_were_lost_is_released_after_the_timeout(engine):
    session = await engine.open_session()
    with listener() as phone:
        session.start(plan(phone.getsockname()))
        updates = udp_payloads(SIPP_SHARE / "dtmf_2833_5.pcap")[:-3]  # no end packet arrives
        for data in updates:
            phone.sendto(data, session.local)
            await asyncio.sleep(0.002)
        sent = time.monotonic()
        key = await asyncio.wait_for(session.next_key(), 2)
        waited = time.monotonic() - sent
    assert key == Key("5", 240)  # the length its last update gave
    assert 0.8 * KeyStream.HELD_TIMEOUT * 0.02 <= waited <= KeyStream.HELD_TIMEOUT * 0.02 + 0.3


async def test_bridge_transcodes_and_taps_both_sides_in_step(engine):
    a, near = await pair(engine, PCMU)  # party A talks PCMU with our leg "near"
    c, far = await pair(engine, PCMA)  # party C talks PCMA with our leg "far"
    tapped: list[tuple[bytes, bytes]] = []
    undo = near.bridge(far, lambda n, f: tapped.append((n, f)))
    heard_a, heard_c = recorder(a), recorder(c)
    await asyncio.wait_for(asyncio.gather(a.play(sine(600, 0.6)), c.play(sine(1400, 0.6))), 2)
    await asyncio.sleep(0.15)
    undo()
    count = len(tapped)
    assert abs(dominant_hz(heard_c) - 600) < 20  # A's voice reached C, as A-law
    assert abs(dominant_hz(heard_a) - 1400) < 20
    assert count >= 30 and all(len(n) == len(f) == 320 for n, f in tapped)
    near_track = b"".join(n for n, _ in tapped)
    far_track = b"".join(f for _, f in tapped)
    assert abs(dominant_hz(near_track) - 600) < 20 and abs(dominant_hz(far_track) - 1400) < 20
    # Both parties started talking at the same instant: so do their tracks in the tap.
    onset = [
        next(i for i, frame in enumerate(track) if rms(frame) > 1000)
        for track in ([n for n, _ in tapped], [f for _, f in tapped])
    ]
    assert abs(onset[0] - onset[1]) <= 2
    mark = len(heard_c)
    await asyncio.sleep(0.2)
    assert len(tapped) == count  # undone: the tap is quiet
    assert rms(heard_c[mark + 1600 :]) < 50  # and C hears our silence, not A


async def test_latching_to_where_the_party_sends_from():
    for latch in (True, False):
        low = random.randrange(20000, 50000, 2)
        media = MediaEngine("127.0.0.1", low, low + 100, latch=latch)
        a, b = await media.open_session(), await media.open_session()
        with listener() as nowhere:  # what a NAT'd party's SDP might announce
            a.start(plan(nowhere.getsockname()))
            b.start(plan(a.local))
            heard = recorder(b)
            await asyncio.sleep(0.1)
            await asyncio.wait_for(a.play(chirp(0.3)), 1)
            await asyncio.sleep(0.1)
        await media.close()
        score = alignment(chirp(0.3), heard)[0] if rms(heard) > 100 else 0.0
        assert (score > 0.9) == latch


async def test_a_new_plan_moves_codec_and_remote(engine):
    a, _b = await pair(engine, PCMU)
    c = await engine.open_session()
    c.start(plan(a.local, PCMA))
    a.start(plan(c.local, PCMA))  # a re-INVITE: another address, another codec
    heard = recorder(c)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(a.play(chirp(0.4)), 1)
    await asyncio.sleep(0.1)
    assert alignment(chirp(0.4), heard)[0] > 0.95


async def test_garbage_is_counted_and_dropped(engine):
    a, b = await pair(engine)
    heard = recorder(b)
    await asyncio.sleep(0.1)  # b has latched to a
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        for data in (b"", b"\x00" * 40, b"hello", b"\x80", b"\xbf\xff" + bytes(10)):
            stranger.sendto(data, b.local)
        stranger.sendto(bytes(RtpPacket(0, 1, 2, 3, b"\xff" * 160)), b.local)  # not our party
        a._transport.sendto(bytes(RtpPacket(33, 1, 2, 3, b"x")), b.local)  # unknown type
        a._transport.sendto(bytes(RtpPacket(0, 9, 9, a._ssrc ^ 1, b"\0" * 160)), b.local)
        await asyncio.wait_for(a.play(chirp(0.3)), 1)
    await asyncio.sleep(0.1)
    assert b.stats.malformed >= 4 and b.stats.foreign >= 3
    assert alignment(chirp(0.3), heard)[0] > 0.95  # the party is still heard


async def test_close_frees_the_port_and_wakes_waiters(engine):
    _a, b = await pair(engine)
    waiting = asyncio.ensure_future(b.next_digit())
    await asyncio.sleep(0.05)
    port = b.local[1]
    b.close()
    with pytest.raises(SessionClosed):
        await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(b.play(sine(500, 5)), 0.1)  # returns at once on a closed session
    assert b.closed and engine.sessions == 1
    await asyncio.sleep(0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))  # free again
    sent = engine.stats.sent
    assert sent >= b.stats.sent > 0  # the closed session's counts stay in the totals
    b.close()  # twice is harmless


async def test_playing_when_closed_mid_prompt_returns(engine):
    a, _ = await pair(engine)
    playing = asyncio.ensure_future(a.play(sine(500, 3)))
    await asyncio.sleep(0.1)
    a.close()
    await asyncio.wait_for(playing, 0.5)


async def test_engine_stats_and_lateness(engine):
    await pair(engine)
    await asyncio.sleep(0.3)
    stats = engine.stats
    assert stats.sessions == 2 and stats.sent >= 24 and stats.received >= 20
    assert 0 < stats.lateness_p50 <= stats.lateness_p99 < 0.05
    engine.reset_stats()
    assert engine.stats.sent == 0 and engine.stats.ticks == 0


rtp_datagrams = st.builds(
    lambda pt, seq, ssrc, payload, csrc, padding: bytes(
        RtpPacket(pt, seq, 4242, ssrc, payload, csrc=csrc, padding=padding)
    ),
    pt=st.sampled_from([0, 8, 13, 101, 96]) | st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ssrc=st.sampled_from([1, 2]) | st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=400),
    csrc=st.lists(st.integers(0, 9), max_size=2).map(tuple),
    padding=st.sampled_from([0, 0, 0, 1, 7]),
)
datagrams = st.lists(
    st.tuples(
        st.binary(max_size=200) | rtp_datagrams,
        # Strangers only: any port of the peer's host (127.0.0.1) is the peer's (asymmetric RTP).
        st.sampled_from([("127.0.0.3", 9), ("127.0.0.2", 5004), ("::1", 5004, 0, 0)]),
    ),
    max_size=25,
)


async def test_fuzzed_datagrams_never_escape_the_receive_path(engine):
    a, b = await pair(engine)
    b.listen(lambda frame: None)
    frames = itertools.count(10_000)

    @settings(
        max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(datagrams)
    def feed(batch):
        for data, source in batch:
            b.datagram_received(data, source)
            if data and data[0] & 1:
                b.tick(next(frames))  # play out now and then, through the jitter buffer

    feed()
    assert not b.closed and b.stats.malformed + b.stats.foreign > 0
    b.start(plan(a.local))  # as after a re-INVITE: listen to the real party again
    heard = recorder(b)
    await asyncio.sleep(0.1)
    await asyncio.wait_for(a.play(chirp(0.3)), 1)
    await asyncio.sleep(0.1)
    assert alignment(chirp(0.3), heard)[0] > 0.9
