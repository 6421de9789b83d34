"""``GET /metrics`` during real calls on the sandbox: each family counts exactly what happened.

Counters are process-wide (one registry), so every check is a difference between two scrapes
of the same server, or a gauge labelled with the test's own account.
"""

from __future__ import annotations

import httpx
import pytest

from ringflow.calls.status import is_terminal
from tests.e2e import Rig, running
from tests.metrics_support import Scrape, scrape

pytestmark = pytest.mark.e2e

BUSY = "09999900001"  # the sandbox's busy phone (README: the sandbox phone network)
ANSWERS = ("09812340001", "09812340002", "09812340003")


async def place(rig: Rig, number: str) -> str:
    r = await rig.connect(
        From=number, Url=rig.flow_url(), StatusCallback=f"{rig.customer.url}/status"
    )
    assert r.status_code == 200, r.text
    return str(r.json()["Call"]["Sid"])


async def test_three_completed_and_one_busy_call_are_counted_exactly(database_url: str) -> None:
    # One line: the first call runs while the other three wait queued.
    async with running(database_url, max_concurrent_calls=1, rate_limit_per_minute=6) as rig:
        before = await scrape(rig.http, rig.base)
        sids = [await place(rig, number) for number in (*ANSWERS, BUSY)]

        during = await scrape(rig.http, rig.base)
        assert during.get("ringflow_calls_in_progress", account=rig.sid) == 1
        assert during.get("ringflow_calls_queued", account=rig.sid) == 3
        assert during.since(before, "ringflow_calls_started_total", carrier="sandbox") == 1
        assert (
            during.since(
                before,
                "ringflow_http_requests_total",
                route="exotel:connect",
                method="POST",
                status="200",
            )
            == 4
        )

        async def all_over() -> bool:
            return (
                all([is_terminal((await rig.call(sid)).status) for sid in sids])
                and await rig.outbox_settled()
            )

        await rig.clock.run_until(all_over, limit=20000)
        assert [(await rig.call(sid)).status for sid in sids] == ["completed"] * 3 + ["busy"]

        after = await scrape(rig.http, rig.base)
        grew = after.since
        assert grew(before, "ringflow_calls_started_total", carrier="sandbox") == 4
        assert (
            grew(before, "ringflow_calls_ended_total", status="completed", carrier="sandbox") == 3
        )
        assert grew(before, "ringflow_calls_ended_total", status="busy", carrier="sandbox") == 1
        assert (
            after.sum("ringflow_calls_ended_total") - before.sum("ringflow_calls_ended_total") == 4
        )
        # Setup time: only answered calls have one; the sandbox answers after 1 s of ringing.
        assert grew(before, "ringflow_call_setup_seconds_count", carrier="sandbox") == 3
        assert 3.0 <= grew(before, "ringflow_call_setup_seconds_sum", carrier="sandbox") < 4.0
        assert after.get("ringflow_calls_in_progress", account=rig.sid) == 0
        assert after.get("ringflow_calls_queued", account=rig.sid) == 0
        assert after.get("ringflow_callbacks_pending") == 0
        # One terminal callback per call, each delivered at the first attempt.
        assert len(rig.customer.to("/status")) == 4
        assert grew(before, "ringflow_callback_attempts_total", result="delivered") == 4
        assert grew(before, "ringflow_callback_delivery_delay_seconds_count") == 4

        # Six requests a minute: two more pass, the third is refused.
        for expected in (200, 200, 429):
            r = await rig.http.get(rig.url("Calls.json"), auth=rig.auth)
            assert r.status_code == expected, r.text
        last = await scrape(rig.http, rig.base)
        assert last.since(after, "ringflow_rate_limit_refusals_total", limit="api") == 1
        assert (
            last.since(
                after,
                "ringflow_http_requests_total",
                route="exotel:list_calls",
                method="GET",
                status="429",
            )
            == 1
        )
        assert (
            last.since(
                after, "ringflow_http_request_duration_seconds_count", route="exotel:list_calls"
            )
            == 3
        )
        # Routes are templates, never paths with SIDs in them.
        routes = {
            dict(labels).get("route")
            for (name, labels) in last.samples
            if name == "ringflow_http_requests_total"
        }
        assert not any(rig.sid in str(route) for route in routes), routes
        assert "/metrics" in routes


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_queued_callbacks_show_as_pending(database_url: str) -> None:
    async with running(database_url) as rig:
        hang_up = await rig.services.accounts.save_app(
            rig.sid, {"name": "bye", "start": "bye", "nodes": {"bye": {"applet": "hangup"}}}
        )
        rig.customer.script = ["hang"]  # the callback gets no answer until the test ends
        r = await rig.connect(
            From=ANSWERS[0],
            Url=rig.flow_url(hang_up.id),
            StatusCallback=f"{rig.customer.url}/status",
        )
        sid = r.json()["Call"]["Sid"]

        async def waiting() -> bool:
            return is_terminal((await rig.call(sid)).status) and len(rig.customer.seen) == 1

        await rig.clock.run_until(waiting, limit=2000)
        now = await scrape(rig.http, rig.base)
        assert now.get("ringflow_callbacks_pending") == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_metrics_token_is_required_when_set(database_url: str) -> None:
    async with running(database_url, metrics_token="a-long-scrape-token") as rig:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "a-long-scrape-token"},
        ):
            r = await rig.http.get(f"{rig.base}/metrics", headers=headers)
            assert r.status_code == 401
            assert "a-long-scrape-token" not in r.text
        found = await scrape(rig.http, rig.base, token="a-long-scrape-token")
        assert "ringflow_calls_started" in found.families
        # The token guards /metrics only: the API and the probes answer as before.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{rig.base}/healthz")).status_code == 200
            assert (await http.get(f"{rig.base}/readyz")).text == "ready\n"


def test_scrape_parses_labels() -> None:
    text = (
        "# TYPE ringflow_calls_ended_total counter\n"
        'ringflow_calls_ended_total{carrier="sip",status="busy"} 2.0\n'
    )
    parsed = Scrape.parse(text)
    assert parsed.get("ringflow_calls_ended_total", status="busy", carrier="sip") == 2
    assert parsed.sum("ringflow_calls_ended_total", carrier="sip") == 2
