"""Admission: a call starts now if its account has room, else it waits as ``queued``.

The dispatcher owns the running calls of this process. It creates calls, starts their runners,
starts queued calls in order when capacity frees, and at start-up reclaims what a previous run of
this process left behind (calls it was carrying when it died are finished, queued calls resume).

Admission is exact across processes: each decision (a new call, or the next queued ones) is
taken under the account's row lock in the database (``storage/admission.py``), so the count of
calls in progress cannot change under it, and a queued call is claimed by one process only.
The asyncio lock per account only spares this process's own submissions a wait in the
database.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ringflow.calls.requests import CallRequest
from ringflow.calls.sids import new_call_sid
from ringflow.calls.status import ACTIVE, Event, Status
from ringflow.calls.transitions import Change, apply, finish_calls_of
from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import CapacityExceeded
from ringflow.storage import admission
from ringflow.storage.db import Database
from ringflow.storage.models import Call, Leg

log = logging.getLogger(__name__)


class Dispatcher:
    """Creates, admits and tracks the calls of this process."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        run_call: Callable[[str], Any],
        on_enqueued: Callable[[], None],
    ):
        self.db = db
        self.clock = clock
        self.settings = settings
        self.run_call = run_call  # coroutine function: runs one call to its end
        self.on_enqueued = on_enqueued
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._closing = False

    async def submit(self, request: CallRequest) -> tuple[Call, bool]:
        """Persist a new call; start it if the account has room. Returns (call, started)."""
        async with self._locks[request.account_id], self.db.session() as session:
            lines = await self._lines(session, request.account_id)
            assert lines is not None, f"account {request.account_id} does not exist"
            if lines.queued >= self.settings.queue_limit:
                raise CapacityExceeded(
                    f"{lines.queued} calls are already waiting for this account; try again later"
                )
            # Stamped under the account's lock, so creation order is the order of admission.
            now = self.clock.wall()
            call = _new_call(request, now)
            session.add(call)
            await session.flush()
            limit = self._limit(lines)
            # Never ahead of calls already waiting: room can exist while they wait (the limit
            # was raised, or a call just ended and its release has not run yet).
            started = lines.active < limit and lines.queued == 0
            woke = False
            if started:
                woke = await self._admit(session, call)
            else:
                log.info("call %s queued: %d of %d lines busy, %d waiting",
                         call.sid, lines.active, limit, lines.queued)
            room_behind_queue = not started and lines.active < limit
        if started:
            self._start(call.sid, request.account_id)
        if woke:
            self.on_enqueued()
        if room_behind_queue:
            await self.release(request.account_id)
        return call, started

    async def _lines(self, session: Any, account_id: int) -> admission.AccountLines | None:
        return await admission.lock_lines(session, account_id, ACTIVE, Status.QUEUED)

    def _limit(self, lines: admission.AccountLines) -> int:
        if lines.max_concurrent_calls is not None:
            return lines.max_concurrent_calls
        return self.settings.max_concurrent_calls

    async def _admit(self, session: Any, call: Call) -> bool:
        """Start dialing; True if that queued a callback (a ``ringing`` event)."""
        call.owner = self.settings.instance_name
        change = Change(call=Event.DIAL, legs=((1, Event.DIAL),))
        return bool(await apply(session, call, change, self.clock.wall()))

    def _start(self, sid: str, account_id: int) -> None:
        task = asyncio.ensure_future(self._run(sid, account_id))
        self.tasks[sid] = task

    async def _run(self, sid: str, account_id: int) -> None:
        try:
            await self.run_call(sid)
        finally:
            self.tasks.pop(sid, None)
            if not self._closing:
                await self.release(account_id)

    async def release(self, account_id: int) -> None:
        """Start the account's oldest queued calls, as many as it has room for."""
        started: list[str] = []
        async with self._locks[account_id], self.db.session() as session:
            lines = await self._lines(session, account_id)
            if lines is None:
                return
            room = self._limit(lines) - lines.active
            if room <= 0 or lines.queued == 0:
                return
            woke = False
            for call in await admission.oldest_queued(session, account_id, Status.QUEUED, room):
                woke = await self._admit(session, call) or woke
                started.append(call.sid)
        for sid in started:
            log.info("call %s leaves the queue", sid)
            self._start(sid, account_id)
        if woke:
            self.on_enqueued()

    async def recover(self) -> None:
        """Finish the calls a previous run of this process was carrying.

        Queued calls resume in the housekeeper's first round, which runs at start-up.
        """
        reason = "ringflow restarted while the call was in progress"
        async with self.db.session() as session:
            count = await finish_calls_of(
                session, self.settings.instance_name, reason, self.clock.wall()
            )
        if count:
            log.warning("finished %d calls interrupted by a restart", count)
            self.on_enqueued()

    async def stop(self) -> None:
        """Cancel running calls (each runner finishes its call as it unwinds)."""
        self._closing = True
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _new_call(request: CallRequest, now: Any) -> Call:
    call = Call(
        sid=new_call_sid(),
        account_id=request.account_id,
        shape=request.shape,
        from_number=request.from_number,
        to_number=request.to_number or "",
        caller_id=request.caller_id,
        app_id=request.app_id,
        status=Status.QUEUED,
        direction="outbound-api",
        time_limit=request.time_limit,
        time_out=request.time_out,
        status_callback=request.status_callback,
        callback_events=list(request.callback_events),
        callback_json=request.callback_json,
        custom_field=request.custom_field,
        record=request.record,
        recording_channels=request.recording_channels,
        recording_format=request.recording_format,
        wait_url=request.wait_url,
        stream_url=request.stream_url,
        stream_type=request.stream_type,
        stream_name=request.stream_name,
        created_at=now,
        updated_at=now,
        start_time=now,
    )
    call.legs = [Leg(leg_no=1, number=request.from_number, status=Status.NONE)]
    if request.shape == "numbers":
        call.legs.append(Leg(leg_no=2, number=request.to_number or "", status=Status.NONE))
    return call
