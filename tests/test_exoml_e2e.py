"""ExoML end to end on the sandbox: the example app (examples/exoml.yaml) fetching documents
from a real customer's server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import pathlib
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml

from ringflow.media import frame_rms, load_audio, voiced_seconds
from tests.e2e import EXOPHONE, Rig, running

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "exoml.yaml"
CUSTOMER = "09812345678"
CALLEE = "09812345679"
SORRY = "Sorry, something went wrong. Please call again later."

WELCOME = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Say>Welcome to Acme.</Say>
  <Gather action="/exoml/pin" method="GET" numDigits="4" finishOnKey="#" timeout="5">
    <Say>Enter your PIN, then press hash.</Say>
  </Gather>
  <Say>We did not get your PIN.</Say>
</Response>
"""
THANKS = """<Response>
  <Say>Thank you. Goodbye.</Say>
  <Hangup/>
  <Say>never heard</Say>
</Response>
"""
MALFORMED = """<Response>
  <Say>Welcome to Acme.</Say>
  <Gather numDigits="four"/>
</Response>
"""


def xml(body: str) -> tuple[int, str, str]:
    return (200, "application/xml", body)


async def start(
    rig: Rig, keys: list[str] | None = None, timeout: int | None = None, **behaviour: Any
) -> str:
    """Save the example app pointing at the customer's server, script the phone, place a call."""
    app = yaml.safe_load(EXAMPLE.read_text())
    app["nodes"]["ivr"]["url"] = f"{rig.customer.url}/exoml/start"
    if timeout is not None:
        app["nodes"]["ivr"]["timeout"] = timeout
    saved = await rig.services.accounts.save_app(rig.sid, app)
    await rig.script_phone(CUSTOMER, **({"keys": keys} if keys is not None else {}), **behaviour)
    r = await rig.connect(
        From=CUSTOMER,
        Url=rig.flow_url(saved.id),
        CustomField="order-42",
        StatusCallback=f"{rig.customer.url}/status",
    )
    assert r.status_code == 200, r.text
    return r.json()["Call"]["Sid"]


def said(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["text"] for e in events if e["kind"] == "say"]


def exits(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [
        (e["data"]["node"], e["data"]["exit"], e["data"].get("next"))
        for e in events
        if e["kind"] == "applet.exit"
    ]


async def test_gather_sends_the_keys_to_the_action_whose_document_hangs_up(database_url):
    async with running(database_url) as rig:
        rig.customer.script = [xml(WELCOME), xml(THANKS)]
        sid = await start(rig, keys=["1234#"])
        done = await rig.finish(sid)
        assert done.status == "completed"

        [first] = rig.customer.to("/exoml/start")
        assert first.method == "GET"
        q = first.query
        assert q["CallSid"] == sid and q["CallFrom"] == q["From"] == CUSTOMER
        assert q["CallTo"] == q["To"] == EXOPHONE
        assert q["Direction"] == "outbound-dial" and q["CustomField"] == "order-42"
        assert q["EndTime"] == "1970-01-01 05:30:00" and "digits" not in q
        [action] = rig.customer.to("/exoml/pin")
        assert action.method == "GET"
        assert action.query["digits"] == '"1234"'
        assert action.query["CallSid"] == sid

        events = await rig.timeline(sid)
        assert said(events) == [
            "Welcome to Acme.",
            "Enter your PIN, then press hash.",
            "Thank you. Goodbye.",
        ]
        assert [e["data"]["digits"] for e in events if e["kind"] == "digits"] == ["1234"]
        http = [(e["data"]["url"], e["data"]["status"]) for e in events if e["kind"] == "http"]
        assert http == [
            (f"{rig.customer.url}/exoml/start", 200),
            (f"{rig.customer.url}/exoml/pin", 200),
        ]
        assert exits(events) == [("ivr", "hangup", None)]
        [end] = [e["data"] for e in events if e["kind"] == "flow.end"]
        assert end["reason"] == "hangup applet"

        [status] = rig.customer.to("/status")
        assert status.fields()["Status"] == "completed"


async def test_no_keys_runs_on_to_the_end_of_the_document_and_leaves_by_next(database_url):
    async with running(database_url) as rig:
        rig.customer.script = [xml(WELCOME)]
        sid = await start(rig, keys=[])
        assert (await rig.finish(sid)).status == "completed"
        assert rig.customer.to("/exoml/pin") == []
        events = await rig.timeline(sid)
        assert said(events) == [
            "Welcome to Acme.",
            "Enter your PIN, then press hash.",
            "We did not get your PIN.",
        ]
        assert exits(events) == [("ivr", "next", "goodbye"), ("goodbye", "hangup", None)]


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (xml(MALFORMED), 200, None),
        ((500, "text/plain", "oops"), 500, None),
        ("hang", None, "no answer within 1s"),
    ],
    ids=["malformed", "status-500", "timeout"],
)
async def test_a_bad_document_ends_the_call_cleanly_through_on_error(
    database_url, answer, status, error
):
    async with running(database_url) as rig:
        rig.customer.script = [answer]
        sid = await start(rig, keys=["1234#"], timeout=1)
        done = await rig.finish(sid)
        assert done.status == "completed"
        events = await rig.timeline(sid)
        # Nothing of a bad document plays, not even its valid first Say.
        assert said(events) == [SORRY]
        assert exits(events) == [
            ("ivr", "on_error", "sorry"),
            ("sorry", "next", "goodbye"),
            ("goodbye", "hangup", None),
        ]
        [http] = [e["data"] for e in events if e["kind"] == "http"]
        assert (http["status"], http["error"]) == (status, error)
        [callback] = rig.customer.to("/status")
        assert callback.fields()["Status"] == "completed"


async def test_the_reason_for_a_bad_document_is_on_the_timeline(database_url):
    async with running(database_url) as rig:
        rig.customer.script = [xml(MALFORMED)]
        sid = await start(rig, keys=[])
        await rig.finish(sid)
        events = await rig.timeline(sid)
        reason = "line 3 <Gather> attribute 'numDigits': 'four' is not a whole number from 1 to 32"
        assert any(reason in json.dumps(e["data"]) for e in events), events


DIAL = """<Response>
  <Say>Connecting you to an agent.</Say>
  <Dial action="/exoml/dialed" method="GET" timeout="20" timeLimit="600">
    <Number>09999900001</Number>
    <Number>09812345679</Number>
  </Dial>
  <Say>never heard</Say>
</Response>
"""
AFTER_DIAL = """<Response>
  <Say>Thanks for calling Acme.</Say>
  <Hangup/>
</Response>
"""


async def test_dial_rings_in_turn_and_the_action_hears_how_the_conversation_went(database_url):
    async with running(database_url) as rig:
        await rig.script_phone(CALLEE, ring=2, hangup_after=10)
        rig.customer.script = [xml(DIAL), xml(AFTER_DIAL)]
        sid = await start(rig)
        assert (await rig.finish(sid)).status == "completed"

        legs = [(leg.leg_no, leg.number, leg.status) for leg in (await rig.call(sid)).legs]
        assert legs == [
            (1, "+919812345678", "completed"),
            (2, "+919999900001", "busy"),
            (3, "+919812345679", "completed"),
        ]
        [start_request] = rig.customer.to("/exoml/start")
        assert "DialCallStatus" not in start_request.query
        [dialed] = rig.customer.to("/exoml/dialed")
        q = dialed.query
        assert q["DialCallStatus"] == "completed" and q["DialCallDuration"] == "10"
        assert q["DialWhomNumber"] == CALLEE and q["CallType"] == "completed"
        assert q["CallSid"] == sid and q["CustomField"] == "order-42"

        events = await rig.timeline(sid)
        assert said(events) == ["Connecting you to an agent.", "Thanks for calling Acme."]
        [dial] = [e["data"] for e in events if e["kind"] == "dial"]
        assert dial == {"numbers": ["+919999900001", "+919812345679"], "simultaneous": False}
        assert exits(events) == [("ivr", "hangup", None)]


MESSAGE = "Hello, this is Asha from Pune. My order has not arrived yet, please call me back."
RECORD = """<Response>
  <Say>Please leave a message after the beep.</Say>
  <Record action="/exoml/vm" method="GET" maxLength="60" timeout="3" finishOnKey="#"/>
  <Say>never heard</Say>
</Response>
"""
AFTER_RECORD = """<Response>
  <Say>Thank you. We will call you back.</Say>
</Response>
"""


async def test_record_sends_a_recording_url_that_serves_the_message_to_the_account(
    database_url, tmp_path
):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        rig.customer.script = [xml(RECORD), xml(AFTER_RECORD)]
        sid = await start(rig, says=[MESSAGE])
        assert (await rig.finish(sid)).status == "completed"

        [vm] = rig.customer.to("/exoml/vm")
        url = vm.query["RecordingUrl"]
        assert url.startswith(f"{rig.services.settings.base_url}/v1/Accounts/{rig.sid}/Recordings/")
        assert url.endswith(".mp3")
        assert vm.query["digits"] == '""'  # silence ended it, not a key
        assert vm.query["CallType"] == "voicemail" and vm.query["CallSid"] == sid

        events = await rig.timeline(sid)
        assert said(events) == [
            "Please leave a message after the beep.",
            "Thank you. We will call you back.",
        ]
        [step] = [e["data"] for e in events if e["kind"] == "recording"]
        assert step["message"] is True and step["url"] == url and step["ended_by"] == "silence"
        assert exits(events) == [("ivr", "next", "goodbye"), ("goodbye", "hangup", None)]

        parts = urlsplit(url)
        where = rig.base + parts.path
        assert (await rig.http.get(where)).status_code == 401
        fetched = await rig.http.get(where, auth=rig.auth)
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "audio/mpeg"
        audio = load_audio(fetched.content)
        talk = (await rig.services.tts.speak(MESSAGE)).duration
        speech = audio.pcm[: int(talk * 16000) // 2 * 2]
        assert float(np.sqrt(np.mean(frame_rms(speech) ** 2))) > 500  # speech, not hiss
        assert voiced_seconds(speech) > talk / 2
