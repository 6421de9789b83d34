"""Recordings without a server: the sandbox phone speaking into a recorder and a conversation,
the voicemail applet's generator, the engine's Record step, encoding and signed links."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import stat
import wave
from pathlib import Path

import miniaudio
import numpy as np
import pytest

from ringflow.clock import ManualClock, wait_with_timeout
from ringflow.config import Settings
from ringflow.errors import AppInvalid, ConfigError, Forbidden, InvalidRequest
from ringflow.flows.actions import Dial, DialResult, HttpResult, Record, RecordResult, Say
from ringflow.flows.applets import REGISTRY
from ringflow.flows.engine import FlowEngine
from ringflow.flows.model import parse_app
from ringflow.media import PromptCache, TextToSpeech, is_silence, load_audio, voiced_seconds
from ringflow.media.audio import Prompt
from ringflow.recordings import LinkSigner, encode, interleave, load_secret, mix
from ringflow.telephony.carrier import ConversationTap, Recording
from ringflow.telephony.sandbox import PhoneScript
from ringflow.telephony.sandbox.network import BEEP, BEEP_SECONDS, TURN_GAP, SandboxChannel
from tests.e2e import TEST_DATA_DIR
from tests.flowkit import ctx, drive

UTC = dt.UTC
SENTENCE = "Hello, this is Asha. Please call me back about my order."
RATE = 8000


@pytest.fixture(scope="module")
def tts():
    speaker = TextToSpeech(PromptCache(Path(TEST_DATA_DIR) / "media"))
    yield speaker
    speaker.close()


def phone(clock: ManualClock, tts: TextToSpeech | None = None, **script) -> SandboxChannel:
    async def speech(text: str, voice: str | None) -> Prompt:
        assert tts is not None
        return await tts.speak(text, voice)

    return SandboxChannel(
        clock, "+919812345678", PhoneScript.from_dict(script), speech if tts else None
    )


async def run(clock: ManualClock, coro):
    task = asyncio.ensure_future(coro)
    await clock.run_until(task.done)
    return task.result()


# The sandbox phone, recorded


async def test_a_phone_says_its_line_then_the_silence_timeout_ends_the_recording(clock, tts):
    channel = phone(clock, tts, says=[SENTENCE])
    spoken = (await tts.speak(SENTENCE)).duration
    heard = await run(clock, channel.record(60, "#", True, 3))
    assert heard.ended_by == "silence" and heard.digits == ""
    assert heard.duration == pytest.approx(spoken + 3, abs=0.01)
    assert clock.now() == pytest.approx(BEEP_SECONDS + spoken + 3, abs=0.01)
    assert channel.heard == [BEEP]
    speech, silence = heard.pcm[: int(spoken * RATE) * 2], heard.pcm[int(spoken * RATE) * 2 :]
    assert voiced_seconds(speech) > spoken / 2  # real speech, most of it voiced
    assert is_silence(silence) and not any(silence)


async def test_a_scripted_key_ends_the_recording_after_the_pause(clock, tts):
    channel = phone(clock, tts, says=[{"text": SENTENCE, "then": "#"}], silence_after=1.5)
    spoken = (await tts.speak(SENTENCE)).duration
    heard = await run(clock, channel.record(60, "#*", False, 5))
    assert (heard.ended_by, heard.digits) == ("key", "#")
    assert heard.duration == pytest.approx(spoken + 1.5, abs=0.01)
    assert channel.heard == []  # no beep asked for


async def test_a_key_that_does_not_finish_is_ignored(clock, tts):
    channel = phone(clock, tts, says=[{"text": "Hi", "then": "5"}], silence_after=1)
    heard = await run(clock, channel.record(60, "#", False, 2))
    assert heard.ended_by == "silence"


async def test_a_phone_that_hangs_up_after_speaking_ends_the_recording(clock, tts):
    channel = phone(clock, tts, says=[{"text": SENTENCE, "then": "hangup"}], silence_after=0.5)
    heard = await run(clock, channel.record(60, "#", True, 5))
    assert heard.ended_by == "hangup" and channel.closed
    assert await channel.wait_closed() == "remote"
    assert not is_silence(heard.pcm)


async def test_max_length_cuts_the_message(clock, tts):
    channel = phone(clock, tts, says=[SENTENCE])
    heard = await run(clock, channel.record(1.5, "#", False, 5))
    assert heard.ended_by == "max-length" and heard.duration == pytest.approx(1.5)


async def test_a_silent_phone_gives_silence_and_one_entry_is_used_per_recording(clock, tts):
    channel = phone(clock, tts, says=["", "Second time lucky"])
    first = await run(clock, channel.record(60, "#", False, 2))
    second = await run(clock, channel.record(60, "#", False, 2))
    third = await run(clock, channel.record(60, "#", False, 2))
    assert first.ended_by == "silence" and first.duration == 2 and is_silence(first.pcm)
    assert not is_silence(second.pcm)
    assert is_silence(third.pcm)  # the script ran out: nothing more to say


async def test_a_hangup_before_speaking_gives_an_empty_recording(clock, tts):
    channel = phone(clock, tts, says=[SENTENCE], hangup_after=0.2)
    heard = await run(clock, channel.record(60, "#", True, 5))
    assert heard == Recording(b"", "hangup")
    assert (await run(clock, channel.record(60, "#", True, 5))).ended_by == "hangup"


async def test_without_tts_a_murmur_stands_in_for_speech(clock):
    channel = phone(clock, None, says=["one two three four five six"])
    heard = await run(clock, channel.record(60, "#", False, 1))
    assert not is_silence(heard.pcm)


async def test_a_recorded_conversation_callee_first_then_caller(clock, tts):
    caller = phone(clock, tts, says=["I would like to change my delivery address."])
    callee = phone(
        clock,
        tts,
        says=[{"text": "Acme support, Ravi speaking.", "then": "hangup"}],
        silence_after=6,
    )
    far = (await tts.speak("Acme support, Ravi speaking.")).duration
    near = (await tts.speak("I would like to change my delivery address.")).duration
    tap = ConversationTap()
    await run(clock, caller.bridge(callee, tap))
    assert callee.closed and not caller.closed
    assert tap.duration == pytest.approx(far + 6, abs=0.01)
    assert len(tap.near) == len(tap.far)
    split = int(far * RATE) * 2
    assert voiced_seconds(bytes(tap.far[:split])) > far / 2 and is_silence(bytes(tap.far[split:]))
    assert is_silence(bytes(tap.near[:split]))
    start = int((far + TURN_GAP) * RATE) * 2
    assert voiced_seconds(bytes(tap.near[start : start + int(near * RATE) * 2])) > near / 2


async def test_a_conversation_cut_by_a_limit_still_writes_its_audio(clock, tts):
    caller = phone(clock, tts, says=["Hello?"])
    callee = phone(clock, tts, says=["Hello, who is this?"])
    tap = ConversationTap()
    await run(clock, wait_with_timeout(clock, caller.bridge(callee, tap), 4))
    assert tap.duration == pytest.approx(4) and not is_silence(bytes(tap.far))


def test_says_is_validated():
    script = PhoneScript.from_dict(
        {"says": ["Hi", {"text": "Bye", "then": "hangup"}], "silence_after": 2}
    )
    assert script.to_dict()["says"] == ["Hi", {"text": "Bye", "then": "hangup"}]
    assert PhoneScript.from_dict(script.to_dict()) == script
    assert "says" not in PhoneScript().to_dict()
    for bad, message in [
        ({"says": [{"text": "x", "then": "later"}]}, "then must be one key"),
        ({"says": [{"words": "x"}]}, "says entries must be texts"),
        ({"says": 3}, "says must be a list"),
        ({"silence_after": -1}, "silence_after must be between"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            PhoneScript.from_dict(bad)


def test_conversation_tap_keeps_tracks_aligned():
    tap = ConversationTap()
    tap.write(b"\1\0" * 3, b"\2\0")
    assert bytes(tap.far) == b"\2\0" + bytes(4) and len(tap.near) == 6
    assert tap.duration == 3 / RATE


# Silence


def test_silence_and_a_click_are_no_message_but_a_tone_is():
    assert is_silence(b"") and is_silence(bytes(16000))
    click = bytearray(16000)
    click[100:140] = b"\xff\x7f" * 20
    assert is_silence(bytes(click))
    tone = (np.sin(np.arange(8000) * 2 * np.pi * 300 / RATE) * 3000).astype("<i2").tobytes()
    assert not is_silence(tone) and voiced_seconds(tone) == pytest.approx(1.0)


# The voicemail applet


def test_voicemail_prompts_records_and_hands_the_url_on():
    context = ctx()
    url = "http://rf.example/v1/Accounts/acme/Recordings/abc.mp3"
    cfg = {
        "applet": "voicemail",
        "prompt": "Leave a message",
        "max_length": 30,
        "finish_on_key": "*",
        "beep": False,
        "silence_timeout": 3,
    }
    actions, exit_name = drive(cfg, context, [None, RecordResult(url, 4.2, "*", "key", "abc")])
    assert actions == [Say("Leave a message", None), Record(30.0, "*", False, 3.0)]
    assert exit_name == "next" and context.vars["RecordingUrl"] == url


def test_voicemail_defaults_and_no_message():
    context = ctx()
    actions, exit_name = drive({"applet": "voicemail"}, context, [RecordResult(None)])
    assert actions == [Record(120.0, "#", True, 5.0)]
    assert exit_name == "on_no_message" and "RecordingUrl" not in context.vars


@pytest.mark.parametrize(
    ("cfg", "problem"),
    [
        ({"max_length": 0}, "field 'max_length': must be a number of seconds from 1 to 3600"),
        ({"max_length": True}, "field 'max_length': must be a number of seconds from 1 to 3600"),
        ({"finish_on_key": "a"}, "field 'finish_on_key': must be keys from 0-9, * and #"),
        ({"beep": "yes"}, "field 'beep': must be true or false"),
        ({"prompt": " "}, "field 'prompt': must be a non-empty text to speak"),
        (
            {"silence_timeout": 61},
            "field 'silence_timeout': must be a number of seconds from 1 to 60",
        ),
        ({"on_message": None}, "field 'on_message': not a field of voicemail"),
    ],
)
def test_voicemail_validation_names_the_field(cfg, problem):
    with pytest.raises(AppInvalid) as info:
        parse_app(
            {"name": "t", "start": "n", "nodes": {"n": {"applet": "voicemail", **cfg}}}, REGISTRY
        )
    assert any(p.startswith(f"node 'n': {problem}") for p in info.value.problems), (
        info.value.problems
    )


def test_connect_asks_for_recording_and_hands_its_url_on():
    context = ctx()
    url = "http://rf.example/v1/Accounts/acme/Recordings/abc.mp3"
    cfg = {
        "applet": "connect",
        "numbers": ["09812345679"],
        "record": True,
        "recording_channels": "dual",
    }
    actions, exit_name = drive(cfg, context, [DialResult("completed", "+919812345679", 8, url)])
    assert actions[0].record is True and actions[0].recording_channels == "dual"
    assert exit_name == "after_conversation" and context.vars["RecordingUrl"] == url
    body = HttpResult(
        200, "application/json", '{"destination": {"numbers": ["09812345679"]}, "record": true}'
    )
    actions, _ = drive(
        {"applet": "connect", "url": "http://x.example/who"}, ctx(), [body, DialResult("no-answer")]
    )
    assert isinstance(actions[1], Dial) and actions[1].record is True
    assert actions[1].recording_channels is None  # the call's own setting


# The engine's Record step


async def engine_run(
    clock: ManualClock, channel: SandboxChannel, saved: list
) -> tuple[FlowEngine, list]:
    graph = parse_app(
        {
            "name": "vm",
            "start": "vm",
            "nodes": {
                "vm": {
                    "applet": "voicemail",
                    "silence_timeout": 2,
                    "next": "yes",
                    "on_no_message": "no",
                },
                "yes": {"applet": "hangup"},
                "no": {"applet": "hangup"},
            },
        },
        REGISTRY,
    )
    steps: list = []

    async def record(kind, data):
        steps.append((kind, data))

    async def save(heard: Recording) -> tuple[str, str]:
        saved.append(heard)
        return "rec1", "http://rf.example/rec1.mp3"

    async def http_get(action):  # pragma: no cover - the app makes no requests
        raise AssertionError(action)

    engine = FlowEngine(graph, REGISTRY, ctx(), channel, http_get, record, save_recording=save)
    await run(clock, engine.run())
    return engine, steps


async def test_engine_keeps_a_message_and_puts_it_on_the_timeline(clock, tts):
    saved: list = []
    engine, steps = await engine_run(clock, phone(clock, tts, says=[SENTENCE]), saved)
    [step] = [data for kind, data in steps if kind == "recording"]
    assert step["message"] is True and step["sid"] == "rec1" and step["ended_by"] == "silence"
    assert len(saved) == 1 and engine.ctx.vars["RecordingUrl"] == "http://rf.example/rec1.mp3"
    assert ("applet.exit", {"node": "vm", "exit": "next", "next": "yes"}) in steps


async def test_engine_keeps_no_file_for_silence(clock, tts):
    saved: list = []
    _, steps = await engine_run(clock, phone(clock, tts), saved)
    [step] = [data for kind, data in steps if kind == "recording"]
    assert step == {"duration": 2.0, "ended_by": "silence", "digits": "", "message": False}
    assert saved == []
    assert ("applet.exit", {"node": "vm", "exit": "on_no_message", "next": "no"}) in steps


# Encoding


def tone(seconds: float, freq: float, level: int = 8000) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * level).astype("<i2").tobytes()


def test_mp3_recordings_decode_to_their_length():
    pcm = tone(3.0, 440)
    small, large = encode([pcm], "mp3"), encode([pcm], "mp3-hq")
    for data in (small, large):
        decoded = load_audio(data)
        assert 3.0 <= decoded.duration <= 3.0 + (1105 + 576) / 8000  # LAME's delay and padding
        assert not is_silence(decoded.pcm)
    assert miniaudio.mp3_get_info(small).nchannels == 1
    # 32 kbit/s vs 64 kbit/s
    assert len(small) == pytest.approx(3.0 * 32000 / 8, rel=0.15)
    assert len(large) == pytest.approx(3.0 * 64000 / 8, rel=0.15)


def test_wav_recordings_are_exact():
    pcm = tone(1.0, 300)
    with wave.open(io.BytesIO(encode([pcm], "wav"))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.readframes(w.getnframes()) == pcm


def test_single_mixes_and_dual_keeps_a_channel_per_party():
    caller, callee = tone(1.0, 300), tone(1.0, 700, 20000)
    mixed = np.frombuffer(mix(caller, callee), "<i2")
    assert mixed.max() <= 32767 and np.abs(mixed).max() > 20000
    with wave.open(io.BytesIO(encode([caller, callee], "wav", "dual"))) as w:
        assert w.getnchannels() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert frames[:, 0].tobytes() == caller and frames[:, 1].tobytes() == callee
    assert interleave(caller, callee) == frames.tobytes()
    decoded = miniaudio.decode(encode([caller, bytes(len(callee))], "mp3", "dual"))
    stereo = np.asarray(decoded.samples, dtype=np.int16).reshape(-1, 2)
    assert decoded.nchannels == 2
    assert not is_silence(stereo[:, 0].tobytes()) and is_silence(stereo[:, 1].tobytes())
    with pytest.raises(ValueError):
        encode([caller], "ogg")


# Signed links


def test_links_verify_until_they_expire():
    signer = LinkSigner(b"k" * 32)
    sig = signer.signature("acme", "rec1", 1000)
    signer.check("acme", "rec1", "1000", sig, now=999)
    signer.check("ACME", "REC1", "1000", sig.upper(), now=999)  # SIDs and hex in any case
    with pytest.raises(Forbidden, match="expired"):
        signer.check("acme", "rec1", "1000", sig, now=1000)
    for account, rec, expires, signature in [
        ("acme", "rec1", "1001", sig),  # a later expiry
        ("acme", "rec2", "1000", sig),  # another recording
        ("other", "rec1", "1000", sig),  # another account
        ("acme", "rec1", "1000", sig[:-1] + ("0" if sig[-1] != "0" else "1")),
        ("acme", "rec1", "1000", "é" * 64),
    ]:
        with pytest.raises(Forbidden, match="signature does not match"):
            signer.check(account, rec, expires, signature, now=0)
    for expires in ("", "-5", "1e9", "99999999999999"):
        with pytest.raises(Forbidden, match="malformed"):
            signer.check("acme", "rec1", expires, sig, now=0)
    assert LinkSigner(b"x" * 32).signature("acme", "rec1", 1000) != sig


def test_the_secret_is_generated_once_with_mode_600(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    first = load_secret(settings)
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) == 64 and load_secret(settings) == first
    configured = Settings(data_dir=str(tmp_path / "data"), secret_key="s" * 40)
    assert load_secret(configured) == b"s" * 40


def test_a_short_secret_key_is_refused():
    with pytest.raises(ConfigError, match="RINGFLOW_SECRET_KEY must be at least 32"):
        Settings.from_env({"RINGFLOW_SECRET_KEY": "short"})
    assert "s" * 40 not in repr(Settings(secret_key="s" * 40))
