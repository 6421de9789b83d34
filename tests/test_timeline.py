"""A call's timeline writer on every backend: changes applied in memory and written without a
read, the same rows as a change applied to what the database holds, and a call moved by
another writer read back instead of overwritten."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from ringflow.calls.status import Event
from ringflow.calls.timeline import Timeline
from ringflow.calls.transitions import Change
from ringflow.storage.models import Call, CallEvent, OutboxMessage
from tests.statements import Statements, settled
from tests.test_housekeeping import request, setup


async def rows(db, sid: str) -> tuple[Call, list[CallEvent], list[OutboxMessage]]:
    async with db.session() as s:
        call = (await s.execute(select(Call).where(Call.sid == sid))).scalar_one()
        steps = list(
            (
                await s.execute(
                    select(CallEvent).where(CallEvent.call_id == call.id).order_by(CallEvent.id)
                )
            ).scalars()
        )
        outbox = list(
            (
                await s.execute(select(OutboxMessage).where(OutboxMessage.call_id == call.id))
            ).scalars()
        )
        return call, steps, outbox


async def test_changes_written_from_memory_are_the_calls_rows(db, clock) -> None:
    account, dispatcher, _, _ = await setup(db, clock)
    call, started = await dispatcher.submit(
        request(account, callback_events=("answered", "terminal"))
    )
    assert started
    woken: list[int] = []
    timeline = Timeline(
        db,
        clock,
        call,
        "Asia/Kolkata",
        line=None,
        callbacks=None,
        on_enqueued=lambda: woken.append(1),
    )
    await timeline.record("note", {"n": 1})
    await timeline.change(Change(call=Event.ANSWER, legs=((1, Event.ANSWER),)))
    leg = await timeline.add_leg("+919812345679")
    assert leg == 3  # a two-number call has legs 1 and 2 already
    await clock.advance(7)
    await timeline.change(Change(call=Event.HANGUP, legs=((1, Event.HANGUP), (leg, Event.CANCEL))))
    stored, steps, outbox = await rows(db, call.sid)
    assert stored.status == call.status == "completed"
    assert stored.duration == call.duration == 7
    assert {leg.leg_no: leg.status for leg in stored.legs} == {1: "completed", 2: "", 3: "canceled"}
    assert stored.legs[0].answered_at == call.legs[0].answered_at is not None
    kinds = [(s.kind, s.data.get("call")) for s in steps]
    assert kinds == [
        ("status", "ringing"),
        ("note", None),
        ("status", "in-progress"),
        ("status", "in-progress"),
        ("status", "completed"),
    ]
    assert sorted(row.idempotency_key.split(":", 1)[1] for row in outbox) == [
        "answered:1",
        "terminal",
    ]
    assert woken, "the deliverer was not told of the callbacks"


async def test_a_call_moved_by_another_writer_is_read_back_not_overwritten(db, clock) -> None:
    account, dispatcher, _, _ = await setup(db, clock)
    call, _ = await dispatcher.submit(request(account))
    timeline = Timeline(
        db, clock, call, "Asia/Kolkata", line=None, callbacks=None, on_enqueued=lambda: None
    )
    await timeline.change(Change(call=Event.ANSWER, legs=((1, Event.ANSWER),)))
    # Another process took the call for dead and finished it.
    async with db.session() as s:
        await s.execute(
            update(Call)
            .where(Call.sid == call.sid)
            .values(status="completed", reason="finished elsewhere")
        )
    await timeline.record("late", {})
    await timeline.finish("shutting down")
    stored, steps, _ = await rows(db, call.sid)
    assert (stored.status, stored.reason) == ("completed", "finished elsewhere")
    assert (call.status, call.reason) == ("completed", "finished elsewhere")
    assert [s.kind for s in steps][-1] == "late"  # kept, and no status step of ours after it


async def test_a_change_that_does_not_end_the_call_is_one_statement_on_postgresql(
    db, clock
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has no data-modifying WITH: a change is a local transaction there")
    account, dispatcher, _, _ = await setup(db, clock)
    call, _ = await dispatcher.submit(request(account, callback_events=("answered",)))
    timeline = Timeline(
        db, clock, call, "Asia/Kolkata", line=None, callbacks=None, on_enqueued=lambda: None
    )
    await timeline.record("note", {})
    with Statements(db) as seen:
        await timeline.change(Change(call=Event.ANSWER, legs=((1, Event.ANSWER),)))
        await settled()
    assert len(seen) == 1 and seen[0].startswith("WITH moved AS"), seen
    stored, steps, outbox = await rows(db, call.sid)
    assert stored.status == "in-progress"
    assert [s.kind for s in steps][-2:] == ["note", "status"]
    assert [row.idempotency_key for row in outbox] == [f"{call.sid}:answered:1"]
