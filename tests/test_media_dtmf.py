"""DTMF: the RFC 4733 receiver against SIPp's recordings, the event schedule we send, the
in-band detector on every key and on signals that must not trigger it, each key's measured
length, and the key stream (keys at their start and at their release)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ringflow.media import g711
from ringflow.media.dtmf import (
    KEYS,
    EventReceiver,
    Key,
    KeyNews,
    KeyStream,
    ToneDetector,
    event_packets,
    frequencies,
    info_duration,
    tone,
    tones,
)
from ringflow.media.rtp import RtpPacket, TelephoneEvent
from ringflow.media.tts import Espeak
from tests.pcap import SIPP_SHARE, udp_payloads

RECORDED = {
    "0": "0",
    "1": "1",
    "2": "2",
    "3": "3",
    "4": "4",
    "5": "5",
    "6": "6",
    "7": "7",
    "8": "8",
    "9": "9",
    "pound": "#",
    "star": "*",
}
needs_recordings = pytest.mark.skipif(
    not (SIPP_SHARE / "dtmf_2833_1.pcap").exists(),
    reason="SIPp's recordings are missing (scripts/ensure-services sip-tester installs them)",
)


def recording(name: str) -> list[RtpPacket]:
    return [RtpPacket.parse(d) for d in udp_payloads(SIPP_SHARE / f"dtmf_2833_{name}.pcap")]


def news_of(receiver: EventReceiver, packets: list[RtpPacket]) -> list[KeyNews]:
    found = (receiver.feed(p.ssrc, p.timestamp, TelephoneEvent.parse(p.payload)) for p in packets)
    return [n for n in found if n is not None]


def heard(receiver: EventReceiver, packets: list[RtpPacket]) -> str:
    """The keys whose press started in ``packets``."""
    return "".join(n.key for n in news_of(receiver, packets) if n.started)


# -- RFC 4733 in ------------------------------------------------------------------------------


@needs_recordings
@pytest.mark.parametrize("name, key", RECORDED.items())
def test_each_recording_is_one_key_once_even_replayed(name, key):
    receiver = EventReceiver()
    packets = recording(name)
    assert heard(receiver, packets) == key
    assert heard(receiver, packets) == ""  # the same press again: same SSRC and timestamp


@needs_recordings
def test_recordings_in_a_row_are_separate_presses():
    receiver = EventReceiver()
    assert "".join(heard(receiver, recording(n)) for n in RECORDED) == "0123456789#*"


@needs_recordings
def test_key_reported_on_first_packet_seen_even_without_end_packets():
    packets = recording("5")
    receiver = EventReceiver()
    assert heard(receiver, packets[:1]) == "5"
    assert heard(receiver, packets[1:]) == ""
    assert heard(EventReceiver(), packets[-1:]) == "5"  # only an end packet got through


@needs_recordings
@pytest.mark.parametrize("name", ["1", "pound"])
def test_a_recorded_press_ends_once_with_the_length_its_end_packet_gives(name):
    # SIPp's recordings: updates every 40 ms up to 240 ms, then three end packets at 2240
    # (280 ms of the 8 kHz event clock).
    receiver = EventReceiver()
    news = news_of(receiver, recording(name))
    assert [(n.started, n.ended) for n in news] == [(True, False)] + [(False, False)] * 6 + [
        (False, True)
    ]
    assert [n.ms for n in news] == [0, 40, 80, 120, 160, 200, 240, 280]
    assert news_of(receiver, recording(name)) == []  # replayed: neither started nor ended again


@needs_recordings
def test_only_an_end_packet_starts_and_ends_the_press_with_its_length():
    [news] = news_of(EventReceiver(), recording("5")[-1:])
    assert news == KeyNews("5", 280, started=True, ended=True)


def test_same_key_pressed_again_has_a_new_timestamp():
    receiver = EventReceiver()
    press = TelephoneEvent(7, duration=160)
    assert receiver.feed(1, 1000, press) == KeyNews("7", 20, started=True)
    assert receiver.feed(1, 1000, press) == KeyNews("7", 20)  # still held
    assert receiver.feed(1, 3000, press) == KeyNews("7", 20, started=True)
    assert receiver.feed(1, 1000, press) is None  # the press before: superseded
    assert receiver.feed(2, 1000, press) == KeyNews("7", 20, started=True)  # another stream
    assert receiver.feed(1, 5000, TelephoneEvent(16)) is None  # flash: an event, no key


# -- RFC 4733 out -----------------------------------------------------------------------------


def test_event_schedule_has_updates_then_three_end_packets():
    events = event_packets("#", duration_ms=160)
    assert [e.event for e in events] == [11] * 10
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 960, 1120] + [1280] * 3
    assert [e.end for e in events] == [False] * 7 + [True] * 3
    assert event_packets("1", duration_ms=10) == [TelephoneEvent(1, True, 10, 160)] * 3
    with pytest.raises(ValueError):
        event_packets("x")


# -- in-band tones ----------------------------------------------------------------------------


def padded(pcm: bytes) -> bytes:
    return bytes(800) + pcm + bytes(800)


@pytest.mark.parametrize("law", [None, g711.PCMU, g711.PCMA], ids=["linear", "PCMU", "PCMA"])
@pytest.mark.parametrize("deviation", [-0.015, 0.0, 0.015])
@pytest.mark.parametrize("dbfs", [-30, -10, -4])
def test_every_key_detected_once(law, deviation, dbfs):
    for key in KEYS:
        pcm = padded(tone(key, 0.045, dbfs, deviation))
        if law is not None:
            pcm = law.decode(law.encode(pcm))
        assert ToneDetector().feed(pcm) == key, (key, deviation, dbfs)


def test_a_dialled_sequence_in_odd_chunks():
    signal = padded(tones("1234567890*#ABCD55", on=0.05, off=0.05))
    detector = ToneDetector()
    found = "".join(detector.feed(signal[i : i + 94]) for i in range(0, len(signal), 94))
    assert found == "1234567890*#ABCD55"


def test_a_held_key_counts_once():
    assert ToneDetector().feed(tone("7", 2.0)) == "7"


@pytest.mark.parametrize("ms", [60, 100, 250, 1000])
def test_a_tone_ends_with_its_measured_length(ms):
    detector = ToneDetector()
    signal = padded(tone("6", ms / 1000)) + padded(tone("9", 0.1))
    news = [n for i in range(0, len(signal), 94) for n in detector.hear(signal[i : i + 94])]
    ends = [(n.key, n.ms) for n in news if n.ended]
    assert [k for k, _ in ends] == ["6", "9"]
    assert abs(ends[0][1] - ms) <= 20, ends  # blocks are 20 ms
    starts = [n for n in news if n.started]
    assert [(n.key, n.ms) for n in starts] == [("6", 40), ("9", 40)]  # two blocks start one
    held = [n.ms for n in news if n.key == "6" and not n.started and not n.ended]
    assert held == list(range(60, ends[0][1] + 1, 20))  # growing by a block each time


def pcm_of(wave: np.ndarray) -> bytes:
    return np.clip(np.rint(wave), -32768, 32767).astype("<i2").tobytes()


T = np.arange(8000) / 8000
LOW5, HIGH5 = frequencies("5")


@pytest.mark.parametrize(
    "what, pcm",
    [
        ("3.5% off frequency", padded(tone("5", 0.1, -10, 0.035))),
        ("20 ms tone", padded(tone("5", 0.02))),
        ("quieter than -36 dBFS", padded(tone("5", 0.1, -40))),
        ("one tone alone", pcm_of(10000 * np.sin(2 * np.pi * LOW5 * T))),
        (
            "high tone 6 dB over low",
            pcm_of(5000 * np.sin(2 * np.pi * LOW5 * T) + 10000 * np.sin(2 * np.pi * HIGH5 * T)),
        ),
        (
            "low tone 10 dB over high",
            pcm_of(10000 * np.sin(2 * np.pi * LOW5 * T) + 3162 * np.sin(2 * np.pi * HIGH5 * T)),
        ),
        (
            "a third tone as loud",
            pcm_of(
                8000
                * (
                    np.sin(2 * np.pi * LOW5 * T)
                    + np.sin(2 * np.pi * HIGH5 * T)
                    + np.sin(2 * np.pi * 500 * T)
                )
            ),
        ),
        ("white noise", pcm_of(np.random.default_rng(7).normal(0, 3000, 40000))),
        (
            "a vowel-like harmonic series on 116 Hz",
            pcm_of(sum(3000 / k * np.sin(2 * np.pi * 116.17 * k * T) for k in range(1, 30))),
        ),
    ],
)
def test_not_a_key(what, pcm):
    assert ToneDetector().feed(pcm) == "", what


SENTENCES = [
    "Welcome to ringflow. Press one for sales, two for support, or stay on the line.",
    "One two three four five six seven eight nine zero star hash. Beep beep, ding dong.",
    "Eeeee. Ooooo. Aaaaah. Mmmmm. La la la la la. Hello? Hello!",
]


@pytest.fixture(scope="module")
def speech() -> list[bytes]:
    engine = Espeak()
    if not engine.available():
        pytest.skip("espeak-ng is not installed")
    return [engine.render(text, voice).pcm for voice in ("en", "en-us", "hi") for text in SENTENCES]


@pytest.mark.parametrize("law", [None, g711.PCMU], ids=["linear", "PCMU"])
@pytest.mark.parametrize("gain", [1, 4])
def test_speech_is_not_a_key(speech, law, gain):
    for pcm in speech:
        loud = pcm_of(np.frombuffer(pcm, dtype="<i2").astype(float) * gain)
        if law is not None:
            loud = law.decode(law.encode(loud))
        assert ToneDetector().feed(loud) == ""


def test_key_after_speech_still_detected(speech):
    assert ToneDetector().feed(speech[0] + tones("9")) == "9"


# -- the key stream ---------------------------------------------------------------------------


def test_info_duration_is_bounded():
    assert info_duration(None) == 100 and info_duration(0) == 100
    assert info_duration(250) == 250
    assert info_duration(5) == 40 and info_duration(999_999) == 10_000


async def test_key_stream_order_and_dedupe():
    keys = KeyStream()
    one, new = keys.press("1", "rtp", 10)
    assert new
    assert keys.press("1", "tone", 13) == (one, False)  # the same press, heard in the audio too
    assert keys.press("1", "info", 14)[1]  # INFO is never a copy of the others
    two, _ = keys.press("2", "tone", 30)
    assert keys.press("2", "rtp", 32) == (two, False)
    assert keys.press("2", "rtp", 60)[1]  # long after: a new press
    assert [await keys.next() for _ in range(4)] == ["1", "1", "2", "2"]


async def test_released_keys_come_at_their_end_with_their_length():
    keys = KeyStream()
    reader = asyncio.ensure_future(keys.next_released())
    press, _ = keys.press("5", "rtp", 0)
    keys.hold(press, 5, 100)
    await asyncio.sleep(0)
    assert not reader.done()  # pressed, not yet released
    keys.release(press, 280)
    keys.release(press, 300)  # a retransmitted end: ignored
    assert await asyncio.wait_for(reader, 1) == Key("5", 280)
    # Read at its start (a menu), a press is gone for the release's reader.
    first, _ = keys.press("1", "rtp", 100)
    assert await keys.next() == "1"
    keys.release(first, 100)
    keys.press("2", "tone", 110)
    keys.release(keys.press("3", "info", 111)[0], 250)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(keys.next_released(), 0.05)  # 2 is still held: it goes first
    keys.expire(110 + KeyStream.HELD_TIMEOUT)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(keys.next_released(), 0.05)
    keys.expire(111 + KeyStream.HELD_TIMEOUT)  # no word of 2 for HELD_TIMEOUT: released
    assert await keys.next_released() == Key("2", 0)  # nothing was heard of its length
    assert await keys.next_released() == Key("3", 250)
    assert keys.held == []


async def test_a_press_whose_end_was_lost_ends_at_the_next_or_after_the_timeout():
    keys = KeyStream()
    press, _ = keys.press("7", "rtp", 0, 0)
    for frame in range(1, 13):
        keys.hold(press, frame, frame * 20)  # updates, then the end packets are lost
    keys.expire(12 + KeyStream.HELD_TIMEOUT)
    assert keys.held == [press]
    keys.expire(13 + KeyStream.HELD_TIMEOUT)
    assert await asyncio.wait_for(keys.next_released(), 1) == Key("7", 240)
    # The next press from the same source ends the one before at once.
    eight, _ = keys.press("8", "rtp", 100)
    keys.hold(eight, 104, 80)
    nine, _ = keys.press("9", "rtp", 105)
    assert await asyncio.wait_for(keys.next_released(), 1) == Key("8", 80)
    assert keys.held == [nine]


async def test_a_press_heard_as_tones_is_ended_by_its_rtp_events():
    keys = KeyStream()
    press, _ = keys.press("4", "tone", 0, 40)
    assert keys.press("4", "rtp", 1, 20) == (press, False)
    keys.release(press, 160)  # the end packet; the detector was dropped for the events
    keys.release(press, 140)
    assert await asyncio.wait_for(keys.next_released(), 1) == Key("4", 160)


async def test_key_stream_waits_and_survives_cancellation():
    keys = KeyStream()
    reader = asyncio.ensure_future(keys.next())
    await asyncio.sleep(0)
    keys.press("4", "rtp", 0)
    reader.cancel()  # cancelled in the same instant the key was handed over
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await asyncio.wait_for(keys.next(), 1) == "4"  # not lost
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(keys.next(), 0.05)
    released = asyncio.ensure_future(keys.next_released())
    await asyncio.sleep(0)
    keys.release(keys.press("6", "info", 50)[0], 90)
    released.cancel()
    with pytest.raises(asyncio.CancelledError):
        await released
    assert await asyncio.wait_for(keys.next_released(), 1) == Key("6", 90)  # not lost


async def test_key_stream_close_wakes_readers():
    keys = KeyStream()
    reader = asyncio.ensure_future(keys.next())
    releases = asyncio.ensure_future(keys.next_released())
    await asyncio.sleep(0)
    keys.close(EOFError("closed"))
    for waiting in (reader, releases):
        with pytest.raises(EOFError):
            await waiting
    queued = KeyStream()
    queued.press("8", "info", 0)
    queued.press("9", "rtp", 1, 60)  # still held at the close
    queued.close(EOFError("closed"))
    assert await queued.next() == "8"  # keys pressed before the close are still read
    assert await queued.next_released() == Key("9", 60)  # a key held then: released as it was
    with pytest.raises(EOFError):
        await queued.next()
    with pytest.raises(EOFError):
        await queued.next_released()
