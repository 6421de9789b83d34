"""A campaign outlives the process driving it: with ``--workers 2`` on PostgreSQL, a kill -9 of
the worker driving a campaign hands the campaign to another process once its lease runs out,
and no number is called twice for one attempt."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ringflow.storage.db import Database
from ringflow.storage.models import Call, Campaign
from tests.conftest import REDIS_URL
from tests.processes import account_with_app, cli, server_env
from tests.test_restart_e2e import EXOPHONE, eventually, server
from tests.test_workers_e2e import worker_pid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NUMBERS = [f"0981{n:07d}" for n in range(40)]
REMINDER = {
    "name": "reminder",
    "start": "hello",
    "nodes": {
        "hello": {
            "applet": "greeting",
            "text": "Hello. Your payment is due on Friday.",
            "next": "bye",
        },
        "bye": {"applet": "hangup"},
    },
}


async def campaign_row(db: Database) -> Campaign | None:
    async with db.session() as session:
        return (await session.execute(select(Campaign))).scalar_one_or_none()


async def campaign_calls(db: Database) -> list[Call]:
    async with db.session() as session:
        return list(
            (
                await session.execute(
                    select(Call).where(Call.campaign_id.is_not(None)).order_by(Call.created_at)
                )
            ).scalars()
        )


async def test_a_killed_driver_s_campaign_is_taken_over_and_no_number_is_called_twice(
    empty_pg: str, tmp_path: Path
) -> None:
    instance = f"campaigns-{uuid.uuid4().hex[:8]}"
    env = server_env(
        empty_pg,
        instance,
        RINGFLOW_REDIS_URL=REDIS_URL,
        RINGFLOW_CAMPAIGN_LEASE="2",
        RINGFLOW_RATE_LIMIT_PER_MINUTE="100000",
    )
    creds, app_id = await account_with_app(env, tmp_path, REMINDER, EXOPHONE)
    auth = (creds["api_key"], creds["api_token"])
    db = Database(empty_pg)
    try:
        async with (
            server(env, tmp_path / "server.log", "--workers", "2") as srv,
            httpx.AsyncClient(timeout=10) as http,
        ):
            await srv.start()
            body = {
                "from": NUMBERS,
                "caller_id": EXOPHONE,
                "calls_per_second": 5,
                "max_concurrent": 20,
                "url": f"http://my.exotel.com/{creds['sid']}/exoml/start_voice/{app_id}",
            }
            r = await http.post(
                f"{srv.base}/v2/accounts/{creds['sid']}/campaigns", json=body, auth=auth
            )
            assert r.status_code == 200, r.text

            async def under_way() -> bool:
                row = await campaign_row(db)
                return (
                    row is not None
                    and row.driver is not None
                    and len(await campaign_calls(db)) >= 10
                )

            await eventually(under_way, "the campaign to place ten calls", srv, 30)
            row = await campaign_row(db)
            assert row is not None and row.driver is not None
            driver = int(row.driver.rsplit("/w", 1)[1])
            os.kill(worker_pid(srv.log.read_text(), driver), signal.SIGKILL)
            killed_at = time.time()
            before = len(await campaign_calls(db))

            async def over() -> bool:
                row = await campaign_row(db)
                return row is not None and row.status == "Completed" and row.ended_at is not None

            await eventually(over, "another process to finish the campaign", srv, 120)
            r = await http.get(
                f"{srv.base}/v2/accounts/{creds['sid']}/campaigns/{row.sid}", auth=auth
            )
            stats = r.json()["response"][0]["data"]["stats"]
            calls = await campaign_calls(db)
            await srv.terminate()
    finally:
        await db.close()
    # Another process placed the rest after the kill: the killed one was dead.
    assert len(calls) > before
    assert max(c.created_at.timestamp() for c in calls) > killed_at
    # Every number was called exactly once (no retries were asked for), and the counts add up.
    assert (
        Counter((c.campaign_number_id, c.campaign_attempt) for c in calls).most_common(1)[0][1] == 1
    )
    assert sorted(c.from_number for c in calls) == sorted(f"+91{n[1:]}" for n in NUMBERS)
    assert stats["attempts"] == stats["total"] == len(NUMBERS)
    assert stats["completed"] + stats["failed"] == len(NUMBERS)


async def test_a_stopped_server_hands_its_campaign_over_and_it_goes_on_after_a_restart(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'rf.db'}"
    # A long lease: going on at once after the restart shows the lease was given up.
    env = server_env(
        url,
        f"campaigns-{uuid.uuid4().hex[:8]}",
        RINGFLOW_CAMPAIGN_LEASE="600",
        RINGFLOW_DRAIN_SECONDS="5",
    )
    await cli(env, "migrate")
    creds, app_id = await account_with_app(env, tmp_path, REMINDER, EXOPHONE)
    auth = (creds["api_key"], creds["api_token"])
    db = Database(url)
    try:
        async with (
            server(env, tmp_path / "server.log") as srv,
            httpx.AsyncClient(timeout=10) as http,
        ):
            await srv.start()
            body = {
                "from": NUMBERS,
                "caller_id": EXOPHONE,
                "calls_per_second": 2,
                "url": f"http://my.exotel.com/{creds['sid']}/exoml/start_voice/{app_id}",
            }
            r = await http.post(
                f"{srv.base}/v2/accounts/{creds['sid']}/campaigns", json=body, auth=auth
            )
            assert r.status_code == 200, r.text

            async def some_placed() -> bool:
                return len(await campaign_calls(db)) >= 3

            await eventually(some_placed, "the campaign to place three calls", srv)
            await srv.terminate()
            row = await campaign_row(db)
            assert row is not None and (row.status, row.driver) == ("InProgress", None)
            before = await campaign_calls(db)
            assert {c.status for c in before} == {"completed"}  # the drain let them finish
            await srv.start()

            async def going_on() -> bool:
                return len(await campaign_calls(db)) > len(before)

            await eventually(going_on, "the campaign to go on after the restart", srv, 10)
            await srv.terminate()
    finally:
        await db.close()
