"""Outbox and deliverer against every database backend and a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from conftest import free_port
from sqlalchemy import event, func, insert, select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ringflow.clock import ManualClock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest
from ringflow.storage.db import Database
from ringflow.storage.models import Account, OutboxAttempt, OutboxMessage
from ringflow.storage.outbox import Claimed, Rooms, claim, claim_statement
from ringflow.webhooks.deliverer import Deliverer, retry_delay
from ringflow.webhooks.destinations import destination_of
from ringflow.webhooks.http import OutboundHttp, validate_url
from ringflow.webhooks.outbox import FORM, JSON, encode, enqueue, form_fields

TIMEOUT = 0.5  # real seconds the receiver has to answer; "hang" outlasts it

PAYLOAD: dict[str, Any] = {
    "CallSid": "b6cfaf5b1f0f1e3e2c0e",
    "EventType": "terminal",
    "Status": "completed",
    "RecordingUrl": None,
    "ConversationDuration": 42,
    "CustomField": "order-7 ₹",
    "Legs": [
        {"OnCallDuration": 50, "Status": "completed", "AnsweredBy": "human"},
        {"OnCallDuration": None, "Status": "", "AnsweredBy": None},
    ],
}
FORM_FIELDS = [
    ("CallSid", "b6cfaf5b1f0f1e3e2c0e"),
    ("EventType", "terminal"),
    ("Status", "completed"),
    ("RecordingUrl", ""),
    ("ConversationDuration", "42"),
    ("CustomField", "order-7 ₹"),
    ("Legs[0][OnCallDuration]", "50"),
    ("Legs[0][Status]", "completed"),
    ("Legs[0][AnsweredBy]", "human"),
    ("Legs[1][OnCallDuration]", ""),
    ("Legs[1][Status]", ""),
    ("Legs[1][AnsweredBy]", ""),
]


@dataclasses.dataclass
class Received:
    headers: dict[str, str]
    body: Any
    answer: int | str = 200


class Receiver:
    """A customer's webhook endpoint: records every request, answers from a script."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        # Status codes, "hang" (until ``release``) or "hold" (200 once ``held`` is set); then 200.
        self.script: list[int | str] = []
        self.release = asyncio.Event()
        self.held: list[asyncio.Event] = []
        self.url = ""
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            body: Any = list((await request.form()).multi_items())
        else:
            body = json.loads(await request.body())
        answer = self.script.pop(0) if self.script else 200
        self.requests.append(Received(dict(request.headers), body, answer))
        if answer == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
            return Response(status_code=200)
        if answer == "hold":
            held = asyncio.Event()
            self.held.append(held)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(held.wait(), 30)
            return Response(status_code=200)
        return Response(status_code=int(answer))

    def keys(self) -> collections.Counter[str]:
        return collections.Counter(r.headers["idempotency-key"] for r in self.requests)


@contextlib.asynccontextmanager
async def serving_receiver() -> AsyncIterator[Receiver]:
    """A Receiver answering on a free loopback port."""
    rec = Receiver()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(rec.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "receiver did not start"
    rec.url = f"http://127.0.0.1:{port}/hooks/status?secret=s3"
    try:
        yield rec
    finally:
        rec.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving_receiver() as rec:
        yield rec


def settings(**kw: Any) -> Settings:
    values: dict[str, Any] = {
        "allow_private_urls": True,
        "callback_timeout": TIMEOUT,
        "callback_max_attempts": 5,
    }
    values.update(kw)
    return Settings(**values)


@contextlib.asynccontextmanager
async def deliverer(
    db: Database, clock: ManualClock, cfg: Settings | None = None, **kw: Any
) -> AsyncIterator[Deliverer]:
    cfg = cfg or settings()
    http = OutboundHttp(cfg, clock)
    d = Deliverer(db, clock, http, cfg, jitter=0, **kw)
    try:
        yield d
    finally:
        await d.stop()
        await http.aclose()


async def make_account(db: Database, clock: ManualClock) -> int:
    async with db.session() as s:
        account = Account(sid="acme", name="Acme", created_at=clock.wall())
        s.add(account)
        await s.flush()
        return account.id


async def add(
    db: Database,
    clock: ManualClock,
    account_id: int,
    url: str,
    key: str,
    content_type: str = FORM,
) -> int:
    async with db.session() as s:
        message = await enqueue(
            s,
            account_id=account_id,
            call_id=None,
            event="terminal",
            url=url,
            content_type=content_type,
            payload=PAYLOAD,
            idempotency_key=key,
            now=clock.wall(),
        )
        return message.id


async def load(db: Database, message_id: int) -> OutboxMessage:
    async with db.session() as s:
        return await s.get_one(OutboxMessage, message_id)


async def attempts_of(db: Database, message_id: int) -> list[OutboxAttempt]:
    async with db.session() as s:
        stmt = select(OutboxAttempt).where(OutboxAttempt.message_id == message_id)
        return list(await s.scalars(stmt.order_by(OutboxAttempt.id)))


async def count(db: Database, state: str) -> int:
    async with db.session() as s:
        stmt = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == state)
        return await s.scalar(stmt) or 0


def state_is(db: Database, message_id: int, state: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return (await load(db, message_id)).state == state

    return check


# Encoding (pure)


def test_form_fields_flatten_legs_to_bracket_keys() -> None:
    assert form_fields(PAYLOAD) == FORM_FIELDS


def test_json_keeps_legs_a_list() -> None:
    body, content_type = encode(PAYLOAD, JSON)
    assert content_type == "application/json"
    assert json.loads(body) == PAYLOAD


def test_nested_values_outside_legs_are_refused() -> None:
    with pytest.raises(TypeError):
        encode({"CallSid": "x", "Extra": {"a": 1}}, FORM)


def test_backoff_doubles_from_five_seconds_to_ten_minutes() -> None:
    assert [retry_delay(n) for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 320, 600, 600]


# URL validation (pure)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/cb",
        "file:///etc/passwd",
        "example.com/cb",
        "",
        "http:///cb",
        "http://exa mple.com/cb",
        "http://example.com\\@evil.test/",
    ],
)
def test_validate_url_refuses_non_http(url: str) -> None:
    with pytest.raises(InvalidRequest, match="StatusCallback"):
        validate_url(url, allow_private=True)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8080/cb", "127.0.0.1"),
        ("http://127.1/cb", "127.0.0.1"),
        ("http://2130706433/cb", "127.0.0.1"),
        ("http://10.1.2.3/cb", "10.1.2.3"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://100.64.0.1/cb", "100.64.0.1"),
        ("http://0.0.0.0/cb", "0.0.0.0"),
        ("http://224.0.0.1/cb", "224.0.0.1"),
        ("http://[::1]/cb", "::1"),
        ("http://[fe80::1]/cb", "fe80::1"),
        ("http://[fc00::5]/cb", "fc00::5"),
        ("http://[::ffff:10.0.0.1]/cb", "10.0.0.1"),
        ("http://localhost:9000/cb", "localhost"),
        ("http://hooks.localhost/cb", "hooks.localhost"),
    ],
)
def test_validate_url_refuses_private_addresses(url: str, shown: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_url(url, allow_private=False)
    assert str(info.value) == (
        f"StatusCallback points to a private address ({shown}); "
        "set RINGFLOW_ALLOW_PRIVATE_URLS=1 to allow it"
    )
    assert validate_url(url, allow_private=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/status?secret=abc",
        "https://user:pw@hooks.example.com/status",
        "http://93.184.216.34:8080/cb",
        "http://[2606:4700::1111]/cb",
    ],
)
def test_validate_url_accepts_public_urls(url: str) -> None:
    assert validate_url(f"  {url} ", allow_private=False) == url


# Delivery


async def test_multipart_body_has_exactly_the_fields(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    mid = await add(db, clock, account, receiver.url, "call-1:terminal")
    async with deliverer(db, clock) as d:
        assert await d.deliver_due() == 1
    [request] = receiver.requests
    assert request.body == FORM_FIELDS
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.headers["idempotency-key"] == "call-1:terminal"
    assert request.headers["x-ringflow-event"] == "terminal"
    assert request.headers["user-agent"].startswith("ringflow/")
    message = await load(db, mid)
    assert (message.state, message.attempts, message.lease_until) == ("delivered", 1, None)
    assert message.delivered_at == clock.wall()
    [attempt] = await attempts_of(db, mid)
    assert (attempt.status_code, attempt.error) == (200, None)
    assert attempt.latency_ms >= 0


async def test_json_body(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    await add(db, clock, account, receiver.url, "call-1:terminal", content_type=JSON)
    async with deliverer(db, clock) as d:
        assert await d.deliver_due() == 1
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/json"
    assert request.body == PAYLOAD


async def test_retries_until_2xx_then_never_again(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    receiver.script = [500, "hang"]
    start = clock.wall()
    mid = await add(db, clock, account, receiver.url, "call-1:terminal")
    async with deliverer(db, clock) as d:
        d.start()
        await clock.run_until(state_is(db, mid, "delivered"))
        tries = await attempts_of(db, mid)
        assert [a.status_code for a in tries] == [500, None, 200]
        assert tries[1].error == f"no answer within {TIMEOUT:g}s"
        assert tries[1].latency_ms >= TIMEOUT * 1000 * 0.9
        # Backoff without jitter: 5 s after the first failure, 10 s after the second.
        assert [a.at - start for a in tries] == [
            dt.timedelta(0),
            dt.timedelta(seconds=5),
            dt.timedelta(seconds=15),
        ]
        await clock.advance(7 * 86400)
        assert await d.deliver_due() == 0
    assert [r.answer for r in receiver.requests] == [500, "hang", 200]
    message = await load(db, mid)
    assert (message.state, message.attempts) == ("delivered", 3)
    assert message.delivered_at == start + dt.timedelta(seconds=15)


async def test_max_attempts_then_failed(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    receiver.script = [503] * 10
    mid = await add(db, clock, account, receiver.url, "call-1:terminal")
    async with deliverer(db, clock, settings(callback_max_attempts=3)) as d:
        d.start()
        await clock.run_until(state_is(db, mid, "failed"))
        await clock.advance(86400)
        assert await d.deliver_due() == 0
    message = await load(db, mid)
    assert (message.attempts, message.last_error, message.lease_until) == (3, "HTTP 503", None)
    assert len(receiver.requests) == 3


async def test_connection_refused_is_retried(db, clock) -> None:
    account = await make_account(db, clock)
    mid = await add(db, clock, account, f"http://127.0.0.1:{free_port()}/cb", "k1")
    async with deliverer(db, clock) as d:
        assert await d.deliver_due() == 1
    message = await load(db, mid)
    assert message.state == "pending"
    assert message.next_attempt_at == clock.wall() + dt.timedelta(seconds=5)
    assert message.last_error is not None and "ConnectError" in message.last_error
    [attempt] = await attempts_of(db, mid)
    assert attempt.status_code is None and attempt.error == message.last_error


async def test_private_url_refused_at_send_time(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    mid = await add(db, clock, account, receiver.url, "call-1:terminal")
    async with deliverer(db, clock, settings(allow_private_urls=False)) as d:
        assert await d.deliver_due() == 1
        await clock.advance(86400)
        assert await d.deliver_due() == 0
    assert receiver.requests == []
    message = await load(db, mid)
    assert (message.state, message.attempts) == ("failed", 1)
    assert message.last_error == (
        "StatusCallback points to a private address (127.0.0.1); "
        "set RINGFLOW_ALLOW_PRIVATE_URLS=1 to allow it"
    )


async def test_resolved_addresses_are_checked_and_used(clock, receiver) -> None:
    """A public-looking name that resolves to loopback is refused, and the check is the connect."""
    port = int(receiver.url.split(":")[2].split("/")[0])

    async def resolver(host: str, _port: int) -> list[str]:
        assert host == "hooks.example.com"
        return ["127.0.0.1"]

    url = f"http://hooks.example.com:{port}/cb"
    async with OutboundHttp(settings(allow_private_urls=False), clock, resolver=resolver) as http:
        with pytest.raises(InvalidRequest, match=r"private address \(127\.0\.0\.1\)"):
            await http.post(url, content=b"{}", headers={}, field="StatusCallback")
    async with OutboundHttp(settings(), clock, resolver=resolver) as http:
        result = await http.post(url, content=b"{}", headers={"Content-Type": JSON})
    assert result.status_code == 200
    assert receiver.requests[0].headers["host"] == f"hooks.example.com:{port}"


async def test_wake_delivers_without_the_clock_moving(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    async with deliverer(db, clock) as d:
        d.start()
        await asyncio.sleep(0.05)
        mid = await add(db, clock, account, receiver.url, "call-1:terminal")
        d.wake()
        for _ in range(500):
            if await state_is(db, mid, "delivered")():
                break
            await asyncio.sleep(0.01)
    assert (await load(db, mid)).state == "delivered"
    assert clock.now() == 0


async def test_restart_resumes_pending_and_abandoned_rows(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    receiver.script = [500]
    failed_once = await add(db, clock, account, receiver.url, "a")
    async with deliverer(db, clock) as first:
        assert await first.deliver_due() == 1
    never_tried = await add(db, clock, account, receiver.url, "b")
    abandoned = await add(db, clock, account, receiver.url, "c")
    lease = clock.wall() + dt.timedelta(seconds=90)
    async with db.session() as s:  # a process died holding this one
        await s.execute(
            update(OutboxMessage).where(OutboxMessage.id == abandoned).values(lease_until=lease)
        )

    db2 = Database(db.url)
    try:
        async with deliverer(db2, clock) as second:
            second.start()
            for mid in (failed_once, never_tried, abandoned):
                await clock.run_until(state_is(db2, mid, "delivered"))
            await clock.advance(86400)
    finally:
        await db2.close()
    assert receiver.keys() == {"a": 2, "b": 1, "c": 1}
    assert (await load(db, abandoned)).delivered_at >= lease


async def test_a_restart_under_the_same_name_takes_back_its_leases_at_once(
    db, clock, receiver
) -> None:
    account = await make_account(db, clock)
    mine = await add(db, clock, account, receiver.url, "mine")
    theirs = await add(db, clock, account, receiver.url, "theirs")
    lease = clock.wall() + dt.timedelta(seconds=90)
    async with db.session() as s:  # both were being sent when their processes died
        for mid, owner in ((mine, "node-a"), (theirs, "node-b")):
            await s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == mid)
                .values(lease_until=lease, lease_owner=owner)
            )
    async with deliverer(db, clock, settings(instance="node-a")) as restarted:
        restarted.start()
        await clock.run_until(state_is(db, mine, "delivered"), limit=1)
        assert (await load(db, theirs)).state == "pending"  # another node's lease is honoured
        await clock.run_until(state_is(db, theirs, "delivered"))
    assert (await load(db, mine)).delivered_at < lease <= (await load(db, theirs)).delivered_at


async def test_two_deliverers_never_deliver_one_message_twice(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    n = 40
    for i in range(n):
        await add(db, clock, account, receiver.url, f"call-{i}:terminal")
    db2 = Database(db.url)
    try:
        # Nothing hangs here: a roomy timeout keeps a slow moment of the machine from passing
        # for a receiver that did not answer.
        roomy = settings(callback_timeout=10.0)
        async with (
            deliverer(db, clock, roomy, batch_size=3) as d1,
            deliverer(db2, clock, roomy, batch_size=3) as d2,
        ):
            done = await asyncio.gather(d1.deliver_due(), d2.deliver_due())
            assert sum(done) == n
            assert await d1.deliver_due() + await d2.deliver_due() == 0
    finally:
        await db2.close()
    assert await count(db, "delivered") == n
    assert len(receiver.keys()) == n and set(receiver.keys().values()) == {1}
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(OutboxAttempt)) == n


async def test_two_running_deliverers_share_the_work(db, clock, receiver) -> None:
    account = await make_account(db, clock)
    n = 30
    receiver.script = [500] * 10  # some rows retry, so both loops keep claiming over time
    db2 = Database(db.url)
    try:
        async with (
            deliverer(db, clock, batch_size=4) as d1,
            deliverer(db2, clock, batch_size=4) as d2,
        ):
            d1.start()
            d2.start()
            for i in range(n):
                await add(db, clock, account, receiver.url, f"k{i}")
            d1.wake()
            d2.wake()

            async def all_delivered() -> bool:
                return await count(db, "delivered") == n

            await clock.run_until(all_delivered)
            await clock.advance(3600)
    finally:
        await db2.close()
    successes = collections.Counter(
        r.headers["idempotency-key"] for r in receiver.requests if r.answer == 200
    )
    assert len(successes) == n and set(successes.values()) == {1}
    assert len(receiver.requests) == n + 10


async def test_stop_sends_what_is_due_beyond_one_destinations_room(db, clock, receiver) -> None:
    """Callbacks of calls ended by a shutdown go out before it, a few at a time per receiver."""
    account = await make_account(db, clock)
    cfg = settings(callback_destination_concurrency=2, callback_timeout=5.0)
    async with deliverer(db, clock, cfg) as d:
        d.start()
        await asyncio.sleep(0.05)
        for i in range(10):  # enqueued on the way down: no wake
            await add(db, clock, account, receiver.url, f"k{i}")
        await d.stop()
    assert await count(db, "delivered") == 10
    assert set(receiver.keys().values()) == {1}


# Claims: fair per destination and account, and bounded in work however long the backlog


async def add_many(db: Database, clock: ManualClock, rows: list[tuple[int, str]]) -> None:
    """Enqueue one due row per (account, url), in one transaction."""
    now = clock.wall()
    async with db.session() as s:
        await s.execute(
            insert(OutboxMessage),
            [
                {
                    "account_id": account_id,
                    "event": "terminal",
                    "url": url,
                    "destination": destination_of(url),
                    "content_type": JSON,
                    "payload": {"CallSid": f"c{i}"},
                    "idempotency_key": f"bulk-{uuid.uuid4().hex}",
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for i, (account_id, url) in enumerate(rows)
            ],
        )


async def make_accounts(db: Database, clock: ManualClock, n: int) -> list[int]:
    async with db.session() as s:
        accounts = [Account(sid=f"ac{i}", name=f"ac{i}", created_at=clock.wall()) for i in range(n)]
        s.add_all(accounts)
        await s.flush()
        return [a.id for a in accounts]


async def claim_now(db: Database, clock: ManualClock, limit: int, rooms: Rooms) -> list[Claimed]:
    now = clock.wall()
    async with db.session() as s:
        return await claim(
            s, owner="w", now=now, lease_until=now + dt.timedelta(seconds=60), limit=limit,
            rooms=rooms,
        )  # fmt: skip


async def test_a_claim_takes_each_account_only_up_to_its_room(db, clock) -> None:
    a, b = await make_accounts(db, clock, 2)
    # A's backlog, oldest first, spread over eight receivers; then one row of B's.
    await add_many(db, clock, [(a, f"http://pit.test:{8000 + i % 8}/cb") for i in range(40)])
    await add_many(db, clock, [(b, "http://b.test/cb")])
    rooms = Rooms(per_destination=4, per_account=5, accounts={a: 3})
    taken = await claim_now(db, clock, 20, rooms)
    assert sorted(c.account_id for c in taken) == [a, a, a, b]
    assert len({c.destination for c in taken if c.account_id == a}) == 3
    # An account with no room is skipped, whatever its backlog.
    taken = await claim_now(db, clock, 20, Rooms(per_destination=4, per_account=5, accounts={a: 0}))
    assert taken == []
    taken = await claim_now(db, clock, 20, Rooms(per_destination=4, per_account=5))
    assert [c.account_id for c in taken] == [a] * 5


async def claim_work(db: Database, clock: ManualClock) -> int:
    """Work of one claim of 8 rows: rows passed between the nodes of PostgreSQL's plan, or
    SQLite's VM steps / 100."""
    now = clock.wall()
    stmt = claim_statement(
        owner="w", now=now, lease_until=now + dt.timedelta(seconds=60), limit=8,
        rooms=Rooms(per_destination=4, per_account=16),
    )  # fmt: skip
    async with db.engine.connect() as conn:
        await conn.begin()
        if db.is_sqlite:
            steps = 0

            def tick() -> int:
                nonlocal steps
                steps += 1
                return 0  # go on

            driver = (await conn.get_raw_connection()).driver_connection
            await driver.set_progress_handler(tick, 100)
            await conn.execute(stmt)
            await driver.set_progress_handler(None, 100)
            await conn.rollback()
            return steps
        seen: list[tuple[str, Any]] = []
        event.listen(
            conn.sync_connection,
            "before_cursor_execute",
            lambda _c, _cur, statement, params, _ctx, _many: seen.append((statement, params)),
        )
        await conn.execute(stmt)
        statement, params = seen[-1]
        plan = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params)
        found = plan.scalar_one()
        found = json.loads(found) if isinstance(found, str) else found
        nodes = list(_plan_nodes(found[0]["Plan"]))
        await conn.rollback()
        return sum(n["Actual Rows"] * n["Actual Loops"] for n in nodes)


def _plan_nodes(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


async def test_a_claim_ranks_only_the_oldest_due_rows_however_long_the_backlog(db, clock) -> None:
    """A claim runs whenever slots free up; with thousands of rows due it must not sort them
    all (SQLite has one writer, and every claim holds it)."""
    [a] = await make_accounts(db, clock, 1)
    await add_many(db, clock, [(a, f"http://r.test:{9000 + i % 50}/cb") for i in range(100)])
    small = await claim_work(db, clock)
    await add_many(db, clock, [(a, f"http://r.test:{9000 + i % 50}/cb") for i in range(4000)])
    large = await claim_work(db, clock)
    assert large <= 3 * max(small, 1), f"a claim's work grew from {small} to {large}"


async def test_slots_freed_together_are_claimed_together(db, clock, receiver) -> None:
    """Sends that finish a few milliseconds apart share a claim, not one claim each."""
    account = await make_account(db, clock)
    receiver.script = ["hold"] * 8
    for i in range(8):
        await add(db, clock, account, receiver.url, f"k{i}")
    claims = 0

    def tally(_c, _cur, statement: str, *_: Any) -> None:  # type: ignore[no-untyped-def]
        nonlocal claims
        claims += "row_number()" in statement

    cfg = settings(
        callback_timeout=10.0,
        callback_concurrency=8,
        callback_destination_concurrency=8,
        callback_account_concurrency=8,
    )
    event.listen(db.engine.sync_engine, "before_cursor_execute", tally)
    try:
        async with deliverer(db, clock, cfg) as d:
            d.start()
            await clock.run_until(lambda: len(receiver.held) == 8, real_timeout=10)
            claims = 0
            for held in receiver.held:  # the answers go out a few milliseconds apart
                held.set()
                await asyncio.sleep(0.008)

            async def all_delivered() -> bool:
                return await count(db, "delivered") == 8

            await clock.run_until(all_delivered, real_timeout=20)
            await asyncio.sleep(0.2)  # the claims the last sends lead to
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", tally)
    assert claims <= 4, f"{claims} claims for 8 finished sends"
