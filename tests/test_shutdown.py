"""A shutdown that one hanging part cannot hold up: each step bounded, the rest still run."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from ringflow.campaigns.driver import LET_GO_WAIT
from ringflow.clock import ManualClock, RealClock
from ringflow.drain import stop_in_turn
from tests.e2e import running
from tests.test_campaigns import create, number


async def test_a_step_that_hangs_or_fails_is_left_behind_and_the_next_steps_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    ran: list[str] = []

    async def hangs() -> None:
        ran.append("hangs")
        await asyncio.Event().wait()  # never set: a lock never granted

    async def fails() -> None:
        ran.append("fails")
        raise ConnectionError("the peer went away")

    async def flushes() -> None:
        ran.append("flushes")

    started = clock.now()
    stopping = asyncio.ensure_future(
        stop_in_turn(
            clock, (("campaigns", hangs, 10), ("carrier", fails, 15), ("callbacks", flushes, 60))
        )
    )
    with caplog.at_level(logging.INFO, logger="ringflow.drain"):
        await clock.run_until(stopping.done)
    await stopping
    assert ran == ["hangs", "fails", "flushes"]
    # The hanging step had its 10 s and no more; the others took no time.
    assert clock.now() - started == 10
    messages = [r.getMessage() for r in caplog.records]
    assert "shutdown: campaigns did not stop within 10 s; going on without it" in messages
    assert "shutdown: stopping carrier failed; going on" in messages


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_driver_that_cannot_give_its_lease_up_does_not_hold_up_the_stop(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The campaign's row locked by a transaction that never ends (one a stop cut short, whose
    connection is not closed yet): the stopping driver waits ``LET_GO_WAIT``, not forever, and
    the lease is left to run out. A real clock (ten times fast): a ManualClock never moves
    while a statement is in flight, and here one never ends."""
    clock = RealClock(scale=10)
    async with running(database_url, clock, rate_limit_per_minute=1_000_000) as rig:
        campaign = await create(rig, **{"from": [number(n) for n in range(20)]}, calls_per_second=1)
        campaigns = rig.services.campaigns
        while not campaigns.drivers:
            await asyncio.sleep(0.01)
        stranger = await asyncpg.connect(database_url.replace("+asyncpg", "", 1))
        try:
            holding = stranger.transaction()
            await holding.start()
            await stranger.execute(
                "SELECT id FROM campaigns WHERE sid = $1 FOR UPDATE", campaign["id"]
            )
            started = clock.now()
            with caplog.at_level(logging.WARNING, logger="ringflow.campaigns.driver"):
                await asyncio.wait_for(campaigns.stop(), 30 / clock.scale)
            assert LET_GO_WAIT <= clock.now() - started <= LET_GO_WAIT + 5
            assert any("could not give up its lease" in r.getMessage() for r in caplog.records)
            await holding.rollback()
            driver = await stranger.fetchval(
                "SELECT driver FROM campaigns WHERE sid = $1", campaign["id"]
            )
            assert driver is not None  # still leased: it runs out by itself
        finally:
            await stranger.close()
