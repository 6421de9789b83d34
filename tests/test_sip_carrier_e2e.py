"""The ``sip`` carrier end to end: the API places a call over SIP, SIPp is the phone.

Each test starts ringflow (real clock: RTP runs in real time) with a trunk pointing at one SIPp
on loopback, places one call with ``Calls/connect`` and requires SIPp's exit code 0, which it
only gives when every message of its scenario came as scripted (ACKs included).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import miniaudio
import numpy as np
import pytest
import yaml
from sqlalchemy import select

from ringflow.calls.requests import CallRequest, CampaignTag
from ringflow.calls.status import is_terminal
from ringflow.clock import RealClock
from ringflow.media.audio import RATE, load_audio, voiced_seconds
from ringflow.media.cache import PromptCache
from ringflow.media.tts import TextToSpeech
from ringflow.storage.models import Call, Recording
from ringflow.storage.session import Duplicate
from ringflow.telephony.carrier import Answered, DialRequest
from ringflow.telephony.sip.carrier import SipCarrier
from ringflow.telephony.sip.trunks import Trunk
from tests.e2e import Rig, running
from tests.sipp import SIPP_SHARE, Sipp, needs_sipp, sipp

pytestmark = [pytest.mark.e2e, needs_sipp]

CALL_WAIT = 30.0  # seconds a whole test call may take (prompts play in real time)


def trunks_file(workdir: Path, phone: Sipp | DeadTrunk, **trunk: Any) -> Path:
    """A trunks file whose default trunk is the SIPp ``phone``."""
    path = workdir / "trunks.yaml"
    entry = {"name": "sipp", "host": "127.0.0.1", "port": phone.port, **trunk}
    path.write_text(yaml.safe_dump({"trunks": [entry]}))
    return path


@contextlib.asynccontextmanager
async def sip_server(
    tmp_path: Path, phone: Sipp | DeadTrunk, trunk: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[Rig]:
    """ringflow with RINGFLOW_CARRIER=sip and its trunk at ``phone``."""
    async with running(
        f"sqlite+aiosqlite:///{tmp_path / 'ringflow.db'}",
        clock=RealClock(),
        carrier="sip",
        sip_trunks=str(trunks_file(tmp_path, phone, **(trunk or {}))),
        sip_host="127.0.0.1",
        sip_port=0,
        **settings,
    ) as rig:
        yield rig


@pytest.fixture
def sqlite_db(tmp_path: Path, sqlite_template: Path) -> None:
    """The migrated SQLite file ``sip_server`` opens."""
    (tmp_path / "ringflow.db").write_bytes(sqlite_template.read_bytes())


async def app(rig: Rig, nodes: dict[str, Any], start: str) -> int:
    """Save an app on the rig's account; returns its id."""
    saved = await rig.services.accounts.save_app(
        rig.sid, {"name": "sip", "start": start, "nodes": nodes}
    )
    return saved.id


async def call_to_end(rig: Rig, sid: str, wait: float = CALL_WAIT) -> Call:
    """Wait (in real time) until the call is over."""

    async def over() -> bool:
        return is_terminal((await rig.call(sid)).status)

    deadline = asyncio.get_running_loop().time() + wait
    while not await over():
        assert asyncio.get_running_loop().time() < deadline, "the call did not end in time"
        await asyncio.sleep(0.1)
    return await rig.call(sid)


async def story(rig: Rig, sid: str) -> str:
    """The call's reason and timeline (each leg's status and cause), for the message of a
    failed assertion."""
    steps = [f"{e['kind']} {e['data']}" for e in await rig.timeline(sid)]
    return "\n".join([f"reason: {(await rig.call(sid)).reason!r}", *steps])


async def place(rig: Rig, phone: Sipp | DeadTrunk, app_id: int | None = None, **params: Any) -> str:
    """Calls/connect to the SIPp phone running ``app_id``; returns the call's SID."""
    if app_id is not None:
        params["Url"] = rig.flow_url(app_id)
    r = await rig.connect(From=phone.uri, **params)
    assert r.status_code == 200, r.text
    return r.json()["Call"]["Sid"]


GREETING_THEN_HANGUP = {
    "hello": {"applet": "greeting", "text": "Hello from ringflow", "next": "bye"},
    "bye": {"applet": "hangup"},
}


@pytest.mark.usefixtures("sqlite_db")
async def test_answer_then_we_hang_up(tmp_path: Path) -> None:
    async with sipp(tmp_path, "callee_answer.xml") as phone, sip_server(tmp_path, phone) as rig:
        sid = await place(rig, phone, await app(rig, GREETING_THEN_HANGUP, "hello"))
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0  # it got our ACK and our BYE
        details = await rig.details(sid)
        assert details["Status"] == "completed" and details["Duration"] >= 1
        steps = [e["kind"] for e in await rig.timeline(sid)]
        assert "say" in steps


@pytest.mark.usefixtures("sqlite_db")
async def test_answer_then_the_callee_hangs_up(tmp_path: Path) -> None:
    nodes = {
        "wait": {
            "applet": "gather",
            "text": "Press a key",
            "input_timeout": 20,
            "repeats": 0,
            "on_input": "bye",
            "on_no_input": "bye",
        },
        "bye": {"applet": "hangup"},
    }
    async with (
        sipp(tmp_path, "callee_hangs_up.xml", talk_ms=1500) as phone,
        sip_server(tmp_path, phone) as rig,
    ):
        sid = await place(rig, phone, await app(rig, nodes, "wait"))
        call = await call_to_end(rig, sid)
        assert call.status == "completed"
        assert await phone.exit_code() == 0  # our 200 for its BYE
        leg = call.legs[0]
        assert leg.status == "completed"


@pytest.mark.usefixtures("sqlite_db")
@pytest.mark.parametrize(
    ("scenario", "status", "cause"),
    [
        ("uas_busy.xml", "busy", "486 Busy Here"),
        ("callee_declines.xml", "busy", "603 Decline"),
        ("callee_unavailable.xml", "no-answer", "480 Temporarily Unavailable"),
    ],
)
async def test_refusals_map_to_call_statuses(
    tmp_path: Path, scenario: str, status: str, cause: str
) -> None:
    async with sipp(tmp_path, scenario) as phone, sip_server(tmp_path, phone) as rig:
        sid = await place(rig, phone, await app(rig, GREETING_THEN_HANGUP, "hello"))
        call = await call_to_end(rig, sid)
        assert call.status == status
        assert cause in (call.legs[0].cause or "")  # the SIP words stay on the leg
        assert await phone.exit_code() == 0  # it got our ACK


@dataclasses.dataclass
class DeadTrunk:
    """Where the black hole listens, as ``sip_server`` and ``place`` want a phone."""

    port: int

    @property
    def uri(self) -> str:
        return f"sip:callee@127.0.0.1:{self.port}"


class BlackHole(asyncio.DatagramProtocol):
    """A trunk that is down: it takes every datagram and never answers."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)


@pytest.mark.usefixtures("sqlite_db")
async def test_a_trunk_that_never_rings_fails_the_leg_at_time_out(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    sink, hole = await loop.create_datagram_endpoint(BlackHole, local_addr=("127.0.0.1", 0))
    try:
        dead = DeadTrunk(sink.get_extra_info("sockname")[1])
        async with sip_server(tmp_path, dead) as rig:
            sid = await place(rig, dead, await app(rig, GREETING_THEN_HANGUP, "hello"), TimeOut="2")
            call = await call_to_end(rig, sid)
        assert call.status == "failed"
        assert call.legs[0].cause == "sip: trunk sipp never rang the callee"
        assert hole.received and hole.received[0].startswith(b"INVITE ")
    finally:
        sink.close()


@pytest.mark.usefixtures("sqlite_db")
async def test_ringing_past_time_out_is_canceled(tmp_path: Path) -> None:
    async with sipp(tmp_path, "uas_ring_forever.xml") as phone, sip_server(tmp_path, phone) as rig:
        sid = await place(rig, phone, await app(rig, GREETING_THEN_HANGUP, "hello"), TimeOut="2")
        call = await call_to_end(rig, sid)
        assert call.status == "no-answer"
        assert await phone.exit_code() == 0  # our CANCEL, then our ACK for its 487


@pytest.mark.usefixtures("sqlite_db")
@pytest.mark.parametrize(("password", "status"), [("s3cret", "completed"), ("wrong", "failed")])
async def test_digest_challenge(tmp_path: Path, password: str, status: str) -> None:
    async with (
        sipp(tmp_path, "trunk_digest.xml", variables={"password": "s3cret"}) as phone,
        sip_server(tmp_path, phone, {"username": "ringflow", "password": password}) as rig,
    ):
        sid = await place(rig, phone, await app(rig, GREETING_THEN_HANGUP, "hello"))
        call = await call_to_end(rig, sid)
        assert call.status == status
        if status == "failed":
            assert "403" in (call.legs[0].cause or "")
        assert await phone.exit_code() == 0


@pytest.mark.usefixtures("sqlite_db")
async def test_a_call_waits_queued_for_a_full_trunk_and_its_ring_timeout_starts_when_dialled(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    long_greeting = {
        "hello": {"applet": "greeting", "text": "Hello from ringflow. " * 3, "next": "bye"},
        "bye": {"applet": "hangup"},
    }
    async with (
        sipp(tmp_path / "a", "callee_answer.xml") as first,
        sipp(tmp_path / "b", "callee_answer.xml") as second,
        sip_server(tmp_path, first, {"max_channels": 1}) as rig,
    ):
        app_id = await app(rig, long_greeting, "hello")
        holding = await place(rig, first, app_id)
        waiting = await place(rig, second, app_id, TimeOut="2")
        # The trunk's one channel is taken: the second call is admitted only when it frees.
        assert (await rig.call(holding)).status in ("ringing", "in-progress")
        assert (await rig.call(waiting)).status == "queued"
        assert (await call_to_end(rig, waiting)).status == "completed"
        assert (await call_to_end(rig, holding)).status == "completed"
        steps = await rig.timeline(waiting)
        assert "trunk.wait" not in {e["kind"] for e in steps}
        # It was dialled only once the first call had hung up (its greeting lasts over 2 s),
        # and rang within its own TimeOut from then.
        first_over = {e["kind"]: e for e in await rig.timeline(holding)}["flow.end"]["at"]
        dialled = next(e for e in steps if e["kind"] == "status" and e["data"]["call"] == "ringing")
        assert dialled["at"] >= first_over
        assert await first.exit_code() == 0 and await second.exit_code() == 0


@pytest.mark.usefixtures("sqlite_db")
async def test_a_channel_reserved_for_a_call_that_is_never_written_is_given_back(
    tmp_path: Path,
) -> None:
    """A campaign's attempt placed twice: the second is admitted (a trunk channel reserved for
    it) and then refused by the database as a Duplicate. Its channel must come back: the next
    call dials at once instead of waiting for a channel nobody holds."""
    long_greeting = {
        "hello": {"applet": "greeting", "text": "Hello from ringflow. " * 3, "next": "bye"},
        "bye": {"applet": "hangup"},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        sipp(tmp_path / "a", "callee_answer.xml") as phone,
        sipp(tmp_path / "b", "callee_answer.xml") as other,
        sip_server(tmp_path, phone, {"max_channels": 2}) as rig,
    ):
        app_id = await app(rig, long_greeting, "hello")
        async with rig.services.db.session() as session:
            account = await rig.services.accounts.get(session, rig.sid)
        attempt = CallRequest(
            account_id=account.id,
            shape="flow",
            from_number=phone.uri,
            caller_id="+918039591234",  # the rig's ExoPhone, as the API stores it
            app_id=app_id,
            time_limit=60,
            campaign=CampaignTag(campaign_id=7, number_id=70, attempt=1),
        )
        first, started = await rig.services.dispatcher.submit(attempt)
        assert started
        with pytest.raises(Duplicate):
            await rig.services.dispatcher.submit(attempt)
        later = await place(rig, other, app_id)
        assert (await rig.call(later)).status in ("ringing", "in-progress")
        assert (await call_to_end(rig, first.sid)).status == "completed"
        assert (await call_to_end(rig, later)).status == "completed", await story(rig, later)
        assert await phone.exit_code() == 0 and await other.exit_code() == 0


@pytest.mark.usefixtures("sqlite_db")
async def test_a_tcp_trunk_carries_the_call(tmp_path: Path) -> None:
    async with (
        sipp(tmp_path, "callee_answer.xml", transport="t1") as phone,
        sip_server(tmp_path, phone, {"transport": "tcp"}) as rig,
    ):
        sid = await place(rig, phone, await app(rig, GREETING_THEN_HANGUP, "hello"))
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0  # INVITE, ACK and BYE all came over its TCP port


@pytest.mark.usefixtures("sqlite_db")
async def test_a_registering_trunk_shows_its_registration_and_unregisters_on_shutdown(
    tmp_path: Path,
) -> None:
    from tests.test_dashboard import PASSWORD, browser_like, set_account_password, sign_in

    trunk = {"register": True, "username": "alice", "password": "secret", "register_expires": 120}
    async with sipp(tmp_path, "registrar_digest.xml") as registrar:
        async with sip_server(tmp_path, registrar, trunk) as rig:
            registration = rig.services.carrier.registrations["sipp"]
            state = await asyncio.wait_for(registration.wait("registered", "failed"), 10)
            assert state == "registered", registration.cause
            await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
            async with browser_like(rig) as client:
                await sign_in(client, rig.sid)
                page = (await client.get(f"/a/{rig.sid}/trunks")).text
            assert 'data-registration="registered"' in page
            assert "sip:alice@127.0.0.1" in page and "secret" not in page
        # Shutting down removed the binding (Expires: 0, challenged and answered).
        assert await registrar.exit_code() == 0


def gather_app(hook: str) -> dict[str, Any]:
    """Ask for one key; tell the customer's server which one came."""
    return {
        "ask": {
            "applet": "gather",
            "text": "Press one",
            "max_digits": 1,
            "input_timeout": 8,
            "repeats": 0,
            "on_input": "tell",
            "on_no_input": "bye",
        },
        "tell": {"applet": "passthru", "url": hook, "on_200": "bye", "on_302": "bye"},
        "bye": {"applet": "hangup"},
    }


async def digits_heard(rig: Rig, phone: Sipp, talk_ms: int = 300) -> str:
    """Run the gather app over SIP; the digits the customer's server was told."""
    sid = await place(rig, phone, await app(rig, gather_app(f"{rig.customer.url}/keys"), "ask"))
    call = await call_to_end(rig, sid)
    assert call.status == "completed", await story(rig, sid)
    assert await phone.exit_code() == 0
    hits = [s for s in rig.customer.seen if s.path == "/keys"]
    assert len(hits) == 1, "the app did not take the on_input branch"
    return hits[0].query["digits"].strip('"')


@pytest.mark.usefixtures("sqlite_db")
async def test_dtmf_rfc4733_from_a_pcap(tmp_path: Path) -> None:
    (tmp_path / "keys.pcap").symlink_to(SIPP_SHARE / "dtmf_2833_1.pcap")
    async with (
        sipp(tmp_path, "callee_dtmf_2833.xml", talk_ms=500) as phone,
        sip_server(tmp_path, phone) as rig,
    ):
        assert await digits_heard(rig, phone) == "1"


@pytest.mark.usefixtures("sqlite_db")
async def test_dtmf_by_sip_info(tmp_path: Path) -> None:
    async with (
        sipp(tmp_path, "callee_dtmf_info.xml", variables={"key": "5"}, talk_ms=500) as phone,
        sip_server(tmp_path, phone) as rig,
    ):
        assert await digits_heard(rig, phone) == "5"


def dtmf_ulaw(key: str, seconds: float = 0.2, pause: float = 0.5) -> bytes:
    """A key as an in-band tone pair, raw u-law at 8 kHz, after ``pause`` seconds of silence."""
    import audioop

    low = {
        "1": 697,
        "2": 697,
        "3": 697,
        "4": 770,
        "5": 770,
        "6": 770,
        "7": 852,
        "8": 852,
        "9": 852,
        "*": 941,
        "0": 941,
        "#": 941,
    }[key]
    high = {
        "1": 1209,
        "4": 1209,
        "7": 1209,
        "*": 1209,
        "2": 1336,
        "5": 1336,
        "8": 1336,
        "0": 1336,
        "3": 1477,
        "6": 1477,
        "9": 1477,
        "#": 1477,
    }[key]
    t = np.arange(round(seconds * RATE)) / RATE
    tone = (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)) * 6000
    pcm = np.concatenate([np.zeros(round(pause * RATE)), tone, np.zeros(round(2 * RATE))])
    return audioop.lin2ulaw(pcm.astype("<i2").tobytes(), 2)


@pytest.mark.usefixtures("sqlite_db")
async def test_dtmf_in_band(tmp_path: Path) -> None:
    (tmp_path / "voice.ulaw").write_bytes(dtmf_ulaw("7", pause=1.5))
    async with sipp(tmp_path, "callee_inband.xml") as phone, sip_server(tmp_path, phone) as rig:
        assert await digits_heard(rig, phone) == "7"


def tone_ulaw(hz: float, seconds: float) -> bytes:
    """A steady tone as raw u-law at 8 kHz."""
    import audioop

    t = np.arange(round(seconds * RATE)) / RATE
    return audioop.lin2ulaw((np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes(), 2)


def dominant_hz(samples: np.ndarray) -> float:
    """The strongest frequency in ``samples`` (8 kHz)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum[1:])) + 1])


@pytest.mark.usefixtures("sqlite_db")
async def test_two_numbers_bridge_two_sipp_callees_and_record_each(tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir(), second_dir.mkdir()
    (first_dir / "voice.ulaw").write_bytes(tone_ulaw(600, 3.0))
    (second_dir / "voice.ulaw").write_bytes(tone_ulaw(1400, 3.0))
    async with (
        sipp(first_dir, "callee_inband.xml") as first,
        sipp(second_dir, "callee_inband.xml") as second,
        sip_server(tmp_path, first, data_dir=str(tmp_path)) as rig,
    ):
        r = await rig.connect(
            From=first.uri, To=second.uri, Record="true", RecordingChannels="dual", TimeLimit="4"
        )
        assert r.status_code == 200, r.text
        sid = r.json()["Call"]["Sid"]
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        # TimeLimit ended both legs with our BYE, which each SIPp requires.
        assert await first.exit_code() == 0 and await second.exit_code() == 0
        [row] = await recordings(rig, call)
        frames = stereo((tmp_path / "recordings" / row.path).read_bytes())
        caller, callee = frames[:, 0], frames[:, 1]
        assert abs(dominant_hz(caller) - 600) < 20 and abs(dominant_hz(callee) - 1400) < 20


@pytest.mark.usefixtures("sqlite_db")
async def test_record_true_tapes_the_prompt_and_the_callee(tmp_path: Path) -> None:
    (tmp_path / "voice.ulaw").write_bytes(tone_ulaw(1400, 3.0))  # the callee talks at once
    text = "Hello from ringflow. This call is recorded."
    greeting = {
        "hello": {"applet": "greeting", "text": text, "next": "bye"},
        "bye": {"applet": "hangup"},
    }
    async with (
        sipp(tmp_path, "callee_inband.xml") as phone,
        sip_server(tmp_path, phone, data_dir=str(tmp_path)) as rig,
    ):
        sid = await place(
            rig, phone, await app(rig, greeting, "hello"), Record="true", RecordingChannels="dual"
        )
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0
        [row] = await recordings(rig, call)
        prompt = await rig.services.tts.speak(text)
        assert (await rig.details(sid))["RecordingUrl"].endswith(f"/Recordings/{row.sid}.mp3")
    frames = stereo((tmp_path / "recordings" / row.path).read_bytes())
    callee, heard = frames[:, 0], frames[:, 1]
    assert abs(dominant_hz(callee) - 1400) < 20  # what the callee said
    assert correlation(heard.tobytes(), prompt.pcm) > 0.6  # what it heard: our greeting


@pytest.mark.usefixtures("sqlite_db")
async def test_a_voicemail_over_sip_keeps_what_the_callee_said_and_ends_on_silence(
    tmp_path: Path,
) -> None:
    import audioop

    # The callee is silent through the prompt and the beep, then speaks (a tone) for 1.5 s.
    quiet = audioop.lin2ulaw(bytes(RATE * 2 * 5 // 2), 2)
    (tmp_path / "voice.ulaw").write_bytes(quiet + tone_ulaw(900, 1.5))
    voicemail = {
        "vm": {
            "applet": "voicemail",
            "prompt": "Leave a message.",
            "max_length": 30,
            "silence_timeout": 2,
            "next": "bye",
            "on_no_message": "bye",
        },
        "bye": {"applet": "hangup"},
    }
    async with (
        sipp(tmp_path, "callee_inband.xml") as phone,
        sip_server(tmp_path, phone, data_dir=str(tmp_path)) as rig,
    ):
        sid = await place(rig, phone, await app(rig, voicemail, "vm"))
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0
        [step] = [e["data"] for e in await rig.timeline(sid) if e["kind"] == "recording"]
        [row] = await recordings(rig, call)
    assert step["ended_by"] == "silence" and step["message"] is True
    pcm = load_audio((tmp_path / "recordings" / row.path).read_bytes()).pcm
    assert 1.2 <= voiced_seconds(pcm) <= 1.8  # the tone, and not the silence around it
    assert abs(dominant_hz(np.frombuffer(pcm, "<i2")) - 900) < 20


async def recordings(rig: Rig, call: Call) -> list[Recording]:
    """The call's recording rows."""
    async with rig.services.db.session() as session:
        rows = await session.execute(select(Recording).where(Recording.call_id == call.id))
        return list(rows.scalars())


def stereo(data: bytes) -> np.ndarray:
    """An MP3 decoded to 8 kHz stereo samples."""
    decoded = miniaudio.decode(data, nchannels=2, sample_rate=8000)
    return np.asarray(decoded.samples, dtype=np.int16).reshape(-1, 2)


async def test_sipp_hears_the_greeting(tmp_path: Path) -> None:
    """SIPp echoes the RTP it receives; the echo carries our spoken greeting."""
    tts = TextToSpeech(PromptCache(tmp_path / "media"))
    text = "Hello from ringflow"
    prompt = await tts.speak(text)
    async with sipp(tmp_path, "callee_answer.xml", "-rtp_echo") as phone:
        carrier = SipCarrier(
            RealClock(),
            (Trunk("sipp", "127.0.0.1", phone.port),),
            sip_port=0,
            speech=lambda words, voice: tts.speak(words, voice),
        )
        await carrier.start()
        try:
            attempt = carrier.dial(DialRequest(phone.uri, "+918041234567", "AC1", "c1", 1))
            event = await asyncio.wait_for(attempt.next_event(), 10)
            while not isinstance(event, Answered):
                event = await asyncio.wait_for(attempt.next_event(), 10)
            heard = bytearray()
            event.channel.session.listen(heard.extend)
            await event.channel.say(text)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while len(heard) < len(prompt.pcm) + 8000 and loop.time() < deadline:
                await asyncio.sleep(0.05)  # the echo's tail is still on its way back
            await event.channel.hangup()
            assert await phone.exit_code() == 0
        finally:
            await carrier.close()
            tts.close()
    assert correlation(bytes(heard), prompt.pcm) > 0.8


async def test_an_answer_that_crosses_our_giving_up_is_hung_up(tmp_path: Path) -> None:
    """The ring timeout fires just as the 200 arrives: the caller never takes the answer, so
    cancelling the attempt must end the answered call with BYE and free its trunk slot."""
    async with sipp(tmp_path, "callee_answer.xml") as phone:
        carrier = SipCarrier(RealClock(), (Trunk("sipp", "127.0.0.1", phone.port),), sip_port=0)
        await carrier.start()
        try:
            attempt = carrier.dial(DialRequest(phone.uri, "+918041234567", "AC1", "c1", 1))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while attempt.channel is None:  # answered; the Answered event sits unread
                assert loop.time() < deadline, "SIPp did not answer"
                await asyncio.sleep(0.01)
            await attempt.cancel()
            assert await phone.exit_code() == 0  # it got our BYE
            while carrier.attempts:
                assert loop.time() < deadline, "the attempt was never finished"
                await asyncio.sleep(0.01)
            assert carrier.gates["sipp"].in_use == 0
        finally:
            await carrier.close()


def correlation(heard: bytes, sent: bytes) -> float:
    """Peak normalised cross-correlation of ``sent`` within ``heard`` (1.0: a perfect copy).

    ``heard`` is padded with silence on both sides, so a copy whose first or last few
    milliseconds were clipped (a phone that starts listening late) still scores near 1.
    """
    b = np.frombuffer(sent, dtype="<i2").astype(float)
    a = np.concatenate(
        [np.zeros(len(b)), np.frombuffer(heard, dtype="<i2").astype(float), np.zeros(len(b))]
    )
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    dot = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)[: len(a) - len(b) + 1]
    running = np.concatenate([[0.0], np.cumsum(a * a)])
    energy = running[len(b) :] - running[: -len(b)]
    score = np.abs(dot) / (np.linalg.norm(b) * np.sqrt(np.maximum(energy, 1e-9)))
    return float(np.max(score))


if os.geteuid() != 0:  # play_pcap_audio sends through a raw socket
    test_dtmf_rfc4733_from_a_pcap = pytest.mark.skip(reason="SIPp needs root to play a pcap")(
        test_dtmf_rfc4733_from_a_pcap
    )
