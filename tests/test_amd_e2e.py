"""Answering machine detection end to end on the sandbox: Calls/connect with MachineDetection,
scripted phones that pick up as a person ("Hello?") or as a voicemail (greeting and beep), the
detector listening to their audio on the ManualClock, and an app that branches on the verdict.
"""

from __future__ import annotations

from typing import Any

import pytest

from ringflow.errors import InvalidRequest
from ringflow.telephony.sandbox.phones import PhoneScript
from tests.e2e import Rig, running

PERSON = "09812345670"
VOICEMAIL = "09812345671"
HUMAN_DEADLINE_MS = 3500

# Hang up on machines that only greet; leave a message after a beep; talk to people.
BRANCHING = {
    "name": "amd",
    "start": "who",
    "nodes": {
        "who": {
            "applet": "switch_case",
            "variable": "AnsweredBy",
            "cases": {
                "human": "talk",
                "machine_end_beep": "message",
                "machine_end_silence": "message",
            },
            "default": "bye",
        },
        "talk": {"applet": "greeting", "text": "Hello, this is your reminder.", "next": "bye"},
        "message": {"applet": "greeting", "text": "Please call us back.", "next": "bye"},
        "bye": {"applet": "hangup"},
    },
}


async def call(rig: Rig, number: str, **params: Any) -> tuple[str, dict[str, Any]]:
    """Place a call running BRANCHING to ``number``; its SID and details once it ended."""
    saved = await rig.services.accounts.save_app(rig.sid, BRANCHING)
    r = await rig.connect(
        From=number,
        Url=rig.flow_url(saved.id),
        StatusCallback=f"{rig.customer.url}/status",
        **params,
    )
    assert r.status_code == 200, r.text
    sid = r.json()["Call"]["Sid"]
    await rig.finish(sid)
    return sid, await rig.details(sid)


def verdict(events: list[dict[str, Any]]) -> dict[str, Any]:
    [step] = [e["data"] for e in events if e["kind"] == "amd"]
    return step


def said(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["text"] for e in events if e["kind"] == "say"]


async def test_a_person_is_told_from_a_voicemail_and_the_app_branches(database_url):
    async with running(database_url) as rig:
        await rig.script_phone(PERSON, greeting="Hello?")
        await rig.script_phone(VOICEMAIL, outcome="machine")

        sid, details = await call(rig, PERSON, MachineDetection="Enable")
        events = await rig.timeline(sid)
        step = verdict(events)
        assert step["result"] == "human" and step["mode"] == "Enable"
        assert 0 < step["ms"] <= HUMAN_DEADLINE_MS
        assert details["AnsweredBy"] == "human"
        assert details["Details"]["AnsweredBy"] == "human"
        assert details["Details"]["MachineDetectionDuration"] == step["ms"]
        assert said(events) == ["Hello, this is your reminder."]
        # The app starts once the verdict is in: nothing is played to the party before it.
        kinds = [e["kind"] for e in events]
        assert kinds.index("amd") < kinds.index("flow.start")

        sid, details = await call(rig, VOICEMAIL, MachineDetection="detectmessageend")
        events = await rig.timeline(sid)
        step = verdict(events)
        assert step["result"] == "machine_end_beep" and step["mode"] == "DetectMessageEnd"
        assert details["AnsweredBy"] == "machine_end_beep"
        assert details["Details"]["MachineDetectionDuration"] == step["ms"]
        # The greeting (about 7 s) and the beep (0.5 s after it, 0.5 s long) have passed.
        assert step["ms"] > 6000
        assert said(events) == ["Please call us back."]

        # The callbacks (no StatusCallbackEvents: the four fields, and the detection's two).
        terminal = [s.fields() for s in rig.customer.to("/status")]
        assert [f["AnsweredBy"] for f in terminal] == ["human", "machine_end_beep"]
        assert int(terminal[1]["MachineDetectionDuration"]) == step["ms"]


async def test_enable_says_machine_start_and_a_machine_without_beep_ends_in_silence(database_url):
    async with running(database_url) as rig:
        await rig.script_phone(
            VOICEMAIL,
            outcome="machine",
            beep=False,
            greeting="Hi, this is Priya. I cannot take your call right now. "
            "Leave a message and I will call you back.",
        )
        sid, details = await call(rig, VOICEMAIL, MachineDetection="Enable")
        step = verdict(await rig.timeline(sid))
        assert step["result"] == "machine_start" and details["AnsweredBy"] == "machine_start"
        assert said(await rig.timeline(sid)) == []  # default branch: hung up on the machine

        sid, details = await call(rig, VOICEMAIL, MachineDetection="DetectMessageEnd")
        step = verdict(await rig.timeline(sid))
        assert step["result"] == "machine_end_silence"
        assert said(await rig.timeline(sid)) == ["Please call us back."]


async def test_a_silent_party_is_unknown_and_the_magic_numbers_detect(database_url):
    async with running(database_url) as rig:
        sid, details = await call(rig, "09812345678", MachineDetection="Enable")  # says nothing
        assert verdict(await rig.timeline(sid))["result"] == "unknown"
        assert details["AnsweredBy"] == "unknown"
        _, details = await call(rig, "09999900005", MachineDetection="DetectMessageEnd")
        assert details["AnsweredBy"] == "machine_end_beep"
        _, details = await call(rig, "09999900006", MachineDetection="Enable")
        assert details["AnsweredBy"] == "human"


async def test_without_detection_an_answer_is_human_as_on_exotel(database_url):
    async with running(database_url) as rig:
        await rig.script_phone(VOICEMAIL, outcome="machine")
        sid, details = await call(rig, VOICEMAIL, StatusCallbackEvents="terminal")
        assert details["AnsweredBy"] == "human"
        assert "MachineDetectionDuration" not in details["Details"]
        assert not [e for e in await rig.timeline(sid) if e["kind"] == "amd"]
        [callback] = rig.customer.to("/status")
        fields = callback.fields()
        assert fields["Legs[0][AnsweredBy]"] == "human" and "AnsweredBy" not in fields
        assert said(await rig.timeline(sid)) == []  # the app's switch has no AnsweredBy


async def test_a_bad_machine_detection_is_refused_naming_it(database_url):
    async with running(database_url) as rig:
        r = await rig.connect(From=PERSON, Url=rig.flow_url(), MachineDetection="yes")
        assert r.status_code == 400
        assert "MachineDetection must be Enable or DetectMessageEnd" in r.text


@pytest.mark.parametrize(
    "script, message",
    [
        ({"outcome": "answer", "beep": False}, "beep is for an answering machine"),
        ({"outcome": "busy", "greeting": "Hello?"}, "greeting is for a phone that answers"),
        ({"outcome": "machine", "beep": "yes"}, "beep must be true or false"),
        ({"outcome": "machine", "greeting": 5}, "greeting must be a text"),
    ],
)
def test_phone_scripts_check_greeting_and_beep(script, message):
    with pytest.raises(InvalidRequest, match=message):
        PhoneScript.from_dict(script)


def test_a_machine_script_round_trips():
    machine = PhoneScript.from_dict({"outcome": "machine", "beep": False, "greeting": "Hi."})
    assert PhoneScript.from_dict(machine.to_dict()) == machine
    assert PhoneScript.from_dict({"outcome": "machine"}).spoken_greeting.startswith("Hello")
