"""RTP and telephone-event wire types: golden packets from SIPp's recordings round-trip byte for
byte, hand-built headers with every optional part, malformed input, and fuzzing."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringflow.errors import MediaError, RingflowError
from ringflow.media.rtp import RtpPacket, RtpParseError, TelephoneEvent, event_of, key_of
from tests.pcap import SIPP_SHARE, udp_payloads

needs_recordings = pytest.mark.skipif(
    not (SIPP_SHARE / "dtmf_2833_1.pcap").exists(),
    reason="SIPp's recordings are missing (scripts/ensure-services sip-tester installs them)",
)
RECORDINGS = sorted(SIPP_SHARE.glob("*.pcap")) or [SIPP_SHARE / "missing.pcap"]


@needs_recordings
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_golden_packets_round_trip_byte_for_byte(path):
    datagrams = udp_payloads(path)
    assert datagrams
    for data in datagrams:
        packet = RtpPacket.parse(data)
        assert bytes(packet) == data
        if packet.payload_type == 101:
            assert bytes(TelephoneEvent.parse(packet.payload)) == packet.payload


@needs_recordings
def test_golden_event_packets_read_as_sipp_wrote_them():
    packets = [RtpPacket.parse(d) for d in udp_payloads(SIPP_SHARE / "dtmf_2833_1.pcap")]
    first, last = packets[0], packets[-1]
    assert (first.payload_type, first.marker, first.sequence) == (101, True, 7984)
    assert (first.timestamp, first.ssrc) == (13280, 0x0E05384E)
    assert not any(p.marker for p in packets[1:])
    assert {p.timestamp for p in packets} == {13280}  # one press, one timestamp
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert events[0] == TelephoneEvent(1, end=False, volume=10, duration=0)
    assert [e.end for e in events] == [False] * 7 + [True] * 3
    assert events[-1] == TelephoneEvent(1, end=True, volume=10, duration=2240)
    assert last.sequence == packets[-2].sequence  # SIPp resends the end packet as is


@needs_recordings
def test_golden_pcma_stream():
    packets = [RtpPacket.parse(d) for d in udp_payloads(SIPP_SHARE / "g711a.pcap")]
    assert {p.payload_type for p in packets} == {8}
    assert {len(p.payload) for p in packets} == {240}  # 30 ms packets
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)}
    assert steps == {240}


def test_every_optional_header_part_round_trips():
    packet = RtpPacket(
        payload_type=0,
        sequence=65535,
        timestamp=2**32 - 1,
        ssrc=0xDEADBEEF,
        payload=b"\xff" * 160,
        marker=True,
        csrc=(1, 2, 3),
        extension=(0xBEDE, b"\x10\xaa\x00\x00"),
        padding=4,
    )
    data = bytes(packet)
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[1] == 0x80
    assert len(data) == 12 + 12 + 4 + 4 + 160 + 4
    assert data[-4:] == b"\0\0\0\x04"
    assert RtpPacket.parse(data) == packet


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "shorter than its header"),
        (b"\x80\x00" + bytes(9), "shorter than its header"),
        (b"\x40\x00" + bytes(10), "version 1"),
        (b"\x00\x00" + bytes(10), "version 0"),
        (b"\xa0\x00" + bytes(10) + b"\x00", "padding count is 0"),
        (b"\xa0\x00" + bytes(10) + b"\x20", "padding of 32 bytes runs into the header"),
        (b"\x82\x00" + bytes(10) + bytes(4), "too short for 2 CSRCs"),
        (b"\x90\x00" + bytes(10) + b"\x00\x00", "too short for its header extension"),
        (b"\x90\x00" + bytes(10) + b"\xbe\xde\x00\x02" + bytes(4), "extension runs past"),
    ],
)
def test_malformed_packets_raise_one_error_type(data, problem):
    with pytest.raises(RtpParseError, match=problem) as caught:
        RtpPacket.parse(data)
    assert isinstance(caught.value, MediaError) and isinstance(caught.value, RingflowError)


def test_telephone_event_fields():
    event = TelephoneEvent.parse(bytes([11, 0x80 | 0x40 | 7]) + struct.pack("!H", 1280))
    assert event == TelephoneEvent(11, end=True, volume=7, duration=1280, reserved=True)
    assert event.key == "#"
    assert bytes(event) == bytes([11, 0xC7, 0x05, 0x00])
    assert TelephoneEvent.parse(bytes(event) + b"redundant").key == "#"
    assert TelephoneEvent(16).key is None  # flash is an event, not a key
    with pytest.raises(RtpParseError):
        TelephoneEvent.parse(b"\x01\x0a\x00")


def test_keys_and_event_codes():
    assert [key_of(e) for e in range(16)] == list("0123456789*#ABCD")
    assert [event_of(k) for k in "0123456789*#ABCDabcd"] == [*range(16), 12, 13, 14, 15]
    for bad in ("", "E", "12", " "):
        with pytest.raises(ValueError):
            event_of(bad)


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
    padding=st.integers(0, 255),
)


@given(packets)
def test_any_packet_round_trips(packet):
    assert RtpPacket.parse(bytes(packet)) == packet


@settings(max_examples=2000)
@given(st.binary(max_size=120) | st.binary(min_size=12, max_size=60).map(lambda b: b"\x80" + b))
def test_random_bytes_parse_or_raise_the_documented_error(data):
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    if not packet.padding:  # padding bytes other than the count are not kept
        assert bytes(packet) == data


@given(st.binary(max_size=12))
def test_random_event_payloads(data):
    try:
        event = TelephoneEvent.parse(data)
    except RtpParseError:
        assert len(data) < 4
        return
    assert bytes(event) == data[:4]
