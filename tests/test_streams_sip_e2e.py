"""Streams to a bot over SIP: SIPp is the phone (RTP echoed back, or keys by RFC 4733, SIP INFO
or in-band tones), a raw WebSocket bot on loopback, ringflow in between on a real clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from tests.sipp import SIPP_SHARE, needs_sipp, sipp
from tests.test_sip_carrier_e2e import (  # noqa: F401
    call_to_end,
    dtmf_ulaw,
    place,
    sip_server,
    sqlite_db,
    story,
)
from tests.test_streams_e2e import recorded_channels
from tests.wsbot import BotConnection, WsBot, pcm_tone, tone_power

pytestmark = [pytest.mark.e2e, needs_sipp]


def tone_spans(track: np.ndarray, freq: float = 660, frame: int = 160) -> list[tuple[int, int]]:
    """(first, last) 20 ms frame indexes of each run of frames carrying ``freq``."""
    loud = [
        tone_power(track[i : i + frame].tobytes(), freq, 8000) > 0.5
        and np.abs(track[i : i + frame]).max() > 1000
        for i in range(0, len(track) - frame, frame)
    ]
    spans, start = [], None
    for i, on in enumerate([*loud, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append((start, i - 1))
            start = None
    return spans


@pytest.mark.usefixtures("sqlite_db")
async def test_bot_audio_reaches_the_sip_phone_paced_with_marks_and_barge_in(tmp_path: Path):
    timings: dict[str, float] = {}

    async def talk(conn: BotConnection) -> None:
        await conn.wait_for(event="start", timeout=10)
        timings["sent"] = time.monotonic()
        await conn.send_media(pcm_tone(660, 1.0))  # one burst: played out over a second
        await conn.send_mark("first")
        mark = await conn.wait_for(event="mark", timeout=10)
        timings["mark"] = mark.at
        await conn.send_media(pcm_tone(880, 5.0))
        await conn.send_mark("behind-the-long-one")
        await asyncio.sleep(0.5)
        await conn.send_clear()
        timings["clear"] = time.monotonic()
        await conn.wait_for(event="mark", count=2, timeout=5)
        await asyncio.sleep(1.0)  # the echo of the end comes back
        await conn.close(1000, "done")

    async with (
        sipp(tmp_path, "callee_answer.xml", "-rtp_echo") as phone,
        WsBot(talk) as bot,
        sip_server(tmp_path, phone) as rig,
    ):
        sid = await place(
            rig,
            phone,
            StreamUrl=bot.url,
            Record="true",
            RecordingChannels="dual",
            RecordingFormat="wav",
        )
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0  # our BYE when the bot closed
        conn = bot.last
        # The mark came back once the second of audio had played, not when it arrived.
        assert 0.95 <= timings["mark"] - timings["sent"] <= 1.5, timings
        marks = [m["mark"]["name"] for m in conn.of("mark")]
        assert marks == ["first", "behind-the-long-one"]
        # SIPp echoed what it received: the bot hears its own tone come back as the caller.
        echoed = np.frombuffer(conn.media_pcm(), "<i2")
        assert tone_spans(echoed), "the bot's audio never reached the SIP phone"
        # What went out on RTP: the first second whole, then the long one cut by the clear.
        _, sent = await recorded_channels(rig, sid)
        [(a, b)], [(c, d)] = tone_spans(sent, 660), tone_spans(sent, 880)
        first, second = (b - a + 1) * 0.02, (d - c + 1) * 0.02
        assert c - b <= 5, "no gap between the two messages beyond the mark's round trip"
        assert 0.95 <= first <= 1.05
        assert 0.4 <= second <= 0.5 + 0.1 + 0.05, f"{second:.2f}s of the 5 s played before clear"
        steps = {e["kind"]: e["data"] for e in await rig.timeline(sid)}
        assert steps["stream.clear"]["marks"] == ["behind-the-long-one"]
        assert 4300 <= steps["stream.clear"]["dropped_ms"] <= 4600
        assert steps["stream.end"]["disconnected_by"] == "bot"


def rfc4733_phone(tmp_path: Path):
    # SIPp's recording of a 1: updates, then end packets saying 2240 units (280 ms at 8 kHz).
    (tmp_path / "keys.pcap").symlink_to(SIPP_SHARE / "dtmf_2833_1.pcap")
    return sipp(tmp_path, "callee_dtmf_2833.xml", talk_ms=500)


def info_phone(tmp_path: Path):
    # An INFO of application/dtmf-relay with Signal=5 and Duration=160.
    return sipp(tmp_path, "callee_dtmf_info.xml", variables={"key": "5"}, talk_ms=500)


def inband_phone(tmp_path: Path):
    # A 7 as a 250 ms tone pair in the phone's audio (no RFC 4733 events).
    (tmp_path / "voice.ulaw").write_bytes(dtmf_ulaw("7", seconds=0.25, pause=1.5))
    return sipp(tmp_path, "callee_inband.xml")


@pytest.mark.parametrize(
    "phone_of, digit, low, high",
    [
        pytest.param(rfc4733_phone, "1", 280, 280, id="rfc4733"),
        pytest.param(info_phone, "5", 160, 160, id="info"),
        pytest.param(inband_phone, "7", 230, 270, id="in-band"),  # 20 ms blocks
    ],
)
@pytest.mark.usefixtures("sqlite_db")
async def test_keys_from_the_sip_phone_reach_the_bot_with_their_length(
    tmp_path: Path, phone_of, digit: str, low: int, high: int
):
    async def until_key(conn: BotConnection) -> None:
        await conn.wait_for(event="dtmf", timeout=15)
        await conn.close()

    async with (
        phone_of(tmp_path) as phone,
        WsBot(until_key) as bot,
        sip_server(tmp_path, phone) as rig,
    ):
        sid = await place(rig, phone, StreamUrl=bot.url)
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0
        [dtmf] = bot.last.of("dtmf")
        assert dtmf["dtmf"]["digit"] == digit
        assert low <= int(dtmf["dtmf"]["duration"]) <= high, dtmf
