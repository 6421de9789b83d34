"""An account's limit on concurrent streams holds across ``--workers 2`` on PostgreSQL, every
worker's ``ActiveStreams`` counts them all, and a worker killed with kill -9 gives its places
back."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from ringflow.storage.db import Database
from tests.conftest import REDIS_URL
from tests.processes import cli, server_env
from tests.test_restart_e2e import EXOPHONE, Client, eventually, server
from tests.test_workers_e2e import calls_of, worker_pid
from tests.wsbot import WsBot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CALLS = 12  # a connection each: both workers get some but twice in 4096 runs
LIMIT = 2


async def active_streams(srv, creds: dict[str, str]) -> int:
    """``ActiveStreamCount`` as a new connection (so any worker) answers it."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(
            f"{srv.base}/v1/Accounts/{creds['sid']}/ActiveStreams.json",
            auth=(creds["api_key"], creds["api_token"]),
        )
    assert r.status_code == 200, r.text
    assert r.json()["ThrottleLimit"] == LIMIT
    return int(r.json()["ActiveStreamCount"])


async def test_the_stream_limit_holds_across_workers_and_a_killed_one_frees_its_places(
    empty_pg: str, tmp_path: Path
) -> None:
    instance = f"streams-{uuid.uuid4().hex[:8]}"
    env = server_env(empty_pg, instance, RINGFLOW_REDIS_URL=REDIS_URL, RINGFLOW_INSTANCE_LEASE="3")
    creds = json.loads(
        await cli(env, "accounts", "create", f"Test {uuid.uuid4().hex[:10]}", "--json")
    )
    await cli(env, "numbers", "add", creds["sid"], EXOPHONE)
    await cli(env, "accounts", "set-limits", creds["sid"], "--max-concurrent-streams", str(LIMIT))
    db = Database(empty_pg)
    try:
        async with WsBot() as bot, server(env, tmp_path / "server.log", "--workers", "2") as srv:
            await srv.start()
            sids = []
            for n in range(CALLS):  # a connection each: the kernel picks a worker per connection
                async with httpx.AsyncClient(timeout=10) as http:
                    call = await Client(http, srv, creds).connect(
                        From=f"0981234{n:04d}", StreamUrl=bot.url
                    )
                sids.append(call["Sid"])

            async def settled() -> bool:
                calls = await calls_of(db, sids)
                ended = [c for c in calls.values() if c.status == "completed"]
                return len(ended) == CALLS - LIMIT and len(bot.connections) == LIMIT

            await eventually(settled, "all but the limit's streams to fail and end", srv, 60)
            calls = await calls_of(db, sids)
            owners = {call.owner for call in calls.values()}
            assert owners == {f"{instance}/w1", f"{instance}/w2"}, owners  # both took calls
            streaming = [c for c in calls.values() if c.status == "in-progress"]
            assert len(streaming) == LIMIT and len(bot.connections) == LIMIT
            for _ in range(4):  # whichever worker answers counts both workers' streams
                assert await active_streams(srv, creds) == LIMIT

            # kill -9 the worker carrying the first stream: its places come back.
            victim = streaming[0].owner
            assert victim is not None
            index = int(victim.rsplit("/w", 1)[1])
            kept = sum(1 for c in streaming if c.owner != victim)
            os.kill(worker_pid(srv.log.read_text(), index), signal.SIGKILL)

            async def freed() -> bool:
                return await active_streams(srv, creds) == kept

            await eventually(freed, "the killed worker's stream places to be freed", srv, 30)
            async with httpx.AsyncClient(timeout=10) as http:
                call = await Client(http, srv, creds).connect(From="09812349999", StreamUrl=bot.url)

            async def streams_again() -> bool:
                return len(bot.connections) == LIMIT + 1

            await eventually(streams_again, "a new stream to take the freed place", srv, 30)
            assert call["Sid"]
            await srv.terminate()
    finally:
        await db.close()
