"""A call's timeline writer: the one place the engine writes what happens to a running call.

Steps (an applet entered, a request made, a mark returned) are kept in memory and written with
the call's next status change, or once ``STEPS_PER_WRITE`` have gathered, so a flow does not
cost a transaction per applet. A status change is one transaction: the steps, the change, its
callbacks (born leased to this process's deliverer) and, for the change that ends the call,
its account line freed (admitting the next queued calls). On PostgreSQL a change is one
statement (``storage/call_changes.py``): one round trip, except the end, whose transaction goes
on to take the account's lock and admit exactly.

The process carrying a call is the only writer of its status, so the timeline holds the call's
rows in memory, applies a change there (``transitions.advance``, changes serialised per call:
simultaneous dials change legs at once) and writes the result with Core statements and no
read: the call's row is updated only if its status is still the one it held. If not (another
writer moved it), or a write failed half way, the timeline falls back to locking the row,
applying the change to what the database holds, and taking that as its memory again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from ringflow.calls.status import Event, Status, is_terminal
from ringflow.calls.transitions import Change, advance, apply, callback_fields, interrupted
from ringflow.clock import Clock
from ringflow.storage.call_changes import (
    write_change_at_once,
    write_change_in_thread,
    write_end_at_once,
)
from ringflow.storage.calls import add_leg, add_steps, copy_into, lock_call, write_detection
from ringflow.storage.db import Database
from ringflow.storage.models import Call, Leg, OutboxMessage
from ringflow.storage.outbox import Claimed, Lease
from ringflow.storage.session import Session
from ringflow.webhooks.outbox import outbox_row

STEPS_PER_WRITE = 20


class _Moved(Exception):
    """The call's row was not in the state held in memory (rolls the write back)."""


class Line(Protocol):
    """The account line a running call holds (``calls.dispatcher.Line``)."""

    freed: bool

    async def free(self, session: Session) -> Callable[[], None]: ...

    async def free_after(self, waiting: bool) -> None: ...


class Callbacks(Protocol):
    """Who sends the callbacks a change writes (``webhooks.deliverer.Deliverer``)."""

    def birth_lease(self) -> Lease | None: ...

    def take(self, rows: list[OutboxMessage]) -> None: ...

    def take_claimed(self, claimed: list[Claimed]) -> None: ...


class Timeline:
    """Writes one call's steps and status changes."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        call: Call,
        time_zone: str,
        *,
        line: Line | None,
        callbacks: Callbacks | None,
        on_enqueued: Callable[[], None],
    ):
        self.db = db
        self.clock = clock
        self.call = call  # the call's rows as they stand: this process is its only writer
        self.time_zone = time_zone  # the account's: callbacks give times in it
        self.line = line
        self.callbacks = callbacks
        self.on_enqueued = on_enqueued  # wakes the deliverer for rows written without a lease
        self._steps: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._stale = False  # memory may differ from the database: read it back first

    async def record(self, kind: str, data: dict[str, Any]) -> None:
        """Add a step to the call's timeline (written with the next change, or soon)."""
        self._steps.append(
            {"call_id": self.call.id, "at": self.clock.wall(), "kind": kind, "data": data}
        )
        if len(self._steps) >= STEPS_PER_WRITE:
            await self.flush()

    async def flush(self) -> None:
        """Write the steps still held."""
        steps, self._steps = self._steps, []
        if steps:
            async with self.db.session() as session:
                await add_steps(session, steps)

    async def change(self, change: Change) -> None:
        """Apply a status change, with the steps kept since the last one."""
        await self._changed(lambda call: change)

    async def finish(self, reason: str) -> None:
        """End the call, whatever state it is in, unless it has ended already (shutdown, a bug)."""
        await self._changed(
            lambda call: None if is_terminal(call.status) else interrupted(call, reason)
        )

    async def detected(self, answered_by: str, ms: int, step: dict[str, Any]) -> None:
        """Leg 1's answering machine verdict, ``ms`` after its answer: on the leg, the call and
        the timeline (a step ``amd`` with ``step``), with the steps held, in one transaction."""
        async with self._lock:
            self._steps.append(
                {"call_id": self.call.id, "at": self.clock.wall(), "kind": "amd", "data": step}
            )
            steps, self._steps = self._steps, []
            async with self.db.session() as session:
                await write_detection(session, self.call.id, 1, answered_by, ms, steps)
            for leg in self.call.legs:
                if leg.leg_no == 1:
                    leg.answered_by = answered_by
            self.call.machine_detection_ms = ms

    async def add_leg(self, number: str) -> int:
        """A new leg of the call to ``number``, marked dialing; its number."""
        return await self._changed(None, new_leg=number)

    async def cancel_leg(self, leg_no: int) -> None:
        """A leg that was ringing when its dial was abandoned ends canceled."""

        def cancel(call: Call) -> Change | None:
            leg = next(leg for leg in call.legs if leg.leg_no == leg_no)
            if leg.status == Status.RINGING and call.shape == "flow":
                return Change(legs=((leg_no, Event.CANCEL),))
            return None

        await self._changed(cancel)

    async def _changed(
        self, decide: Callable[[Call], Change | None] | None, *, new_leg: str | None = None
    ) -> int:
        """Apply what ``decide`` says (or add a leg to ``new_leg``); the leg added, if any."""
        async with self._lock:
            if not self._stale:
                self._stale = True  # until the write is known to be done
                try:
                    leg_no = await self._from_memory(decide, new_leg)
                    self._stale = False
                    return leg_no
                except _Moved:
                    pass
            leg_no = await self._from_database(decide, new_leg)
            self._stale = False
            return leg_no

    async def _from_memory(
        self, decide: Callable[[Call], Change | None] | None, new_leg: str | None
    ) -> int:
        call = self.call
        expected = call.status
        leg_no, change = _decided(call, decide, new_leg)
        steps, self._steps = self._steps, []
        if change is None:
            if steps:
                async with self.db.session() as session:
                    await add_steps(session, steps)
            return leg_no
        now = self.clock.wall()
        advanced = advance(call, change, now, self.time_zone)
        steps.append({"call_id": call.id, "at": now, "kind": "status", "data": advanced.step})
        lease = self.callbacks.birth_lease() if self.callbacks is not None else None
        rows = [outbox_row(**callback_fields(call, cb, now, lease)) for cb in advanced.callbacks]
        written: dict[str, Any] = {
            "expected": expected,
            "legs": [n for n, _ in change.legs],
            "new_legs": [leg_no] if new_leg is not None else [],
            "steps": steps,
            "callbacks": rows,
        }
        waiting: bool | None = None  # the call's end: whether calls wait
        if self.db.is_sqlite:  # one trip to SQLite's thread; the end's also sees the queue
            queued = Status.QUEUED if self._holds_line(call) else None
            async with self.db.sqlite() as connection:
                ids, waiting = await write_change_in_thread(
                    connection, call, queued=queued, **written
                )
        elif self._holds_line(call):  # the end: one statement, which also sees the queue
            async with self.db.driver() as driver:
                ids, waiting = await write_end_at_once(
                    driver, call, queued=Status.QUEUED, **written
                )
        else:  # one statement, committed by itself
            async with self.db.driver() as driver:
                ids = await write_change_at_once(driver, call, **written)
        if ids is None:
            self._steps = steps[:-1] + self._steps  # kept for the database's turn
            raise _Moved
        self._sent(rows, ids, lease)
        if waiting is not None:
            assert self.line is not None
            await self.line.free_after(waiting)
        return leg_no

    async def _from_database(
        self, decide: Callable[[Call], Change | None] | None, new_leg: str | None
    ) -> int:
        start_next = None
        leg_no = 0
        queued: list[OutboxMessage] = []
        async with self.db.session() as session:
            call = await lock_call(session, self.call.sid)
            assert call is not None, f"call {self.call.sid} does not exist"
            await add_steps(session, self._steps)
            self._steps = []
            if new_leg is not None:
                leg_no = await add_leg(session, call, new_leg)
                change: Change | None = Change(legs=((leg_no, Event.DIAL),))
            else:
                assert decide is not None
                change = decide(call)
            if change is not None:
                lease = self.callbacks.birth_lease() if self.callbacks is not None else None
                queued = await apply(
                    session, call, change, self.clock.wall(), lease, self.time_zone
                )
            start_next = await self._free_line(session, call)
            await session.flush()
            copy_into(call, self.call)
        if queued and self.callbacks is not None:
            self.callbacks.take(queued)
        elif queued:
            self.on_enqueued()
        if start_next is not None:
            start_next()
        return leg_no

    def _holds_line(self, call: Call) -> bool:
        """Whether this change ended the call whose line is still held."""
        line = self.line
        return line is not None and not line.freed and is_terminal(call.status)

    async def _free_line(self, session: Session, call: Call) -> Callable[[], None] | None:
        if self._holds_line(call):
            assert self.line is not None
            return await self.line.free(session)
        return None

    def _sent(self, rows: list[dict[str, Any]], ids: list[int], lease: Lease | None) -> None:
        """Hand the callbacks just written to the deliverer."""
        if not rows:
            return
        if lease is None or self.callbacks is None:
            self.on_enqueued()
            return
        self.callbacks.take_claimed(
            [
                Claimed(
                    id=row_id,
                    account_id=row["account_id"],
                    event=row["event"],
                    url=row["url"],
                    destination=row["destination"],
                    content_type=row["content_type"],
                    payload=row["payload"],
                    idempotency_key=row["idempotency_key"],
                    attempts=0,
                    lease_until=lease.until,
                )
                for row_id, row in zip(ids, rows, strict=True)
            ]
        )


def _decided(
    call: Call, decide: Callable[[Call], Change | None] | None, new_leg: str | None
) -> tuple[int, Change | None]:
    """The change to make to ``call`` in memory (adding the new leg first)."""
    if new_leg is None:
        assert decide is not None
        return 0, decide(call)
    leg_no = max((leg.leg_no for leg in call.legs), default=0) + 1
    call.legs.append(Leg(leg_no=leg_no, number=new_leg, status=""))
    return leg_no, Change(legs=((leg_no, Event.DIAL),))
