"""Campaigns end to end on the sandbox: the v2 API over real HTTP, a ManualClock, the calls
checked from their records.

The large campaign is the issue's first must-show: 1,000 numbers (ordinary phones and the
sandbox's busy, no-answer and failed numbers) at 20 calls a second with at most 50 up at once
and two retries on busy.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from sqlalchemy import select

from ringflow.storage.models import Call
from tests.e2e import EXOPHONE, Rig, running

BUSY, NO_ANSWER, FAILED = "09999900001", "09999900002", "09999900003"
# Long enough (with the ring) that 20 calls a second fill 50 lines.
REMINDER = {
    "name": "reminder",
    "start": "hello",
    "nodes": {
        "hello": {
            "applet": "greeting",
            "next": "bye",
            "text": "Hello. Your payment is due on Friday.",
        },
        "bye": {"applet": "hangup"},
    },
}
SHORT = {
    "name": "short",
    "start": "hello",
    "nodes": {
        "hello": {"applet": "greeting", "text": "Hello", "next": "bye"},
        "bye": {"applet": "hangup"},
    },
}


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
    """Run the clock until the campaign is over and every callback is sent; the campaign.

    The check is an HTTP request and a query: made at most every 50 ms of real time rather
    than at each of the thousands of timers a large campaign sets (when did it end matters
    not, only that it did)."""
    checked = [0.0]

    async def over() -> bool:
        if time.monotonic() - checked[0] < 0.05:
            return False
        checked[0] = time.monotonic()
        campaign = await fetch(rig, cid)
        return (
            campaign["status"] == "Completed"
            and campaign["end_time"] is not None
            and await rig.outbox_settled()
        )

    # A thousand calls take real time to run, however fast the clock moves.
    await rig.clock.run_until(over, limit=86400, real_timeout=600)
    return await fetch(rig, cid)


async def calls_of(rig: Rig, campaign_sid: str) -> list[Call]:
    """The campaign's calls from the database, in the order they were created."""
    r = await rig.http.get(
        campaigns_url(rig, f"/{campaign_sid}/call-details?limit=1"), auth=rig.auth
    )
    assert r.status_code == 200, r.text
    total = data(r.json())["metadata"]["total"]
    async with rig.services.db.session() as session:
        calls = list(
            (
                await session.execute(
                    select(Call)
                    .where(Call.campaign_id.is_not(None))
                    .order_by(Call.created_at, Call.id)
                )
            ).scalars()
        )
    assert len(calls) == total  # the API lists every call of the campaign
    return calls


def most_at_once(calls: list[Call]) -> int:
    """The largest number of the calls up at one moment (created until ended)."""
    edges = sorted(
        [(c.created_at, 1) for c in calls] + [(c.end_time, -1) for c in calls],
        key=lambda edge: (edge[0], edge[1]),
    )  # an end before a start at one instant
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
    database_url: str,
) -> None:
    numbers = [number(n) for n in range(850)] + [BUSY] * 50 + [NO_ANSWER] * 50 + [FAILED] * 50
    numbers = [numbers[(i * 7) % 1000] for i in range(1000)]  # mixed through the list
    async with running(
        database_url, max_concurrent_calls=200, rate_limit_per_minute=1_000_000
    ) as rig:
        campaign = await create(
            rig,
            REMINDER,
            name="payment reminders",
            **{"from": numbers},
            call_duplicate_numbers=True,
            calls_per_second=20,
            max_concurrent=50,
            retries={
                "number_of_retries": 2,
                "interval_mins": 1,
                "mechanism": "Linear",
                "on_status": ["busy"],
            },
            call_status_callback=f"{rig.customer.url}/call",
            status_callback=f"{rig.customer.url}/campaign",
        )
        assert campaign["status"] == "InProgress" and campaign["stats"]["pending"] == 1000
        done = await finished(rig, campaign["id"])
        calls = await calls_of(rig, campaign["id"])

    # The counts add up: every number settled once, and each busy one was tried three times.
    stats = done["stats"]
    assert stats | {"attempts": 0} == {
        "pending": 0,
        "in_progress": 0,
        "retrying": 0,
        "completed": 850,
        "busy": 50,
        "no_answer": 50,
        "failed": 50,
        "attempts": 0,
        "total": 1000,
    }
    assert stats["attempts"] == len(calls) == 1000 + 50 * 2
    assert Counter(c.status for c in calls) == {
        "completed": 850,
        "busy": 150,
        "no-answer": 50,
        "failed": 50,
    }
    # The pace and the concurrency, from the calls' own records.
    assert fastest_second(calls) == 20
    gaps = [b.created_at - a.created_at for a, b in itertools.pairwise(calls)]
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
            for before, after in itertools.pairwise(tries):
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


async def placed(rig: Rig) -> list[Call]:
    async with rig.services.db.session() as session:
        return list(
            (
                await session.execute(
                    select(Call)
                    .where(Call.campaign_id.is_not(None))
                    .order_by(Call.created_at, Call.id)
                )
            ).scalars()
        )


async def run_for(rig: Rig, seconds: float) -> None:
    """Run the clock ``seconds`` further (timer to timer, waiting for work in flight)."""
    until = rig.clock.now() + seconds
    await rig.clock.run_until(lambda: rig.clock.now() >= until, limit=seconds + 1)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_pause_stops_new_calls_at_once_resume_goes_on_and_complete_ends_the_rest(
    database_url: str,
) -> None:
    async with running(database_url, rate_limit_per_minute=1_000_000) as rig:
        campaign = await create(
            rig,
            **{"from": [number(n) for n in range(20)]},
            calls_per_second=2,
            status_callback=f"{rig.customer.url}/c",
            call_schedule_callback=f"{rig.customer.url}/number",
        )
        cid = campaign["id"]

        async def some_placed() -> bool:
            return len(await placed(rig)) >= 5

        await rig.clock.run_until(some_placed)
        paused = await put(rig, cid, {"action": "pause"})
        paused_at = rig.clock.wall()
        assert (paused["status"], paused["pause_reason"]) == ("Paused", "user")
        before = len(await placed(rig))
        await run_for(rig, 60)
        calls = await placed(rig)
        assert len(calls) == before  # not one call after the pause
        assert all(c.created_at <= paused_at for c in calls)
        assert {c.status for c in calls} == {"completed"}  # the calls up went on to the end
        stats = (await fetch(rig, cid))["stats"]
        assert (stats["completed"], stats["pending"], stats["in_progress"]) == (
            before,
            20 - before,
            0,
        )

        assert (await put(rig, cid, {"action": "resume"}))["status"] == "InProgress"

        async def more_placed() -> bool:
            return len(await placed(rig)) >= before + 5

        await rig.clock.run_until(more_placed)
        done = await put(rig, cid, {"action": "stop"})
        assert done["status"] == "Completed"
        finished_campaign = await finished(rig, cid)
        stats = finished_campaign["stats"]
        calls = await placed(rig)
        assert stats["completed"] == len(calls) and stats["failed"] == 20 - len(calls)
        assert stats["pending"] == stats["in_progress"] == stats["retrying"] == 0
        assert [s.json["status"] for s in rig.customer.to("/c")] == [
            "InProgress",
            "Paused",
            "InProgress",
            "Completed",
        ]
        # Each number called had its attempts over once: one call_schedule_callback each.
        over = {s.json["number"]: s.json for s in rig.customer.to("/number")}
        assert len(rig.customer.to("/number")) == len(over) == len(calls)
        assert {(v["status"], v["attempts"], v["campaign_id"]) for v in over.values()} == {
            ("completed", 1, cid)
        }
        assert sorted(over) == sorted(c.from_number for c in calls)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_calling_hours_close_pause_the_campaign_and_the_next_window_resumes_it(
    database_url: str,
) -> None:
    # The clock starts on Thursday 2026-11-26 at 15:30 in Kolkata (10:00 UTC).
    async with running(database_url, rate_limit_per_minute=1_000_000) as rig:
        campaign = await create(
            rig,
            **{"from": [number(n) for n in range(30)]},
            calls_per_second=0.2,
            calling_hours={"thu": ["15:30-15:31", "15:40-16:00"]},
            status_callback=f"{rig.customer.url}/c",
        )
        cid = campaign["id"]
        await until_status(rig, cid, "Paused")
        closed_at = rig.clock.wall()
        assert closed_at - dt.datetime(2026, 11, 26, 10, 1, tzinfo=dt.UTC) < dt.timedelta(seconds=1)
        paused = await fetch(rig, cid)
        assert paused["pause_reason"] == "calling_hours"
        assert 0 < paused["stats"]["pending"] < 30
        await until_status(rig, cid, "InProgress")
        reopened = rig.clock.wall()
        assert reopened == dt.datetime(2026, 11, 26, 10, 10, tzinfo=dt.UTC)  # 15:40 in Kolkata
        done = await finished(rig, cid)
        calls = await placed(rig)
    assert done["stats"]["completed"] == 30 == len(calls)
    assert not [c for c in calls if closed_at <= c.created_at < reopened]
    in_first = [c for c in calls if c.created_at < closed_at]
    assert len(in_first) == 12  # one every 5 s for the first minute
    assert [s.json["status"] for s in rig.customer.to("/c")] == [
        "InProgress",
        "Paused",
        "InProgress",
        "Completed",
    ]
    assert [s.json["reason"] for s in rig.customer.to("/c")][1] == "calling_hours"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_scheduled_campaign_starts_at_send_at_and_end_at_leaves_the_rest_uncalled(
    database_url: str,
) -> None:
    async with running(database_url, rate_limit_per_minute=1_000_000) as rig:
        campaign = await create(
            rig,
            **{"from": [number(n) for n in range(40)]},
            calls_per_second=1,
            schedule={"send_at": "2026-11-26T15:35:00+05:30", "end_at": "2026-11-26T10:05:10Z"},
        )
        cid = campaign["id"]
        assert campaign["status"] == "Scheduled"
        assert campaign["schedule"]["send_at"] == "2026-11-26T15:35:00+05:30"
        done = await finished(rig, cid)
        calls = await placed(rig)
    assert min(c.created_at for c in calls) == dt.datetime(2026, 11, 26, 10, 5, tzinfo=dt.UTC)
    assert max(c.created_at for c in calls) < dt.datetime(2026, 11, 26, 10, 5, 10, tzinfo=dt.UTC)
    assert done["stats"]["completed"] == len(calls) == 10
    assert done["stats"]["failed"] == 30  # left uncalled at end_at


ERRORS = [
    ({}, "from (numbers) or lists"),
    ({"from": ["0981000000"]}, "from[0]"),
    ({"from": "09810000001", "caller_id": "08000000000"}, "not an ExoPhone"),
    ({"from": "09810000001", "url": None}, "url (the app to run) or StreamUrl"),
    (
        {"from": "09810000001", "url": "http://my.exotel.com/x/exoml/start_voice/999"},
        "there is no app 999",
    ),
    (
        {"from": "09810000001", "url": "http://my.exotel.com/x/flows/9"},
        "url must look like http://my.exotel.com/",
    ),
    ({"from": "09810000001", "retries": {"number_of_retries": 4}}, "number_of_retries"),
    (
        {"from": "09810000001", "retries": {"number_of_retries": 1, "on_status": ["ok"]}},
        "on_status",
    ),
    ({"from": "09810000001", "retries": {"mechanism": "Random"}}, "Linear or Exponential"),
    ({"from": "09810000001", "calls_per_second": 0}, "calls_per_second"),
    ({"from": "09810000001", "throttle": 60}, "throttle needs mode custom"),
    ({"from": "09810000001", "calling_hours": {"mon-fri": "18:00-09:00"}}, "must end after"),
    ({"from": "09810000001", "calling_hours": {"someday": "09:00-18:00"}}, "is not a day"),
    ({"from": "09810000001", "schedule": {"send_at": "tomorrow"}}, "RFC 3339"),
    ({"from": "09810000001", "schedule": {"end_at": "2020-01-01T00:00:00Z"}}, "in the past"),
    ({"from": "09810000001", "name": "ab"}, "name must be"),
    ({"from": "09810000001", "calls_per_secnd": 5}, "unknown fields: calls_per_secnd"),
    ({"from": "09810000001", "status_callback": "ftp://x"}, "status_callback"),
    ({"from": ["09810000001"] * 5001}, "at most 5000"),
    ({"from": "09810000001", "lists": ["0123456789abcdef"]}, "no contact list"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bad_campaigns_are_refused_with_the_field_named(database_url: str) -> None:
    async with running(database_url, rate_limit_per_minute=1_000_000) as rig:
        saved = await rig.services.accounts.save_app(rig.sid, SHORT)
        for fields, message in ERRORS:
            body = {"caller_id": EXOPHONE, "url": rig.flow_url(saved.id), **fields}
            body = {k: v for k, v in body.items() if v is not None}
            r = await rig.http.post(campaigns_url(rig), json=body, auth=rig.auth)
            answer = r.json()
            assert r.status_code == answer["http_code"] == 400, (fields, r.text)
            item = answer["response"][0]
            assert item["status"] == "failure" and item["data"] is None
            assert message in item["error_data"]["description"], (fields, item)
        r = await rig.http.post(campaigns_url(rig), content=b"{not json", auth=rig.auth)
        assert r.status_code == 400 and "JSON" in r.text
        r = await rig.http.post(campaigns_url(rig), json={"from": "09810000001"})
        assert r.status_code == 401
        async with rig.services.db.session() as session:
            assert not (await session.execute(select(Call))).first()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_campaigns_are_listed_read_deleted_and_archived_only_in_their_account(
    database_url: str,
) -> None:
    async with running(database_url, rate_limit_per_minute=1_000_000) as rig:
        later = await create(
            rig,
            **{"from": "09810000001, 09810000002"},
            schedule={"send_at": "2026-11-27T10:00:00Z"},
        )
        now = await create(rig, **{"from": "09810000003"}, name="today")
        other = await rig.services.accounts.create_account("other")
        other_auth = (other.api_key, other.api_token)
        r = await rig.http.get(
            f"{rig.base}/v2/accounts/{other.account_sid}/campaigns/{now['id']}", auth=other_auth
        )
        assert r.status_code == 404  # another account's campaign does not exist for it
        r = await rig.http.get(campaigns_url(rig, "?status=scheduled"), auth=rig.auth)
        assert [c["id"] for c in data(r.json())["campaigns"]] == [later["id"]]
        r = await rig.http.get(campaigns_url(rig), auth=rig.auth)
        assert data(r.json())["metadata"]["total"] == 2
        # Before it starts, a campaign's settings change and it can be deleted.
        changed = await put(rig, later["id"], {"name": "tomorrow", "calls_per_second": 5})
        assert (changed["name"], changed["calls_per_second"]) == ("tomorrow", 5.0)
        r = await rig.http.delete(campaigns_url(rig, f"/{later['id']}"), auth=rig.auth)
        assert data(r.json())["status"] == "deleted"
        assert (
            await rig.http.get(campaigns_url(rig, f"/{later['id']}"), auth=rig.auth)
        ).status_code == 404
        # Once it runs, only its callbacks and its action change; it is archived once over.
        r = await rig.http.put(
            campaigns_url(rig, f"/{now['id']}"), json={"calls_per_second": 9}, auth=rig.auth
        )
        assert r.status_code == 409 and "only action" in r.text
        r = await rig.http.delete(campaigns_url(rig, f"/{now['id']}"), auth=rig.auth)
        assert r.status_code == 409
        await finished(rig, now["id"])
        r = await rig.http.delete(campaigns_url(rig, f"/{now['id']}"), auth=rig.auth)
        assert data(r.json())["status"] == "archived"
        assert (await fetch(rig, now["id"]))["status"] == "Archived"
        r = await rig.http.get(campaigns_url(rig, f"/{now['id']}/call-details"), auth=rig.auth)
        details = data(r.json())["call_details"]
        assert len(details) == 1 and details[0]["Status"] == "completed"
        assert details[0]["From"] == "09810000003"
        r = await rig.http.get(rig.url(f"Calls/{details[0]['Sid']}.json"), auth=rig.auth)
        assert r.status_code == 200  # an ordinary call of the v1 API


CSV = (
    b"name,number,due\n"
    b"Asha,09810000001,100\n"
    b"Ravi,+91 98100 00002,250\n"
    b"Bad,12345,0\n"
    b"Asha again,09810000001,100\n"
    b"Meena,09810000003,75\n"
)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_csv_list_is_uploaded_with_bad_rows_reported_and_called_by_a_campaign(
    database_url: str,
) -> None:
    async with running(database_url, rate_limit_per_minute=1_000_000) as rig:
        r = await rig.http.post(
            f"{rig.base}/v2/accounts/{rig.sid}/contacts/csv-upload",
            auth=rig.auth,
            data={"list_name": "December dues", "type": "static"},
            files={"file_name": ("dues.csv", CSV, "text/csv")},
        )
        assert r.status_code == 200, r.text
        upload = data(r.json())
        assert (upload["total"], upload["succeeded"], upload["duplicates"], upload["failed"]) == (
            5,
            3,
            1,
            1,
        )
        assert upload["failures"][0]["row"] == 4 and "12345" in upload["failures"][0]["value"]
        r = await rig.http.get(
            f"{rig.base}/v2/accounts/{rig.sid}/csv-status/{upload['id']}", auth=rig.auth
        )
        assert data(r.json())["list_sid"] == upload["list_sid"]
        campaign = await create(rig, lists=[upload["list_sid"]], calls_per_second=5)
        assert campaign["stats"]["total"] == 3
        await finished(rig, campaign["id"])
        calls = await placed(rig)
    assert [c.from_number for c in calls] == ["+919810000001", "+919810000002", "+919810000003"]


ON_MACHINES = {
    "name": "amd",
    "start": "who",
    "nodes": {
        "who": {
            "applet": "switch_case",
            "variable": "AnsweredBy",
            "cases": {"human": "talk", "machine_end_beep": "message"},
            "default": "bye",
        },
        "talk": {"applet": "greeting", "text": "Hello, this is your reminder.", "next": "bye"},
        "message": {"applet": "greeting", "text": "Please call us back.", "next": "bye"},
        "bye": {"applet": "hangup"},
    },
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_campaign_detects_answering_machines_and_its_app_leaves_them_a_message(
    database_url: str,
) -> None:
    voicemail, person = "09999900005", "09999900006"
    async with running(database_url, rate_limit_per_minute=1_000_000) as rig:
        campaign = await create(
            rig, ON_MACHINES, **{"from": [voicemail, person]}, machine_detection="detectmessageend"
        )
        assert campaign["machine_detection"] == "DetectMessageEnd"
        await finished(rig, campaign["id"])
        calls = {c.from_number: c for c in await placed(rig)}
        branches = {}
        for number, call in calls.items():
            steps = await rig.timeline(call.sid)
            branches[number] = [s["data"]["node"] for s in steps if s["kind"] == "applet.enter"]
            assert any(s["kind"] == "amd" for s in steps)
    assert calls["+919999900005"].legs[0].answered_by == "machine_end_beep"
    assert calls["+919999900006"].legs[0].answered_by == "human"
    assert "message" in branches["+919999900005"] and "talk" not in branches["+919999900005"]
    assert "talk" in branches["+919999900006"]
