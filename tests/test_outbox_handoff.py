"""Callbacks written already leased to their process's deliverer: sent with no claim, and still
sent by another deliverer if that process dies before sending them (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest

from ringflow.clock import ManualClock
from ringflow.storage.db import Database
from ringflow.storage.models import OutboxMessage
from ringflow.storage.outbox import Lease
from ringflow.webhooks.deliverer import Deliverer
from ringflow.webhooks.outbox import FORM, enqueue
from tests.statements import Statements, settled
from tests.test_outbox import (
    PAYLOAD,
    Receiver,
    attempts_of,
    deliverer,
    load,
    make_account,
    serving_receiver,
    settings,
    state_is,
)


async def born_leased(
    db: Database, clock: ManualClock, account_id: int, url: str, lease: Lease
) -> OutboxMessage:
    async with db.session() as s:
        return await enqueue(
            s,
            account_id=account_id,
            call_id=None,
            event="terminal",
            url=url,
            content_type=FORM,
            payload=PAYLOAD,
            idempotency_key="call-1:terminal",
            now=clock.wall(),
            lease=lease,
        )


@pytest.fixture
def statements(db: Database) -> Iterator[Statements]:
    yield Statements(db)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving_receiver() as rec:
        yield rec


async def settle(clock: ManualClock, d: Deliverer) -> None:
    """Let the loop make its first look at the table and go quiet (the database's answers
    take real time: the ManualClock does not move meanwhile)."""
    await clock.run_until(lambda: d._quiet(clock.wall()), real_timeout=10)


async def test_a_callback_born_leased_is_sent_at_once_without_a_claim(
    db, clock, receiver: Receiver, statements: Statements
) -> None:
    account = await make_account(db, clock)
    async with deliverer(db, clock) as d:
        d.start()
        await settle(clock, d)
        with statements as seen:
            row = await born_leased(db, clock, account, receiver.url, d.birth_lease())
            d.take([row])
            await clock.run_until(state_is(db, row.id, "delivered"))
            await settled()
        assert receiver.keys() == {"call-1:terminal": 1}
        assert [a.status_code for a in await attempts_of(db, row.id)] == [200]
        # Written (INSERT), acknowledged (UPDATE and the attempt's INSERT), and then only the
        # checks of this test: no claim, no look for due rows.
        assert any("INSERT INTO outbox_attempts" in s for s in seen), seen
        claims = [s for s in seen if "row_number()" in s and "FROM outbox" in s]
        looks = [s for s in seen if "min(" in s.lower() and "FROM outbox" in s]
        assert claims == [] and looks == [], seen


async def test_a_callback_leased_to_a_process_that_died_is_sent_when_its_lease_lapses(
    db, clock, receiver: Receiver
) -> None:
    account = await make_account(db, clock)
    lease = dt.timedelta(seconds=90)
    # The process that wrote it died before its deliverer could take it.
    row = await born_leased(
        db, clock, account, receiver.url, Lease("gone/w1", clock.wall() + lease)
    )
    async with deliverer(db, clock) as d:
        d.start()
        await clock.run_until(lambda: clock.now() >= 60, real_timeout=20)
        assert receiver.requests == [], "sent while another process held its lease"
        await clock.run_until(state_is(db, row.id, "delivered"))
        assert clock.now() >= lease.total_seconds()
    assert receiver.keys() == {"call-1:terminal": 1}
    assert (await load(db, row.id)).lease_owner is None


async def test_a_callback_waiting_for_room_too_long_goes_back_to_the_table(
    db, clock, receiver: Receiver
) -> None:
    account = await make_account(db, clock)
    receiver.script = ["hang"]
    # One timeout opens the destination's circuit for 100 s: it has no room meanwhile.
    cfg = settings(callback_circuit_failures=1, callback_circuit_cooldown=100)
    async with deliverer(db, clock, cfg) as d:
        d.start()
        await settle(clock, d)
        first = await born_leased(db, clock, account, receiver.url, d.birth_lease())
        d.take([first])
        await clock.run_until(lambda: d.destinations.circuits != {}, real_timeout=20)
        async with db.session() as s:
            second = await enqueue(
                s,
                account_id=account,
                call_id=None,
                event="terminal",
                url=receiver.url,
                content_type=FORM,
                payload=PAYLOAD,
                idempotency_key="call-2:terminal",
                now=clock.wall(),
                lease=d.birth_lease(),
            )
        d.take([second])
        lease = second.lease_until - clock.wall()
        waited_from = clock.now()

        async def given_back() -> bool:
            return (await load(db, second.id)).lease_owner is None

        await clock.run_until(given_back, real_timeout=20)
        assert clock.now() - waited_from >= lease.total_seconds() / 2
        assert receiver.keys() == {"call-1:terminal": 1}, "sent while its destination had no room"
        receiver.release.set()
        await clock.run_until(state_is(db, second.id, "delivered"), real_timeout=20)
    assert receiver.keys()["call-2:terminal"] == 1
