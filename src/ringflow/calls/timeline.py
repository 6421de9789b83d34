"""A call's timeline writer: the one place the engine writes what happens to a running call.

Steps (an applet entered, a request made, a mark returned) are kept in memory and written with
the call's next status change, or once ``STEPS_PER_WRITE`` have gathered, so a flow does not
cost a transaction per applet. A status change is one transaction: the call is locked (its legs
can change from several tasks at once: simultaneous dials), the steps are written, the change
is applied (``transitions.apply``) with its callbacks born leased to this process's deliverer,
and the change that ends the call frees its account line there too, admitting the next queued
calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ringflow.calls.status import Event, Status, is_terminal
from ringflow.calls.transitions import Change, apply, interrupted
from ringflow.clock import Clock
from ringflow.storage.calls import add_leg, lock_call
from ringflow.storage.db import Database
from ringflow.storage.models import Call, CallEvent, OutboxMessage
from ringflow.storage.outbox import Lease
from ringflow.storage.session import Session

STEPS_PER_WRITE = 20


class Line(Protocol):
    """The account line a running call holds (``calls.dispatcher.Line``)."""

    freed: bool

    async def free(self, session: Session) -> Callable[[], None]: ...


class Callbacks(Protocol):
    """Who sends the callbacks a change writes (``webhooks.deliverer.Deliverer``)."""

    def birth_lease(self) -> Lease | None: ...

    def take(self, rows: list[OutboxMessage]) -> None: ...


class Timeline:
    """Writes one call's steps and status changes."""

    def __init__(self, db: Database, clock: Clock, call: Call, time_zone: str, *,
                 line: Line | None, callbacks: Callbacks | None,
                 on_enqueued: Callable[[], None]):
        self.db = db
        self.clock = clock
        self.call = call
        self.time_zone = time_zone  # the account's: callbacks give times in it
        self.line = line
        self.callbacks = callbacks
        self.on_enqueued = on_enqueued  # wakes the deliverer for rows written without a lease
        self._steps: list[CallEvent] = []

    async def record(self, kind: str, data: dict[str, Any]) -> None:
        """Add a step to the call's timeline (written with the next change, or soon)."""
        self._steps.append(CallEvent(call_id=self.call.id, at=self.clock.wall(), kind=kind,
                                     data=data))
        if len(self._steps) >= STEPS_PER_WRITE:
            await self.flush()

    async def flush(self) -> None:
        """Write the steps still held."""
        steps, self._steps = self._steps, []
        if steps:
            async with self.db.session() as session:
                session.add_all(steps)

    async def change(self, change: Change) -> Call:
        """Apply a status change, with the steps kept since the last one."""
        return await self._changed(lambda call: change)

    async def finish(self, reason: str) -> None:
        """End the call, whatever state it is in, unless it has ended already (shutdown, a bug)."""
        await self._changed(lambda call: None if is_terminal(call.status)
                            else interrupted(call, reason))

    async def add_leg(self, number: str) -> int:
        """A new leg of the call to ``number``, marked dialing; its number."""
        leg_no = 0

        async def new_leg(session: Session, call: Call) -> Change:
            nonlocal leg_no
            leg_no = await add_leg(session, call, number)
            return Change(legs=((leg_no, Event.DIAL),))

        await self._changed(None, before=new_leg)
        return leg_no

    async def cancel_leg(self, leg_no: int) -> None:
        """A leg that was ringing when its dial was abandoned ends canceled."""

        def cancel(call: Call) -> Change | None:
            leg = next(leg for leg in call.legs if leg.leg_no == leg_no)
            if leg.status == Status.RINGING and call.shape == "flow":
                return Change(legs=((leg_no, Event.CANCEL),))
            return None

        await self._changed(cancel)

    async def _changed(self, decide: Callable[[Call], Change | None] | None, *,
                       before: Callable[[Session, Call], Awaitable[Change]] | None = None
                       ) -> Call:
        """One transaction: lock the call, write the steps, apply what ``decide`` (or
        ``before(session, call)``) says, free the line if the call ended."""
        start_next = None
        async with self.db.session() as session:
            call = await lock_call(session, self.call.sid)
            assert call is not None, f"call {self.call.sid} does not exist"
            session.add_all(self._steps)
            self._steps = []
            if before is not None:
                change: Change | None = await before(session, call)
            else:
                assert decide is not None
                change = decide(call)
            queued: list[OutboxMessage] = []
            if change is not None:
                lease = self.callbacks.birth_lease() if self.callbacks is not None else None
                queued = await apply(session, call, change, self.clock.wall(), lease,
                                     self.time_zone)
            line = self.line
            if line is not None and not line.freed and is_terminal(call.status):
                start_next = await line.free(session)
        if queued and self.callbacks is not None:
            self.callbacks.take(queued)
        elif queued:
            self.on_enqueued()
        if start_next is not None:
            start_next()
        return call
