"""An acknowledged callback is never sent again: its 2xx is recorded even when the deliverer is
stopped while the database is slow to take the record.

Real parts: a receiver on loopback that answers 2xx while another transaction holds the row
(as a busy database does), and a deliverer restarted under the same instance name, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ringflow.clock import ManualClock
from ringflow.config import Settings
from ringflow.storage.db import Database
from ringflow.storage.models import Account, OutboxMessage
from ringflow.webhooks.deliverer import Deliverer
from ringflow.webhooks.http import OutboundHttp
from ringflow.webhooks.outbox import JSON, enqueue
from tests.support import serve

pytestmark = pytest.mark.timeout(60)

KEY = "call-1:terminal"


class SlowRecordReceiver:
    """Answers 200, but first starts a transaction that holds the callback's row."""

    def __init__(self, db: Database):
        self.db = db
        self.keys: list[str] = []
        self.answered = asyncio.Event()
        self.locked = asyncio.Event()
        self.unlock = asyncio.Event()
        self.holder: asyncio.Task[None] | None = None
        self.app = Starlette(routes=[Route("/status", self.handle, methods=["POST"])])

    async def hold(self) -> None:
        async with self.db.session() as s:
            # PostgreSQL: the row lock blocks the deliverer's UPDATE. SQLite: this transaction
            # holds the process's one connection, which the deliverer's record waits for.
            row = select(OutboxMessage.id).where(OutboxMessage.idempotency_key == KEY)
            await s.execute(row.with_for_update())
            self.locked.set()
            await self.unlock.wait()

    async def handle(self, request: Request) -> Response:
        self.keys.append(request.headers["idempotency-key"])
        if self.holder is None:
            self.holder = asyncio.create_task(self.hold())
            await self.locked.wait()
        self.answered.set()
        return Response(status_code=200)


@contextlib.asynccontextmanager
async def receiver(db: Database) -> AsyncIterator[tuple[SlowRecordReceiver, str]]:
    rec = SlowRecordReceiver(db)
    async with serve(rec.app, lifespan="off") as url:
        try:
            yield rec, f"{url}/status"
        finally:
            rec.unlock.set()
            if rec.holder is not None:
                await asyncio.gather(rec.holder, return_exceptions=True)


def settings() -> Settings:
    return Settings(allow_private_urls=True, callback_timeout=5.0, instance="node-a")


async def test_a_stop_out_of_grace_still_records_the_answers_already_in(db: Database) -> None:
    clock = ManualClock()
    async with receiver(db) as (rec, url):
        async with db.session() as s:
            account = Account(sid="acme", name="Acme", created_at=clock.wall())
            s.add(account)
            await s.flush()
            await enqueue(
                s, account_id=account.id, call_id=None, event="terminal", url=url,
                content_type=JSON, payload={"CallSid": "call-1"}, idempotency_key=KEY,
                now=clock.wall(),
            )  # fmt: skip
        http = OutboundHttp(settings(), clock)
        first = Deliverer(db, clock, http, settings(), jitter=0)
        first.start()
        await asyncio.wait_for(rec.answered.wait(), 10)
        await asyncio.sleep(0.2)  # the 2xx reaches the deliverer, whose record now waits
        # The stop runs out of grace while the record waits for the database.
        stopping = asyncio.create_task(first.stop(grace=0.3))
        started = time.monotonic()
        while not stopping.done() and time.monotonic() - started < 1.0:
            await asyncio.sleep(0.05)
        rec.unlock.set()
        await asyncio.wait_for(stopping, 15)
        await http.aclose()

        async with db.session() as s:
            row = (await s.execute(select(OutboxMessage))).scalar_one()
        assert (row.state, row.attempts, row.lease_until) == ("delivered", 1, None)

        # A restart under the same name takes back whatever it held: nothing, here.
        http = OutboundHttp(settings(), clock)
        try:
            second = Deliverer(db, clock, http, settings(), jitter=0)
            second.start()
            await asyncio.sleep(0.3)
            await clock.advance(3600)
            await second.stop()
        finally:
            await http.aclose()
    assert rec.keys == [KEY], "an acknowledged callback was sent again"


async def test_a_2xx_whose_body_stalls_is_an_acknowledgement(db: Database) -> None:
    """The status line is the answer: a receiver that sends 200 and then stalls its body has
    acknowledged, and is not sent the callback again after the timeout."""
    from tests.conftest import free_port

    clock = ManualClock()
    seen: list[bytes] = []
    release = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok")  # 98 bytes short
        await writer.drain()
        await release.wait()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(stall, "127.0.0.1", port)
    try:
        async with db.session() as s:
            account = Account(sid="acme", name="Acme", created_at=clock.wall())
            s.add(account)
            await s.flush()
            await enqueue(
                s, account_id=account.id, call_id=None, event="terminal",
                url=f"http://127.0.0.1:{port}/status", content_type=JSON,
                payload={"CallSid": "call-1"}, idempotency_key=KEY, now=clock.wall(),
            )  # fmt: skip
        http = OutboundHttp(settings(), clock)
        deliverer = Deliverer(db, clock, http, settings(), jitter=0)
        deliverer.start()
        try:
            started = time.monotonic()
            state = None
            while time.monotonic() - started < 4.0:  # below the 5 s callback timeout
                async with db.session() as s:
                    state = (await s.execute(select(OutboxMessage.state))).scalar_one()
                if state == "delivered":
                    break
                await asyncio.sleep(0.05)
            assert state == "delivered"
            await clock.advance(3600)
            await asyncio.sleep(0.2)
        finally:
            release.set()
            await deliverer.stop()
            await http.aclose()
    finally:
        server.close()
    assert len(seen) == 1, "an acknowledged callback was sent again"
