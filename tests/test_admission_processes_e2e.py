"""An account's concurrency limit holds exactly across processes, and its queue is FIFO.

``ringflow serve --workers 3`` on PostgreSQL and Redis places SIP calls to SIPp for an account
limited to 5 calls at once. 60 calls are submitted at once (a connection each, so the kernel
spreads them over the three workers), then five bursts of 10. Calls in progress are sampled from
the database while they run, and counted afterwards from the call records and from what SIPp
saw on the wire (each INVITE to its BYE). A second test kills a standalone server with SIGKILL
while it carries an account's calls: another server finishes them once the first one's lease
lapses, and the queued calls start.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import re
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from ringflow.storage.db import Database
from ringflow.storage.models import Call, CallEvent
from tests.conftest import REDIS_URL
from tests.processes import account_with_app, server_env
from tests.sipp import free_media_port, free_udp_port, needs_sipp, start_sipp
from tests.support import recorder
from tests.test_restart_e2e import EXOPHONE, LONG_FLOW, Client, accepted, eventually, server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

LIMIT = 5
AT_ONCE = 60
BURSTS, BURST = 5, 10
SHORT_FLOW = {
    "name": "short",
    "start": "hi",
    "nodes": {
        "hi": {"applet": "greeting", "text": "Hello", "next": "bye"},
        "bye": {"applet": "hangup"},
    },
}
ACTIVE = ("ringing", "in-progress")


async def calls_of(db: Database, sids: list[str]) -> list[Call]:
    async with db.session() as session:
        return list((await session.execute(select(Call).where(Call.sid.in_(sids)))).scalars())


async def in_progress(db: Database) -> int:
    """Calls holding a line now, by the database (the test's account is the only one)."""
    async with db.session() as session:
        query = (
            select(func.count())
            .select_from(Call)
            .where(Call.status.in_(ACTIVE), Call.owner.is_not(None))
        )
        return int((await session.execute(query)).scalar_one())


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans open at one moment (an end before a start)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def sipp_spans(log: str) -> tuple[list[tuple[float, float]], dict[str, set[str]]]:
    """From SIPp's message trace: each dialog's INVITE-to-BYE span, and Call-IDs per call SID."""
    invites: dict[str, float] = {}
    byes: dict[str, float] = {}
    dialogs: dict[str, set[str]] = collections.defaultdict(set)
    for entry in log.split("----------------------------------------------- ")[1:]:
        stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)", entry)
        received = re.search(r"message received \[\d+\] bytes :\s*\n\s*(\w+) ", entry)
        call_id = re.search(r"^Call-ID:\s*(\S+)", entry, re.MULTILINE | re.IGNORECASE)
        if stamp is None or received is None or call_id is None:
            continue
        at = dt.datetime.fromisoformat(stamp.group(1)).timestamp()
        method, dialog = received.group(1), call_id.group(1)
        if method == "INVITE":
            invites.setdefault(dialog, at)
            ringflow_call = re.search(
                r"^X-Ringflow-Call:\s*(\S+)", entry, re.MULTILINE | re.IGNORECASE
            )
            if ringflow_call:
                dialogs[ringflow_call.group(1)].add(dialog)
        elif method == "BYE":
            byes.setdefault(dialog, at)
    spans = [(invites[d], byes[d]) for d in invites if d in byes]
    return spans, dialogs


async def connect_all(
    srv, creds: dict, app_id: int, callback: str, target: str, n: int, first: int
) -> list[str]:
    """Submit ``n`` calls at once, a connection each; their SIDs in submission order."""

    async def one(index: int) -> dict:
        async with httpx.AsyncClient(timeout=30) as http:
            return await Client(http, srv, creds).connect(
                From=f"sip:callee{first + index}@{target}",
                Url=f"http://my.exotel.com/exoml/start/{app_id}",
                StatusCallback=callback,
            )

    return [call["Sid"] for call in await asyncio.gather(*(one(i) for i in range(n)))]


@needs_sipp
async def test_three_workers_hold_the_account_limit_and_start_the_queue_in_order(
    empty_pg: str, tmp_path: Path
) -> None:
    total = AT_ONCE + BURSTS * BURST
    port, media = free_udp_port(), free_media_port()
    phone = await start_sipp(
        tmp_path,
        "callee_answer.xml",
        "-trace_msg",
        port=port,
        media=media,
        calls=total,
        timeout=150,
    )
    trunks = tmp_path / "trunks.yaml"
    trunks.write_text(
        f"trunks:\n  - name: sipp\n    host: 127.0.0.1\n    port: {port}\n    max_cps: 200\n"
    )
    instance = f"lines-{uuid.uuid4().hex[:8]}"
    env = server_env(
        empty_pg,
        instance,
        RINGFLOW_REDIS_URL=REDIS_URL,
        RINGFLOW_CARRIER="sip",
        RINGFLOW_SIP_TRUNKS=str(trunks),
        RINGFLOW_SIP_PORT="0",
        RINGFLOW_MAX_CONCURRENT_CALLS=str(LIMIT),
        RINGFLOW_RATE_LIMIT_PER_MINUTE="10000",
    )
    creds, app_id = await account_with_app(env, tmp_path, SHORT_FLOW, EXOPHONE)
    db = Database(empty_pg)
    most_seen = 0
    sampling = True

    async def sample() -> None:
        nonlocal most_seen
        while sampling:
            most_seen = max(most_seen, await in_progress(db))
            await asyncio.sleep(0.01)

    try:
        async with recorder() as rec, server(env, tmp_path / "server.log", "--workers", "3") as srv:
            await srv.start()
            sampler = asyncio.ensure_future(sample())
            callback = f"{rec.url}/status"
            target = f"127.0.0.1:{port}"
            sids = await connect_all(srv, creds, app_id, callback, target, AT_ONCE, 0)
            for burst in range(BURSTS):
                await asyncio.sleep(0.5)
                sids += await connect_all(
                    srv, creds, app_id, callback, target, BURST, AT_ONCE + burst * BURST
                )

            async def all_completed() -> bool:
                return {c.status for c in await calls_of(db, sids)} == {"completed"}

            await eventually(all_completed, "every call to complete", srv, 120)
            sampling = False
            await sampler
            expected = {f"{sid}:terminal" for sid in sids}

            async def callbacks_in() -> bool:
                return set(accepted(rec)) >= expected

            await eventually(callbacks_in, "every call's callback", srv, 30)
            _, err = await asyncio.wait_for(phone.communicate(), 30)
            assert phone.returncode == 0, err.decode()
            await srv.terminate()

        assert 0 < most_seen <= LIMIT, f"{most_seen} calls in progress at once (database)"
        calls = sorted(await calls_of(db, sids), key=lambda c: c.id)
        assert len(calls) == total
        spans = [(c.start_time.timestamp(), c.end_time.timestamp()) for c in calls]
        assert most_at_once(spans) <= LIMIT, "more calls in progress at once than the limit"
        starts = [c.start_time for c in calls]
        assert starts == sorted(starts), "a queued call started ahead of an older one"
        async with db.session() as session:
            dialed = collections.Counter(
                (
                    await session.execute(
                        select(Call.sid)
                        .join(CallEvent, CallEvent.call_id == Call.id)
                        .where(Call.sid.in_(sids), CallEvent.kind == "status")
                        .where(CallEvent.data["call"].as_string() == "ringing")
                    )
                ).scalars()
            )
        assert dialed == collections.Counter(dict.fromkeys(sids, 1)), "a call started twice"
        wire, dialogs = sipp_spans(next(tmp_path.glob("*_messages.log")).read_text())
        assert len(wire) == total
        assert most_at_once(wire) <= LIMIT, "SIPp saw more calls at once than the limit"
        assert {sid: len(d) for sid, d in dialogs.items()} == dict.fromkeys(sids, 1)
        assert accepted(rec) == collections.Counter(dict.fromkeys(expected, 1))
    finally:
        if phone.returncode is None:
            phone.kill()
        await db.close()


async def test_a_killed_servers_lines_return_when_its_lease_lapses(
    empty_pg: str, tmp_path: Path
) -> None:
    lease = 3.0
    base = f"lease-{uuid.uuid4().hex[:8]}"
    common = {
        "RINGFLOW_REDIS_URL": REDIS_URL,
        "RINGFLOW_MAX_CONCURRENT_CALLS": "2",
        "RINGFLOW_INSTANCE_LEASE": str(lease),
    }
    env_a = server_env(empty_pg, f"{base}-a", **common)
    env_b = server_env(empty_pg, f"{base}-b", **common)
    creds, app_id = await account_with_app(env_a, tmp_path, LONG_FLOW, EXOPHONE)
    url = f"http://my.exotel.com/exoml/start/{app_id}"
    db = Database(empty_pg)
    try:
        async with server(env_a, tmp_path / "a.log") as a, server(env_b, tmp_path / "b.log") as b:
            await a.start()
            await b.start()
            async with httpx.AsyncClient(timeout=10) as http:
                carried = [
                    (await Client(http, a, creds).connect(From=f"098123456{n}0", Url=url))["Sid"]
                    for n in range(2)
                ]
                waiting = [
                    (await Client(http, b, creds).connect(From=f"098123456{n}1", Url=url))["Sid"]
                    for n in range(2)
                ]

            async def talking() -> bool:
                return {c.status for c in await calls_of(db, carried)} == {"in-progress"}

            await eventually(talking, "server A's calls to be answered", a)
            assert {c.status for c in await calls_of(db, waiting)} == {"queued"}
            assert a.proc is not None
            os.kill(a.proc.pid, signal.SIGKILL)
            killed = time.monotonic()

            async def handed_over() -> bool:
                return {c.status for c in await calls_of(db, waiting)} == {"in-progress"}

            await eventually(handed_over, "the queued calls to start on server B", b, 20)
            # Noticed within the lease and one heartbeat (a quarter of it), plus the answer.
            assert time.monotonic() - killed < lease * 1.25 + 2
            finished = await calls_of(db, carried)
            assert {c.status for c in finished} == {"completed"}
            assert {c.reason for c in finished} == {
                f"ringflow instance {base}-a stopped while carrying the call"
            }
            assert {c.owner for c in await calls_of(db, waiting)} == {f"{base}-b"}
            await b.terminate()
    finally:
        await db.close()


def test_spans_count_an_end_before_a_start_at_the_same_moment() -> None:
    t = dt.datetime(2026, 1, 1).timestamp()
    assert most_at_once([(t, t + 1), (t + 1, t + 2)]) == 1
    assert most_at_once([(t, t + 2), (t + 1, t + 3), (t + 1.5, t + 1.6)]) == 3
