"""``ringflow serve --workers 2``: two processes on one port share the calls, and a worker that
dies is restarted under its own name and finishes the calls it was carrying."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ringflow.storage.db import Database
from ringflow.storage.models import Call
from tests.conftest import REDIS_URL
from tests.processes import account_with_app, server_env
from tests.sipp import free_media_port, free_udp_port, needs_sipp, start_sipp
from tests.test_restart_e2e import EXOPHONE, LONG_FLOW, RESTARTED, Client, eventually, server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CALLS = 16


async def calls_of(db: Database, sids: list[str]) -> dict[str, Call]:
    async with db.session() as session:
        rows = (await session.execute(select(Call).where(Call.sid.in_(sids)))).scalars().all()
    return {row.sid: row for row in rows}


async def statuses(db: Database, sids: list[str]) -> set[str]:
    return {call.status for call in (await calls_of(db, sids)).values()}


def worker_pid(log: str, index: int) -> int:
    """The pid of worker ``index``'s latest start, from the supervisor's log."""
    return int(re.findall(rf"worker {index} started \(pid (\d+)\)", log)[-1])


async def test_two_workers_share_the_calls_and_a_dead_one_is_restarted(
    empty_pg: str, tmp_path: Path
) -> None:
    pg_url = empty_pg
    instance = f"workers-{uuid.uuid4().hex[:8]}"
    env = server_env(pg_url, instance, RINGFLOW_REDIS_URL=REDIS_URL)
    creds, app_id = await account_with_app(env, tmp_path, LONG_FLOW, EXOPHONE)
    db = Database(pg_url)
    try:
        async with server(env, tmp_path / "server.log", "--workers", "2") as srv:
            await srv.start()
            sids = []
            for n in range(CALLS):  # a connection each: the kernel picks a worker per connection
                async with httpx.AsyncClient(timeout=10) as http:
                    call = await Client(http, srv, creds).connect(
                        From=f"0981234{n:04d}", Url=f"http://my.exotel.com/exoml/start/{app_id}"
                    )
                sids.append(call["Sid"])

            async def all_talking() -> bool:
                return await statuses(db, sids) == {"in-progress"}

            await eventually(all_talking, "every call to be answered", srv)
            placed = {sid: call.owner for sid, call in (await calls_of(db, sids)).items()}
            assert set(placed.values()) == {f"{instance}/w1", f"{instance}/w2"}, placed

            os.kill(worker_pid(srv.log.read_text(), 1), signal.SIGKILL)
            on_w1 = [sid for sid, owner in placed.items() if owner == f"{instance}/w1"]

            async def finished() -> bool:
                return await statuses(db, on_w1) == {"completed"}

            await eventually(finished, "the restarted worker to finish its calls", srv, 30)
            async with httpx.AsyncClient(timeout=10) as http:
                api = Client(http, srv, creds)
                for sid in on_w1:
                    assert await api.reason(sid) == RESTARTED
            others = [s for s in sids if s not in on_w1]
            assert await statuses(db, others) == {"in-progress"}
            assert len(re.findall(r"worker 1 started", srv.log.read_text())) == 2
            await srv.terminate()
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RINGFLOW_DATABASE_URL": "sqlite+aiosqlite:///x.db"}, "needs PostgreSQL"),
        ({"RINGFLOW_DATABASE_URL": "postgresql+asyncpg://h/db"}, "needs RINGFLOW_REDIS_URL"),
    ],
)
async def test_workers_need_shared_storage(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    from tests.processes import Server

    proc = Server({**server_env("unused", "x"), **env}, tmp_path / "log", "--workers", "2")
    with pytest.raises(AssertionError, match=message):
        await proc.start()


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.parametrize("when", ["serving", "starting"])
async def test_workers_stop_by_themselves_when_the_supervisor_is_killed(
    empty_pg: str, tmp_path: Path, when: str
) -> None:
    env = server_env(empty_pg, f"orphans-{uuid.uuid4().hex[:8]}", RINGFLOW_REDIS_URL=REDIS_URL)
    async with server(env, tmp_path / "server.log", "--workers", "2") as srv:
        starting = None
        if when == "serving":
            await srv.start()
        else:  # killed while the workers are still loading, before they could look at it
            starting = asyncio.ensure_future(srv.start())

            async def launched() -> bool:
                return len(re.findall(r"worker \d started", srv.output())) == 2

            await eventually(launched, "the workers to be launched", srv, 20)
        pids = [worker_pid(srv.log.read_text(), i) for i in (1, 2)]
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGKILL)  # the supervisor cannot pass anything on

        async def orphans_gone() -> bool:
            return all(gone(pid) for pid in pids)

        await eventually(orphans_gone, "the orphaned workers to stop", srv, 30)
        assert srv.log.read_text().count("the supervisor (pid") == 2
        if starting is not None:
            with contextlib.suppress(AssertionError):
                await starting  # it saw the supervisor exit at start-up


@needs_sipp
async def test_two_workers_place_sip_calls_each_from_its_own_socket(
    empty_pg: str, tmp_path: Path
) -> None:
    calls = 16  # a connection each: both workers get some but once in 30000 runs
    port, media = free_udp_port(), free_media_port()
    phone = await start_sipp(
        tmp_path,
        "callee_answer.xml",
        "-d",
        "1000",
        "-trace_msg",
        port=port,
        media=media,
        calls=calls,
    )
    trunks = tmp_path / "trunks.yaml"
    trunks.write_text(f"trunks:\n  - name: sipp\n    host: 127.0.0.1\n    port: {port}\n")
    instance = f"sip-workers-{uuid.uuid4().hex[:8]}"
    env = server_env(
        empty_pg,
        instance,
        RINGFLOW_REDIS_URL=REDIS_URL,
        RINGFLOW_CARRIER="sip",
        RINGFLOW_SIP_TRUNKS=str(trunks),
        RINGFLOW_SIP_PORT="0",
    )
    creds, app_id = await account_with_app(
        env,
        tmp_path,
        {
            "name": "hello",
            "start": "hi",
            "nodes": {
                "hi": {"applet": "greeting", "text": "Hello", "next": "bye"},
                "bye": {"applet": "hangup"},
            },
        },
        EXOPHONE,
    )
    db = Database(empty_pg)
    try:
        async with server(env, tmp_path / "server.log", "--workers", "2") as srv:
            await srv.start()
            sids = []
            for _ in range(calls):
                async with httpx.AsyncClient(timeout=10) as http:
                    call = await Client(http, srv, creds).connect(
                        From=f"sip:callee@127.0.0.1:{port}",
                        Url=f"http://my.exotel.com/exoml/start/{app_id}",
                    )
                sids.append(call["Sid"])

            async def all_done() -> bool:
                return await statuses(db, sids) == {"completed"}

            await eventually(all_done, "every SIP call to complete", srv, 60)
            owners = {call.owner for call in (await calls_of(db, sids)).values()}
            assert owners == {f"{instance}/w1", f"{instance}/w2"}
            _, err = await asyncio.wait_for(phone.communicate(), 30)
            assert phone.returncode == 0, err.decode()
            # The INVITEs came from two SIP sockets, one per worker.
            log = next(tmp_path.glob("*_messages.log")).read_text()
            sources = set(re.findall(r"Via: SIP/2.0/UDP 127.0.0.1:(\d+)", log))
            assert len(sources) == 2, sources
            await srv.terminate()
    finally:
        if phone.returncode is None:
            phone.kill()
        await db.close()
