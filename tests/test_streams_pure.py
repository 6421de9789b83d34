"""The stream's parts without sockets: the playout buffer, the message protocol, stream URLs."""

from __future__ import annotations

import base64
import json

import pytest

from ringflow.errors import InvalidRequest
from ringflow.media.playout import FRAME_BYTES, Playout
from ringflow.streams.protocol import (
    BotClear,
    BotMark,
    BotMedia,
    Ignored,
    StreamInfo,
    StreamProtocol,
    parse_bot_message,
)
from ringflow.streams.target import check_stream_url, parse_target

INFO = StreamInfo("MZ1", "CA1", "AC1", "09812345678", "08039591234", {"k": "v"}, 8000)


def drain(playout: Playout, ticks: int) -> list[tuple[bytes | None, list[str]]]:
    return [playout.take() for _ in range(ticks)]


def test_a_burst_plays_out_one_frame_a_tick_without_gaps():
    playout = Playout()
    audio = bytes(range(256)) * 25  # 6400 bytes: 20 frames
    playout.push(audio[:1000])
    playout.push(audio[1000:])  # pieces that do not line up with frames
    frames = drain(playout, 21)
    assert b"".join(f for f, _ in frames[:20]) == audio
    assert frames[20] == (None, [])
    assert playout.stats.underruns == 0


def test_a_mark_comes_back_with_the_frame_that_ends_the_audio_before_it():
    playout = Playout()
    playout.push(bytes(FRAME_BYTES * 2 + 100))
    playout.mark("done")
    playout.push(b"\1\0" * 500)
    results = drain(playout, 3)
    assert [marks for _, marks in results] == [[], [], ["done"]]
    # The frame that ends the audio before the mark goes on with the audio after it: no gap.
    third = results[2][0]
    assert third is not None and third[:100] == bytes(100) and third[100:] == b"\1\0" * 110


def test_a_mark_with_nothing_before_it_comes_back_at_the_next_tick():
    playout = Playout()
    playout.mark("now")
    assert playout.take() == (None, ["now"])


def test_clear_drops_all_audio_and_returns_the_marks_behind_it():
    playout = Playout()
    playout.push(bytes(8000 * 2 * 5))  # 5 s
    playout.mark("a")
    playout.push(bytes(1600))
    playout.mark("b")
    playout.take()
    assert playout.clear() == ["a", "b"]
    assert playout.take() == (None, [])
    assert playout.stats.dropped_bytes == 8000 * 2 * 5 + 1600 - FRAME_BYTES


def test_a_short_last_piece_waits_one_tick_for_the_rest_then_is_padded():
    playout = Playout()
    playout.push(b"\1\0" * 100)
    assert playout.take() == (None, [])  # held: the rest of the frame may be on its way
    frame, _ = playout.take()
    assert frame == b"\1\0" * 100 + bytes(FRAME_BYTES - 200)
    assert playout.stats.underruns == 1
    with pytest.raises(ValueError):
        playout.push(b"\0")


def test_latency_is_measured_from_push_to_first_play():
    now = [0.0]
    playout = Playout(now=lambda: now[0], keep_latencies=10)
    playout.push(bytes(FRAME_BYTES))
    now[0] = 0.015
    playout.take()
    assert playout.stats.latencies == [0.015]


def test_messages_are_numbered_and_use_only_snake_case_keys():
    protocol = StreamProtocol(INFO)
    assert json.loads(protocol.connected()) == {"event": "connected"}
    start = json.loads(protocol.start())
    assert start["sequence_number"] == "1" and start["stream_sid"] == "MZ1"
    assert start["start"] == {
        "stream_sid": "MZ1",
        "call_sid": "CA1",
        "account_sid": "AC1",
        "from": "09812345678",
        "to": "08039591234",
        "custom_parameters": {"k": "v"},
        "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
    }
    first = json.loads(protocol.media(bytes(1600)))
    second = json.loads(protocol.media(bytes(1600)))
    assert (first["sequence_number"], first["media"]["chunk"], first["media"]["timestamp"]) == (
        "2",
        "1",
        "100",
    )
    assert (second["sequence_number"], second["media"]["chunk"], second["media"]["timestamp"]) == (
        "3",
        "2",
        "200",
    )
    assert "track" not in first["media"]
    dtmf = json.loads(protocol.dtmf("5", 100))
    assert dtmf == {
        "event": "dtmf",
        "sequence_number": "4",
        "stream_sid": "MZ1",
        "dtmf": {"digit": "5", "duration": "100"},
    }
    stop = json.loads(protocol.stop("callended"))
    assert stop["stop"] == {"call_sid": "CA1", "account_sid": "AC1", "reason": "callended"}


def test_both_tracks_are_stamped_each_on_its_own():
    protocol = StreamProtocol(INFO)
    a = json.loads(protocol.media(bytes(1600), "inbound"))
    b = json.loads(protocol.media(bytes(1600), "outbound"))
    assert (a["media"]["track"], a["media"]["timestamp"]) == ("inbound", "100")
    assert (b["media"]["track"], b["media"]["chunk"], b["media"]["timestamp"]) == (
        "outbound",
        "2",
        "100",
    )


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"event":"media","streamSid":"x","media":{"payload":"AAAB"}}', BotMedia(b"\0\0\1")),
        ('{"event":"mark","mark":{"name":"m"}}', BotMark("m")),
        ('{"event":"clear","stream_sid":"x","extra":1}', BotClear()),
    ],
)
def test_bot_messages_are_read_with_or_without_a_stream_sid(frame, expected):
    if isinstance(expected, BotMedia):
        frame = frame.replace("AAAB", base64.b64encode(b"\0\0\1\0").decode())
        expected = BotMedia(b"\0\0\1\0")
    assert parse_bot_message(frame) == expected


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        b"\0\1binary",
        "[1,2]",
        '{"event":"media","media":{"payload":"%%%"}}',
        '{"event":"media","media":{"payload":"AAAA"}}',
        # Padding after whole groups: base64.b64decode reads it as 6 bytes; refused here.
        '{"event":"media","media":{"payload":"AAAAAAAA===="}}',
        '{"event":"mark","mark":{}}',
        '{"event":"dance"}',
        '{"media":{}}',
        # JSON that a lax reader takes (or, nested deep enough, raises RecursionError for)
        '{"event":"media","media":{"payload":NaN}}',
        '{"event":"mark","mark":{"name":"\\ud800"}}',
        '{"event":"media","media":' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
)
def test_unusable_bot_frames_are_ignored_with_a_reason(frame):
    event = parse_bot_message(frame)
    assert isinstance(event, Ignored) and event.reason


def test_stream_urls_are_taken_apart_and_checked():
    target = parse_target(
        "wss://key:tok@bot.example.com/agent?lang=en&sample-rate=16000", allow_private=False
    )
    assert target.sample_rate == 16000 and target.custom_parameters == {"lang": "en"}
    assert target.shown == "wss://bot.example.com/agent?lang=en&sample-rate=16000"
    assert "tok" not in target.shown
    for bad, says in [
        ("ftp://bot.example.com/", "ws://, wss://"),
        ("ws://127.0.0.1/", "private address"),
        ("ws://bot.example.com/?sample-rate=11025", "sample-rate"),
        ("ws://bot.example.com/?a=1&b=2&c=3&d=4", "at most 3 custom"),
        ("ws://bot.example.com/?a=" + "x" * 300, "256 characters"),
        ("wss://bot.example.com/" + "x" * 600, "600 characters"),
    ]:
        with pytest.raises(InvalidRequest, match=says):
            check_stream_url(bad, allow_private=False)
    assert check_stream_url("https://router.example.com/bot", allow_private=False)


def test_bot_audio_reaches_the_buffer_in_whole_frames_at_every_rate():
    from ringflow.streams.stream import BotAudio

    for rate in (8000, 16000, 24000):
        playout = Playout()
        audio = BotAudio(rate, playout)
        pushed = []
        for _ in range(10):  # ten just-in-time messages of 100 ms
            before = len(playout)
            audio.push(bytes(rate // 10 * 2))
            pushed.append(len(playout) - before)
        assert all(n % FRAME_BYTES == 0 for n in pushed), (rate, pushed)
        assert len(playout) == 16000  # a second at 8 kHz: the converter holds nothing back
        audio.mark("end")
        assert len(playout) % 2 == 0
        frames = drain(playout, 60)
        assert playout.stats.underruns <= 1 and frames[-1] == (None, [])
        assert ["end"] in [marks for _, marks in frames]


def test_a_bot_sending_odd_pieces_just_in_time_is_heard_without_gaps():
    from ringflow.streams.stream import BotAudio

    playout = Playout()
    audio = BotAudio(8000, playout)
    for _ in range(20):
        audio.push(bytes(330))  # not a frame: each push leaves a short end behind
        playout.take()
    assert playout.stats.underruns == 0


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(8000, 16000), (8000, 24000), (16000, 8000), (24000, 8000)]
)
def test_rates_convert_20_ms_at_a_time_with_exact_lengths_and_no_aliasing(rate_in, rate_out):
    import numpy as np

    from ringflow.media.rates import RateConverter

    convert = RateConverter(rate_in, rate_out)
    t = np.arange(rate_in) / rate_in
    tone = (np.sin(2 * np.pi * 1000 * t) * 10000).astype("<i2").tobytes()
    piece = rate_in // 50 * 2
    out = [convert(tone[i : i + piece]) for i in range(0, len(tone), piece)]
    assert {len(o) for o in out} == {rate_out // 50 * 2}  # every 20 ms in gives 20 ms out
    y = np.frombuffer(b"".join(out), "<i2")[200:].astype(float)
    assert 0.9 < np.sqrt(np.mean(y**2)) / (10000 / np.sqrt(2)) < 1.1  # the tone passes
    if rate_in > rate_out:  # a tone above the line's 4 kHz is filtered, not folded down
        high = (np.sin(2 * np.pi * 6000 * t) * 10000).astype("<i2").tobytes()
        folded = np.frombuffer(RateConverter(rate_in, rate_out)(high), "<i2")[100:]
        assert np.abs(folded).max() < 200
    with pytest.raises(ValueError):
        RateConverter(11025, 8000)


async def test_a_stop_asked_before_the_stream_opened_is_not_lost():
    """A flow that ends while its stream applet's socket is still opening stops the stream."""
    import asyncio

    from ringflow.clock import ManualClock
    from ringflow.streams.stream import Stream
    from ringflow.telephony.sandbox.network import SandboxChannel
    from ringflow.telephony.sandbox.phones import PhoneScript

    clock = ManualClock()
    channel = SandboxChannel(clock, "+919812345678", PhoneScript())
    never = asyncio.Event()

    async def connect(target):
        await never.wait()

    async def record(kind, data):
        pass

    stream = Stream(
        target=parse_target("ws://bot.example.com/", allow_private=False),
        info=INFO,
        channel=channel,
        clock=clock,
        record=record,
        connect=connect,
    )
    stream.stop()
    outcome = await asyncio.wait_for(stream.run(), 5)
    assert outcome.status == "failed" and outcome.bytes_to_bot == 0
