"""Admission reads an account's own live calls only: the count of its lines, its oldest waiting
call and, at a call's end, whether any waits come from ``ix_calls_account_status``, not from a
scan of its history (a busy account ends thousands of calls an hour) nor of every account's
live calls. On PostgreSQL, the statements as the server runs them, under EXPLAIN ANALYZE and
planned for any values of their parameters (as PostgreSQL plans a statement the driver has run
a few times), on an account with 3000 finished calls beside other accounts' live calls. The
operator's overview of the accounts likewise reads today's and live calls only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ringflow.calls.status import ACTIVE, Status
from ringflow.storage import admission, call_changes, call_views
from ringflow.storage.db import Database, Prepared
from ringflow.storage.models import Call
from tests.plans import compiled, explained, insert_calls, new_account, rows_read

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

FINISHED, LIVE, QUEUED = 3000, 3, 2
# Beside it, other accounts (how many, and calls up or waiting each): one busy neighbour (a
# deployment with one main account), or ten small ones.
TENANCIES = {"one busy neighbour": (1, 300), "ten neighbours": (10, 30)}


async def account_with_history(db: Database, others: int, live_each: int) -> int:
    """An account with FINISHED completed calls, LIVE in progress and QUEUED waiting, among
    ``others`` accounts each with 300 calls finished and ``live_each`` up or waiting."""
    async with db.driver() as driver:
        live = ["in-progress", "ringing", "queued"]
        for n in range(others):
            other = await new_account(driver, f"other-{n}")
            statuses = ["completed"] * 300 + [live[k % 3] for k in range(live_each)]
            await insert_calls(driver, other, f"CO{n}x", statuses)
        account_id = await new_account(driver, "reads")
        mine = ["completed"] * FINISHED + ["in-progress"] * LIVE + ["queued"] * QUEUED
        await insert_calls(driver, account_id, "CA", mine)
        await driver.execute("ANALYZE calls")
    return account_id


@pytest.mark.parametrize(
    ("name", "statement", "params"),
    [
        (
            "count of lines",
            admission._count_lines_now(admission._statuses(ACTIVE, Status.QUEUED)),
            {},
        ),
        # The queue in order: read by the index alone (without it, the account's calls by
        # creation time, history and all).
        ("oldest queued", Prepared(admission._oldest_queued(Status.QUEUED)), {"count": 10}),
        # A call's end, which asks whether the account has calls waiting: here a change that
        # finds its call moved (none has id 0), so only the question is answered.
        (
            "a call's end",
            call_changes._last_change(Status.QUEUED),
            call_changes._change_params(
                Call(id=0, status=Status.COMPLETED, legs=[]),
                expected=Status.IN_PROGRESS,
                legs=[],
                new_legs=[],
                steps=[],
                callbacks=[],
            ),
        ),
    ],
)
@pytest.mark.parametrize("tenancy", list(TENANCIES))
async def test_admission_reads_only_the_accounts_live_calls(
    db: Database, tenancy: str, name: str, statement: Prepared, params: dict[str, Any]
) -> None:
    account_id = await account_with_history(db, *TENANCIES[tenancy])
    values = {**params, "account_id": account_id}
    plan = await explained(db, statement.sql, [values[name] for name in statement.names])
    read = rows_read(plan)
    assert read <= LIVE + QUEUED, f"{name}: {read} rows read for {LIVE + QUEUED} live calls"


@pytest.mark.parametrize("tenancy", list(TENANCIES))
async def test_the_operators_overview_reads_only_todays_and_live_calls(
    db: Database, tenancy: str
) -> None:
    """The dashboard's list of accounts counts each one's calls today and its live calls:
    reading those, not every call of every account (the history here is from yesterday)."""
    await account_with_history(db, *TENANCIES[tenancy])
    others, live_each = TENANCIES[tenancy]
    async with db.driver() as driver:
        await driver.execute("UPDATE calls SET created_at = created_at - interval '1 day'")
        await driver.execute("UPDATE calls SET created_at = now() WHERE status <> 'completed'")
        await driver.execute("ANALYZE calls")
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)
    statement = call_views.accounts_overview_statement(since, ACTIVE)
    # Counts, which PostgreSQL plans for the values given: a plan for any ``since`` would
    # guess a third of the calls recent and read them all, so it is never cheaper.
    plan = await explained(db, *compiled(statement), generic=False)
    live_calls = LIVE + QUEUED + others * live_each
    read = rows_read(plan) - (others + 1)  # the accounts themselves
    # Today's calls are the live ones; each is read once for today, once if it holds a line.
    assert read <= 2 * live_calls, f"{read} calls read for {live_calls} live ones"
