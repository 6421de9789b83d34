"""Per-account concurrency (spec section 8): calls over the limit wait as ``queued`` and start in
creation order as capacity frees; a full queue is a 429. End to end over real HTTP, ManualClock,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from ringflow.calls.requests import CallRequest, CampaignTag
from ringflow.calls.status import is_terminal
from ringflow.storage.models import Account, Call, CallEvent, OutboxMessage
from ringflow.storage.session import Duplicate
from tests.e2e import Rig, running
from tests.statements import Statements, settled

OTHER_EXOPHONE = "08039595678"


async def set_account_limit(rig: Rig, sid: str, limit: int | None) -> None:
    async with rig.services.db.session() as session:
        await session.execute(
            update(Account).where(Account.sid == sid).values(max_concurrent_calls=limit)
        )


async def place(rig: Rig, n: int, time_limit: int, **params: Any) -> tuple[str, str]:
    """A two-number call between two default sandbox phones that talk until ``TimeLimit``."""
    r = await rig.connect(
        From=f"0981234{n:04d}",
        To=f"0981235{n:04d}",
        TimeLimit=str(time_limit),
        StatusCallback=f"{rig.customer.url}/status",
        **params,
    )
    assert r.status_code == 200, r.text
    call = r.json()["Call"]
    return call["Sid"], call["Status"]


async def statuses(rig: Rig, sids: list[str]) -> list[str]:
    """Each call's Status as the API reports it."""
    out = []
    for sid in sids:
        r = await rig.http.get(rig.url(f"Calls/{sid}.json"), auth=rig.auth)
        assert r.status_code == 200, r.text
        out.append(r.json()["Call"]["Status"])
    return out


async def account_id_of(rig: Rig) -> int:
    async with rig.services.db.session() as session:
        found = await session.scalar(select(Account.id).where(Account.sid == rig.sid))
    assert found is not None
    return found


async def submit_at_once(
    rig: Rig, account_id: int, count: int, *, return_exceptions: bool = False, **fields: Any
) -> list[Any]:
    """``count`` two-number calls of the account submitted in the same moment (the n-th from
    +9198123400nn), with ``fields`` of CallRequest; their outcomes in order."""
    return await asyncio.gather(
        *(
            rig.services.dispatcher.submit(
                CallRequest(
                    account_id=account_id,
                    shape="numbers",
                    from_number=f"+9198123400{n:02d}",
                    to_number=f"+9198123500{n:02d}",
                    caller_id="+918039591234",
                    time_limit=20,
                    **fields,
                )
            )
            for n in range(count)
        ),
        return_exceptions=return_exceptions,
    )


async def by_call(rig: Rig, table: Any, value: Any, where: Any) -> list[tuple[str, Any]]:
    """(call SID, ``value``) of the rows of ``table`` that ``where`` picks, in insertion order."""
    async with rig.services.db.session() as session:
        query = select(Call.sid, value).join(table, table.call_id == Call.id).where(where)
        return [tuple(row) for row in await session.execute(query.order_by(table.id))]


async def admission_order(rig: Rig) -> list[str]:
    """Call SIDs in the order they left the queue (their first ``ringing`` status entry)."""
    order: list[str] = []
    for sid, data in await by_call(rig, CallEvent, CallEvent.data, CallEvent.kind == "status"):
        if data["call"] == "ringing" and sid not in order:
            order.append(sid)
    return order


async def started_at(rig: Rig, sid: str) -> float:
    """Clock seconds from the rig's start to the call leaving the queue."""
    call = await rig.call(sid)
    t0 = rig.clock.wall() - dt.timedelta(seconds=rig.clock.now())
    return (call.start_time - t0).total_seconds()


async def run_until(
    rig: Rig, condition: Callable[[], Awaitable[bool]], limit: float = 3600
) -> None:
    """``rig.clock.run_until``, with the condition read once more after in-flight work lands.

    ManualClock.run_until jumps to the next timer as soon as nothing is busy right after the
    condition returned False; a commit that lands while the condition is reading the database
    (routine on PostgreSQL) is not seen, and the clock jumps past the moment being waited for.
    """

    async def fresh() -> bool:
        if await condition():
            return True
        await asyncio.sleep(0.02)  # real time: let database work already in flight finish
        return await condition()

    await rig.clock.run_until(fresh, limit=limit)


async def run_until_status(rig: Rig, sid: str, predicate: Any) -> None:
    async def ready() -> bool:
        return predicate((await rig.call(sid)).status)

    await run_until(rig, ready)


async def finish_all(rig: Rig, sids: list[str]) -> list[Call]:
    async def done() -> bool:
        calls = [await rig.call(sid) for sid in sids]
        return all(is_terminal(c.status) for c in calls) and await rig.outbox_settled()

    await run_until(rig, done)
    return [await rig.call(sid) for sid in sids]


def terminal_callbacks(rig: Rig) -> dict[str, str]:
    """CallSid -> Status of every terminal callback the customer received."""
    seen: dict[str, str] = {}
    for hit in rig.customer.to("/status"):
        fields = hit.fields()
        assert fields["CallSid"] not in seen, f"two terminal callbacks for {fields['CallSid']}"
        seen[fields["CallSid"]] = fields["Status"]
    return seen


async def test_calls_over_the_limit_wait_and_start_in_creation_order(database_url):
    async with running(database_url, max_concurrent_calls=2) as rig:
        # c1 talks 50 s, c2 10 s: c2's line frees first, then c3's, and c1's last. Whichever line
        # frees, the oldest waiting call takes it.
        limits = [50, 10, 10, 50, 5]
        placed = [await place(rig, n, limit) for n, limit in enumerate(limits, 1)]
        sids = [sid for sid, _ in placed]
        assert [status for _, status in placed] == [
            "in-progress", "in-progress", "queued", "queued", "queued",
        ]  # fmt: skip
        # The XML edge says the same.
        r = await rig.connect(
            "",
            From="09812340009",
            To="09812350009",
            TimeLimit="5",
            StatusCallback=f"{rig.customer.url}/status",
        )
        assert r.status_code == 200, r.text
        sids.append(ET.fromstring(r.content).findtext("Call/Sid"))
        assert ET.fromstring(r.content).findtext("Call/Status") == "queued"

        # Both running calls talking (leg 2 answered): the rest still wait.
        async def talking() -> bool:
            calls = [await rig.call(sid) for sid in sids[:2]]
            return all(leg.status == "in-progress" for c in calls for leg in c.legs)

        await run_until(rig, talking)
        assert await statuses(rig, sids) == [
            "in-progress", "in-progress", "queued", "queued", "queued", "queued",
        ]  # fmt: skip
        queued = await rig.details(sids[2])
        assert queued["EndTime"] is None and queued["Duration"] is None
        assert queued["Details"]["Leg1Status"] == queued["Details"]["Leg2Status"] == ""

        # c2 ends at 1 s (ringing) + 10 s: c3, and only c3, leaves the queue.
        await run_until_status(rig, sids[2], lambda s: s != "queued")
        assert await started_at(rig, sids[2]) == 11
        assert (await statuses(rig, sids))[3:] == ["queued", "queued", "queued"]
        assert (await rig.call(sids[1])).status == "completed"

        calls = await finish_all(rig, sids)
        assert [c.status for c in calls] == ["completed"] * 6
        assert all([leg.status for leg in c.legs] == ["completed", "completed"] for c in calls)
        assert await admission_order(rig) == sids
        # c3 ends at 11 + 1 + 10 = 22 and hands its line to c4; c1 ends at 51 and hands its line
        # to c5; c5 ends at 57 and hands its line to the sixth call.
        assert [await started_at(rig, sid) for sid in sids] == [0, 0, 11, 22, 51, 57]
        assert terminal_callbacks(rig) == {sid: "completed" for sid in sids}
        for sid in sids:
            details = await rig.details(sid)
            assert details["Status"] == "completed"
            assert (
                details["Details"]["Leg1Status"] == details["Details"]["Leg2Status"] == "completed"
            )
            # Time spent queued is not call time: Duration counts from leaving the queue.
            limit = 5 if sid == sids[5] else limits[sids.index(sid)]
            assert details["Duration"] == limit + 1


@pytest.mark.parametrize(("setting", "column"), [(1, 3), (3, 1)])
async def test_account_limit_overrides_the_setting(database_url, setting, column):
    async with running(database_url, max_concurrent_calls=setting) as rig:
        await set_account_limit(rig, rig.sid, column)
        placed = [await place(rig, n, 20) for n in range(1, 5)]
        sids = [sid for sid, _ in placed]
        expected = ["in-progress"] * column + ["queued"] * (4 - column)
        assert [status for _, status in placed] == expected
        calls = await finish_all(rig, sids)
        assert [c.status for c in calls] == ["completed"] * 4
        assert await admission_order(rig) == sids
        starts = [await started_at(rig, sid) for sid in sids]
        # Each call holds its line for 1 s of ringing and 20 s of talk.
        assert starts == ([0, 0, 0, 21] if column == 3 else [0, 21, 42, 63])


async def test_one_accounts_queue_does_not_hold_another_account(database_url):
    async with running(database_url, max_concurrent_calls=1) as rig:
        # a1's first party hangs up 30 s after answering (scripted through the admin API).
        r = await rig.http.put(
            f"{rig.base}/admin/v1/accounts/{rig.sid}/sandbox/phones/09812340001",
            json={"ring": 1, "outcome": "answer", "hangup_after": 30},
            auth=rig.auth,
        )
        assert r.status_code == 200, r.text
        a1, s1 = await place(rig, 1, 3600)
        a2, s2 = await place(rig, 2, 10)

        creds = await rig.services.accounts.create_account(f"other {uuid.uuid4().hex[:8]}")
        await rig.services.accounts.add_number(creds.account_sid, OTHER_EXOPHONE)
        other = dataclasses.replace(
            rig, sid=creds.account_sid, key=creds.api_key, token=creds.api_token
        )
        b1, t1 = await place(other, 3, 5, CallerId=OTHER_EXOPHONE)
        b2, t2 = await place(other, 4, 5, CallerId=OTHER_EXOPHONE)
        # a2 waits for a's line; b1 does not wait behind it, and b2 waits only for b's line.
        assert (s1, s2, t1, t2) == ("in-progress", "queued", "in-progress", "queued")
        assert await statuses(rig, [a2]) == ["queued"]
        assert await statuses(other, [b2]) == ["queued"]

        calls = await finish_all(rig, [a1, a2, b1, b2])
        assert [c.status for c in calls] == ["completed"] * 4
        # b1 ends at 1 s ringing + 5 s talk: b2, younger than a2, starts then. a1 ends when its
        # first party hangs up (1 + 30 s): only then does a2 start.
        assert await started_at(rig, b2) == 6
        assert await started_at(rig, a2) == 31
        assert await admission_order(rig) == [a1, b1, b2, a2]


async def test_full_queue_is_a_429_and_creates_nothing(database_url):
    async with running(database_url, max_concurrent_calls=1, queue_limit=2) as rig:
        placed = [await place(rig, n, 20) for n in range(1, 4)]
        assert [status for _, status in placed] == ["in-progress", "queued", "queued"]

        for fmt in (".json", ""):
            r = await rig.connect(fmt, From="09812349999", To="09812359999", TimeLimit="20")
            assert r.status_code == 429, r.text
            if fmt:
                error = r.json()["RestException"]
                assert error["Status"] == 429
                message = error["Message"]
            else:
                root = ET.fromstring(r.content)
                assert root.findtext("RestException/Status") == "429"
                message = root.findtext("RestException/Message")
            assert "2 calls are already waiting" in message and "try again later" in message
        async with rig.services.db.session() as session:
            count = await session.scalar(select(func.count()).select_from(Call))
        assert count == 3

        # Once the first call ends and the second takes its line, there is room to wait again.
        await run_until_status(rig, placed[1][0], lambda s: s != "queued")
        sid, status = await place(rig, 4, 20)
        assert status == "queued"
        calls = await finish_all(rig, [s for s, _ in placed] + [sid])
        assert [c.status for c in calls] == ["completed"] * 4
        assert await admission_order(rig) == [s for s, _ in placed] + [sid]


async def test_an_accounts_own_queue_limit_overrides_the_setting(database_url):
    async with running(database_url, max_concurrent_calls=1, queue_limit=50) as rig:
        async with rig.services.db.session() as session:
            await session.execute(
                update(Account).where(Account.sid == rig.sid).values(max_queued_calls=1)
            )
        placed = [await place(rig, n, 20) for n in range(1, 3)]
        assert [status for _, status in placed] == ["in-progress", "queued"]
        r = await rig.connect(".json", From="09812349999", To="09812359999", TimeLimit="20")
        assert r.status_code == 429, r.text
        assert "1 call is already waiting" in r.json()["RestException"]["Message"]
        calls = await finish_all(rig, [s for s, _ in placed])
        assert [c.status for c in calls] == ["completed"] * 2


async def test_a_new_call_never_overtakes_waiting_ones(database_url):
    """Room can appear without a call ending (here: the account's limit is raised). A call
    placed then must queue behind the older waiting ones, which take the room first."""
    async with running(database_url, max_concurrent_calls=1) as rig:
        first, _ = await place(rig, 1, 100)
        waiting = [(await place(rig, n, 100))[0] for n in (2, 3)]
        await set_account_limit(rig, rig.sid, 3)
        newcomer, status = await place(rig, 4, 100)
        assert status == "queued"

        # The two older calls take the two free lines; the newcomer waits for the next one.
        await run_until_status(rig, waiting[1], lambda s: s != "queued")
        assert (await rig.call(waiting[0])).status != "queued"
        assert (await rig.call(newcomer)).status == "queued"
        calls = await finish_all(rig, [first, *waiting, newcomer])
        assert [c.status for c in calls] == ["completed"] * 4
        assert await admission_order(rig) == [first, *waiting, newcomer]


@pytest.mark.parametrize("limit", [1, 0], ids=["admitted", "queued"])
async def test_a_campaign_attempt_placed_twice_is_refused_and_leaves_one_call(database_url, limit):
    """The calls table allows one call per campaign number and attempt: the second submit is a
    Duplicate (a 409 at the API), whether the call would have dialled at once or waited, and
    no call of it is written (on PostgreSQL an admitted call is written in one statement)."""
    async with running(database_url, max_concurrent_calls=max(limit, 1)) as rig:
        # With no line free, both attempts would wait.
        first = (await place(rig, 1, 20))[0] if limit == 0 else None
        async with rig.services.db.session() as session:
            account_id = await session.scalar(select(Account.id).where(Account.sid == rig.sid))
        request = CallRequest(
            account_id=account_id,
            shape="numbers",
            from_number="+919812340077",
            to_number="+919812350077",
            caller_id="08039591234",
            time_limit=20,
            campaign=CampaignTag(campaign_id=7, number_id=70, attempt=1),
        )
        call, started = await rig.services.dispatcher.submit(request)
        assert started is (limit == 1)
        with pytest.raises(Duplicate):
            await rig.services.dispatcher.submit(request)
        async with rig.services.db.session() as session:
            sids = (
                await session.scalars(select(Call.sid).where(Call.campaign_number_id == 70))
            ).all()
        assert sids == [call.sid]
        ended = await finish_all(rig, [call.sid] + ([first] if first else []))
        assert [c.status for c in ended] == ["completed"] * len(ended)


async def test_calls_submitted_at_once_are_admitted_together_in_order_and_within_the_limits(
    database_url,
):
    """Ten calls of one account submitted in the same moment: one admission transaction (one
    account lock, one count) takes them all, in the order they came; the limit and the queue
    limit hold exactly within it, and the calls refused for a full queue leave no trace. On
    PostgreSQL the calls admitted, started and queued alike, are written by one statement."""
    async with running(database_url, max_concurrent_calls=3, queue_limit=5) as rig:
        account_id = await account_id_of(rig)
        statements = Statements(rig.services.db)
        with statements:
            outcomes = await submit_at_once(rig, account_id, 10, return_exceptions=True)
            await settled()
        # The started calls go on meanwhile (a sandbox phone looked up, say): their own.
        written = [t for t in statements.committed if any("INSERT INTO calls" in s for s in t)]
        assert len(written) == 1, statements.committed
        if database_url.startswith("postgresql"):
            assert sum("INSERT INTO calls" in s for s in written[0]) == 1
        accepted = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert [started for _, started in accepted] == [True] * 3 + [False] * 5
        assert [type(e).__name__ for e in refused] == ["CapacityExceeded"] * 2
        assert all("5 calls are already waiting" in str(e) for e in refused)
        # Created in the order submitted (the first ten numbers, the last two refused).
        assert [c.from_number for c, _ in accepted] == [f"+9198123400{n:02d}" for n in range(8)]
        async with rig.services.db.session() as session:
            rows = (
                await session.execute(select(Call.sid).order_by(Call.created_at, Call.id))
            ).all()
        assert [sid for (sid,) in rows] == [c.sid for c, _ in accepted]
        ended = await finish_all(rig, [c.sid for c, _ in accepted])
        assert [c.status for c in ended] == ["completed"] * 8
        assert await admission_order(rig) == [c.sid for c, _ in accepted]


async def test_each_call_of_a_batch_gets_its_own_step_and_callback(database_url):
    """Calls admitted together (on PostgreSQL in one statement, their rows joined to them by
    SID) each get their own first step and their own ringing callback, in the order they
    came."""
    async with running(database_url, max_concurrent_calls=10) as rig:
        outcomes = await submit_at_once(
            rig,
            await account_id_of(rig),
            6,
            status_callback=f"{rig.customer.url}/status",
            callback_events=("ringing",),
            callback_json=True,
        )
        sids = [call.sid for call, started in outcomes if started]
        assert len(sids) == 6
        callbacks = await by_call(
            rig, OutboxMessage, OutboxMessage.payload, OutboxMessage.event == "ringing"
        )
        assert [(sid, payload["CallSid"]) for sid, payload in callbacks] == [
            (sid, sid) for sid in sids
        ]
        assert await admission_order(rig) == sids
        ended = await finish_all(rig, sids)
        assert [c.status for c in ended] == ["completed"] * 6


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_call_that_ends_with_nobody_waiting_takes_no_account_lock(database_url):
    """On PostgreSQL the end of a call is one statement and a look at the queue; the account's
    lock is taken only when calls wait. A call's whole life, with nobody waiting, locks its
    account once (its admission); with a call waiting behind it, the end admits that call."""
    async with running(database_url, max_concurrent_calls=1) as rig:

        def locks() -> int:
            return sum("FOR NO KEY UPDATE" in s for s in seen)

        with Statements(rig.services.db) as seen:
            alone, _ = await place(rig, 1, 5)
            await finish_all(rig, [alone])
            await settled()
            assert locks() == 1
            first, _ = await place(rig, 2, 5)
            behind, status = await place(rig, 3, 5)
            assert status == "queued"
            ended = await finish_all(rig, [first, behind])
        assert [c.status for c in ended] == ["completed"] * 2
        # The waiting call left the queue the moment the first one ended (1 s ringing, 5 s).
        assert await started_at(rig, behind) - await started_at(rig, first) == 6
