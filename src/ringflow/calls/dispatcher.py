"""Admission: a call starts now if its account has room, else it waits as ``queued``.

The dispatcher owns the running calls of this process. It creates calls, starts their runners,
starts queued calls in order when capacity frees, and at start-up reclaims what a previous run of
this process left behind (calls it was carrying when it died are finished, queued calls resume).

Admission is exact across processes: each decision (a new call, or the next queued ones) is
taken under the account's row lock in the database (``storage/admission.py``), so the count of
calls in progress cannot grow under it (an end may lower it: see ``Line.free_after``), and a
queued call is claimed by one process only. The asyncio lock per account spares this process's
own submissions a wait in the database; the new calls that arrive while it is held are
admitted together, in one transaction, once it frees (``submit``).

A call of an account whose calls go over a SIP trunk is admitted only with a channel of that
trunk reserved for its first leg (``Carrier.reserve``): a call waiting for the trunk stays
``queued``, not ``ringing``, and the queue moves when the carrier says a channel came free.

A running call holds a ``Line``; the call's last status change frees it. On SQLite that
change's transaction admits the account's next waiting calls; on PostgreSQL the change is one
statement that also says whether calls wait, and only then are they admitted, under the lock
(``Line.free_after``), so a call's end with nobody waiting takes no lock at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from ringflow.calls.requests import CallRequest
from ringflow.calls.sids import new_call_sid
from ringflow.calls.status import ACTIVE, Event, Status, is_terminal
from ringflow.calls.transitions import Change, advance, callback_fields, finish_calls_of
from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import CapacityExceeded, Unavailable
from ringflow.logs import bind_call
from ringflow.metrics import CALLS_ENDED, CALLS_IN_PROGRESS, CALLS_STARTED, carrier_label
from ringflow.storage import admission, calls, streams
from ringflow.storage.call_changes import NewCall, insert_calls_at_once, insert_calls_in_thread
from ringflow.storage.db import Database, driver_of
from ringflow.storage.models import Account, Call, Leg
from ringflow.storage.session import Session
from ringflow.telephony.carrier import Carrier
from ringflow.webhooks.outbox import outbox_row

log = logging.getLogger(__name__)


_DIAL = Change(call=Event.DIAL, legs=((1, Event.DIAL),))  # admitted: the first leg rings


def _nothing() -> None:
    """Nothing to start after the transaction."""


class Line:
    """The account line a running call holds, freed by the call's last status change."""

    def __init__(self, dispatcher: Dispatcher, account_id: int):
        self._dispatcher = dispatcher
        self.account_id = account_id
        self.freed = False

    async def free(self, session: Any) -> Callable[[], None]:
        """Admit, in ``session``, the waiting calls this line makes room for.

        Returns what starts them, to call once the transaction has committed.
        """
        self.freed = True
        return await self._dispatcher.admit_waiting(session, self.account_id)

    async def free_after(self, waiting: bool) -> None:
        """The call's end was written on its own, not under the account's lock (in one
        statement on PostgreSQL, one transaction on SQLite): the line is free. ``waiting``:
        that write saw queued calls of the account; then admit what the room allows, under
        the lock.

        No call is left queued behind a line that is free: an admission that counted this call
        as running and queued a call for want of a line either committed before the end's
        statement began (which then saw that call waiting), or after. On SQLite, whose writes
        are one at a time, there is no after. On PostgreSQL it then counts again once
        committed (``_Accepted.recount``), waiting for any change being written to the
        account's calls (``lock_lines(settled=True)``), so it sees this call ended. The
        housekeeper's rounds are the last resort (an end still waiting for its row then).
        """
        self.freed = True
        if waiting:
            await self._dispatcher.release(self.account_id)


# Runs one admitted call to its end: (call, its account, the line it holds).
RunCall = Callable[[Call, Account, Line], Awaitable[None]]
# Work done in the transaction that inserts a new call: (that transaction, the call).
WithCall = Callable[[Session, Call], Awaitable[None]]


@dataclasses.dataclass(eq=False)
class _Pending:
    """A new call waiting for admission, and what became of it."""

    request: CallRequest
    with_call: WithCall | None
    outcome: asyncio.Future[tuple[Call, bool]]  # what its submitter is told
    call: Call | None = None
    started: bool = False
    error: Exception | None = None  # refused (the account's queue is full)


@dataclasses.dataclass
class _Accepted:
    """What one admission transaction leaves to do once it has committed."""

    account: Account
    woke: bool = False  # it queued a callback: wake the deliverer
    # Room was left behind calls already waiting, or (PostgreSQL) a call was queued for want of
    # a line while a call's end may have been committing without the lock: count again.
    recount: bool = False


class Dispatcher:
    """Creates, admits and tracks the calls of this process."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        run_call: RunCall,
        on_enqueued: Callable[[], None],
        carrier: Carrier | None = None,
    ):
        self.db = db
        self.clock = clock
        self.settings = settings
        self.run_call = run_call
        self.on_enqueued = on_enqueued
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._open: dict[int, list[_Pending]] = {}  # account id -> new calls not yet admitted
        self._admitting: set[asyncio.Task[None]] = set()
        self._closing = False
        self.carrier = carrier  # reserves trunk channels at admission (None: no trunks)
        self._trunk_waiting: set[int] = set()  # accounts with calls queued for a trunk channel
        self._releasing: set[asyncio.Task[None]] = set()
        if carrier is not None:
            carrier.listen_for_room(self._trunk_room)

    async def submit(
        self, request: CallRequest, with_call: WithCall | None = None
    ) -> tuple[Call, bool]:
        """Persist a new call; start it if the account has room. Returns (call, started).

        ``with_call`` runs in the transaction that inserts the call, once it has its id (a
        campaign marks its number called there); what it raises undoes the call.
        Unavailable once the process has stopped admitting (a drain): whoever asks, the API,
        the dashboard or a campaign, another process takes the call.

        Calls of one account submitted while its admission is busy are admitted together, in
        the order they came, in one transaction (``_accept``): one account lock and one count
        for all of them, so an account's calls per second are not bounded by the round trips
        of one admission. A call with ``with_call``, or a campaign's attempt, is admitted alone:
        what it raises undoes that call only.
        """
        if self._closing:
            raise Unavailable(
                "this server is shutting down and takes no new calls; place the "
                "call again in a few seconds (another server will take it)"
            )
        pending = _Pending(request, with_call, asyncio.get_running_loop().create_future())
        # A campaign's attempt may be a Duplicate, which undoes its transaction: alone too.
        alone = with_call is not None or request.campaign is not None
        batch = None if alone else self._open.get(request.account_id)
        if batch is not None:
            batch.append(pending)
        else:
            batch = [pending]
            if not alone:
                self._open[request.account_id] = batch  # later calls join it until it runs
            task = asyncio.ensure_future(self._admit_batch(request.account_id, batch))
            self._admitting.add(task)
            task.add_done_callback(self._admitting.discard)
        return await pending.outcome

    async def _admit_batch(self, account_id: int, batch: list[_Pending]) -> None:
        """Admit ``batch`` (new calls of one account, in the order they came), then start what
        was admitted and tell each submitter its call. Runs as a task of its own, so a
        submitter that goes away (its client hung up) cannot strand the others."""
        try:
            async with self._locks[account_id]:
                if self._open.get(account_id) is batch:
                    del self._open[account_id]  # closed: from now on new calls wait for the next
                admitted = await self._accept(account_id, batch)
        except BaseException as error:
            for pending in batch:
                if pending.outcome.done():
                    continue
                if isinstance(error, Exception):
                    pending.outcome.set_exception(error)
                else:
                    pending.outcome.cancel()
            if not isinstance(error, Exception):
                raise
            return
        account = admitted.account
        for pending in batch:
            if pending.call is not None and pending.started:
                self._start(pending.call, account)
        if admitted.woke:
            self.on_enqueued()
        for pending in batch:
            if pending.outcome.done():  # its submitter was cancelled: the call goes on
                continue
            if pending.error is not None:
                pending.outcome.set_exception(pending.error)
            else:
                assert pending.call is not None
                pending.outcome.set_result((pending.call, pending.started))
        if admitted.recount:
            await self.release(account_id, settled=True)

    async def _accept(self, account_id: int, batch: list[_Pending]) -> _Accepted:
        """In one transaction under the account's row lock: each new call of ``batch``, in
        order, queued or admitted (its trunk channel reserved), or refused when the account's
        queue is full (``_Pending.error``). A failure of the transaction fails them all and
        gives back the channels reserved for them.

        On PostgreSQL a batch of the API's calls is admitted on the driver's own connection
        (``Database.driver``): the lock, the count, and one statement for all its calls. On
        SQLite, in two trips to the connection's thread (``Database.sqlite``): the lock and the
        count, then every call and the commit. A call with work of its own in the transaction
        (``with_call``, always alone) needs a session."""
        reserved: list[Call] = []  # a trunk channel is held for each
        try:
            if any(p.with_call is not None for p in batch):
                async with self.db.session() as session:
                    lines = await self._lines(session, account_id)
                    assert lines is not None, f"account {account_id} does not exist"
                    driver = None if self.db.is_sqlite else await driver_of(session)
                    return await self._take(batch, lines, reserved, driver, session)
            if self.db.is_sqlite:
                async with self.db.sqlite() as connection:
                    lines = await admission.lock_lines_in_thread(
                        connection, account_id, ACTIVE, Status.QUEUED
                    )
                    assert lines is not None, f"account {account_id} does not exist"
                    return await self._take(batch, lines, reserved, connection, None)
            async with self.db.driver() as driver, driver.transaction():
                lines = await admission.lock_lines_at_once(
                    driver, account_id, ACTIVE, Status.QUEUED
                )
                assert lines is not None, f"account {account_id} does not exist"
                return await self._take(batch, lines, reserved, driver, None)
        except BaseException:
            if self.carrier is not None:  # those calls never were
                for call in reserved:
                    await self.carrier.unreserve(call.sid)
            raise

    async def _take(
        self,
        batch: list[_Pending],
        lines: admission.AccountLines,
        reserved: list[Call],
        driver: Any,
        session: Session | None,
    ) -> _Accepted:
        """``_accept``'s work once the account is locked and its lines counted: writes on
        ``driver`` (PostgreSQL's, or SQLite's connection, which this commits) or in ``session``
        (SQLite with a ``with_call``)."""
        accepted = _Accepted(lines.account)
        queue_limit = lines.account.max_queued_calls
        if queue_limit is None:
            queue_limit = self.settings.queue_limit
        limit = self._limit(lines)
        active, queued = lines.active, lines.queued
        together: list[NewCall] = []  # on the driver: the batch's calls, in one statement
        for pending in batch:
            if queued >= queue_limit:
                waiting = "1 call is" if queued == 1 else f"{queued} calls are"
                pending.error = CapacityExceeded(
                    f"{waiting} already waiting for this account; try again later"
                )
                continue
            # Stamped under the account's lock, so creation order is the order of admission.
            call = _new_call(pending.request, self.clock.wall())
            # Never ahead of calls already waiting: room can exist while they wait (the limit
            # was raised, or a call just ended and its release has not run yet).
            started = active < limit and queued == 0
            if not started and (active < limit or not self.db.is_sqlite):
                accepted.recount = True
            if started and not await self._reserve(lines.account, call):
                started = False
                log.info("call %s queued: its trunk has no free channel", call.sid)
            elif started:
                reserved.append(call)
            else:
                log.info(
                    "call %s queued: %d of %d lines busy, %d waiting",
                    call.sid,
                    active,
                    limit,
                    queued,
                )
            steps, rows = self._dial(call, lines.account, call.created_at) if started else ([], [])
            if rows:  # a ringing callback: the deliverer has work
                accepted.woke = True
            new = NewCall(call, steps, rows)
            if driver is not None and pending.with_call is None:
                together.append(new)
            else:  # what the call's own work needs first is its id
                await self._insert(driver, session, new)
            if pending.with_call is not None:
                assert session is not None
                await pending.with_call(session, call)
            pending.call, pending.started = call, started
            if started:
                active += 1
            else:
                queued += 1
        if session is None and self.db.is_sqlite:
            await insert_calls_in_thread(driver, together)  # and commit, whatever was refused
        elif together:
            await insert_calls_at_once(driver, together)
        return accepted

    async def _lines(
        self, session: Any, account_id: int, settled: bool = False
    ) -> admission.AccountLines | None:
        return await admission.lock_lines(
            session, account_id, ACTIVE, Status.QUEUED, settled=settled
        )

    def _limit(self, lines: admission.AccountLines) -> int:
        if lines.max_concurrent_calls is not None:
            return lines.max_concurrent_calls
        return self.settings.max_concurrent_calls

    async def _insert(self, driver: Any, session: Session | None, new: NewCall) -> None:
        """Insert a new call built in memory (queued, or already dialing its first leg), with
        its timeline step and callbacks: in one statement on ``driver`` (PostgreSQL), else in
        ``session``."""
        if driver is not None:  # one statement (a data-modifying WITH)
            await insert_calls_at_once(driver, [new])
            return
        assert session is not None
        call = new.call
        await calls.insert_call(session, call)
        for row in (*new.steps, *new.callbacks):
            row["call_id"] = call.id
        await calls.add_steps(session, new.steps)
        await calls.add_callbacks(session, new.callbacks)

    async def _admit(self, session: Session, call: Call, account: Account) -> bool:
        """Start dialing a queued call (``admission.oldest_queued``); True if that queued a
        callback (a ``ringing`` event)."""
        steps, rows = self._dial(call, account, self.clock.wall())
        await admission.admit_queued(
            session, call, queued=Status.QUEUED, steps=steps, callbacks=rows
        )
        return bool(rows)

    def _dial(
        self, call: Call, account: Account, now: dt.datetime
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Admit ``call`` in memory (this process carries it; its first leg dials): the
        timeline step and the callback rows to write."""
        call.owner = self.settings.instance_name
        advanced = advance(call, _DIAL, now, account.time_zone)
        step = {"call_id": call.id, "at": now, "kind": "status", "data": advanced.step}
        rows = [outbox_row(**callback_fields(call, cb, now, None)) for cb in advanced.callbacks]
        return [step], rows

    def _start(self, call: Call, account: Account) -> None:
        # Admitted and committed: the call has left the queue and dials its first leg.
        CALLS_STARTED.labels(carrier_label(self.carrier, account.sid)).inc()
        CALLS_IN_PROGRESS.labels(account.sid).inc()
        self.tasks[call.sid] = asyncio.ensure_future(self._run(call, account))

    async def _reserve(self, account: Account, call: Call) -> bool:
        """A trunk channel for the call's first leg (True: none is needed, or one was free)."""
        if self.carrier is None or await self.carrier.reserve(account.sid, call.sid):
            return True
        self._trunk_waiting.add(account.id)
        return False

    def _trunk_room(self) -> None:
        """A trunk channel came free: the accounts waiting for one try their queues again."""
        if self._closing or not self._trunk_waiting:
            return
        accounts, self._trunk_waiting = self._trunk_waiting, set()
        for account_id in accounts:
            task = asyncio.ensure_future(self.release(account_id))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _run(self, call: Call, account: Account) -> None:
        bind_call(call.sid, account.sid)  # this task's log lines (and its children's) carry them
        line = Line(self, account.id)
        try:
            await self.run_call(call, account, line)
        finally:
            CALLS_IN_PROGRESS.labels(account.sid).dec()
            if is_terminal(call.status):  # the runner's timeline keeps ``call`` current
                CALLS_ENDED.labels(call.status, carrier_label(self.carrier, account.sid)).inc()
            if self.carrier is not None:  # a first leg that never dialled leaves its channel
                await self.carrier.unreserve(call.sid)
            self.tasks.pop(call.sid, None)
            if not self._closing and not line.freed:
                await self.release(account.id)

    async def release(self, account_id: int, settled: bool = False) -> None:
        """Start the account's oldest queued calls, as many as it has room for (``settled``:
        see ``admission.lock_lines``)."""
        async with self._locks[account_id], self.db.session() as session:
            start = await self.admit_waiting(session, account_id, settled)
        start()

    async def admit_waiting(
        self, session: Any, account_id: int, settled: bool = False
    ) -> Callable[[], None]:
        """Admit, in ``session``, the account's oldest queued calls it has room for.

        Returns what starts them, to call once the transaction has committed. Takes no lock of
        this process (the caller may hold the database): the account's row lock is the one
        that counts.
        """
        if self._closing:  # shutting down: what waits stays queued for the next start
            return _nothing
        lines = await self._lines(session, account_id, settled)
        if lines is None or lines.queued == 0:
            return _nothing
        room = self._limit(lines) - lines.active
        if room <= 0:
            return _nothing
        woke = False
        admitted: list[Call] = []
        for call in await admission.oldest_queued(session, account_id, Status.QUEUED, room):
            if not await self._reserve(lines.account, call):
                break  # the rest wait behind it, in order
            woke = await self._admit(session, call, lines.account) or woke
            admitted.append(call)

        def start() -> None:
            for call in admitted:
                log.info("call %s leaves the queue", call.sid)
                self._start(call, lines.account)
            if woke:
                self.on_enqueued()

        return start

    async def recover(self) -> None:
        """Finish the calls a previous run of this process was carrying, and free the places
        its streams held under the accounts' stream limits.

        Queued calls resume in the housekeeper's first round, which runs at start-up.
        """
        reason = "ringflow restarted while the call was in progress"
        async with self.db.session() as session:
            count = await finish_calls_of(
                session, self.settings.instance_name, reason, self.clock.wall()
            )
            await streams.forget_owner(session, self.settings.instance_name)
        if count:
            log.warning("finished %d calls interrupted by a restart", count)
            self.on_enqueued()

    def stop_admitting(self) -> None:
        """Start no more calls (a drain): queued calls stay queued, for the next start or
        another process, instead of taking the lines that running calls free."""
        self._closing = True

    async def stop(self) -> None:
        """Cancel admissions under way (one cut short in its transaction creates no call) and
        running calls (each runner finishes its call as it unwinds)."""
        self._closing = True
        admitting = list(self._admitting)
        for admission_task in admitting:
            admission_task.cancel()
        await asyncio.gather(*admitting, return_exceptions=True)
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
        campaign_id=request.campaign.campaign_id if request.campaign else None,
        campaign_number_id=request.campaign.number_id if request.campaign else None,
        campaign_attempt=request.campaign.attempt if request.campaign else None,
        machine_detection=request.machine_detection,
        created_at=now,
        updated_at=now,
        start_time=now,
    )
    call.legs = [Leg(leg_no=1, number=request.from_number, status=Status.NONE)]
    if request.shape == "numbers":
        call.legs.append(Leg(leg_no=2, number=request.to_number or "", status=Status.NONE))
    return call
