"""Hanging up a call carried by another process: ``ringflow calls hangup`` against a running
server (no Redis: the server finds the request in the database), and the API on
``serve --workers 2`` (PostgreSQL and Redis), where a request lands on either worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ringflow.storage.db import Database
from ringflow.storage.models import Call
from tests.conftest import REDIS_URL
from tests.processes import Server, account_with_app, server_env
from tests.test_restart_e2e import EXOPHONE, LONG_FLOW, Client, eventually, server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def hangup_cli(env: dict[str, str], sid: str) -> tuple[int, str, str]:
    """``ringflow calls hangup SID``: its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ringflow.cli",
        "calls",
        "hangup",
        sid,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def status_of(db: Database, sid: str) -> Call:
    async with db.session() as session:
        return (await session.execute(select(Call).where(Call.sid == sid))).scalar_one()


@dataclasses.dataclass
class Talking:
    """One server on its own SQLite database, carrying one answered call."""

    env: dict[str, str]
    srv: Server
    api: Client
    db: Database
    sid: str


@contextlib.asynccontextmanager
async def one_call_talking(
    tmp_path: Path, template: Path, name: str, **settings: str
) -> AsyncIterator[Talking]:
    path = tmp_path / "ringflow.db"
    path.write_bytes(template.read_bytes())
    url = f"sqlite+aiosqlite:///{path}"
    env = server_env(url, f"{name}-{uuid.uuid4().hex[:8]}", **settings)
    creds, app_id = await account_with_app(env, tmp_path, LONG_FLOW, EXOPHONE)
    db = Database(url)
    try:
        async with (
            server(env, tmp_path / "server.log") as srv,
            httpx.AsyncClient(timeout=10) as http,
        ):
            await srv.start()
            api = Client(http, srv, creds)
            call = await api.connect(
                From="09812345678", Url=f"http://my.exotel.com/exoml/start/{app_id}"
            )
            sid = call["Sid"]

            async def talking() -> bool:
                return (await status_of(db, sid)).status == "in-progress"

            await eventually(talking, "the call to be answered", srv)
            yield Talking(env, srv, api, db, sid)
    finally:
        await db.close()


async def test_the_cli_hangs_up_a_call_the_server_carries(
    tmp_path: Path, sqlite_template: Path
) -> None:
    async with one_call_talking(tmp_path, sqlite_template, "cli") as it:
        code, out, err = await hangup_cli(it.env, it.sid)
        assert code == 0, err
        assert out.strip() == f"call {it.sid}: completed (hangup requested (cli))"
        assert (await it.api.details(it.sid))["Status"] == "completed"
        code, out, err = await hangup_cli(it.env, it.sid)
        assert code == 1 and f"Call {it.sid} is already over: it ended completed" in err
        await it.srv.terminate()


async def test_two_workers_hang_up_each_others_calls(empty_pg: str, tmp_path: Path) -> None:
    pg_url = empty_pg
    instance = f"control-{uuid.uuid4().hex[:8]}"
    env = server_env(pg_url, instance, RINGFLOW_REDIS_URL=REDIS_URL)
    creds, app_id = await account_with_app(env, tmp_path, LONG_FLOW, EXOPHONE)
    db = Database(pg_url)
    try:
        async with server(env, tmp_path / "server.log", "--workers", "2") as srv:
            await srv.start()
            sids: list[str] = []
            owners: set[str | None] = set()
            # A connection each: the kernel picks a worker per connection (a worker still
            # starting takes none), so calls are placed until both workers carry some.
            for n in range(16):  # under the account limit of 20: every call talks
                async with httpx.AsyncClient(timeout=10) as http:
                    call = await Client(http, srv, creds).connect(
                        From=f"0981234{n:04d}", Url=f"http://my.exotel.com/exoml/start/{app_id}"
                    )
                sids.append(call["Sid"])
                if len(sids) >= 8:
                    owners = {(await status_of(db, sid)).owner for sid in sids}
                    if len(owners) == 2:
                        break

            async def talking() -> bool:
                return {(await status_of(db, sid)).status for sid in sids} == {"in-progress"}

            await eventually(talking, "every call to be answered", srv)
            owners = {(await status_of(db, sid)).owner for sid in sids}
            assert owners == {f"{instance}/w1", f"{instance}/w2"}, owners
            # Each request on a fresh connection: about half land on the other worker.
            for sid in sids[:-1]:
                async with httpx.AsyncClient(timeout=30) as http:
                    r = await http.post(
                        f"{srv.base}/v1/Accounts/{creds['sid']}/Calls/{sid}.json",
                        data={"Status": "completed"},
                        auth=(creds["api_key"], creds["api_token"]),
                    )
                assert r.status_code == 200, r.text
                assert r.json()["Call"]["Status"] == "completed", (sid, r.text)
            code, _, err = await hangup_cli(env, sids[-1])  # the CLI is a third process
            assert code == 0, err
            for sid in sids:
                call = await status_of(db, sid)
                assert call.status == "completed" and call.reason is not None
                assert call.reason.startswith("hangup requested")
            await srv.terminate()
    finally:
        await db.close()


async def test_hanging_up_a_call_whose_server_died_ends_it_at_once(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """The server carrying the call is killed; once it has been silent past its lease, a
    hang-up (the CLI, another process) ends the call there and then instead of waiting for a
    process that will never act on it."""
    settings = {"RINGFLOW_INSTANCE_LEASE": "1"}
    async with one_call_talking(tmp_path, sqlite_template, "dead", **settings) as it:
        await it.srv.kill()
        await asyncio.sleep(1.5)  # real seconds: the dead server's lease runs out
        code, out, err = await hangup_cli(it.env, it.sid)
        assert code == 0, err
        # Ended by the request itself (before, it waited 10 s and answered in-progress).
        assert out.strip().startswith(f"call {it.sid}: completed (hangup requested (cli);"), out
        assert "had stopped" in out
        assert (await status_of(it.db, it.sid)).status == "completed"
