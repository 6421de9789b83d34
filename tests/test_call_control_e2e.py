"""Live call control end to end (sandbox phones, ManualClock, SQLite and PostgreSQL):
``POST Calls/{CallSid}`` hangs up a queued, ringing or answered call, or runs another app on it."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

from ringflow.storage.models import CONTROL_REQUEST
from tests.e2e import Rig, running

WAITING = {
    "name": "waits for a key",
    "start": "ask",
    "nodes": {
        "ask": {
            "applet": "gather",
            "text": "Press a key",
            "input_timeout": 60,
            "repeats": 0,
            "on_input": "bye",
            "on_no_input": "bye",
        },
        "bye": {"applet": "hangup"},
    },
}
GOODBYE = {
    "name": "goodbye",
    "start": "bye",
    "nodes": {
        "bye": {"applet": "greeting", "text": "Redirected here", "next": "end"},
        "end": {"applet": "hangup"},
    },
}


async def reach(rig: Rig, sid: str, status: str) -> None:
    """Run the clock until the call has ``status``."""

    async def there() -> bool:
        return (await rig.call(sid)).status == status

    await rig.clock.run_until(there, limit=600)


async def hang_up(rig: Rig, sid: str, fmt: str = ".json", **params: str) -> Any:
    params = params or {"Status": "completed"}
    return await rig.http.post(rig.url(f"Calls/{sid}{fmt}"), data=params, auth=rig.auth)


async def place(rig: Rig, **params: Any) -> str:
    r = await rig.connect(StatusCallback=f"{rig.customer.url}/status", **params)
    assert r.status_code == 200, r.text
    return r.json()["Call"]["Sid"]


async def test_hang_up_an_answered_flow_call(database_url):
    async with running(database_url) as rig:
        waiting = await rig.services.accounts.save_app(rig.sid, WAITING)
        sid = await place(rig, From="09812345678", Url=rig.flow_url(waiting.id))
        await reach(rig, sid, "in-progress")
        r = await hang_up(rig, sid)
        assert r.status_code == 200, r.text
        assert r.json()["Call"]["Status"] == "completed"
        assert r.json()["Call"]["Uri"].endswith(f"/Calls/{sid}.json")
        call = await rig.finish(sid)
        assert call.status == "completed" and call.legs[0].status == "completed"
        assert call.reason == "hangup requested (api)"
        [status] = rig.customer.to("/status")
        assert status.fields()["Status"] == "completed"
        timeline = await rig.timeline(sid)
        assert {"op": "hangup", "by": "api"} in [
            e["data"] for e in timeline if e["kind"] == CONTROL_REQUEST
        ]
        # The gather's 60 s were never waited for.
        assert (await rig.details(sid))["Duration"] < 30


async def test_hang_up_a_ringing_call_ends_it_failed(database_url):
    async with running(database_url) as rig:
        await rig.script_phone("09812345678", ring=50)
        sid = await place(
            rig,
            From="09812345678",
            Url=rig.flow_url(),
            TimeOut="60",
            StatusCallbackEvents="terminal",
        )
        await reach(rig, sid, "ringing")
        r = await hang_up(rig, sid, "")  # XML this time
        assert r.status_code == 200, r.text
        assert ET.fromstring(r.content).findtext("Call/Status") == "failed"
        call = await rig.finish(sid)
        assert call.status == "failed"
        assert (call.legs[0].status, call.legs[0].cause) == ("canceled", "canceled by request")
        terminal = rig.customer.to("/status")[-1].fields()
        assert terminal["Status"] == "failed" and terminal["Legs[0][Status]"] == "canceled"
        assert "applet.enter" not in [e["kind"] for e in await rig.timeline(sid)]


async def test_hang_up_a_queued_call_removes_it_once(database_url):
    async with running(database_url, max_concurrent_calls=1) as rig:
        waiting = await rig.services.accounts.save_app(rig.sid, WAITING)
        first = await place(rig, From="09812345678", Url=rig.flow_url(waiting.id))
        r = await rig.connect(From="09812345679", Url=rig.flow_url())
        queued = r.json()["Call"]["Sid"]
        assert r.json()["Call"]["Status"] == "queued"
        # Two requests at once: the call leaves the queue exactly once.
        answers = await asyncio.gather(hang_up(rig, queued), hang_up(rig, queued))
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        ok = next(a for a in answers if a.status_code == 200).json()["Call"]
        assert ok["Status"] == "failed"
        call = await rig.call(queued)
        assert (call.legs[0].status, call.legs[0].cause) == ("failed", "canceled by request")
        # The line frees up: the removed call is still never dialled.
        assert (await hang_up(rig, first)).status_code == 200
        await rig.finish(first)
        await rig.clock.advance(120)
        call = await rig.call(queued)
        assert call.status == "failed" and call.owner is None
        kinds = [(e["kind"], e["data"].get("call")) for e in await rig.timeline(queued)]
        assert ("status", "ringing") not in kinds


async def test_hang_up_a_two_number_call(database_url):
    async with running(database_url) as rig:
        sid = await place(
            rig, From="09812345678", To="09812345679", StatusCallbackEvents="terminal"
        )

        async def talking() -> bool:
            legs = (await rig.call(sid)).legs
            return [leg.status for leg in legs] == ["in-progress", "in-progress"]

        await rig.clock.run_until(talking, limit=600)
        r = await hang_up(rig, sid)
        assert r.status_code == 200 and r.json()["Call"]["Status"] == "completed", r.text
        call = await rig.finish(sid)
        assert [leg.status for leg in call.legs] == ["completed", "completed"]
        assert call.reason == "hangup requested (api)"
        # Without the request it would have talked for the 4 h TimeLimit.
        assert (await rig.details(sid))["Duration"] < 60
        assert rig.customer.to("/status")[-1].fields()["Status"] == "completed"


async def test_a_finished_call_answers_409_and_bad_requests_400(database_url):
    async with running(database_url) as rig:
        sid = await place(rig, From="09999900001", Url=rig.flow_url())  # busy
        await rig.finish(sid)
        r = await hang_up(rig, sid)
        assert r.status_code == 409
        assert r.json()["RestException"]["Message"] == f"Call {sid} is already over: it ended busy"
        r = await hang_up(rig, sid, "")
        assert r.status_code == 409 and "already over" in r.text
        r = await hang_up(rig, sid, Status="in-progress")
        assert r.status_code == 400 and "Status in-progress" in r.json()["RestException"]["Message"]
        r = await hang_up(rig, sid, Status="completed", Url=rig.flow_url())
        assert r.status_code == 400 and "Status and Url" in r.json()["RestException"]["Message"]
        r = await hang_up(rig, sid, Foo="bar")
        assert r.status_code == 400
        r = await hang_up(rig, "0" * 31 + "z")
        assert r.status_code == 404
        r = await rig.http.post(
            rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=(rig.key, "wrong")
        )
        assert r.status_code == 401


async def test_url_redirects_a_live_call_to_another_app(database_url):
    async with running(database_url) as rig:
        waiting = await rig.services.accounts.save_app(rig.sid, WAITING)
        goodbye = await rig.services.accounts.save_app(rig.sid, GOODBYE)
        await rig.script_phone("09812345678", ring=5)
        sid = await place(rig, From="09812345678", Url=rig.flow_url(waiting.id))
        await reach(rig, sid, "ringing")
        r = await hang_up(rig, sid, Url=rig.flow_url(goodbye.id))
        assert r.status_code == 409 and "not answered" in r.text  # not yet answered
        await reach(rig, sid, "in-progress")
        r = await hang_up(rig, sid, Url="http://my.exotel.com/x/exoml/start_voice/999999")
        assert r.status_code == 400 and "no app 999999" in r.text
        r = await hang_up(rig, sid, url=rig.flow_url(goodbye.id))  # any letter case
        assert r.status_code == 200 and r.json()["Call"]["Status"] == "in-progress", r.text
        call = await rig.finish(sid)
        assert call.status == "completed" and call.reason is None
        timeline = await rig.timeline(sid)
        started = [e["data"]["app"] for e in timeline if e["kind"] == "flow.start"]
        assert started == [waiting.id, goodbye.id]
        redirect = next(e["data"] for e in timeline if e["kind"] == "flow.redirect")
        assert (redirect["from"], redirect["to"]) == (waiting.id, goodbye.id)
        said = [e["data"]["text"] for e in timeline if e["kind"] == "say"]
        assert said == ["Press a key", "Redirected here"]


BRIDGE = {
    "name": "bridge",
    "start": "connect",
    "nodes": {
        "connect": {"applet": "connect", "numbers": ["09812300001"], "after_conversation": "bye"},
        "bye": {"applet": "hangup"},
    },
}


async def test_a_redirect_during_a_connect_hangs_up_the_agent_and_ends_that_leg(database_url):
    async with running(database_url) as rig:
        bridge = await rig.services.accounts.save_app(rig.sid, BRIDGE)
        goodbye = await rig.services.accounts.save_app(rig.sid, GOODBYE)
        sid = await place(rig, From="09812345678", Url=rig.flow_url(bridge.id))

        async def talking() -> bool:
            call = await rig.call(sid)
            return len(call.legs) > 1 and call.legs[1].status == "in-progress"

        await rig.clock.run_until(talking, limit=600)
        r = await hang_up(rig, sid, Url=rig.flow_url(goodbye.id))
        assert r.status_code == 200, r.text
        call = await rig.finish(sid)
        assert [(leg.leg_no, leg.status) for leg in call.legs] == [
            (1, "completed"),
            (2, "completed"),
        ]
        steps = await rig.timeline(sid)
        kinds = [(e["kind"], e["data"]) for e in steps]
        agent_over = kinds.index(
            (
                "status",
                next(d for k, d in kinds if k == "status" and d["legs"] == {"2": "completed"}),
            )
        )
        second_app = kinds.index(
            next(s for s in kinds if s[0] == "flow.start" and s[1]["app"] == goodbye.id)
        )
        assert agent_over < second_app  # the agent was let go before the new app began


async def test_the_dashboard_hang_up_button_ends_a_live_call(database_url):
    from ringflow.dashboard.logins import set_account_password
    from tests.test_dashboard import PASSWORD, browser_like, csrf_of, sign_in

    async with running(database_url) as rig:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        waiting = await rig.services.accounts.save_app(rig.sid, WAITING)
        sid = await place(rig, From="09812345678", Url=rig.flow_url(waiting.id))
        await reach(rig, sid, "in-progress")
        async with browser_like(rig) as client:
            await sign_in(client, rig.sid)
            page = await client.get(f"/a/{rig.sid}/calls/{sid}")
            assert page.status_code == 200 and "Hang up" in page.text
            action = f"/a/{rig.sid}/calls/{sid}/hangup"
            forged = await client.post(action, data={"csrf": "forged"})
            assert forged.status_code == 403
            assert (await rig.call(sid)).status == "in-progress"
            r = await client.post(action, data={"csrf": csrf_of(page.text)})
            assert r.status_code == 303, r.text
            assert r.headers["location"].endswith(f"/calls/{sid}?done=hungup")
            call = await rig.finish(sid)
            assert call.status == "completed" and call.reason == "hangup requested (dashboard)"
            page = await client.get(f"/a/{rig.sid}/calls/{sid}?done=hungup")
            assert "Hang up</button>" not in page.text and "Hung up." in page.text
            again = await client.post(action, data={"csrf": csrf_of(page.text)})
            assert again.headers["location"].endswith("?done=over")
            # Another account's call is not found from this one.
            other = await rig.services.accounts.create_account("other")
            await set_account_password(rig.services.accounts, other.account_sid, PASSWORD)
        async with browser_like(rig) as client:
            await sign_in(client, other.account_sid)
            page = await client.get(f"/a/{other.account_sid}/calls")
            r = await client.post(
                f"/a/{other.account_sid}/calls/{sid}/hangup", data={"csrf": csrf_of(page.text)}
            )
            assert r.status_code == 404
