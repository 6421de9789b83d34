"""``GET /metrics`` and ``/readyz`` during real calls over SIP, SIPp as the phone and registrar.

Counters are process-wide, so each check is a difference between two scrapes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.metrics_support import scrape
from tests.sipp import needs_sipp, sipp
from tests.test_restart_e2e import eventually as _eventually
from tests.test_sip_carrier_e2e import (
    GREETING_THEN_HANGUP,
    BlackHole,
    DeadTrunk,
    app,
    call_to_end,
    place,
    sip_server,
    sqlite_db,  # noqa: F401  (the fixture sip_server's database comes from)
    story,
)

pytestmark = [pytest.mark.e2e, needs_sipp, pytest.mark.usefixtures("sqlite_db")]


class _Quiet:
    """What ``eventually`` shows when it times out (these servers run in this process)."""

    def output(self) -> str:
        return "(in-process server: see the captured log)"


async def eventually(check, what: str, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    await _eventually(check, what, _Quiet(), timeout)  # type: ignore[arg-type]


async def test_an_answered_sip_call_in_every_sip_rtp_and_trunk_family(tmp_path: Path) -> None:
    async with (
        sipp(tmp_path, "callee_answer.xml", talk_ms=3000) as phone,
        sip_server(tmp_path, phone) as rig,
    ):
        before = await scrape(rig.http, rig.base)
        sid = await place(rig, phone, await app(rig, GREETING_THEN_HANGUP, "hello"))

        async def talking() -> bool:
            return (await rig.call(sid)).status == "in-progress"

        await eventually(talking, "the call to be answered")
        during = await scrape(rig.http, rig.base)
        assert during.get("ringflow_trunk_channels_in_use", trunk="sipp") == 1
        assert during.get("ringflow_calls_in_progress", account=rig.sid) == 1
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0
        after = await scrape(rig.http, rig.base)
        media = rig.services.carrier.media.stats  # type: ignore[attr-defined]

    grew = after.since
    assert grew(before, "ringflow_calls_started_total", carrier="sip") == 1
    assert grew(before, "ringflow_calls_ended_total", status="completed", carrier="sip") == 1
    assert grew(before, "ringflow_call_setup_seconds_count", carrier="sip") == 1
    for method in ("INVITE", "ACK", "BYE"):
        assert grew(before, "ringflow_sip_requests_total", direction="out", method=method) == 1
    assert grew(before, "ringflow_sip_responses_total", direction="in", code="180") == 1
    # The INVITE's 200 and the BYE's (SIPp repeats a 200 only if our ACK were lost).
    assert grew(before, "ringflow_sip_responses_total", direction="in", code="200") >= 2
    # One lateness observation per pacer tick that sent: with one session, one per packet.
    assert media.sent > 25  # half a second of greeting, at least
    assert grew(before, "ringflow_rtp_send_lateness_seconds_count") == media.sent
    assert "ringflow_rtp_packets_lost" in after.families
    assert grew(before, "ringflow_rtp_packets_lost_total") == 0  # loopback loses nothing
    assert after.get("ringflow_trunk_channels_in_use", trunk="sipp") == 0
    assert after.get("ringflow_calls_in_progress", account=rig.sid) == 0


async def test_a_busy_sip_call_is_counted_busy(tmp_path: Path) -> None:
    async with sipp(tmp_path, "uas_busy.xml") as phone, sip_server(tmp_path, phone) as rig:
        before = await scrape(rig.http, rig.base)
        sid = await place(rig, phone, await app(rig, GREETING_THEN_HANGUP, "hello"))
        assert (await call_to_end(rig, sid)).status == "busy", await story(rig, sid)
        assert await phone.exit_code() == 0
        after = await scrape(rig.http, rig.base)
    assert after.since(before, "ringflow_calls_ended_total", status="busy", carrier="sip") == 1
    assert after.since(before, "ringflow_sip_responses_total", direction="in", code="486") == 1
    assert after.since(before, "ringflow_sip_requests_total", direction="out", method="ACK") == 1
    assert after.since(before, "ringflow_call_setup_seconds_count", carrier="sip") == 0


async def test_an_unanswered_invite_is_retransmitted_and_counted(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    sink, hole = await loop.create_datagram_endpoint(BlackHole, local_addr=("127.0.0.1", 0))
    try:
        dead = DeadTrunk(sink.get_extra_info("sockname")[1])
        async with sip_server(tmp_path, dead) as rig:
            before = await scrape(rig.http, rig.base)
            sid = await place(rig, dead, await app(rig, GREETING_THEN_HANGUP, "hello"), TimeOut="2")
            assert (await call_to_end(rig, sid)).status == "failed"
            after = await scrape(rig.http, rig.base)
            again = after.since(before, "ringflow_sip_retransmissions_total", kind="request")
            assert again >= 2  # timer A: 0.5 s, then 1.5 s, within the 2 s TimeOut

            async def all_arrived() -> bool:
                invites = sum(1 for d in hole.received if d.startswith(b"INVITE "))
                sent = after.since(
                    before, "ringflow_sip_requests_total", direction="out", method="INVITE"
                )
                return invites == sent == again + 1

            await eventually(all_arrived, "every INVITE counted to reach the trunk", 5)
    finally:
        sink.close()


async def test_a_trunk_that_must_register_is_in_readiness_and_metrics(tmp_path: Path) -> None:
    trunk = {"register": True, "username": "alice", "password": "secret", "register_expires": 120}
    async with (
        sipp(tmp_path, "registrar_digest.xml") as registrar,
        sip_server(tmp_path, registrar, trunk) as rig,
    ):
        registration = rig.services.carrier.registrations["sipp"]
        assert await asyncio.wait_for(registration.wait("registered", "failed"), 10) == "registered"
        ready = await rig.http.get(f"{rig.base}/readyz")
        assert (ready.status_code, ready.text) == (200, "ready\n")
        found = await scrape(rig.http, rig.base)
        assert found.get("ringflow_trunk_registration_state", trunk="sipp", state="registered") == 1
        assert found.get("ringflow_trunk_registration_state", trunk="sipp", state="failed") == 0


async def test_a_trunk_whose_registrar_never_answers_is_not_ready(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_datagram_endpoint(BlackHole, local_addr=("127.0.0.1", 0))
    try:
        dead = DeadTrunk(sink.get_extra_info("sockname")[1])
        trunk = {"register": True, "username": "alice", "password": "secret"}
        async with sip_server(tmp_path, dead, trunk) as rig:
            async with httpx.AsyncClient() as http:
                r = await http.get(f"{rig.base}/readyz")
            assert r.status_code == 503
            assert "trunk sipp: not registered, registering" in r.text, r.text
            found = await scrape(rig.http, rig.base)
            assert (
                found.get("ringflow_trunk_registration_state", trunk="sipp", state="registering")
                == 1
            )
    finally:
        sink.close()
