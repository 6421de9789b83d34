"""A new install's first calls are found by their index. The plans PostgreSQL keeps for the
statements every call runs are chosen while the calls table holds a few rows; had the table
been analyzed while empty (the planner then knows it to be one page), they read the whole
table for every call until the next automatic ANALYZE: in 15 s of ``bench/api_connect.py`` on
a new database, 18,000 scans of every call."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from ringflow.calls.status import Status
from ringflow.storage import call_changes
from ringflow.storage.db import Database, migrate
from ringflow.storage.models import Call
from tests.conftest import PG_ADMIN_URL, _pg_execute
from tests.plans import explained, insert_calls, new_account, rows_read


@pytest.fixture
def new_install() -> Iterator[str]:
    """The URL of a database just created and migrated, as a new install's."""
    name = f"ringflow_new_{uuid.uuid4().hex[:10]}"
    _pg_execute(PG_ADMIN_URL, f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        migrate(f"{url}/{name}")
        yield f"{url}/{name}"
    finally:
        _pg_execute(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_new_install_finds_a_call_by_its_index(new_install: str) -> None:
    db = Database(new_install)
    try:
        async with db.driver() as driver:
            account_id = await new_account(driver, "first")
            await insert_calls(driver, account_id, "CA", ["completed"] * 30 + ["in-progress"])
            call_id = await driver.fetchval("SELECT id FROM calls WHERE status = 'in-progress'")
        # A call's end, planned for any values, as once the driver has run it a few times.
        call = Call(
            id=call_id,
            account_id=account_id,
            status=Status.COMPLETED,
            updated_at=dt.datetime.now(dt.UTC),
            legs=[],
        )
        params = call_changes._change_params(
            call, expected=Status.IN_PROGRESS, legs=[], new_legs=[], steps=[], callbacks=[]
        )
        params["account_id"] = account_id
        statement = call_changes._last_change(Status.QUEUED)
        plan = await explained(db, statement.sql, [params[name] for name in statement.names])
    finally:
        await db.close()
    assert rows_read(plan) == 1, plan  # the call itself; whether calls wait, from the index
