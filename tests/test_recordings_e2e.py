"""Recordings end to end on the sandbox: a voicemail the scripted phone speaks into, recorded
conversations (Connect in a flow, and the two-number shape with Record=true), and who may fetch
a RecordingUrl: the account's credentials or a signed link until it expires, nobody else."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import miniaudio
import numpy as np
import pytest
from sqlalchemy import select

from ringflow.media import frame_rms, is_silence, load_audio, voiced_seconds
from ringflow.storage.models import Recording
from tests.e2e import Rig, running

CUSTOMER = "09812345678"
CALLEE = "09812345679"
MESSAGE = "Hello, this is Asha from Pune. My order has not arrived yet, please call me back."
BYTES_PER_SECOND = 16000
# An MP3 decodes a little longer than what was encoded: LAME's encoder delay (1105 samples) and
# padding to a whole frame (576 samples at 8 kHz), with no gapless tag to trim them.
MP3_SLACK = (1105 + 576) / 8000


def same_length(decoded: float, recorded: float) -> bool:
    return recorded <= decoded + 0.001 and decoded <= recorded + MP3_SLACK


sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def voicemail_app(hook: str, **voicemail: Any) -> dict[str, Any]:
    """A greeting, the voicemail, then tell the customer's server (Passthru), then hang up."""
    return {
        "name": "voicemail",
        "start": "hello",
        "nodes": {
            "hello": {"applet": "greeting", "text": "Thanks for calling Acme.", "next": "vm"},
            "vm": {
                "applet": "voicemail",
                "prompt": "Please leave a message after the beep.",
                "max_length": 60,
                "silence_timeout": 3,
                **voicemail,
                "next": "report",
                "on_no_message": "sorry",
            },
            "report": {"applet": "passthru", "url": hook, "on_200": "bye", "on_302": "bye"},
            "sorry": {"applet": "greeting", "text": "We did not get a message.", "next": "bye"},
            "bye": {"applet": "hangup"},
        },
    }


async def place(rig: Rig, app: dict[str, Any], **params: Any) -> str:
    """Call the customer with ``app``; wait until the call and its callbacks are over."""
    saved = await rig.services.accounts.save_app(rig.sid, app)
    r = await rig.connect(
        From=CUSTOMER,
        Url=rig.flow_url(saved.id),
        StatusCallback=f"{rig.customer.url}/status",
        **params,
    )
    assert r.status_code == 200, r.text
    sid = r.json()["Call"]["Sid"]
    await rig.finish(sid)
    return sid


async def recordings_of(rig: Rig, call_sid: str) -> list[Recording]:
    call = await rig.call(call_sid)
    async with rig.services.db.session() as session:
        rows = await session.execute(
            select(Recording).where(Recording.call_id == call.id).order_by(Recording.id)
        )
        return list(rows.scalars())


def local(rig: Rig, url: str) -> str:
    """``url`` on the rig's server (RecordingUrl names the configured public URL)."""
    parts = urlsplit(url)
    return rig.base + parts.path + (f"?{parts.query}" if parts.query else "")


def steps(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["kind"] == kind]


async def spoken(rig: Rig, text: str) -> float:
    return (await rig.services.tts.speak(text)).duration


def stereo(data: bytes) -> np.ndarray:
    decoded = miniaudio.decode(data, nchannels=2, sample_rate=8000)
    return np.asarray(decoded.samples, dtype=np.int16).reshape(-1, 2)


async def test_a_voicemail_is_a_real_recording_only_its_owner_or_a_signed_link_opens(
    database_url, tmp_path
):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CUSTOMER, says=[MESSAGE])
        sid = await place(rig, voicemail_app(f"{rig.customer.url}/report"))
        talk = await spoken(rig, MESSAGE)

        [row] = await recordings_of(rig, sid)
        assert (row.format, row.channels) == ("mp3", "single")
        assert row.duration == pytest.approx(talk + 3, abs=0.05)  # the message, then 3 s of silence
        path = tmp_path / "recordings" / rig.sid / f"{row.sid}.mp3"
        assert row.path == f"{rig.sid}/{row.sid}.mp3" and path.is_file()
        data = path.read_bytes()
        assert row.size == len(data)
        assert len(data) == pytest.approx(row.duration * 32000 / 8, rel=0.15)  # 32 kbit/s

        audio = load_audio(data)
        assert same_length(audio.duration, row.duration)
        speech = audio.pcm[: int(talk * BYTES_PER_SECOND) // 2 * 2]
        assert float(np.sqrt(np.mean(frame_rms(speech) ** 2))) > 500  # speech, not hiss
        assert voiced_seconds(speech) > talk / 2
        assert is_silence(audio.pcm[-2 * BYTES_PER_SECOND :])

        url = f"{rig.services.settings.base_url}/v1/Accounts/{rig.sid}/Recordings/{row.sid}.mp3"
        events = await rig.timeline(sid)
        [step] = steps(events, "recording")
        assert step["message"] is True and step["url"] == url and step["ended_by"] == "silence"
        assert [e["data"]["text"] for e in events if e["kind"] == "say"] == [
            "Thanks for calling Acme.",
            "Please leave a message after the beep.",
        ]
        [report] = rig.customer.to("/report")
        assert report.query["RecordingUrl"] == url
        [status] = rig.customer.to("/status")
        assert status.fields()["RecordingUrl"] == url
        assert (await rig.details(sid))["RecordingUrl"] == url
        xml = await rig.http.get(rig.url(f"Calls/{sid}"), auth=rig.auth)
        assert f"<RecordingUrl>{url}</RecordingUrl>" in xml.text

        await check_access(rig, url, data)


async def check_access(rig: Rig, url: str, data: bytes) -> None:
    """Credentials of the owner, or a signed link until it expires; nothing else."""
    where = local(rig, url)
    own = await rig.http.get(where, auth=rig.auth)
    assert own.status_code == 200 and own.content == data
    assert own.headers["content-type"] == "audio/mpeg"
    head = await rig.http.head(where, auth=rig.auth)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(data)
    upper = await rig.http.get(
        where.replace("/v1/Accounts/", "/v1/accounts/").replace(".mp3", ".MP3"), auth=rig.auth
    )
    assert upper.status_code == 200

    anonymous = await rig.http.get(where)
    assert anonymous.status_code == 401 and "Basic" in anonymous.headers["www-authenticate"]
    assert (await rig.http.get(where, auth=(rig.key, "wrong"))).status_code == 401
    assert (await rig.http.get(where.replace(".mp3", ".wav"), auth=rig.auth)).status_code == 404
    assert (await rig.http.post(where, auth=rig.auth)).status_code == 405

    other = await rig.services.accounts.create_account("Other Co")
    other_auth = (other.api_key, other.api_token)
    theirs = where.replace(f"/Accounts/{rig.sid}/", f"/Accounts/{other.account_sid}/")
    assert (await rig.http.get(theirs, auth=other_auth)).status_code == 404
    assert (await rig.http.get(where, auth=other_auth)).status_code == 403  # not their account

    recording_sid = Path(urlsplit(url).path).stem
    admin = f"{rig.base}/admin/v1/accounts/{rig.sid}/recordings/{recording_sid}/link"
    r = await rig.http.get(admin, params={"ttl": 60}, auth=rig.auth)
    assert r.status_code == 200, r.text
    link = r.json()
    assert link["expires"] == int(rig.clock.wall().timestamp()) + 60
    assert link["url"].startswith(url + "?Expires=")
    signed = local(rig, link["url"])
    assert (await rig.http.get(signed)).content == data
    assert (await rig.http.get(signed, auth=rig.auth)).status_code == 200

    query = {k: v[0] for k, v in parse_qs(urlsplit(signed).query).items()}
    flipped = query["Signature"][:-1] + ("0" if query["Signature"][-1] != "0" else "1")
    tampered = [
        {**query, "Signature": flipped},
        {**query, "Expires": str(int(query["Expires"]) + 3600)},
        {"Expires": query["Expires"]},
        {"Signature": query["Signature"]},
    ]
    for params in tampered:
        r = await rig.http.get(where + "?" + urlencode(params))
        assert r.status_code == 403, params
    other_recording = where.replace(recording_sid, "0" * 32)
    assert (await rig.http.get(other_recording + "?" + urlencode(query))).status_code == 403

    assert (await rig.http.get(admin, params={"ttl": 0}, auth=rig.auth)).status_code == 400
    assert (await rig.http.get(admin, params={"ttl": "soon"}, auth=rig.auth)).status_code == 400
    other_admin = (
        f"{rig.base}/admin/v1/accounts/{other.account_sid}/recordings/{recording_sid}/link"
    )
    assert (await rig.http.get(other_admin, auth=other_auth)).status_code == 404

    await rig.clock.advance(59)
    assert (await rig.http.get(signed)).status_code == 200
    await rig.clock.advance(1)
    expired = await rig.http.get(signed)
    assert expired.status_code == 403 and "expired" in expired.text
    assert (await rig.http.get(where, auth=rig.auth)).status_code == 200  # credentials still do


@sqlite_only
async def test_silence_is_no_message(database_url, tmp_path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        sid = await place(rig, voicemail_app(f"{rig.customer.url}/report"))
        events = await rig.timeline(sid)
        [step] = steps(events, "recording")
        assert step == {"duration": 3.0, "ended_by": "silence", "digits": "", "message": False}
        assert {"node": "vm", "exit": "on_no_message", "next": "sorry"} in steps(
            events, "applet.exit"
        )
        assert await recordings_of(rig, sid) == []
        assert not (tmp_path / "recordings").exists()
        assert rig.customer.to("/report") == []
        [status] = rig.customer.to("/status")
        assert status.fields()["RecordingUrl"] == ""
        assert (await rig.details(sid))["RecordingUrl"] is None


@sqlite_only
async def test_a_hangup_before_speaking_is_no_message(database_url, tmp_path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CUSTOMER, says=[MESSAGE], hangup_after=3)  # during the prompt
        sid = await place(rig, voicemail_app(f"{rig.customer.url}/report"))
        events = await rig.timeline(sid)
        assert steps(events, "recording")[0]["ended_by"] == "hangup"
        assert {"node": "vm", "exit": "on_no_message", "next": "sorry"} in steps(
            events, "applet.exit"
        )
        assert steps(events, "flow.end") == [{"reason": "caller hung up"}]
        assert await recordings_of(rig, sid) == []


@sqlite_only
@pytest.mark.parametrize(
    ("then", "ended_by", "digits"), [("#", "key", "#"), ("hangup", "hangup", "")]
)
async def test_a_message_ended_by_a_key_or_a_hangup_is_kept(
    database_url, tmp_path, then, ended_by, digits
):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CUSTOMER, says=[{"text": MESSAGE, "then": then}], silence_after=1)
        sid = await place(
            rig, voicemail_app(f"{rig.customer.url}/report"), RecordingFormat="mp3-hq"
        )
        [row] = await recordings_of(rig, sid)
        assert row.duration == pytest.approx(await spoken(rig, MESSAGE) + 1, abs=0.05)
        assert row.format == "mp3-hq"
        assert row.size == pytest.approx(row.duration * 64000 / 8, rel=0.15)  # 64 kbit/s
        [step] = steps(await rig.timeline(sid), "recording")
        assert (step["ended_by"], step["digits"]) == (ended_by, digits)
        [status] = rig.customer.to("/status")
        assert status.fields()["RecordingUrl"].endswith(f"/Recordings/{row.sid}.mp3")
        # A caller who hangs up after the message ends the flow there; one who presses # goes on.
        assert len(rig.customer.to("/report")) == (1 if then == "#" else 0)
        assert (await rig.details(sid))["Status"] == "completed"


def connect_app(hook: str, **connect: Any) -> dict[str, Any]:
    return {
        "name": "connect",
        "start": "connect",
        "nodes": {
            "connect": {
                "applet": "connect",
                "numbers": [CALLEE],
                **connect,
                "after_conversation": "report",
                "on_no_answer": "bye",
                "on_nobody": "bye",
            },
            "report": {"applet": "passthru", "url": hook, "next": "bye"},
            "bye": {"applet": "hangup"},
        },
    }


CALLER_SAYS = "Hi Ravi, this is Asha, calling about order four two."
CALLEE_SAYS = "Acme support, Ravi speaking."


@sqlite_only
async def test_connect_records_the_conversation_mixed(database_url, tmp_path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CUSTOMER, says=[CALLER_SAYS])
        await rig.script_phone(
            CALLEE, says=[{"text": CALLEE_SAYS, "then": "hangup"}], silence_after=8
        )
        sid = await place(rig, connect_app(f"{rig.customer.url}/report", record=True))
        [row] = await recordings_of(rig, sid)
        far, near = await spoken(rig, CALLEE_SAYS), await spoken(rig, CALLER_SAYS)
        assert (row.format, row.channels) == ("mp3", "single")
        assert row.duration == pytest.approx(far + 8, abs=0.05)
        audio = load_audio((tmp_path / "recordings" / row.path).read_bytes())
        assert same_length(audio.duration, row.duration)
        pcm = audio.pcm
        callee_turn = pcm[: int(far * BYTES_PER_SECOND) // 2 * 2]
        caller_start = int((far + 0.5) * BYTES_PER_SECOND) // 2 * 2
        caller_turn = pcm[caller_start : caller_start + int(near * BYTES_PER_SECOND) // 2 * 2]
        assert voiced_seconds(callee_turn) > far / 2 and voiced_seconds(caller_turn) > near / 2
        assert is_silence(pcm[-int(1.5 * BYTES_PER_SECOND) // 2 * 2 :])

        url = rig.customer.to("/report")[0].query["RecordingUrl"]
        assert url.endswith(f"/Recordings/{row.sid}.mp3")
        assert rig.customer.to("/status")[0].fields()["RecordingUrl"] == url
        [step] = steps(await rig.timeline(sid), "recording")
        assert step["conversation"] is True and step["url"] == url
        [end] = steps(await rig.timeline(sid), "dial.end")
        assert end["recording_url"] == url


@sqlite_only
async def test_connect_without_record_keeps_nothing(database_url, tmp_path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CALLEE, says=[CALLEE_SAYS], hangup_after=5)
        sid = await place(rig, connect_app(f"{rig.customer.url}/report"))
        assert await recordings_of(rig, sid) == []
        assert "RecordingUrl" not in rig.customer.to("/report")[0].query


async def test_two_numbers_with_record_dual_keep_a_channel_per_party(database_url, tmp_path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CUSTOMER, says=[CALLER_SAYS])
        await rig.script_phone(
            CALLEE, says=[{"text": CALLEE_SAYS, "then": "hangup"}], silence_after=8
        )
        r = await rig.connect(
            From=CUSTOMER,
            To=CALLEE,
            Record="true",
            RecordingChannels="dual",
            StatusCallback=f"{rig.customer.url}/status",
        )
        assert r.status_code == 200, r.text
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        [row] = await recordings_of(rig, sid)
        assert (row.format, row.channels) == ("mp3", "dual")
        far = await spoken(rig, CALLEE_SAYS)
        frames = stereo((tmp_path / "recordings" / row.path).read_bytes())
        split = int(far * 8000)
        caller, callee = frames[:, 0], frames[:, 1]
        assert is_silence(caller[:split].tobytes()) and not is_silence(callee[:split].tobytes())
        assert not is_silence(caller[split:].tobytes()) and is_silence(
            callee[split + 800 :].tobytes()
        )

        url = f"{rig.services.settings.base_url}/v1/Accounts/{rig.sid}/Recordings/{row.sid}.mp3"
        details = await rig.details(sid)
        assert details["Status"] == "completed" and details["RecordingUrl"] == url
        assert rig.customer.to("/status")[0].fields()["RecordingUrl"] == url
        fetched = await rig.http.get(local(rig, url), auth=rig.auth)
        assert fetched.status_code == 200 and stereo(fetched.content).shape[1] == 2


@sqlite_only
async def test_two_numbers_without_record_keep_nothing(database_url, tmp_path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CALLEE, says=[CALLEE_SAYS], hangup_after=5)
        r = await rig.connect(From=CUSTOMER, To=CALLEE)
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        assert await recordings_of(rig, sid) == []
        assert (await rig.details(sid))["RecordingUrl"] is None


async def test_record_true_on_a_flow_tapes_the_whole_call(database_url, tmp_path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CUSTOMER, says=[MESSAGE])
        sid = await place(
            rig,
            voicemail_app(f"{rig.customer.url}/report"),
            Record="true",
            RecordingChannels="dual",
        )
        message, whole = await recordings_of(rig, sid)
        assert (whole.channels, message.channels) == ("dual", "single")
        details = await rig.details(sid)
        assert details["RecordingUrl"].endswith(f"/Recordings/{whole.sid}.mp3")
        frames = stereo((tmp_path / "recordings" / whole.path).read_bytes())
        said, heard = frames[:, 0], frames[:, 1]
        # First the customer hears the greeting and the voicemail prompt, then speaks.
        prompts = await spoken(rig, "Thanks for calling Acme.") + await spoken(
            rig, "Please leave a message after the beep."
        )
        cut = int(prompts * 8000)
        assert not is_silence(heard[:cut].tobytes()) and is_silence(said[:cut].tobytes())
        # ... and what they said is all there, as in the voicemail's own recording.
        voicemail = load_audio((tmp_path / "recordings" / message.path).read_bytes()).pcm
        assert voiced_seconds(said[cut:].tobytes()) >= 0.8 * voiced_seconds(voicemail) > 1


async def test_recording_format_wav_keeps_pcm_and_other_formats_are_refused(database_url, tmp_path):
    import io
    import wave

    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CUSTOMER, says=[CALLER_SAYS])
        await rig.script_phone(CALLEE, says=[{"text": CALLEE_SAYS, "then": "hangup"}])
        r = await rig.connect(
            From=CUSTOMER, To=CALLEE, Record="true", RecordingFormat="wav", RecordingChannels="dual"
        )
        assert r.status_code == 200, r.text
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        url = (await rig.details(sid))["RecordingUrl"]
        assert url.endswith(".wav")
        fetched = await rig.http.get(local(rig, url), auth=rig.auth)
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(fetched.content)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 2, 2)
            callee = np.frombuffer(w.readframes(w.getnframes()), "<i2")[1::2]
        assert not is_silence(callee.tobytes())

        refused = await rig.connect(From=CUSTOMER, To=CALLEE, Record="true", RecordingFormat="ogg")
        assert refused.status_code == 400
        assert "RecordingFormat must be mp3, mp3-hq or wav" in refused.text


async def test_record_true_on_a_flow_tapes_a_connected_agent_too(database_url, tmp_path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await rig.script_phone(CUSTOMER, says=[CALLER_SAYS])
        await rig.script_phone(
            CALLEE, says=[{"text": CALLEE_SAYS, "then": "hangup"}], silence_after=8
        )
        sid = await place(
            rig, connect_app(f"{rig.customer.url}/report"), Record="true", RecordingChannels="dual"
        )
        [whole] = await recordings_of(rig, sid)  # the call's tape; the Connect keeps none
        frames = stereo((tmp_path / "recordings" / whole.path).read_bytes())
        said, heard = frames[:, 0], frames[:, 1]
        far, near = await spoken(rig, CALLEE_SAYS), await spoken(rig, CALLER_SAYS)
        # The customer heard the agent speak first, then answered.
        assert voiced_seconds(heard.tobytes()) > far / 2
        assert voiced_seconds(said.tobytes()) > near / 2
        assert is_silence(heard[-int(1.5 * 8000) :].tobytes())
