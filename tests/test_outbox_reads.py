"""The deliverer reads the callbacks still to send, never the delivered ones: every callback
ever sent stays in the outbox, so a statement that read them all would grow slower with each
call. On PostgreSQL, the statements as the deliverer builds them, under EXPLAIN ANALYZE and
planned for any values of their parameters (as PostgreSQL plans a statement the driver has run
a few times), on an outbox of 3000 delivered callbacks and 3 pending."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ringflow.storage import gauges, outbox
from ringflow.storage.db import Database
from tests.plans import compiled, explained, rows_read

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

DELIVERED, PENDING = 3000, 3
NOW = dt.datetime(2026, 12, 6, 12, 0)
BUSY = "http://busy.example:80"


async def outbox_with_history(db: Database) -> int:
    """DELIVERED callbacks sent long ago and PENDING due now (the last for BUSY); the account."""
    async with db.driver() as driver:
        account_id = int(
            await driver.fetchval(
                "INSERT INTO accounts (sid, name, time_zone, created_at) "
                "VALUES ('sent', 'sent', 'Asia/Kolkata', now()) RETURNING id"
            )
        )
        await driver.execute(
            """INSERT INTO outbox (account_id, event, url, destination, content_type, payload,
                   idempotency_key, state, attempts, next_attempt_at, created_at)
               SELECT $1, 'terminal', 'http://hooks.example/cb',
                   CASE WHEN s.n = $3::int + $4::int THEN $5 ELSE 'http://hooks.example:80' END,
                   'application/json', '{}', 'key-' || s.n,
                   CASE WHEN s.n <= $3::int THEN 'delivered' ELSE 'pending' END,
                   1, $2::timestamp - (($3::int + $4::int - s.n) * interval '1 s'), $2::timestamp
               FROM generate_series(1, $3::int + $4::int) AS s(n)""",
            account_id,
            NOW,
            DELIVERED,
            PENDING,
            BUSY,
        )
        await driver.execute("ANALYZE outbox")
    return account_id


STATEMENTS = {
    "next due": lambda account: outbox.next_due_statement(NOW, [], None),
    "next due, a receiver blocked": lambda account: outbox.next_due_statement(NOW, [BUSY], None),
    "waiting for room": lambda account: outbox.waiting_statement(NOW, [BUSY], [account + 1]),
    "pending callbacks (metrics)": lambda account: gauges._PENDING_CALLBACKS,
    "claim": lambda account: outbox.claim_statement(
        owner="me",
        now=NOW,
        lease_until=NOW + dt.timedelta(seconds=30),
        limit=16,
        rooms=outbox.Rooms(per_destination=4, per_account=16),
    ),
}


@pytest.mark.parametrize("name", list(STATEMENTS))
async def test_the_deliverer_reads_only_pending_callbacks(db: Database, name: str) -> None:
    account_id = await outbox_with_history(db)
    statement: Any = STATEMENTS[name](account_id)
    plan = await explained(db, *compiled(statement))
    read = rows_read(plan)
    # The claim reads its candidates, then each again by id to lock it, and to lease it.
    most = 3 * PENDING if name == "claim" else PENDING
    assert read <= most, f"{name}: {read} rows read for {PENDING} pending callbacks"
