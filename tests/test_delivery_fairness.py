"""One receiver's slowness delays no one else's callbacks, and a dead receiver is backed off.

Real sockets on loopback: a tarpit (accepts TCP, reads the request, never answers) for one
account, on one port or many, a normal receiver for another, on SQLite and PostgreSQL. The
bookkeeping of destinations, accounts and circuits is tested on its own first, with time passed
in. Bounds on a callback's delay sit at half the callback timeout: far above what a fair
deliverer needs on a loaded machine, far below what waiting behind the tarpit costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import free_port
from sqlalchemy import select

from ringflow.clock import ManualClock
from ringflow.config import Settings
from ringflow.errors import ConfigError
from ringflow.storage.db import Database
from ringflow.storage.models import Account, OutboxMessage
from ringflow.webhooks.deliverer import Deliverer
from ringflow.webhooks.destinations import Change, Destinations, destination_of
from ringflow.webhooks.http import OutboundHttp
from ringflow.webhooks.outbox import JSON, enqueue
from tests.support import recorder

pytestmark = pytest.mark.timeout(90)

T0 = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# Destinations and circuits (pure)


@pytest.mark.parametrize(
    ("url", "destination"),
    [
        ("http://Hooks.Example.com/a?x=1", "http://hooks.example.com:80"),
        ("https://hooks.example.com/a", "https://hooks.example.com:443"),
        ("https://user:pw@hooks.example.com:8443/a", "https://hooks.example.com:8443"),
        ("http://[2606:4700::1111]:81/cb", "http://[2606:4700::1111]:81"),
        ("not a url", ""),
    ],
)
def test_a_destination_is_scheme_host_and_port(url: str, destination: str) -> None:
    assert destination_of(url) == destination


def test_each_destination_has_its_own_room() -> None:
    d = Destinations(per_destination=2, failures=3, cooldown=10, cooldown_cap=600)
    d.started("a", at(0))
    assert d.limited(at(0)) == {"a": 1}
    d.started("a", at(0))
    assert (d.room("a", at(0)), d.room("b", at(0))) == (0, 2)
    assert d.finished("a", reached=True, now=at(1)) is None
    assert d.limited(at(1)) == {"a": 1} and d.total_in_flight == 1


def test_each_account_has_its_own_room_across_destinations() -> None:
    d = Destinations(per_destination=4, failures=3, cooldown=10, cooldown_cap=600, per_account=3)
    for port in (1, 2, 3):
        d.started(f"http://pit:{port}", at(0), account=7)
    d.started("http://ok:80", at(0), account=8)
    assert d.limited_accounts() == {7: 0, 8: 2}
    assert d.room("http://pit:4", at(0)) == 4  # a destination's room is its own
    d.finished("http://pit:2", reached=False, now=at(1), account=7)
    d.finished("http://ok:80", reached=True, now=at(1), account=8)
    assert d.limited_accounts() == {7: 1}
    uncapped = Destinations(per_destination=4, failures=3, cooldown=10, cooldown_cap=600)
    assert uncapped.limited_accounts() == {}


def test_the_cap_per_account_is_at_most_the_global_cap() -> None:
    assert Settings.from_env({}).callback_account_concurrency == 16
    env = {"RINGFLOW_CALLBACK_CONCURRENCY": "8", "RINGFLOW_CALLBACK_ACCOUNT_CONCURRENCY": "8"}
    assert Settings.from_env(env).callback_account_concurrency == 8
    for bad in ("0", "9"):
        with pytest.raises(ConfigError, match="RINGFLOW_CALLBACK_ACCOUNT_CONCURRENCY"):
            Settings.from_env({**env, "RINGFLOW_CALLBACK_ACCOUNT_CONCURRENCY": bad})


def test_failures_open_the_circuit_and_a_probe_decides() -> None:
    d = Destinations(per_destination=4, failures=3, cooldown=10, cooldown_cap=25)
    for _ in range(4):
        d.started("tarpit", at(0))
    assert d.finished("tarpit", reached=False, now=at(5)) is None
    assert d.finished("tarpit", reached=False, now=at(5)) is None
    assert d.finished("tarpit", reached=False, now=at(5)) == (Change.OPENED, at(15))
    # The request still out fails too: the circuit stays as it is.
    assert d.finished("tarpit", reached=False, now=at(5)) is None
    assert d.room("tarpit", at(14)) == 0 and d.next_probe(at(14)) == at(15)
    assert d.room("tarpit", at(15)) == 1  # one probe
    d.started("tarpit", at(15))
    assert d.room("tarpit", at(15)) == 0 and d.next_probe(at(15)) is None
    # A failed probe doubles the cooldown, up to the cap.
    assert d.finished("tarpit", reached=False, now=at(20)) == (Change.OPENED, at(40))
    d.started("tarpit", at(40))
    assert d.finished("tarpit", reached=False, now=at(41)) == (Change.OPENED, at(66))
    # Any answer closes it, and the deferred rows are due again.
    d.started("tarpit", at(66))
    assert d.finished("tarpit", reached=True, now=at(67)) == (Change.CLOSED, at(66))
    assert d.room("tarpit", at(67)) == 4 and d.circuits == {}


def test_an_answer_resets_the_count_of_failures() -> None:
    d = Destinations(per_destination=4, failures=2, cooldown=10, cooldown_cap=600)
    for reached in (False, True, False, True):
        d.started("a", at(0))
        assert d.finished("a", reached=reached, now=at(1)) is None
    assert d.room("a", at(1)) == 4 and d.circuits == {}


def test_after_a_failure_a_destination_gets_one_request_at_a_time_until_it_answers() -> None:
    """Four requests out to a receiver that stopped answering: as each times out, no new one
    takes its place, so the circuit opens on the first wave alone, however the timeouts spread."""
    d = Destinations(per_destination=4, failures=3, cooldown=10, cooldown_cap=600)
    for _ in range(4):
        d.started("a", at(0))
    assert d.finished("a", reached=False, now=at(1)) is None
    assert d.room("a", at(1)) == 0 and d.limited(at(1)) == {"a": 0}
    assert d.finished("a", reached=True, now=at(1)) is None  # an answer: room again
    assert d.room("a", at(1)) == 2
    d.started("a", at(1))
    assert d.finished("a", reached=False, now=at(2)) is None
    assert d.finished("a", reached=False, now=at(2)) is None
    assert d.room("a", at(2)) == 0  # one still out
    assert d.finished("a", reached=False, now=at(2)) == (Change.OPENED, at(12))
    # With nothing out and the circuit closed, the one request may go.
    e = Destinations(per_destination=4, failures=3, cooldown=10, cooldown_cap=600)
    e.started("b", at(0))
    e.finished("b", reached=False, now=at(1))
    assert e.room("b", at(1)) == 1 and e.limited(at(1)) == {"b": 1}
    # Sent nothing for the longest cooldown after its failure, it is forgotten: full room.
    assert e.limited(at(600)) == {"b": 1} and "b" in e.circuits
    assert e.limited(at(601)) == {} and e.circuits == {} and e.room("b", at(601)) == 4


# Over real sockets


@dataclasses.dataclass
class Tarpit:
    """An HTTP receiver that reads each request and answers only once ``answering`` is set."""

    keys: list[str] = dataclasses.field(default_factory=list)
    answering: bool = False
    open_now: int = 0
    most_open: int = 0
    urls: list[str] = dataclasses.field(default_factory=list)  # one per port, all this pit

    @property
    def url(self) -> str:
        return self.urls[0]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if line
            )
            headers = {k.lower(): v for k, v in headers.items()}
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.keys.append(headers["idempotency-key"])
            if not self.answering:
                await reader.read()  # hold the connection until the client gives up
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


@contextlib.asynccontextmanager
async def tarpit(ports: int = 1) -> AsyncIterator[Tarpit]:
    pit = Tarpit()
    servers = []
    try:
        for _ in range(ports):
            port = free_port()
            servers.append(await asyncio.start_server(pit.handle, "127.0.0.1", port))
            pit.urls.append(f"http://127.0.0.1:{port}/status")
        yield pit
    finally:
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)


@contextlib.asynccontextmanager
async def running(db: Database, clock: ManualClock, cfg: Settings) -> AsyncIterator[Deliverer]:
    http = OutboundHttp(cfg, clock)
    d = Deliverer(db, clock, http, cfg, jitter=0)
    d.start()
    try:
        yield d
    finally:
        await d.stop(grace=2)
        await http.aclose()


async def account(db: Database, clock: ManualClock, sid: str) -> int:
    async with db.session() as s:
        row = Account(sid=sid, name=sid, created_at=clock.wall())
        s.add(row)
        await s.flush()
        return row.id


async def add(db: Database, clock: ManualClock, account_id: int, url: str, key: str) -> None:
    async with db.session() as s:
        await enqueue(
            s,
            account_id=account_id,
            call_id=None,
            event="terminal",
            url=url,
            content_type=JSON,
            payload={"CallSid": key, "Status": "completed"},
            idempotency_key=key,
            now=clock.wall(),
        )


async def rows(db: Database) -> dict[str, OutboxMessage]:
    async with db.session() as s:
        found = (await s.execute(select(OutboxMessage))).scalars().all()
    return {row.idempotency_key: row for row in found}


async def until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def b_waits_behind(
    db: Database, clock: ManualClock, pit: Tarpit, rec: Any, a_busy: int, timeout: float
) -> float:
    """Seconds account B's callback takes to arrive once A's callbacks hold ``a_busy`` slots."""
    cfg = Settings(allow_private_urls=True, callback_timeout=timeout)
    b = await account(db, clock, "tenant-b")
    async with running(db, clock, cfg) as d:
        await until(lambda: len(pit.keys) >= a_busy, 10)
        enqueued = time.monotonic()
        await add(db, clock, b, f"{rec.url}/status", "b-0")
        d.wake()
        # Bounded past the timeout, so a delayed callback is measured, not hung on.
        with contextlib.suppress(AssertionError):
            await until(lambda: rec.to("/status"), 2 * timeout)
        delay = time.monotonic() - enqueued
    assert rec.to("/status"), "B's callback never arrived"
    assert (await rows(db))["b-0"].state == "delivered"
    return delay


async def test_a_tarpit_does_not_delay_another_accounts_callback(db, clock) -> None:
    timeout = 8.0
    a = await account(db, clock, "tenant-a")
    async with tarpit() as pit, recorder() as rec:
        for i in range(60):
            await add(db, clock, a, pit.url, f"a-{i}")
        delay = await b_waits_behind(db, clock, pit, rec, 4, timeout)
        assert delay < timeout / 2, f"B's callback waited {delay:.1f}s behind the tarpit"
        assert pit.most_open <= 4, "more than four requests in flight to one destination"


async def test_a_tarpit_on_many_ports_holds_only_its_accounts_slots(db, clock) -> None:
    """Each port is a destination of its own: only the cap per account keeps one tenant's
    16 x 4 requests from taking all 64 slots."""
    timeout = 8.0
    a = await account(db, clock, "tenant-a")
    async with tarpit(ports=16) as pit, recorder() as rec:
        for i in range(96):
            await add(db, clock, a, pit.urls[i % 16], f"a-{i}")
        delay = await b_waits_behind(db, clock, pit, rec, 16, timeout)
        assert delay < timeout / 2, f"B's callback waited {delay:.1f}s behind A's tarpits"
        assert pit.most_open <= 16, f"{pit.most_open} requests in flight for one account"


async def test_a_destination_that_keeps_timing_out_is_backed_off_then_recovers(db, clock) -> None:
    cfg = Settings(
        allow_private_urls=True,
        callback_timeout=0.5,
        callback_circuit_failures=3,
        callback_circuit_cooldown=10,
    )
    a = await account(db, clock, "tenant-a")
    async with tarpit() as pit:
        for i in range(20):
            await add(db, clock, a, pit.url, f"a-{i}")
        async with running(db, clock, cfg) as d:
            # Five minutes of clock time with the receiver silent. Each row on its own would be
            # retried after 5, 10, 20, 40, 80 and 160 s: over a hundred requests. The circuit
            # opens after the first four time out and lets one probe through per cooldown
            # (10, 20, 40, 80, 160 s).
            await clock.run_until(lambda: clock.now() >= 300, real_timeout=60)
            sent = len(pit.keys)
            assert sent <= 4 + 5, f"{sent} requests to a receiver that never answers"
            assert d.destinations.circuits, "the circuit is not open"
            by_key = await rows(db)
            assert sum(row.attempts for row in by_key.values()) == sent
            # Deferred rows keep their attempts: at most the first wave and the probes spent any.
            assert sum(1 for row in by_key.values() if row.attempts == 0) >= 20 - sent
            assert {row.state for row in by_key.values()} == {"pending"}

            pit.answering = True
            back = clock.now()

            async def all_delivered() -> bool:
                return {row.state for row in (await rows(db)).values()} == {"delivered"}

            await clock.run_until(all_delivered, real_timeout=30)
            # Everything went with the next probe, not each row's own backoff.
            assert clock.now() - back <= 320
            assert d.destinations.circuits == {}
            delivered = {row.delivered_at for row in (await rows(db)).values()}
            assert max(delivered) - min(delivered) <= dt.timedelta(seconds=1)
