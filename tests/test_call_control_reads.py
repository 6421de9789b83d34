"""Live call control's poll (every process, twice a second, for the requests written for the calls
it carries) reads the request rows only: not the rest of its live calls' timelines (a stream
writes a step per mark), nor the timelines of the calls before them. On PostgreSQL, the
statement as the server runs it under EXPLAIN ANALYZE, planned for any values of its parameters
(as PostgreSQL plans a statement the driver has run a few times)."""

from __future__ import annotations

import pytest

from ringflow.storage.calls import control_requests_statement
from ringflow.storage.db import Database
from ringflow.storage.models import CONTROL_REQUEST
from tests.plans import compiled, explained, insert_calls, new_account, rows_read

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

FINISHED, LIVE, STEPS, REQUESTS = 2000, 60, 20, 2


async def test_the_poll_reads_only_the_requests(db: Database) -> None:
    async with db.driver() as driver:
        account_id = await new_account(driver, "control")
        statuses = ["completed"] * FINISHED + ["in-progress"] * LIVE
        await insert_calls(driver, account_id, "CA", statuses)
        # Every call has a timeline of STEPS steps; two live calls have a request besides.
        await driver.execute(
            """INSERT INTO call_events (call_id, at, kind, data)
               SELECT c.id, now(), 'applet.enter', '{}' FROM calls c, generate_series(1, $1)""",
            STEPS,
        )
        await driver.execute(
            """INSERT INTO call_events (call_id, at, kind, data)
               SELECT id, now(), $1, '{"op": "hangup"}' FROM calls
               WHERE status = 'in-progress' ORDER BY id LIMIT $2""",
            CONTROL_REQUEST,
            REQUESTS,
        )
        # Half the calls before them were hung up by request too.
        await driver.execute(
            """INSERT INTO call_events (call_id, at, kind, data)
               SELECT id, now(), $1, '{"op": "hangup"}' FROM calls
               WHERE status = 'completed' AND id % 2 = 0""",
            CONTROL_REQUEST,
        )
        await driver.execute("ANALYZE calls")
        await driver.execute("ANALYZE call_events")
    live = [f"CA{n}" for n in range(FINISHED + 1, FINISHED + LIVE + 1)]
    plan = await explained(db, *compiled(control_requests_statement(live)))
    read = rows_read(plan)
    # The live calls themselves (by SID), then their requests: without the requests' own index
    # (or with the kind sent as a parameter, which a plan for any value cannot match to it),
    # every step of every call was read, 42,262 rows here.
    assert read <= LIVE + REQUESTS, f"{read} rows read for {REQUESTS} requests"
