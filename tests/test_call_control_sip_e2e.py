"""Hanging up by request over SIP, with SIPp as the phone: a ringing leg gets CANCEL, an answered
one BYE. SIPp exits 0 only when every message of its scenario came as scripted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e import Rig
from tests.sipp import needs_sipp, sipp
from tests.test_sip_carrier_e2e import app, call_to_end, place, sip_server, sqlite_db, story

pytestmark = [pytest.mark.e2e, needs_sipp, pytest.mark.usefixtures("sqlite_db")]
__all__ = ["sqlite_db"]  # the fixture sip_server's database comes from

WAIT = 20.0
LISTENING = {
    "ask": {
        "applet": "gather",
        "text": "Press a key",
        "input_timeout": 60,
        "repeats": 0,
        "on_input": "bye",
        "on_no_input": "bye",
    },
    "bye": {"applet": "hangup"},
}


async def until(rig: Rig, sid: str, status: str) -> None:
    """Wait (real time: SIP runs on it) until the call has ``status``."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while (await rig.call(sid)).status != status:
        assert asyncio.get_running_loop().time() < deadline, await story(rig, sid)
        await asyncio.sleep(0.05)


async def hang_up(rig: Rig, sid: str) -> dict:
    r = await rig.http.post(
        rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=rig.auth
    )
    assert r.status_code == 200, r.text
    return r.json()["Call"]


async def test_hanging_up_a_ringing_sip_call_sends_cancel(tmp_path: Path) -> None:
    async with sipp(tmp_path, "uas_ring_forever.xml") as phone, sip_server(tmp_path, phone) as rig:
        sid = await place(rig, phone, await app(rig, LISTENING, "ask"), TimeOut="60")
        await until(rig, sid, "ringing")
        answer = await hang_up(rig, sid)
        assert answer["Status"] == "failed", await story(rig, sid)
        call = await call_to_end(rig, sid)
        assert (call.legs[0].status, call.legs[0].cause) == ("canceled", "canceled by request")
        assert call.reason == "hangup requested (api)"
        assert await phone.exit_code() == 0  # it got our CANCEL, answered 487, got our ACK


async def test_hanging_up_an_answered_sip_call_sends_bye(tmp_path: Path) -> None:
    async with sipp(tmp_path, "callee_answer.xml") as phone, sip_server(tmp_path, phone) as rig:
        sid = await place(rig, phone, await app(rig, LISTENING, "ask"))
        await until(rig, sid, "in-progress")
        answer = await hang_up(rig, sid)
        assert answer["Status"] == "completed", await story(rig, sid)
        call = await rig.call(sid)
        assert call.legs[0].status == "completed" and call.reason == "hangup requested (api)"
        assert await phone.exit_code() == 0  # it got our BYE (and answered it 200)
        r = await rig.http.post(
            rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        assert r.status_code == 409
