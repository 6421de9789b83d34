"""Streams to voice bots end to end on the sandbox: a real server, a real WebSocket bot on
loopback, a virtual phone that talks to it (AgentStream spec, docs/../agentstream.md)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
from pathlib import Path

import pytest

from ringflow.storage.calls import load_call
from tests.e2e import running
from tests.metrics_support import scrape
from tests.wsbot import BotConnection, WsBot, pcm_tone, tone_power

pytestmark = pytest.mark.e2e

SPEC_START_KEYS = {
    "stream_sid",
    "call_sid",
    "account_sid",
    "from",
    "to",
    "custom_parameters",
    "media_format",
}


async def script_phone(rig, number: str, script: dict) -> None:
    r = await rig.http.put(
        f"{rig.base}/admin/v1/accounts/{rig.sid}/sandbox/phones/{number}",
        json=script,
        auth=rig.auth,
    )
    assert r.status_code in (200, 201), r.text


async def test_stream_url_call_sends_the_spec_messages_and_plays_the_bot(database_url):
    async def greet(conn: BotConnection) -> None:
        await conn.wait_for(event="start", timeout=10)
        await conn.send_media(pcm_tone(660, 1.0))
        await conn.send_mark("greeting-done")

    async with WsBot(greet, params={"lang": "en"}) as bot, running(database_url) as rig:
        await script_phone(rig, "09812345678", {"keys": ["5"], "hangup_after": 6})
        r = await rig.connect(
            From="09812345678",
            StreamUrl=bot.url,
            Record="true",
            RecordingChannels="dual",
            RecordingFormat="wav",
        )
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
        assert start["start"]["media_format"] == {
            "encoding": "audio/x-raw",
            "sample_rate": "8000",
            "bit_rate": "16",
        }
        media = conn.of("media")
        assert media and {len(base64.b64decode(m["media"]["payload"])) for m in media} == {1600}
        chunks = [int(m["media"]["chunk"]) for m in media]
        assert chunks == list(range(1, len(chunks) + 1))
        [dtmf] = conn.of("dtmf")
        assert dtmf["dtmf"] == {"digit": "5", "duration": "100"}  # a sandbox key is held 100 ms
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
        played = heard[sounding[0] : sounding[-1] + 1]
        assert 7900 <= len(played) <= 8000, "the phone heard all of the bot's second, and no more"
        assert tone_power(played.tobytes(), 660, 8000) > 0.9, "the bot's tone is not what it heard"
        assert not said.any(), "the phone said nothing"

        events = await rig.timeline(sid)
        steps = {e["kind"]: e["data"] for e in events}
        assert steps["stream.start"]["url"] == bot.url
        # On the test clock: the mark comes back once the bot's second of audio has played,
        # not when it arrived (its audio came within a few 20 ms ticks of the start).
        at = {e["kind"]: dt.datetime.fromisoformat(e["at"]) for e in events}
        played = (at["stream.mark"] - at["stream.start"]).total_seconds()
        assert 1.0 <= played <= 1.2, played
        end = steps["stream.end"]
        assert end["disconnected_by"] == "user" and end["marks"] == 1 and end["dtmf"] == 1
        assert end["bytes_from_bot"] == 16000
        assert steps["stream.mark"] == {"name": "greeting-done"}
        assert steps["stream.dtmf"] == {"digit": "5", "duration_ms": 100}


async def recorded_channels(rig, sid):
    """The call's dual recording as (what the phone said, what it heard)."""
    url = (await rig.details(sid))["RecordingUrl"]
    assert url, "no recording"
    return await recording_channels(rig, url)


async def recording_channels(rig, url):
    """A dual recording as (what the phone said, what it heard)."""
    import io
    import wave

    import numpy as np

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
            rig.sid, voicebot_app(bot.url, f"{rig.customer.url}/passthru")
        )
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
        exits = [
            (e["data"]["node"], e["data"]["exit"])
            for e in await rig.timeline(sid)
            if e["kind"] == "applet.exit"
        ]
        assert exits[:2] == [("bot", "next"), ("report", "on_200")]


async def test_voicebot_exits_by_on_error_after_one_retry(database_url):
    async with WsBot(handshakes=[503, 503]) as bot, running(database_url) as rig:
        app = await rig.services.accounts.save_app(
            rig.sid, voicebot_app(bot.url, f"{rig.customer.url}/passthru")
        )
        r = await rig.connect(From="09812345678", Url=rig.flow_url(app.id))
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        assert len(bot.attempts) == 2
        said = [e["data"]["text"] for e in await rig.timeline(sid) if e["kind"] == "say"]
        assert said == ["Sorry, the assistant is away."]
        [failed] = [e["data"] for e in await rig.timeline(sid) if e["kind"] == "stream.failed"]
        assert "503" in failed["reason"] and "2 attempts" in failed["reason"]


async def test_the_hang_up_api_stops_a_stream_with_reason_stopped(database_url):
    async with WsBot() as bot, running(database_url) as rig:
        r = await rig.connect(
            From="09812345678", StreamUrl=bot.url, StatusCallback=f"{rig.customer.url}/status"
        )
        sid = r.json()["Call"]["Sid"]
        await rig.clock.run_until(lambda: bool(bot.connections) and "media" in bot.events())
        hung = await rig.http.post(
            rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        assert hung.status_code == 200, hung.text
        done = await rig.finish(sid)
        assert done.status == "completed"
        await bot.last.wait_closed(10)
        assert bot.last.events()[-1] == "stop"
        assert bot.last.of("stop")[0]["stop"]["reason"] == "stopped"
        [status] = rig.customer.to("/status")
        assert status.fields()["Status"] == "completed"


async def test_a_stream_applet_streams_both_tracks_beside_the_flow(database_url):
    app = {
        "name": "listen while greeting",
        "start": "listen",
        "nodes": {
            "listen": {"applet": "stream", "url": "", "track": "both", "next": "hello"},
            "hello": {"applet": "greeting", "text": "Hello, this call is transcribed live."},
        },
    }
    async with WsBot() as bot, running(database_url) as rig:
        app["nodes"]["listen"]["url"] = bot.url
        saved = await rig.services.accounts.save_app(rig.sid, app)
        r = await rig.connect(From="09812345678", Url=rig.flow_url(saved.id))
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        conn = await bot.wait_closed(10)
        media = conn.of("media")
        tracks = {m["media"]["track"] for m in media}
        assert tracks == {"inbound", "outbound"}
        heard = b"".join(
            base64.b64decode(m["media"]["payload"])
            for m in media
            if m["media"]["track"] == "outbound"
        )
        assert any(heard), "the outbound track carries the greeting the caller heard"
        assert conn.of("stop")[0]["stop"]["reason"] == "stopped"  # the flow ended
        assert "dtmf" not in conn.events() and "mark" not in conn.events()
        steps = [e["kind"] for e in await rig.timeline(sid)]
        assert "stream.start" in steps and "stream.end" in steps


async def test_an_http_endpoint_names_the_bot_and_credentials_go_in_basic_auth(database_url):
    from tests.wsbot import url_endpoint

    async with WsBot(params={"sample-rate": "16000"}) as bot, running(database_url) as rig:
        async with url_endpoint(bot.url_with(auth=("KEY1", "t0ken"))) as endpoint:
            r = await rig.connect(From="09812345678", StreamUrl=endpoint.url)
            assert r.status_code == 200, r.text
            sid = r.json()["Call"]["Sid"]
            await rig.clock.run_until(lambda: "media" in bot.events())
            await rig.http.post(
                rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=rig.auth
            )
            await rig.finish(sid)
            [asked] = endpoint.seen
            assert asked.query["CallSid"] == sid
        conn = bot.last
        assert conn.basic_auth() == ("KEY1", "t0ken")
        assert "t0ken" not in bot.attempts[0].target and "KEY1" not in bot.attempts[0].target
        assert conn.start["media_format"]["sample_rate"] == "16000"
        assert {len(base64.b64decode(m["media"]["payload"])) for m in conn.of("media")} == {3200}
        steps = {e["kind"]: e["data"] for e in await rig.timeline(sid)}
        assert "t0ken" not in steps["stream.start"]["url"]


async def test_malformed_bot_frames_are_logged_and_the_call_goes_on(database_url):
    async def garbage(conn: BotConnection) -> None:
        await conn.wait_for(event="start", timeout=10)
        for frame in (
            "not json",
            b"\x00binary",
            '{"event":"dance"}',
            '{"event":"media","media":{"payload":"***"}}',
        ):
            await conn.send_raw(frame)
        await conn.send_media(pcm_tone(440, 0.2))
        await conn.send_mark("after-garbage")

    async with WsBot(garbage) as bot, running(database_url) as rig:
        await script_phone(rig, "09812345678", {"hangup_after": 3})
        r = await rig.connect(From="09812345678", StreamUrl=bot.url)
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        assert [m["mark"]["name"] for m in bot.last.of("mark")] == ["after-garbage"]
        ignored = [
            e["data"]["reason"] for e in await rig.timeline(sid) if e["kind"] == "stream.ignored"
        ]
        assert len(ignored) == 4 and "not JSON" in ignored[0] and "binary" in ignored[1]


async def test_active_streams_counts_the_accounts_streams(database_url):
    async with WsBot() as bot, running(database_url) as rig:
        r = await rig.connect(From="09812345678", StreamUrl=bot.url)
        sid = r.json()["Call"]["Sid"]
        await rig.clock.run_until(lambda: "media" in bot.events())
        active = await rig.http.get(rig.url("ActiveStreams.json"), auth=rig.auth)
        assert active.json() == {"ActiveStreamCount": 1, "ThrottleLimit": 100}
        assert (await scrape(rig.http, rig.base)).get(
            "ringflow_streams_active", account=rig.sid
        ) == 1
        await rig.http.post(
            rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        await rig.finish(sid)
        active = await rig.http.get(rig.url("ActiveStreams.json"), auth=rig.auth)
        assert active.json()["ActiveStreamCount"] == 0
        assert (await scrape(rig.http, rig.base)).get(
            "ringflow_streams_active", account=rig.sid
        ) == 0


async def test_a_stream_over_the_accounts_limit_fails_and_an_ended_one_frees_its_place(
    database_url,
):
    async with WsBot() as bot, running(database_url, stream_limit=1) as rig:
        first = (await rig.connect(From="09812345678", StreamUrl=bot.url)).json()["Call"]["Sid"]
        await rig.clock.run_until(lambda: "media" in bot.events())
        second = (await rig.connect(From="09812345679", StreamUrl=bot.url)).json()["Call"]["Sid"]
        assert (await rig.finish(second)).status == "completed"  # answered, then hung up
        [failed] = [e["data"] for e in await rig.timeline(second) if e["kind"] == "stream.failed"]
        assert failed["reason"] == "the account's limit of 1 concurrent streams is reached"
        assert len(bot.connections) == 1  # the second never reached the bot
        active = await rig.http.get(rig.url("ActiveStreams.json"), auth=rig.auth)
        assert active.json() == {"ActiveStreamCount": 1, "ThrottleLimit": 1}

        await rig.http.post(
            rig.url(f"Calls/{first}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        await rig.finish(first)
        active = await rig.http.get(rig.url("ActiveStreams.json"), auth=rig.auth)
        assert active.json() == {"ActiveStreamCount": 0, "ThrottleLimit": 1}
        third = (await rig.connect(From="09812345677", StreamUrl=bot.url)).json()["Call"]["Sid"]
        await rig.clock.run_until(
            lambda: len(bot.connections) == 2 and "media" in bot.last.events()
        )
        await rig.http.post(
            rig.url(f"Calls/{third}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        await rig.finish(third)


async def test_a_call_with_machine_detection_tells_the_bot_who_answered(database_url):
    from tests.wsbot import url_endpoint

    async with WsBot() as bot, running(database_url) as rig, url_endpoint(bot.url) as endpoint:
        await rig.script_phone("09812345670", greeting="Hello?")
        await rig.script_phone("09812345671", greeting="Hello?")
        direct = (
            await rig.connect(From="09812345670", StreamUrl=bot.url, MachineDetection="Enable")
        ).json()["Call"]["Sid"]
        await rig.clock.run_until(lambda: "start" in bot.events())
        start = bot.last.of("start")[0]["start"]
        assert set(start) == SPEC_START_KEYS | {"answered_by"}
        assert start["answered_by"] == "human"
        # An http(s) endpoint naming the bot is told too, in its query.
        asked = (
            await rig.connect(From="09812345671", StreamUrl=endpoint.url, MachineDetection="Enable")
        ).json()["Call"]["Sid"]
        # The second connection exists before its start message has arrived: wait for both.
        await rig.clock.run_until(lambda: len(bot.connections) == 2 and bool(bot.last.of("start")))
        [question] = endpoint.seen
        assert question.query["AnsweredBy"] == "human"
        assert bot.last.of("start")[0]["start"]["answered_by"] == "human"
        for sid in (direct, asked):
            await rig.http.post(
                rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=rig.auth
            )
            await rig.finish(sid)


async def test_stream_url_with_url_or_to_is_refused_naming_both(database_url):
    async with running(database_url) as rig:
        r = await rig.connect(
            From="09812345678", StreamUrl="wss://bot.example.com/", Url=rig.flow_url()
        )
        assert r.status_code == 400 and "StreamUrl and Url" in r.text
        r = await rig.connect(From="09812345678", StreamUrl="ftp://bot.example.com/")
        assert r.status_code == 400 and "StreamUrl" in r.text


async def test_a_stream_url_s_credentials_are_not_kept_once_the_call_is_over(database_url):
    async with WsBot() as bot, running(database_url) as rig:
        r = await rig.connect(From="09812345678", StreamUrl=bot.url_with(auth=("bot", "s3cret")))
        sid = r.json()["Call"]["Sid"]
        await rig.clock.run_until(lambda: "media" in bot.events())
        assert bot.last.basic_auth() == ("bot", "s3cret")  # used while the call needed them
        await rig.http.post(
            rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        await rig.finish(sid)
        async with rig.services.db.session() as session:
            call = await load_call(session, sid)
        assert call.stream_url == f"ws://127.0.0.1:{bot.port}/"


@pytest.mark.parametrize("whole_call", [False, True], ids=["voicebot", "and-whole-call"])
async def test_a_recorded_voicebot_gives_the_passthru_after_it_the_recording(
    database_url, whole_call
):
    """The voicebot's own recording holds the bot's audio; with ``Record=true`` the whole
    call's recording, taped at the same time, holds it too."""

    async def speak_then_leave(conn: BotConnection) -> None:
        await conn.wait_for(event="start", timeout=10)
        await conn.send_media(pcm_tone(660, 1.0))
        await conn.send_mark("said")
        await conn.wait_for(event="mark", timeout=10)
        await conn.close(1000, "done")

    async with WsBot(speak_then_leave) as bot, running(database_url) as rig:
        flow = voicebot_app(bot.url, f"{rig.customer.url}/passthru")
        flow["nodes"]["bot"].update(record=True, recording_channels="dual")
        flow["nodes"]["report"].update(on_200="bye", on_302="bye")
        del flow["nodes"]["human"]
        flow["nodes"]["bye"] = {"applet": "hangup"}
        app = await rig.services.accounts.save_app(rig.sid, flow)
        whole = {"Record": "true", "RecordingChannels": "dual"} if whole_call else {}
        r = await rig.connect(
            From="09812345678", Url=rig.flow_url(app.id), RecordingFormat="wav", **whole
        )
        sid = r.json()["Call"]["Sid"]
        assert (await rig.finish(sid)).status == "completed"
        [hook] = rig.customer.to("/passthru")
        url = hook.query["Stream[RecordingUrl]"]
        assert url.endswith(".wav") and hook.query["RecordingUrl"] == url
        steps = [e["data"] for e in await rig.timeline(sid) if e["kind"] == "recording"]
        assert steps[0]["url"] == url
        assert len(steps) == (2 if whole_call else 1)
        for step in steps:
            _, heard = await recording_channels(rig, step["url"])
            sounding = heard.nonzero()[0]
            played = heard[sounding[0] : sounding[-1] + 1]
            assert 7900 <= len(played) <= 8000, "the recording holds the bot's second of audio"
            assert tone_power(played.tobytes(), 660, 8000) > 0.9


async def test_a_voicebot_s_record_option_is_checked(database_url):
    async with running(database_url) as rig:
        flow = voicebot_app("wss://bot.example.com/", f"{rig.customer.url}/passthru")
        flow["nodes"]["bot"]["record"] = "yes"
        flow["nodes"]["bot"]["recording_channels"] = "stereo"
        r = await rig.http.post(
            f"{rig.base}/admin/v1/accounts/{rig.sid}/apps", json=flow, auth=rig.auth
        )
        assert r.status_code == 400, r.text
        message = r.text
        assert "record" in message and "must be true or false" in message
        assert "must be single or dual" in message


async def test_a_stream_over_the_process_s_own_limit_fails_with_that_reason(database_url):
    async with WsBot() as bot, running(database_url, streams_per_process=1) as rig:
        first = (await rig.connect(From="09812345678", StreamUrl=bot.url)).json()["Call"]["Sid"]
        await rig.clock.run_until(lambda: "media" in bot.events())
        second = (await rig.connect(From="09812345679", StreamUrl=bot.url)).json()["Call"]["Sid"]
        await rig.finish(second)
        [failed] = [e["data"] for e in await rig.timeline(second) if e["kind"] == "stream.failed"]
        assert failed["reason"].startswith("this server carries its limit of 1 streams")
        assert len(bot.connections) == 1
        await rig.http.post(
            rig.url(f"Calls/{first}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        await rig.finish(first)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # not about storage
async def test_a_bot_that_stops_reading_gets_the_newest_audio_as_text_when_it_reads_again(
    database_url,
):
    # The bot stops reading its socket: the caller's audio fills the socket's buffers, then
    # waits in the stream's bounded queue, whose oldest chunks go once it is full. When the bot
    # reads again it gets what was kept, in order and all of it as text messages, and the
    # stream's end says how much was dropped.
    reading = asyncio.Event()

    async def stall(conn: BotConnection) -> None:
        await conn.wait_for(event="start", timeout=10)
        conn.ws.transport.pause_reading()
        await reading.wait()
        conn.ws.transport.resume_reading()

    # Loopback takes megabytes first: the sender's socket buffer grows up to tcp_wmem's most
    # (4 MB by default). At 24 kHz a message is 6.5 KB, ten a second: stall long enough for
    # that, the 100 messages of the queue and 20 s more.
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    stalled = wmem_max / 65_000 + 10 + 20
    async with WsBot(stall, receive_buffer=65536) as bot, running(database_url) as rig:
        await script_phone(rig, "09812345678", {"hangup_after": round(stalled) + 10})
        r = await rig.connect(
            From="09812345678", StreamUrl=bot.url_with(params={"sample-rate": "24000"})
        )
        assert r.status_code == 200, r.text
        sid = r.json()["Call"]["Sid"]
        await rig.clock.run_until(lambda: bool(bot.connections) and "start" in bot.events())
        begun = rig.clock.now()
        await rig.clock.run_until(lambda: rig.clock.now() - begun >= stalled)
        assert len(bot.last.messages) == 2, "the bot read nothing after start"
        reading.set()
        done = await rig.finish(sid)
        assert done.status == "completed"
        conn = await bot.wait_closed(10)
        assert conn.binary() == []
        assert conn.events()[-1] == "stop"
        chunks = [int(m["media"]["chunk"]) for m in conn.of("media")]
        assert chunks == sorted(chunks) and len(set(chunks)) == len(chunks)
        skipped = [b - a - 1 for a, b in itertools.pairwise(chunks) if b - a > 1]
        assert len(skipped) == 1, "one run of the oldest waiting chunks was dropped"
        sequence = [int(m["sequence_number"]) for m in conn.of("media")]
        assert sequence == sorted(sequence)
        [end] = [e["data"] for e in await rig.timeline(sid) if e["kind"] == "stream.end"]
        assert f"{skipped[0]} audio chunks dropped (the bot fell behind)" in end["reason"]
        assert end["bytes_to_bot"] == 4800 * chunks[-1]  # each chunk counted once it was made
