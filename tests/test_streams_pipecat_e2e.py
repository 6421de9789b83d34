"""A bot built on pipecat-ai (its published ExotelFrameSerializer, unchanged, in its own
virtualenv) on a ringflow call: it hears the caller, and its reply reaches the caller, on the
sandbox (the dual recording) and over SIP (the RTP SIPp receives, echoed back)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ringflow.clock import RealClock
from tests.e2e import running
from tests.pipecatbot import TONE_HZ, BotProcess, pipecat_bot
from tests.sipp import needs_sipp, sipp
from tests.test_sip_carrier_e2e import call_to_end, place, sip_server, sqlite_db, story  # noqa: F401
from tests.test_streams_e2e import recorded_channels, script_phone
from tests.test_streams_sip_e2e import tone_spans

pytestmark = pytest.mark.e2e


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[BotProcess]:
    async with pipecat_bot(tmp_path) as running:
        yield running


def seconds_of_tone(track: np.ndarray) -> float:
    return sum((b - a + 1) * 0.02 for a, b in tone_spans(track, TONE_HZ))


@pytest.mark.usefixtures("sqlite_db")
async def test_a_pipecat_bot_talks_to_a_sandbox_phone(bot: BotProcess, tmp_path: Path):
    database = f"sqlite+aiosqlite:///{tmp_path / 'ringflow.db'}"
    async with running(database, clock=RealClock()) as rig:
        await script_phone(rig, "09812345678", {"ring": 0.2, "hangup_after": 4})
        r = await rig.connect(
            From="09812345678",
            StreamUrl=bot.url(),
            Record="true",
            RecordingChannels="dual",
            RecordingFormat="wav",
        )
        assert r.status_code == 200, r.text
        sid = r.json()["Call"]["Sid"]
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        [report] = await bot.reports(1, timeout=10)
        assert report["provider"] == "exotel" and report["call_sid"] == sid
        assert report["caller_audio_bytes"] > 8000  # the phone's line reached the bot
        said, heard = await recorded_channels(rig, sid)
        assert seconds_of_tone(heard) >= 1.9, "the pipecat bot's reply is not what the phone heard"
        assert seconds_of_tone(said) == 0


@needs_sipp
@pytest.mark.usefixtures("sqlite_db")
async def test_a_pipecat_bot_talks_over_sip(bot: BotProcess, tmp_path: Path):
    async with (
        sipp(tmp_path, "callee_answer.xml", "-rtp_echo") as phone,
        sip_server(tmp_path, phone) as rig,
    ):
        sid = await place(
            rig,
            phone,
            StreamUrl=bot.url(),
            TimeLimit="4",
            Record="true",
            RecordingChannels="dual",
            RecordingFormat="wav",
        )
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0
        [report] = await bot.reports(1, timeout=10)
        assert report["provider"] == "exotel" and report["caller_audio_bytes"] > 8000
        echoed, sent = await recorded_channels(rig, sid)
        assert seconds_of_tone(sent) >= 1.9, "the reply did not go out on RTP"
        assert seconds_of_tone(echoed) >= 1.5, "SIPp did not receive (and echo) the reply"
