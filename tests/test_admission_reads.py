"""Admission reads an account's own live calls only: the count of its lines and its oldest
waiting call come from ``ix_calls_account_status``, not from a scan of its history (a busy
account ends thousands of calls an hour) nor of every account's live calls. On PostgreSQL, the
statements as the server runs them, under EXPLAIN ANALYZE, on an account with 3000 finished
calls beside ten others with 30 up or waiting each."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringflow.calls.status import ACTIVE, Status
from ringflow.storage import admission
from ringflow.storage.db import Database, Prepared

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

FINISHED, LIVE, QUEUED = 3000, 3, 2
OTHERS, LIVE_EACH = 10, 30


async def insert_calls(driver: Any, account_id: int, prefix: str, statuses: list[str]) -> None:
    await driver.execute(
        """INSERT INTO calls (sid, account_id, shape, from_number, to_number, caller_id,
               status, direction, time_limit, time_out, callback_events, callback_json,
               record, recording_channels, recording_format, created_at, updated_at)
           SELECT $2 || s.n, $1, 'numbers', '+919812345678', '+919812345679', '+918039591234',
               s.status, 'outbound-api', 60, 30, '[]', false, false, 'single', 'mp3',
               now() + s.n * interval '1 ms', now()
           FROM unnest($3::text[]) WITH ORDINALITY AS s(status, n)""",
        account_id,
        prefix,
        statuses,
    )


async def account_with_history(db: Database) -> int:
    """An account with FINISHED completed calls, LIVE in progress and QUEUED waiting, among
    OTHERS accounts each with a few hundred calls finished and LIVE_EACH up or waiting."""
    async with db.driver() as driver:
        live = ["in-progress", "ringing", "queued"]
        for n in range(OTHERS):
            other = await new_account(driver, f"other-{n}")
            statuses = ["completed"] * 300 + [live[k % 3] for k in range(LIVE_EACH)]
            await insert_calls(driver, other, f"CO{n}x", statuses)
        account_id = await new_account(driver, "reads")
        mine = ["completed"] * FINISHED + ["in-progress"] * LIVE + ["queued"] * QUEUED
        await insert_calls(driver, account_id, "CA", mine)
        await driver.execute("ANALYZE calls")
    return account_id


async def new_account(driver: Any, sid: str) -> int:
    return int(
        await driver.fetchval(
            "INSERT INTO accounts (sid, name, time_zone, created_at) "
            "VALUES ($1, $1, 'Asia/Kolkata', now()) RETURNING id",
            sid,
        )
    )


def rows_read(plan: dict[str, Any]) -> int:
    """Rows every scan of ``plan`` read from the table: those it returned and those its filter
    dropped (a bitmap's index scan only finds the rows its heap scan reads)."""
    read = 0
    if "Scan" in plan["Node Type"] and plan["Node Type"] != "Bitmap Index Scan":
        read += plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
    for child in plan.get("Plans", ()):
        read += rows_read(child)
    return read


async def explained(db: Database, statement: Prepared, params: dict[str, Any]) -> dict[str, Any]:
    async with db.driver() as driver, driver.transaction():
        text = await driver.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement.sql,
            *[params[name] for name in statement.names],
        )
    plans = json.loads(text) if isinstance(text, str) else text  # the driver may decode JSON
    return plans[0]["Plan"]


@pytest.mark.parametrize(
    ("name", "statement", "params"),
    [
        (
            "count of lines",
            admission._COUNT_LINES_NOW,
            {"statuses": [str(s) for s in (*ACTIVE, Status.QUEUED)]},
        ),
        (
            "oldest queued",
            Prepared(admission._OLDEST_QUEUED),
            {"queued": str(Status.QUEUED), "count": 10},
        ),
    ],
)
async def test_admission_reads_only_the_accounts_live_calls(
    db: Database, name: str, statement: Prepared, params: dict[str, Any]
) -> None:
    account_id = await account_with_history(db)
    plan = await explained(db, statement, {**params, "account_id": account_id})
    read = rows_read(plan)
    assert read <= LIVE + QUEUED, f"{name}: {read} rows read for {LIVE + QUEUED} live calls"
