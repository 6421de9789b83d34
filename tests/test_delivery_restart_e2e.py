"""kill -9 mid-delivery resends only the callbacks that were in flight, never an acknowledged one.

``ringflow serve`` as a subprocess (SQLite and PostgreSQL) delivers queued callbacks to a real
receiver that answers 2xx to most and holds every fifth open. The server is killed with SIGKILL
while those are held, then started again under the same ``RINGFLOW_INSTANCE``: every callback
answered 2xx before the kill was received once, and the held ones are sent again and delivered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from ringflow.accounts import Accounts
from ringflow.clock import make_clock
from ringflow.storage.db import Database
from ringflow.storage.models import Account, OutboxMessage
from ringflow.webhooks.outbox import JSON, enqueue
from tests.conftest import free_port
from tests.processes import server_env
from tests.test_restart_e2e import eventually, server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CALLBACKS = 30
HELD = {f"cb-{i}" for i in range(0, CALLBACKS, 5)}


class Receiver:
    """Counts requests by Idempotency-Key; answers 200 once the answer is written, or holds."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.answered: set[str] = set()  # 2xx fully written to the socket
        self.holding: set[str] = set()
        self.hold = set(HELD)
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = ""
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            headers = {
                name.lower(): value
                for name, value in (line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
            }
            await reader.readexactly(int(headers.get("content-length", "0")))
            key = headers["idempotency-key"]
            self.requests[key] += 1
            if key in self.hold:
                self.holding.add(key)
                await reader.read()  # until the client goes away
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            self.answered.add(key)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.holding.discard(key)
            writer.close()


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    port = free_port()
    srv = await asyncio.start_server(rec.handle, "127.0.0.1", port)
    rec.url = f"http://127.0.0.1:{port}/status"
    try:
        yield rec
    finally:
        srv.close()


async def states(db: Database) -> dict[str, str]:
    async with db.session() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
    return {row.idempotency_key: row.state for row in rows}


async def test_kill_mid_delivery_resends_only_what_was_in_flight(
    database_url: str, tmp_path: Path
) -> None:
    instance = f"acks-{uuid.uuid4().hex[:8]}"
    env = server_env(
        database_url,
        instance,
        RINGFLOW_CALLBACK_TIMEOUT="30",  # the held requests are still in flight at the kill
        RINGFLOW_CALLBACK_DESTINATION_CONCURRENCY="8",
    )
    db = Database(database_url)
    clock = make_clock()
    try:
        made = await Accounts(db, clock).create_account("Acks Test")
        async with receiver() as rec, server(env, tmp_path / "server.log") as srv:
            async with db.session() as session:
                account_id = (
                    await session.execute(select(Account.id).where(Account.sid == made.account_sid))
                ).scalar_one()
                for i in range(CALLBACKS):
                    await enqueue(
                        session, account_id=account_id, call_id=None, event="terminal",
                        url=rec.url, content_type=JSON, payload={"CallSid": f"cb-{i}"},
                        idempotency_key=f"cb-{i}", now=clock.wall(),
                    )  # fmt: skip
            await srv.start()

            async def mid_delivery() -> bool:
                return len(rec.answered) == CALLBACKS - len(HELD) and rec.holding == HELD

            await eventually(mid_delivery, "2xx to most callbacks, the rest held", srv)
            await asyncio.sleep(0.5)  # the answers reach the server
            answered_before = set(rec.answered)
            await srv.kill()

            rec.hold.clear()  # the receiver answers everything from now on
            await srv.start()

            async def all_delivered() -> bool:
                return set((await states(db)).values()) == {"delivered"}

            await eventually(all_delivered, "every callback delivered", srv, timeout=30)
            await asyncio.sleep(0.5)  # a duplicate would show up now
            resent = {key for key in answered_before if rec.requests[key] > 1}
            assert not resent, f"acknowledged callbacks sent again: {sorted(resent)}"
            assert {key: rec.requests[key] for key in HELD} == dict.fromkeys(HELD, 2)
            assert rec.answered == {f"cb-{i}" for i in range(CALLBACKS)}
            await srv.terminate()
    finally:
        await db.close()
