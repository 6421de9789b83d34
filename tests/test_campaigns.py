"""Campaigns end to end on the sandbox: the v2 API over real HTTP, a ManualClock, the calls
checked from their records.

The large campaign is the issue's first must-show: 1,000 numbers (ordinary phones and the
sandbox's busy, no-answer and failed numbers) at 20 calls a second with at most 50 up at once
and two retries on busy.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

import pytest
from sqlalchemy import select

from ringflow.storage.models import Call
from tests.e2e import EXOPHONE, Rig, running

BUSY, NO_ANSWER, FAILED = "09999900001", "09999900002", "09999900003"
# Long enough (with the ring) that 20 calls a second fill 50 lines.
REMINDER = {"name": "reminder", "start": "hello", "nodes": {
    "hello": {"applet": "greeting", "next": "bye",
              "text": "Hello. Your payment is due on Friday."},
    "bye": {"applet": "hangup"}}}
SHORT = {"name": "short", "start": "hello", "nodes": {
    "hello": {"applet": "greeting", "text": "Hello", "next": "bye"},
    "bye": {"applet": "hangup"}}}


def number(n: int) -> str:
    """An ordinary sandbox phone (answers after a second's ringing)."""
    return f"0981{n:07d}"


def campaigns_url(rig: Rig, path: str = "") -> str:
    return f"{rig.base}/v2/accounts/{rig.sid}/campaigns{path}"


async def create(rig: Rig, app: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """POST a campaign (wrapped, as Exotel's examples send it); its data."""
    saved = await rig.services.accounts.save_app(rig.sid, app or SHORT)
    body = {"caller_id": EXOPHONE, "url": rig.flow_url(saved.id), **fields}
    r = await rig.http.post(campaigns_url(rig), json={"campaigns": [body]}, auth=rig.auth)
    assert r.status_code == 200, r.text
    return data(r.json())


def data(answer: dict[str, Any]) -> Any:
    """The data of a successful v2 envelope."""
    assert answer["http_code"] == 200 and answer["response"][0]["status"] == "success", answer
    return answer["response"][0]["data"]


async def fetch(rig: Rig, cid: str) -> dict[str, Any]:
    r = await rig.http.get(campaigns_url(rig, f"/{cid}"), auth=rig.auth)
    assert r.status_code == 200, r.text
    return data(r.json())


async def put(rig: Rig, cid: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await rig.http.put(campaigns_url(rig, f"/{cid}"), json=body, auth=rig.auth)
    assert r.status_code == 200, r.text
    return data(r.json())


async def until_status(rig: Rig, cid: str, *wanted: str, limit: float = 86400) -> None:
    async def reached() -> bool:
        return (await fetch(rig, cid))["status"] in wanted

    await rig.clock.run_until(reached, limit=limit)


async def finished(rig: Rig, cid: str) -> dict[str, Any]:
    """Run the clock until the campaign is over and every callback is sent; the campaign."""
    async def over() -> bool:
        campaign = await fetch(rig, cid)
        return (campaign["status"] == "Completed" and campaign["end_time"] is not None
                and await rig.outbox_settled())

    # A thousand calls take real time to run, however fast the clock moves.
    await rig.clock.run_until(over, limit=86400, real_timeout=600)
    return await fetch(rig, cid)


async def calls_of(rig: Rig, campaign_sid: str) -> list[Call]:
    """The campaign's calls from the database, in the order they were created."""
    r = await rig.http.get(campaigns_url(rig, f"/{campaign_sid}/call-details?limit=1"),
                           auth=rig.auth)
    assert r.status_code == 200, r.text
    total = data(r.json())["metadata"]["total"]
    async with rig.services.db.session() as session:
        calls = list((await session.execute(
            select(Call).where(Call.campaign_id.is_not(None)).order_by(Call.created_at, Call.id)
        )).scalars())
    assert len(calls) == total  # the API lists every call of the campaign
    return calls


def most_at_once(calls: list[Call]) -> int:
    """The largest number of the calls up at one moment (created until ended)."""
    edges = sorted([(c.created_at, 1) for c in calls] + [(c.end_time, -1) for c in calls],
                   key=lambda edge: (edge[0], edge[1]))  # an end before a start at one instant
    up = peak = 0
    for _, change in edges:
        up += change
        peak = max(peak, up)
    return peak


def fastest_second(calls: list[Call]) -> int:
    """The most calls started within any one second (a window [t, t + 1 s))."""
    starts = sorted(c.created_at for c in calls)
    best, first = 0, 0
    for last, start in enumerate(starts):
        while start - starts[first] >= dt.timedelta(seconds=1):
            first += 1
        best = max(best, last - first + 1)
    return best


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_thousand_numbers_keep_their_pace_concurrency_and_retries(
        database_url: str) -> None:
    numbers = ([number(n) for n in range(850)]
               + [BUSY] * 50 + [NO_ANSWER] * 50 + [FAILED] * 50)
    numbers = [numbers[(i * 7) % 1000] for i in range(1000)]  # mixed through the list
    async with running(database_url, max_concurrent_calls=200,
                       rate_limit_per_minute=1_000_000) as rig:
        campaign = await create(
            rig, REMINDER, name="payment reminders", **{"from": numbers},
            call_duplicate_numbers=True, calls_per_second=20, max_concurrent=50,
            retries={"number_of_retries": 2, "interval_mins": 1, "mechanism": "Linear",
                     "on_status": ["busy"]},
            call_status_callback=f"{rig.customer.url}/call",
            status_callback=f"{rig.customer.url}/campaign")
        assert campaign["status"] == "InProgress" and campaign["stats"]["pending"] == 1000
        done = await finished(rig, campaign["id"])
        calls = await calls_of(rig, campaign["id"])

    # The counts add up: every number settled once, and each busy one was tried three times.
    stats = done["stats"]
    assert stats | {"attempts": 0} == {
        "pending": 0, "in_progress": 0, "retrying": 0, "completed": 850, "busy": 50,
        "no_answer": 50, "failed": 50, "attempts": 0, "total": 1000}
    assert stats["attempts"] == len(calls) == 1000 + 50 * 2
    assert Counter(c.status for c in calls) == {"completed": 850, "busy": 150,
                                                 "no-answer": 50, "failed": 50}
    # The pace and the concurrency, from the calls' own records.
    assert fastest_second(calls) == 20
    gaps = [b.created_at - a.created_at for a, b in zip(calls, calls[1:], strict=False)]
    assert min(gaps) >= dt.timedelta(seconds=0.05)
    assert most_at_once(calls) == 50  # reached, never passed
    # Busy numbers: again a minute after each busy end, twice, and no more.
    attempts: dict[int | None, list[Call]] = defaultdict(list)
    for call in calls:
        attempts[call.campaign_number_id].append(call)
    for tries in attempts.values():
        assert [c.campaign_attempt for c in tries] == list(range(1, len(tries) + 1))
        if tries[0].from_number == "+919999900001":
            assert len(tries) == 3
            for before, after in zip(tries, tries[1:], strict=False):
                waited = after.created_at - before.end_time
                assert dt.timedelta(minutes=1) <= waited < dt.timedelta(minutes=1, seconds=3)
        else:
            assert len(tries) == 1
    # Each call is an ordinary call with its status callback.
    posted = [seen.fields() for seen in rig.customer.to("/call")]
    assert sorted(f["CallSid"] for f in posted) == sorted(c.sid for c in calls)
    assert Counter(f["Status"] for f in posted) == Counter(c.status for c in calls)
    changes = [seen.json["status"] for seen in rig.customer.to("/campaign")]
    assert changes == ["InProgress", "Completed"]
