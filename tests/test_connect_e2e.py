"""Connect inside a flow, end to end on the sandbox: who is dialed, in what order, who talks,
what later applets see, and the legs the call reports."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e import Rig, running
from tests.test_apps_e2e import example


def connect_app(hook: str, **connect: Any) -> dict[str, Any]:
    """Connect, then tell the customer's server how it went (a Passthru), then a goodbye."""
    return {
        "name": "connect",
        "start": "connect",
        "nodes": {
            "connect": {
                "applet": "connect",
                **connect,
                "after_conversation": "report",
                "on_no_answer": "sorry",
                "on_nobody": "nobody",
            },
            "report": {"applet": "passthru", "url": hook, "next": "bye"},
            "sorry": {"applet": "greeting", "text": "Nobody answered", "next": "report"},
            "nobody": {"applet": "greeting", "text": "Nobody to call", "next": "bye"},
            "bye": {"applet": "hangup"},
        },
    }


async def place(rig: Rig, app: dict[str, Any], **params: Any) -> tuple[str, dict[str, Any]]:
    saved = await rig.services.accounts.save_app(rig.sid, app)
    r = await rig.connect(From="09812345678", Url=rig.flow_url(saved.id), **params)
    assert r.status_code == 200, r.text
    sid = r.json()["Call"]["Sid"]
    await rig.finish(sid)
    return sid, await rig.details(sid)


def said(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["text"] for e in events if e["kind"] == "say"]


async def test_sequential_numbers_until_one_answers(database_url):
    async with running(database_url) as rig:
        await rig.script_phone("09812345679", ring=2, hangup_after=10)
        app = connect_app(f"{rig.customer.url}/report", numbers=["09999900001", "09812345679"])
        sid, details = await place(rig, app)
        assert details["Status"] == "completed"
        legs = [(leg.leg_no, leg.number, leg.status) for leg in (await rig.call(sid)).legs]
        assert legs == [
            (1, "+919812345678", "completed"),
            (2, "+919999900001", "busy"),
            (3, "+919812345679", "completed"),
        ]
        [report] = rig.customer.to("/report")
        assert report.query["DialCallStatus"] == "completed"
        assert report.query["DialWhomNumber"] == "09812345679"
        assert report.query["DialCallDuration"] == "10"
        assert report.query["CallType"] == "completed"


async def test_nobody_answers_takes_the_no_answer_exit(database_url):
    async with running(database_url) as rig:
        app = connect_app(f"{rig.customer.url}/report", numbers=["09999900002"], ring_timeout=5)
        sid, details = await place(rig, app)
        events = await rig.timeline(sid)
        assert said(events) == ["Nobody answered"]
        assert [leg["Leg"]["Id"] for leg in details["Details"]["Legs"]] == [1, 2]
        assert (await rig.call(sid)).legs[1].status == "no-answer"
        [report] = rig.customer.to("/report")
        assert report.query["DialCallStatus"] == "no-answer"
        assert report.query["CallType"] == "call-attempt"


async def test_simultaneous_the_first_to_answer_wins(database_url):
    async with running(database_url) as rig:
        await rig.script_phone("09812345670", ring=5)
        await rig.script_phone("09812345671", ring=1, hangup_after=3)
        app = connect_app(
            f"{rig.customer.url}/report",
            numbers=["09812345670", "09812345671"],
            mode="simultaneous",
        )
        sid, _ = await place(rig, app)
        statuses = {leg.number: leg.status for leg in (await rig.call(sid)).legs[1:]}
        assert statuses == {"+919812345670": "canceled", "+919812345671": "completed"}
        assert rig.customer.to("/report")[0].query["DialWhomNumber"] == "09812345671"


@pytest.mark.parametrize(
    ("answer", "dialed"),
    [
        (
            (200, "text/plain", "09999900001, not-a-number, 09812345679"),
            ["+919999900001", "+919812345679"],
        ),
        (
            (
                200,
                "application/json",
                '{"destination": {"numbers": ["09812345679"]}, "max_ringing_duration": 7}',
            ),
            ["+919812345679"],
        ),
    ],
)
async def test_numbers_from_the_customers_url(database_url, answer, dialed):
    async with running(database_url) as rig:
        await rig.script_phone("09812345679", hangup_after=2)
        rig.customer.script = [answer]
        sid, _ = await place(
            rig, connect_app(f"{rig.customer.url}/report", url=f"{rig.customer.url}/who")
        )
        [asked] = rig.customer.to("/who")
        assert asked.query["CallSid"] == sid
        dial = next(e["data"] for e in await rig.timeline(sid) if e["kind"] == "dial")
        assert dial["numbers"] == dialed


async def test_nobody_to_dial(database_url):
    async with running(database_url) as rig:
        rig.customer.script = [(200, "text/plain", "")]
        sid, _ = await place(
            rig, connect_app(f"{rig.customer.url}/report", url=f"{rig.customer.url}/who")
        )
        assert said(await rig.timeline(sid)) == ["Nobody to call"]
        assert len((await rig.call(sid)).legs) == 1


async def test_caller_hangs_up_while_the_callee_rings(database_url):
    async with running(database_url) as rig:
        await rig.script_phone("09812345678", hangup_after=4)
        app = connect_app(f"{rig.customer.url}/report", numbers=["09999900002"], ring_timeout=30)
        sid, details = await place(rig, app)
        assert details["Status"] == "completed"
        assert [leg.status for leg in (await rig.call(sid)).legs] == ["completed", "canceled"]
        assert rig.customer.to("/report") == []  # the flow ended with the caller


async def test_the_connect_example(database_url):
    async with running(database_url) as rig:
        await rig.script_phone("09812345679", hangup_after=8)
        sid, details = await place(rig, example("connect.yaml", rig.customer.url))
        assert details["Status"] == "completed"
        assert [(leg.number, leg.status) for leg in (await rig.call(sid)).legs[1:]] == [
            ("+919999900001", "busy"),
            ("+919812345679", "completed"),
        ]
        [report] = rig.customer.to("/ivr/dial-result")
        assert report.query["DialCallStatus"] == "completed"
        # The agent hung up 8 s after answering; the announcement took the first of them.
        assert 4 <= int(report.query["DialCallDuration"]) < 8


async def test_the_greeting_passthru_example(database_url):
    async with running(database_url) as rig:
        rig.customer.script = [302]
        sid, details = await place(rig, example("greeting_passthru.yaml", rig.customer.url))
        assert details["Status"] == "completed"
        assert said(await rig.timeline(sid)) == [
            "Hello, this is Acme. We are checking your order.",
            "We could not confirm your order. Goodbye.",
        ]
        [check] = rig.customer.to("/ivr/check")
        assert check.query["Direction"] == "outbound-dial" and check.query["CallSid"] == sid


def tone_wav(seconds: float = 1.0) -> bytes:
    """A 440 Hz tone as an 8 kHz mono WAV."""
    import io
    import math
    import struct
    import wave

    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 8000)))
        for n in range(int(8000 * seconds))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    return out.getvalue()


async def test_music_while_the_numbers_ring(database_url):
    async with running(database_url) as rig:
        await rig.script_phone("09812345679", ring=5, hangup_after=2)
        rig.customer.script = [(200, "audio/wav", tone_wav())]
        app = connect_app(
            f"{rig.customer.url}/report",
            numbers=["09812345679"],
            music_on_hold=f"{rig.customer.url}/music.wav",
        )
        sid, _ = await place(rig, app)
        events = await rig.timeline(sid)
        [music] = [e for e in events if e["kind"] == "music"]
        answered = next(
            e
            for e in events
            if e["kind"] == "status" and e["data"]["legs"].get("2") == "in-progress"
        )
        assert music["data"]["url"] == f"{rig.customer.url}/music.wav"
        assert music["at"] < answered["at"]
        assert len(rig.customer.to("/music.wav")) == 1  # fetched once, looped while ringing
        assert rig.customer.to("/report")[0].query["DialCallStatus"] == "completed"
