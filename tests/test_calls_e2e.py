"""End to end over real HTTP on loopback: the Exotel edge, the call engine, the sandbox phones,
the customer's Passthru server and the StatusCallback receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.e2e import EXOPHONE, running

LONG_GREETING = {
    "name": "long greeting",
    "start": "talk",
    "nodes": {
        "talk": {"applet": "greeting", "text": " ".join(["word"] * 30), "next": "after"},
        "after": {"applet": "greeting", "text": "never heard when the phone hangs up first"},
    },
}

CALL_FIELDS = [
    "Sid", "ParentCallSid", "DateCreated", "DateUpdated", "AccountSid", "To", "From",
    "PhoneNumberSid", "Status", "StartTime", "EndTime", "Duration", "Price", "Direction",
    "AnsweredBy", "ForwardedFrom", "CallerName", "Uri", "RecordingUrl",
]  # fmt: skip


async def test_flow_call_xml_runs_greeting_and_passthru(database_url):
    async with running(database_url) as rig:
        r = await rig.connect(
            "",
            From="09812345678",
            Url=rig.flow_url(),
            CallType="trans",
            StatusCallback=f"{rig.customer.url}/status",
            CustomField="order-42",
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/xml")
        call = ET.fromstring(r.content).find("Call")
        assert [child.tag for child in call] == CALL_FIELDS
        sid = call.findtext("Sid")
        assert len(sid) == 32 and sid.isalnum() and sid[-1] in "ghijklmnopqrstuvwxyz"
        assert call.findtext("Status") == "in-progress"
        assert call.findtext("To") == EXOPHONE and call.findtext("From") == "09812345678"
        assert call.findtext("PhoneNumberSid") == EXOPHONE
        assert call.findtext("Direction") == "outbound-api"
        assert call.findtext("Uri") == f"/v1/Accounts/{rig.sid}/Calls/{sid}"
        for field in ("DateCreated", "DateUpdated", "StartTime"):
            assert len(call.findtext(field)) == 19

        done = await rig.finish(sid)
        assert done.status == "completed"

        [hook] = rig.customer.to("/passthru")
        q = hook.query
        assert q["CallSid"] == sid
        assert q["CallFrom"] == q["From"] == "09812345678"
        assert q["CallTo"] == q["To"] == EXOPHONE
        assert q["Direction"] == "outbound-dial"
        assert q["EndTime"] == "1970-01-01 05:30:00"
        assert q["CallType"] == "call-attempt"
        assert q["CustomField"] == "order-42"
        assert q["flow_id"] == str(rig.app_id)
        assert "digits" not in q

        [status] = rig.customer.to("/status")
        assert status.headers["content-type"].startswith("multipart/form-data")
        assert status.fields().keys() == {"CallSid", "Status", "RecordingUrl", "DateUpdated"}
        assert status.fields()["Status"] == "completed" and status.fields()["CallSid"] == sid
        assert status.headers["idempotency-key"] == f"{sid}:terminal"

        details = await rig.details(sid)
        assert details["Status"] == "completed"
        assert details["Details"]["Leg1Status"] == "completed"
        assert details["Details"]["Leg2Status"] == ""
        # 1 s of ringing, then the greeting, the passthru and the goodbye take their spoken time.
        assert details["Duration"] >= 3
        steps = [(e["kind"], e["data"].get("node")) for e in await rig.timeline(sid)]
        assert ("applet.enter", "welcome") in steps and ("applet.enter", "yes") in steps
        assert ("applet.enter", "no") not in steps


async def test_passthru_302_takes_the_second_branch(database_url):
    async with running(database_url) as rig:
        rig.customer.script = [302]
        r = await rig.connect(From="09812345678", Url=rig.flow_url())
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        said = [e["data"]["text"] for e in await rig.timeline(sid) if e["kind"] == "say"]
        assert said == ["Hello from ringflow", "Your server said no"]


@pytest.mark.parametrize(
    ("number", "status", "leg1"),
    [
        ("09999900001", "busy", "busy"),
        ("09999900002", "no-answer", "no-answer"),
        ("09999900003", "failed", "failed"),
        ("09999900004", "completed", "completed"),
    ],
)
async def test_magic_numbers(database_url, number, status, leg1):
    async with running(database_url) as rig:
        # A greeting of 30 words takes about 10 s: 09999900004 hangs up in the middle of it.
        long = await rig.services.accounts.save_app(rig.sid, LONG_GREETING)
        r = await rig.connect(
            From=number,
            Url=rig.flow_url(long.id),
            TimeOut="20",
            StatusCallback=f"{rig.customer.url}/status",
            StatusCallbackEvents=["answered", "terminal"],
            StatusCallbackContentType="application/json",
        )
        assert r.status_code == 200, r.text
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        details = await rig.details(sid)
        assert details["Status"] == status
        assert details["Details"]["Leg1Status"] == leg1
        events = [(s.json["EventType"], s.json["Status"]) for s in rig.customer.to("/status")]
        answered = [("answered", "in-progress")] if status == "completed" else []
        assert events == [*answered, ("terminal", status)]
        terminal = rig.customer.to("/status")[-1].json
        assert terminal["Legs"][0]["Status"] == leg1
        assert terminal["From"] == number
        if number == "09999900002":
            assert details["Duration"] == 20  # rang for the whole TimeOut
        if number == "09999900004":
            said = [e["data"]["text"] for e in await rig.timeline(sid) if e["kind"] == "say"]
            assert said == [LONG_GREETING["nodes"]["talk"]["text"]]
            assert terminal["Legs"][0]["OnCallDuration"] == 5
            assert details["Duration"] == 6


async def test_two_numbers_bridge_until_time_limit(database_url):
    async with running(database_url) as rig:
        r = await rig.connect(
            From="09812345678",
            To="09812345679",
            TimeLimit="30",
            StatusCallback=f"{rig.customer.url}/status",
            StatusCallbackEvents="answered,terminal",
        )
        sid = r.json()["Call"]["Sid"]
        assert r.json()["Call"]["To"] == "09812345679"
        await rig.finish(sid)
        details = await rig.details(sid)
        assert details["Status"] == "completed"
        assert details["Details"]["Leg1Status"] == details["Details"]["Leg2Status"] == "completed"
        # TimeLimit counts from the first answer; leg 2 rang 1 s of it.
        assert details["Details"]["ConversationDuration"] == 29
        legs = details["Details"]["Legs"]
        assert [leg["Leg"]["Id"] for leg in legs] == [1, 2]
        assert legs[0]["Leg"]["OnCallDuration"] == 30
        kinds = [s.fields()["EventType"] for s in rig.customer.to("/status")]
        assert kinds == ["answered", "answered", "terminal"]
        terminal = rig.customer.to("/status")[-1].fields()
        assert terminal["Legs[0][Status]"] == terminal["Legs[1][Status]"] == "completed"
        assert terminal["ConversationDuration"] == "29"


@pytest.mark.parametrize(
    ("to", "status", "leg2"),
    [("09999900001", "busy", "busy"), ("09999900002", "no-answer", "no-answer")],
)
async def test_two_numbers_second_leg_unanswered(database_url, to, status, leg2):
    async with running(database_url) as rig:
        r = await rig.connect(From="09812345678", To=to, TimeOut="15")
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        details = await rig.details(sid)
        assert (
            details["Status"],
            details["Details"]["Leg1Status"],
            details["Details"]["Leg2Status"],
        ) == (
            status,
            "completed",
            leg2,
        )
        assert details["Details"]["ConversationDuration"] == 0
        # The carrier's cause is kept on the leg it explains, not on the one we hung up.
        first, second = (await rig.call(sid)).legs
        assert first.cause is None and second.cause


async def test_two_numbers_first_unanswered_leaves_second_empty(database_url):
    async with running(database_url) as rig:
        r = await rig.connect(From="09999900001", To="09812345679")
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        d = (await rig.details(sid))["Details"]
        assert ((await rig.details(sid))["Status"], d["Leg1Status"], d["Leg2Status"]) == (
            "busy",
            "busy",
            "",
        )


async def test_first_party_hangs_up_while_second_rings(database_url):
    async with running(database_url) as rig:
        r = await rig.http.put(
            f"{rig.base}/admin/v1/accounts/{rig.sid}/sandbox/phones/09812345678",
            json={"ring": 1, "outcome": "answer", "hangup_after": 3},
            auth=rig.auth,
        )
        assert r.status_code == 200, r.text
        r = await rig.connect(From="09812345678", To="09999900002", TimeOut="30")
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        details = await rig.details(sid)
        assert details["Status"] == "failed"
        assert details["Details"]["Leg1Status"] == "completed"
        assert details["Details"]["Leg2Status"] == "canceled"


async def test_callback_receiver_failing_twice_gets_it_exactly_once(database_url):
    async with running(database_url) as rig:
        rig.customer.script = [500, 503]  # the callback receiver fails twice, then answers 200
        r = await rig.connect(
            From="09999900001", To="09812345679", StatusCallback=f"{rig.customer.url}/status"
        )
        sid = r.json()["Call"]["Sid"]
        await rig.finish(sid)
        attempts = rig.customer.to("/status")
        assert [a.status for a in attempts] == [500, 503, 200]
        assert {a.headers["idempotency-key"] for a in attempts} == {f"{sid}:terminal"}
        assert all(a.fields()["Status"] == "busy" for a in attempts)
        await rig.clock.advance(7 * 86400)  # a week later, nothing more was sent
        assert len(rig.customer.to("/status")) == 3
