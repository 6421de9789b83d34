"""Streams to voice bots end to end on the sandbox: a real server, a real WebSocket bot on
loopback, a virtual phone that talks to it (AgentStream spec, docs/../agentstream.md)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.e2e import EXOPHONE, running
from tests.wsbot import BotConnection, WsBot, pcm_tone, tone_power

pytestmark = pytest.mark.e2e

SPEC_START_KEYS = {"stream_sid", "call_sid", "account_sid", "from", "to", "custom_parameters",
                   "media_format"}


async def script_phone(rig, number: str, script: dict) -> None:
    r = await rig.http.put(f"{rig.base}/admin/v1/accounts/{rig.sid}/sandbox/phones/{number}",
                           json=script, auth=rig.auth)
    assert r.status_code in (200, 201), r.text


async def test_stream_url_call_sends_the_spec_messages_and_plays_the_bot(database_url):
    async def greet(conn: BotConnection) -> None:
        await conn.wait_for(event="start", timeout=10)
        await conn.send_media(pcm_tone(660, 1.0))
        await conn.send_mark("greeting-done")

    async with WsBot(greet, params={"lang": "en"}) as bot, running(database_url) as rig:
        await script_phone(rig, "09812345678", {"keys": ["5"], "hangup_after": 6})
        r = await rig.connect(From="09812345678", StreamUrl=bot.url, Record="true",
                              RecordingChannels="dual", RecordingFormat="wav")
        assert r.status_code == 200, r.text
        sid = r.json()["Call"]["Sid"]
        done = await rig.finish(sid)
        assert done.status == "completed"
        conn = bot.last
        events = conn.events()
        assert events[:2] == ["connected", "start"], events
        assert events[-1] == "stop"
        start = conn.of("start")[0]
        assert set(start["start"]) == SPEC_START_KEYS
        assert start["sequence_number"] == "1"
        assert start["start"]["call_sid"] == sid
        assert start["start"]["custom_parameters"] == {"lang": "en"}
        assert start["start"]["media_format"] == {"encoding": "audio/x-raw",
                                                  "sample_rate": "8000", "bit_rate": "16"}
        media = conn.of("media")
        assert media and {len(base64.b64decode(m["media"]["payload"])) for m in media} == {1600}
        chunks = [int(m["media"]["chunk"]) for m in media]
        assert chunks == list(range(1, len(chunks) + 1))
        [dtmf] = conn.of("dtmf")
        assert dtmf["dtmf"]["digit"] == "5"
        [mark] = conn.of("mark")
        assert mark["mark"]["name"] == "greeting-done"
        stop = conn.of("stop")[0]
        assert stop["stop"]["reason"] == "callended"
        sent = [m.data for m in conn.messages if m.data is not None]
        assert [int(m["sequence_number"]) for m in sent[1:]] == list(range(1, len(sent)))
        assert all(m["stream_sid"] == start["stream_sid"] for m in sent[1:])
        stamps = [int(m["media"]["timestamp"]) for m in media]
        assert stamps == [100 * c for c in chunks]

        # The phone heard the bot: the dual recording's second channel holds its tone.
        said, heard = await recorded_channels(rig, sid)
        sounding = heard.nonzero()[0]
        played = heard[sounding[0]:sounding[-1] + 1]
        assert 7900 <= len(played) <= 8000, "the phone heard all of the bot's second, and no more"
        assert tone_power(played.tobytes(), 660, 8000) > 0.9, "the bot's tone is not what it heard"
        assert not said.any(), "the phone said nothing"

        steps = {e["kind"]: e["data"] for e in await rig.timeline(sid)}
        assert steps["stream.start"]["url"] == bot.url
        end = steps["stream.end"]
        assert end["disconnected_by"] == "user" and end["marks"] == 1 and end["dtmf"] == 1
        assert end["bytes_from_bot"] == 16000
        assert steps["stream.mark"] == {"name": "greeting-done"}
        assert steps["stream.dtmf"] == {"digit": "5"}


async def recorded_channels(rig, sid):
    """The call's dual recording as (what the phone said, what it heard)."""
    import io
    import wave

    import numpy as np

    url = (await rig.details(sid))["RecordingUrl"]
    assert url, "no recording"
    path = url.split("/v1/", 1)[1]
    fetched = await rig.http.get(f"{rig.base}/v1/{path}", auth=rig.auth)
    assert fetched.status_code == 200, fetched.text
    with wave.open(io.BytesIO(fetched.content)) as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return frames[0::2], frames[1::2]


def voicebot_app(bot_url: str, hook: str) -> dict:
    return {
        "name": "bot then human",
        "start": "bot",
        "nodes": {
            "bot": {"applet": "voicebot", "url": bot_url, "next": "report", "on_error": "sorry"},
            "report": {"applet": "passthru", "url": hook, "on_200": "human", "on_302": "human"},
            "human": {"applet": "connect", "numbers": ["09876500001"]},
            "sorry": {"applet": "greeting", "text": "Sorry, the assistant is away."},
        },
    }


async def test_voicebot_hands_over_to_a_connect_when_the_bot_closes(database_url):
    async def handover(conn: BotConnection) -> None:
        await conn.wait_for(event="start", timeout=10)
        await conn.wait_for(event="media", timeout=10, count=5)  # half a second of the caller
        await conn.close(1000, "transfer to agent")

    async with WsBot(handover) as bot, running(database_url) as rig:
        await script_phone(rig, "09876500001", {"hangup_after": 3})
        app = await rig.services.accounts.save_app(
            rig.sid, voicebot_app(bot.url, f"{rig.customer.url}/passthru"))
        r = await rig.connect(From="09812345678", Url=rig.flow_url(app.id))
        sid = r.json()["Call"]["Sid"]
        done = await rig.finish(sid)
        assert done.status == "completed"
        [hook] = rig.customer.to("/passthru")
        q = hook.query
        assert q["Stream[DisconnectedBy]"] == "bot"
        assert q["Stream[Status]"] == "completed"
        assert q["Stream[StreamUrl]"] == bot.url
        assert q["Stream[StreamSID]"] == bot.last.stream_sid
        assert "1000" in q["Stream[DetailedStatus]"]
        details = await rig.details(sid)
        assert details["Details"]["Leg2Status"] == "completed", details
        exits = [(e["data"]["node"], e["data"]["exit"]) for e in await rig.timeline(sid)
                 if e["kind"] == "applet.exit"]
        assert exits[:2] == [("bot", "next"), ("report", "on_200")]


async def test_voicebot_exits_by_on_error_after_one_retry(database_url):
    async with WsBot(handshakes=[503, 503]) as bot, running(database_url) as rig:
        app = await rig.services.accounts.save_app(
            rig.sid, voicebot_app(bot.url, f"{rig.customer.url}/passthru"))
        r = await rig.connect(From="09812345678", Url=rig.flow_url(app.id))
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        assert len(bot.attempts) == 2
        said = [e["data"]["text"] for e in await rig.timeline(sid) if e["kind"] == "say"]
        assert said == ["Sorry, the assistant is away."]
        [failed] = [e["data"] for e in await rig.timeline(sid) if e["kind"] == "stream.failed"]
        assert "503" in failed["reason"] and "2 attempts" in failed["reason"]
