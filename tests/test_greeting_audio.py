"""Greetings that play audio (uploaded, or from a URL) and dynamic greetings, end to end on the
sandbox: the line is held for the audio's real length (read off the timeline's timestamps on
the ManualClock), uploads become 8 kHz mono, another account's audio is refused, and a dynamic
greeting's HEAD-then-GET carries exactly its query parameters."""

from __future__ import annotations

import datetime as dt
import io
import uuid
import wave
from typing import Any

import numpy as np
import pytest

from ringflow.errors import AppInvalid
from ringflow.flows.applets import REGISTRY
from ringflow.flows.model import parse_app
from ringflow.media.audio import encode_mp3
from tests.e2e import EXOPHONE, Rig, running
from tests.support import recorder
from tests.test_apps_e2e import CUSTOMER, Timeline, call_app, example, timeline

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def tone(seconds: float, rate: int, channels: int, hz: float = 440.0) -> np.ndarray:
    """Interleaved int16 samples of a tone (a different pitch per channel)."""
    t = np.arange(round(seconds * rate)) / rate
    tracks = [np.sin(2 * np.pi * hz * (c + 1) * t) * 8000 for c in range(channels)]
    return np.column_stack(tracks).astype("<i2").reshape(-1)


def wav_file(seconds: float, rate: int = 16000, channels: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(seconds, rate, channels).tobytes())
    return buf.getvalue()


def mp3_file(seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    return encode_mp3(tone(seconds, rate, channels).tobytes(), rate, channels, 128)


def app(**greeting: Any) -> dict[str, Any]:
    """A greeting (these fields), then a spoken goodbye, then the end of the flow."""
    return {
        "name": "greeting audio",
        "start": "hello",
        "nodes": {
            "hello": {"applet": "greeting", **greeting, "next": "after"},
            "after": {"applet": "greeting", "text": "Goodbye", "next": None},
        },
    }


async def run_app(rig: Rig, graph: dict[str, Any], **params: Any) -> tuple[str, Timeline]:
    app_id = (await rig.services.accounts.save_app(rig.sid, graph)).id
    sid = await call_app(rig, app_id, [], **params)
    return sid, await timeline(rig, sid)


def at(steps: Timeline, kind: str, node: str | None = None, index: int = 0) -> dt.datetime:
    found = [
        e["at"]
        for e in steps.events
        if e["kind"] == kind and (node is None or e["data"].get("node") == node)
    ]
    return dt.datetime.fromisoformat(found[index])


def held(steps: Timeline) -> float:
    """Seconds from the greeting's first play (or request) to its exit."""
    start = at(steps, "applet.enter", "hello")
    return (at(steps, "applet.exit", "hello") - start).total_seconds()


def exit_of(steps: Timeline, node: str) -> dict[str, Any]:
    return next(d for d in steps.of("applet.exit") if d["node"] == node)


async def upload(rig: Rig, data: bytes, sid: str | None = None, auth: Any = None) -> Any:
    return await rig.http.post(
        f"{rig.base}/admin/v1/accounts/{sid or rig.sid}/audio",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
        auth=auth or rig.auth,
    )


# Audio from a URL


@sqlite_only
async def test_audio_url_holds_the_line_for_the_audio_length(database_url):
    audio = wav_file(1.5, rate=16000, channels=2)
    async with running(database_url) as rig, recorder() as files:
        files.script = [(200, "audio/wav", audio)]
        _, steps = await run_app(rig, app(audio_url=f"{files.url}/prompts/hello.wav"))
        assert [s.method + " " + s.path for s in files.seen] == ["GET /prompts/hello.wav"]
        assert steps.of("play") == [{"url": f"{files.url}/prompts/hello.wav"}]
        assert steps.of("play.failed") == []
        assert held(steps) == pytest.approx(1.5, abs=1e-3)
        assert "error" not in exit_of(steps, "hello")
        assert steps.said == ["Goodbye"]


@sqlite_only
@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ((404, "text/plain", "gone"), "answered 404, not 200"),
        ((200, "text/plain", "not audio at all"), "audio file must be WAV or MP3"),
        ((200, "audio/wav", b"RIFF\0\0\0\0WAVEjunk"), "cannot be decoded"),
    ],
)
async def test_an_audio_url_that_cannot_play_is_skipped_with_the_reason(
    database_url, answer, reason
):
    async with running(database_url) as rig, recorder() as files:
        files.script = [answer]
        _, steps = await run_app(rig, app(audio_url=f"{files.url}/p.wav"))
        [failed] = steps.of("play.failed")
        assert failed["url"] == f"{files.url}/p.wav" and reason in failed["error"]
        assert reason in exit_of(steps, "hello")["error"]
        assert exit_of(steps, "hello")["next"] == "after"
        assert held(steps) == pytest.approx(0, abs=1e-3)  # nothing played, no time passed
        assert steps.said == ["Goodbye"]


# Uploaded audio


@sqlite_only
async def test_an_uploaded_mp3_becomes_8khz_mono_and_plays_for_its_length(database_url):
    async with running(database_url) as rig:
        r = await upload(rig, mp3_file(2.0, rate=44100, channels=2))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body.keys() == {"id", "duration", "url"}
        # MP3 frames pad the end a little; the length is the decoded audio's.
        assert body["duration"] == pytest.approx(2.0, abs=0.1)
        assert body["url"].endswith(f"/admin/v1/accounts/{rig.sid}/audio/{body['id']}")
        stored = await rig.http.get(
            f"{rig.base}/admin/v1/accounts/{rig.sid}/audio/{body['id']}", auth=rig.auth
        )
        assert stored.status_code == 200 and stored.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(stored.content)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
            assert w.getnframes() / 8000 == pytest.approx(body["duration"], abs=1e-3)
        # The same file uploaded again is the same audio.
        again = await upload(rig, mp3_file(2.0, rate=44100, channels=2))
        assert again.json()["id"] == body["id"]

        _, steps = await run_app(rig, app(audio=body["id"]))
        assert steps.of("play") == [{"url": f"audio:{body['id']}"}]
        assert held(steps) == pytest.approx(body["duration"], abs=1e-3)
        assert steps.said == ["Goodbye"]


@sqlite_only
async def test_bad_audio_upload_is_refused_with_the_media_message(database_url):
    async with running(database_url) as rig:
        r = await upload(rig, b"hello, I am not a sound")
        assert r.status_code == 400
        assert "audio file must be WAV or MP3" in r.json()["error"]["message"]
        empty = await upload(rig, b"")
        assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
        missing = await rig.http.get(
            f"{rig.base}/admin/v1/accounts/{rig.sid}/audio/{'0' * 24}", auth=rig.auth
        )
        assert missing.status_code == 404


@sqlite_only
async def test_another_accounts_audio_is_refused(database_url):
    async with running(database_url) as rig:
        other = await rig.services.accounts.create_account(f"other {uuid.uuid4().hex[:8]}")
        r = await upload(rig, wav_file(1.0), other.account_sid, (other.api_key, other.api_token))
        assert r.status_code == 201, r.text
        theirs = r.json()["id"]
        # Not readable through this account's API either.
        seen = await rig.http.get(
            f"{rig.base}/admin/v1/accounts/{rig.sid}/audio/{theirs}", auth=rig.auth
        )
        assert seen.status_code == 404
        _, steps = await run_app(rig, app(audio=theirs))
        [failed] = steps.of("play.failed")
        assert "is not an uploaded audio of this account" in failed["error"]
        assert "is not an uploaded audio of this account" in exit_of(steps, "hello")["error"]
        assert held(steps) == pytest.approx(0, abs=1e-3)
        assert steps.said == ["Goodbye"]


def test_greeting_fields_are_checked_when_the_app_is_saved():
    def problems(**greeting: Any) -> str:
        with pytest.raises(AppInvalid) as caught:
            parse_app(app(**greeting), REGISTRY)
        return str(caught.value)

    assert "give exactly one of" in problems(text="Hi", audio="a" * 24)
    assert "give exactly one of" in problems(
        audio_url="https://x.example/a.wav", url="https://x.example/g"
    )
    assert "must be the id of an uploaded audio" in problems(audio="../../etc/passwd")
    assert "is not an http or https URL" in problems(audio_url="file:///etc/passwd")
    assert "is not an http or https URL" in problems(url="ftp://x.example/g")
    assert "only for a dynamic greeting" in problems(text="Hi", timeout=5)
    assert "field 'text': required by greeting" in problems()
    parse_app(app(url="https://x.example/g", timeout=5, voice="hi"), REGISTRY)


# Dynamic greetings


def expected_params(sid: str, custom: str = "") -> dict[str, str]:
    return {
        "CallSid": sid,
        "From": CUSTOMER,
        "To": EXOPHONE,
        "DialWhomNumber": "",
        "CustomField": custom,
    }


@sqlite_only
async def test_dynamic_greeting_speaks_the_text_after_head_then_get(database_url):
    async with running(database_url) as rig, recorder() as server:
        server.script = [200, (200, "text/plain; charset=utf-8", "Your balance is ten rupees.\n")]
        sid, steps = await run_app(rig, app(url=f"{server.url}/greet"), CustomField="acct-42")
        assert [s.method for s in server.to("/greet")] == ["HEAD", "GET"]
        for seen in server.to("/greet"):
            assert seen.query == expected_params(sid, "acct-42")
        assert steps.said == ["Your balance is ten rupees.", "Goodbye"]
        assert [h["status"] for h in steps.of("http")] == [200, 200]
        assert "error" not in exit_of(steps, "hello")


@sqlite_only
async def test_dynamic_greeting_plays_each_audio_url_in_order(database_url):
    async with running(database_url) as rig, recorder() as server, recorder() as files:
        first, second = f"{files.url}/one.wav", f"{files.url}/two.mp3"
        files.script = [(200, "audio/wav", wav_file(0.5)), (200, "audio/mpeg", mp3_file(1.0))]
        server.script = [200, (200, "text/plain", f"{first}\n\n  {second}  \n")]
        sid, steps = await run_app(rig, app(url=f"{server.url}/greet"))
        assert [s.method for s in server.to("/greet")] == ["HEAD", "GET"]
        assert server.to("/greet")[1].query == expected_params(sid)
        assert [s.path for s in files.seen] == ["/one.wav", "/two.mp3"]
        assert steps.of("play") == [{"url": first}, {"url": second}]
        assert steps.said == ["Goodbye"]
        one_to_two = (at(steps, "play", index=1) - at(steps, "play", index=0)).total_seconds()
        assert one_to_two == pytest.approx(0.5, abs=1e-3)
        mp3_seconds = (
            at(steps, "applet.exit", "hello") - at(steps, "play", index=1)
        ).total_seconds()
        assert mp3_seconds == pytest.approx(1.0, abs=0.1)


@sqlite_only
@pytest.mark.parametrize(
    ("script", "requests", "reason"),
    [
        ([404], ["HEAD"], "HEAD {url} answered 404, not 200"),
        ([200, 500], ["HEAD", "GET"], "GET {url} answered 500, not 200"),
        (
            [200, (200, "application/json", '{"text": "hi"}')],
            ["HEAD", "GET"],
            "GET {url} answered application/json, not text/plain",
        ),
        ([200, (200, "text/plain", "  \n")], ["HEAD", "GET"], "GET {url} answered an empty text"),
        ([200, "hang"], ["HEAD", "GET"], "GET {url}: no answer within 1s"),
        ([405, (200, "text/plain", "Hello there")], ["HEAD", "GET"], None),
    ],
)
async def test_dynamic_greeting_failures_skip_to_next_with_the_reason(
    database_url, script, requests, reason
):
    async with running(database_url) as rig, recorder() as server:
        server.script = list(script)
        url = f"{server.url}/greet"
        _, steps = await run_app(rig, app(url=url, timeout=1))
        assert [s.method for s in server.to("/greet")] == requests
        done = exit_of(steps, "hello")
        assert done["exit"] == "next" and done["next"] == "after"
        if reason is None:  # a server without HEAD still gets its GET
            assert "error" not in done and steps.said == ["Hello there", "Goodbye"]
        else:
            assert done["error"] == reason.format(url=url)
            assert steps.said == ["Goodbye"]


@sqlite_only
async def test_dynamic_greeting_audio_that_fails_is_skipped_and_the_rest_plays(database_url):
    async with running(database_url) as rig, recorder() as server, recorder() as files:
        bad, good = f"{files.url}/missing.wav", f"{files.url}/ok.wav"
        files.script = [404, (200, "audio/wav", wav_file(0.75))]
        server.script = [200, (200, "text/plain", f"{bad}\n{good}")]
        _, steps = await run_app(rig, app(url=f"{server.url}/greet"))
        assert [d["url"] for d in steps.of("play")] == [bad, good]
        assert [d["url"] for d in steps.of("play.failed")] == [bad]
        assert f"{bad} answered 404" in exit_of(steps, "hello")["error"]
        assert held(steps) == pytest.approx(0.75, abs=1e-3)


# examples/greeting_audio.yaml


@sqlite_only
async def test_greeting_audio_example(database_url):
    async with running(database_url) as rig, recorder() as server:
        uploaded = (await upload(rig, wav_file(1.25, rate=22050, channels=1))).json()
        graph = example("greeting_audio.yaml", server.url)
        graph["nodes"]["welcome"]["audio"] = uploaded["id"]
        server.script = [
            (200, "audio/mpeg", mp3_file(1.0, rate=44100, channels=2)),
            200,
            (200, "text/plain", "Hello again, valued customer."),
        ]
        sid, steps = await run_app(rig, graph, CustomField="vip")
        assert steps.entered == ["welcome", "offer", "personal", "bye"]
        assert [s.method + " " + s.path for s in server.seen] == [
            "GET /prompts/offer.mp3",
            "HEAD /ivr/greeting",
            "GET /ivr/greeting",
        ]
        assert server.seen[2].query == expected_params(sid, "vip")
        assert steps.of("play") == [
            {"url": f"audio:{uploaded['id']}"},
            {"url": f"{server.url}/prompts/offer.mp3"},
        ]
        assert steps.said == ["Hello again, valued customer."]
        welcome = at(steps, "applet.exit", "welcome") - at(steps, "applet.enter", "welcome")
        assert welcome.total_seconds() == pytest.approx(uploaded["duration"], abs=1e-3)
        assert all("error" not in d for d in steps.of("applet.exit"))


@sqlite_only
async def test_an_upload_is_spooled_to_disk_as_it_arrives_and_the_spool_is_removed(
    database_url, tmp_path
):
    """The body goes to a file under data_dir/uploads while it streams (chunked, no length),
    converts to the same audio as the bytes sent whole, and leaves no spool file behind."""
    import asyncio

    spool_dir = tmp_path / "uploads"
    data = wav_file(2.0)
    seen_on_disk: list[int] = []

    async def chunks():  # chunked transfer coding: no Content-Length
        half = len(data) // 2
        yield data[:half]
        for _ in range(200):  # the first half reaches the spool file before the rest is sent
            sizes = (
                [p.stat().st_size for p in spool_dir.glob("upload-*")] if spool_dir.exists() else []
            )
            if sizes and max(sizes) >= half:
                seen_on_disk.append(max(sizes))
                break
            await asyncio.sleep(0.01)
        yield data[half:]

    async with running(database_url, data_dir=str(tmp_path)) as rig:
        url = f"{rig.base}/admin/v1/accounts/{rig.sid}/audio"
        r = await rig.http.post(
            url,
            content=chunks(),
            auth=rig.auth,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        assert seen_on_disk, "the upload was not written to disk while it arrived"
        whole = await upload(rig, data)
        assert whole.status_code == 201 and whole.json()["id"] == r.json()["id"]
        assert (await upload(rig, b"not a sound at all")).status_code == 400
        assert list(spool_dir.iterdir()) == []
