"""The receive side without sockets: which packets belong to the party's stream (source, SSRC,
sequence) and the jitter buffer that plays them out one frame per tick."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ringflow.media.g711 import FRAME_BYTES, SILENCE_PCM
from ringflow.media.inbound import DUPLICATE, InboundStream, JitterBuffer
from ringflow.media.stats import SessionStats

PEER, OTHER = ("192.0.2.1", 4000), ("192.0.2.66", 4000)


def lost_total() -> float:
    return REGISTRY.get_sample_value("ringflow_rtp_packets_lost_total") or 0.0


def test_sequence_gaps_duplicates_wrap_and_restart():
    lost_before = lost_total()
    stats = SessionStats()
    stream = InboundStream(stats)
    assert stream.accept(PEER, 7, 65534, 0) == 0
    assert stream.accept(PEER, 7, 65535, 1) == 0
    assert stream.accept(PEER, 7, 0, 2) == 0  # wraps
    assert stream.accept(PEER, 7, 3, 3) == 2  # 1 and 2 lost
    assert stream.accept(PEER, 7, 2, 4) == DUPLICATE  # late: its slot already passed
    assert stream.accept(PEER, 7, 3, 4) == DUPLICATE
    assert stream.accept(PEER, 7, 40000, 5) == 0  # a restarted sender, not 39996 lost
    assert stream.accept(PEER, 7, 40001, 6) == 0
    assert (stats.received, stats.lost, stats.duplicates) == (6, 2, 2)
    assert lost_total() - lost_before == 2  # ringflow_rtp_packets_lost_total


def test_only_the_first_source_is_heard_until_reset():
    stats = SessionStats()
    stream = InboundStream(stats)
    assert stream.accept(PEER, 7, 100, 0) == 0
    assert stream.source == PEER
    assert stream.accept(OTHER, 7, 101, 1) is None
    assert stats.foreign == 1
    stream.reset()  # a re-INVITE moved the media
    assert stream.accept(OTHER, 9, 5, 2) == 0
    assert stream.source == OTHER


def test_the_announced_address_wins_over_a_source_latched_first():
    stats = SessionStats()
    stream = InboundStream(stats)
    stream.reset(announced=PEER)
    assert stream.accept(OTHER, 5, 100, 0) == 0  # the old party, still sending after a move
    assert stream.accept(PEER, 6, 7000, 1) == 0  # the party the SDP named takes over at once
    assert (stream.source, stream.ssrc) == (PEER, 6)
    assert stream.accept(OTHER, 5, 101, 2) is None
    assert stream.accept(PEER, 6, 7001, 3) == 0
    assert stats.foreign == 1


def test_only_the_announced_address_is_heard_without_latching():
    stats = SessionStats()
    stream = InboundStream(stats)
    stream.reset(announced=PEER, only_announced=True)
    assert stream.accept(OTHER, 5, 100, 0) is None  # first, but not the party the SDP named
    assert stream.source is None
    assert stream.accept(PEER, 6, 7000, 1) == 0
    assert stream.accept(OTHER, 5, 101, 2) is None
    assert stats.foreign == 2 and stats.received == 1


def test_the_announced_host_is_heard_from_any_of_its_ports_without_latching():
    stats = SessionStats()
    stream = InboundStream(stats)
    stream.reset(announced=PEER, only_announced=True)
    # Asymmetric RTP: the gateway sends from another port than the one its SDP names.
    assert stream.accept(("192.0.2.1", 4002), 6, 7000, 0) == 0
    assert stream.accept(("192.0.2.1", 4002), 6, 7001, 1) == 0
    assert stream.accept(PEER, 6, 7002, 2) == 0  # the same stream, moved to the other port
    assert stream.accept(("192.0.2.1", 4004), 9, 1, 3) is None  # a second stream, not silent
    assert stream.accept(("192.0.2.66", 4002), 6, 7003, 4) is None  # another host, any port
    assert stats.received == 3 and stats.foreign == 2 and stats.lost == 0


def test_hosts_compare_as_addresses_ipv4_mapped_too():
    stats = SessionStats()
    stream = InboundStream(stats)
    stream.reset(announced=PEER, only_announced=True)
    assert stream.accept(("::ffff:192.0.2.1", 4000), 6, 1, 0) == 0  # a dual-stack socket's view
    assert stream.accept(("::ffff:192.0.2.66", 4000), 6, 2, 1) is None
    stream.reset(announced=("2001:db8::1", 4000), only_announced=True)
    assert stream.accept(("2001:db8:0::1", 4010), 7, 1, 2) == 0
    assert stats.received == 2 and stats.foreign == 1


def test_a_second_ssrc_is_taken_only_once_the_first_fell_silent():
    stats = SessionStats()
    stream = InboundStream(stats)
    assert stream.accept(PEER, 1, 100, 0) == 0
    assert stream.accept(PEER, 2, 5000, 3) is None  # the first is still talking
    assert stream.accept(PEER, 1, 101, 4) == 0
    assert stream.accept(PEER, 2, 5001, 13) is None
    assert stream.accept(PEER, 2, 5002, 14) == 0  # 10 frames of silence from SSRC 1
    assert stream.ssrc == 2
    assert stream.accept(PEER, 2, 5003, 15) == 0  # its own sequence, from here
    assert stats.foreign == 2


def frame(value: int) -> bytes:
    return bytes([value, 0]) * (FRAME_BYTES // 2)


def test_jitter_buffer_prefills_then_plays_in_order():
    stats = SessionStats()
    buffer = JitterBuffer(stats)
    buffer.put(frame(1))
    assert buffer.take() == SILENCE_PCM  # 20 ms queued: still filling
    buffer.put(frame(2))
    assert buffer.take() == frame(1)
    buffer.put(frame(3))
    assert buffer.take() == frame(2)
    assert buffer.take() == frame(3)
    assert buffer.take() == SILENCE_PCM  # ran dry
    assert stats.underruns == 1


def test_jitter_buffer_fills_loss_with_silence_and_caps_delay():
    stats = SessionStats()
    buffer = JitterBuffer(stats)
    buffer.put(frame(1))
    buffer.put(frame(4), lost=2)
    assert [buffer.take() for _ in range(4)] == [frame(1), SILENCE_PCM, SILENCE_PCM, frame(4)]
    for n in range(30):  # the peer bursts 600 ms at once
        buffer.put(frame(n))
    assert stats.overflows > 0
    assert len(buffer) <= 10 * FRAME_BYTES
    assert buffer.take() != SILENCE_PCM
    buffer.clear()
    assert len(buffer) == 0 and buffer.take() == SILENCE_PCM
