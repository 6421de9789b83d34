"""The deliverer: sends due outbox rows, records each attempt, retries with backoff.

Retries on: timeouts, connection and protocol errors, and any non-2xx answer, after 5, 10, 20
... seconds (doubling, at most 600, plus up to 10% jitter). Not retried: a URL refused by
``validate_url`` or the address guard (marked ``failed`` at once). After
``RINGFLOW_CALLBACK_MAX_ATTEMPTS`` attempts a row is ``failed`` and never sent again.

Each row is delivered by a task of its own as soon as it is claimed; the loop goes on claiming
while others are in flight, up to ``RINGFLOW_CALLBACK_CONCURRENCY`` requests at once,
``RINGFLOW_CALLBACK_DESTINATION_CONCURRENCY`` to any one receiving server and
``RINGFLOW_CALLBACK_ACCOUNT_CONCURRENCY`` for any one account (see ``destinations``), so a
receiver that never answers, or an account with many of them, holds a few slots of its own and
delays no one else's callbacks. A receiver that keeps timing out is backed off by its circuit.
Slots freed by finished sends are gathered for ``CLAIM_COALESCE`` before the next claim, so a
busy deliverer claims several rows per statement rather than one per finished send.

Delivery is at least once. A 2xx is recorded as soon as it arrives, in a short transaction of its
own, and the row is never sent again. A process that dies leaves the rows it was sending leased:
only those (sent, answer not yet recorded) are sent again, at once by a restart under the same
``RINGFLOW_INSTANCE``, otherwise by any deliverer when the lease runs out. That is what the
``Idempotency-Key`` header is for.

Claims use leases (``lease_until``, ``lease_owner``); the statements are in ``outbox``.

A call's own callbacks need no claim: the call engine writes them already leased to this
deliverer (``birth_lease``) and hands them over once their transaction has committed
(``take``). They go out as soon as there is room, before any claimed row; one that waits half
its lease for room is given back to the table. The table is asked for due rows only when some
may be there: after ``wake`` (rows written without a lease, a circuit closing, a stop), when a
claim filled up, when a send frees room for a destination or account that had none at the last
look, or when the earliest due row it knows of comes due (at most ``POLL_INTERVAL`` later). So a
callback costs one transaction, its acknowledgement.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable

from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest
from ringflow.logs import bind_call
from ringflow.metrics import CALLBACK_ATTEMPTS, CALLBACK_DELAY
from ringflow.storage import outbox
from ringflow.storage.accounts import account_by_id
from ringflow.storage.db import Database
from ringflow.storage.models import OutboxMessage
from ringflow.storage.outbox import Claimed
from ringflow.webhooks.destinations import Change, Destinations
from ringflow.webhooks.http import FetchError, OutboundHttp
from ringflow.webhooks.outbox import encode

log = logging.getLogger(__name__)

BACKOFF_BASE = 5.0
BACKOFF_CAP = 600.0
ANSWER_BODY_WAIT = 1.0  # seconds a receiver's response body may take once its status came
POLL_INTERVAL = 30.0  # picks up rows other processes enqueued (their wake() does not reach us)
ERROR_PAUSE = 5.0  # after a pass failed (database away), before trying again
MIN_IDLE = 0.05
# Real seconds the loop waits for more sends to finish after one did, before claiming again;
# and the most it waits in all.
CLAIM_COALESCE = 0.03
CLAIM_COALESCE_MAX = 0.15
RECORD_GRACE = 10.0  # real seconds a stop waits to record answers that already arrived


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: 5, 10, 20 ... at most 600."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))


@dataclasses.dataclass(frozen=True)
class _Outcome:
    status_code: int | None = None
    error: str | None = None
    latency_ms: int = 0
    permanent: bool = False  # the URL was refused: retrying cannot help
    transport: bool = False  # no answer: timeout, connection refused or broken

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def reached(self) -> bool | None:
        """Whether the receiving server answered; None when the attempt says nothing of it."""
        if self.status_code is not None:
            return True
        return False if self.transport else None

    def describe(self) -> str:
        return self.error or f"HTTP {self.status_code}"

    @property
    def result(self) -> str:
        """The attempt's result as the metrics label it."""
        if self.ok:
            return "delivered"
        if self.status_code is not None:
            return "http_error"
        if self.transport:
            return "no_answer"
        return "refused" if self.permanent else "error"


class Deliverer:
    """Sends pending outbox rows in the background; ``deliver_due`` sends what is due now."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        http: OutboundHttp,
        settings: Settings,
        *,
        jitter: float = 0.1,
        batch_size: int | None = None,
        poll_interval: float = POLL_INTERVAL,
    ):
        self._db = db
        self._clock = clock
        self._http = http
        self._account_sids: dict[int, str] = {}  # account id -> SID, for log lines
        self._max_attempts = max(1, settings.callback_max_attempts)
        # Clock seconds a claim stays ours: longer than any send can take (sends are bounded by
        # the callback timeout in real time, and a scaled clock runs faster than real time).
        # Leases carry the instance name: a restart under the same name takes its rows back.
        self._owner = settings.instance_name
        self._lease = dt.timedelta(
            seconds=(2 * settings.callback_timeout + 60) * max(1.0, settings.clock_scale)
        )
        self._concurrency = max(1, settings.callback_concurrency)
        self._claim_limit = max(1, batch_size or self._concurrency)  # rows per claim statement
        self._destinations = Destinations(
            per_destination=settings.callback_destination_concurrency,
            failures=settings.callback_circuit_failures,
            cooldown=settings.callback_circuit_cooldown,
            cooldown_cap=BACKOFF_CAP,
            per_account=settings.callback_account_concurrency,
        )
        self._jitter = jitter
        self._poll_interval = poll_interval
        self._random = random.Random()
        self._wake = asyncio.Event()  # new rows, a closed circuit, a stop: claim at once
        self._freed = asyncio.Event()  # a send finished: claim soon, with whatever else frees
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._recording: set[asyncio.Task[None]] = set()
        self._handed: collections.deque[Claimed] = collections.deque()  # born leased to us
        self._own_leases_back = False  # a previous run's leases under our name are released
        # No row in the table is due for us before _quiet_until (None: ask the table), except
        # rows of destinations and accounts that have no room: if the last look found some
        # (_room_waiters), a send ending there unquiets.
        self._quiet_until: dt.datetime | None = None
        self._room_waiters = True
        self._unquieted = 0  # counts _unquiet calls: a look that raced one is not kept

    @property
    def destinations(self) -> Destinations:
        """In-flight counts and circuits per receiving server (read-only use)."""
        return self._destinations

    def start(self) -> None:
        """Run in the background, starting with everything already pending (restart resume)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox")

    async def stop(self, grace: float | None = None) -> None:
        """Send what is due now (the callbacks of calls ended by the shutdown) and wait for the
        requests in flight, then stop; bounded by ``grace`` real seconds, after which requests
        still waiting for an answer are abandoned (answers already in are still recorded)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self.wake()
        limit = grace if grace is not None else 2 * self._http.timeout + 5
        try:
            await asyncio.wait_for(asyncio.shield(task), limit)
        except TimeoutError:
            # Rows still claimed stay leased until the lease expires, then any deliverer retries.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def running(self) -> bool:
        """Whether the delivery task is alive (False before ``start`` and once it died)."""
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Look for due rows now (call after committing a transaction that enqueued one)."""
        self._unquiet()
        self._wake.set()

    def _unquiet(self) -> None:
        """The table may hold due rows we do not know of: ask it at the next chance."""
        self._quiet_until = None
        self._room_waiters = True
        self._unquieted += 1

    def birth_lease(self) -> outbox.Lease | None:
        """The lease of rows written for this deliverer to send without a claim (see ``take``);
        None until it has taken back the leases a previous run under its name left."""
        if not self._own_leases_back:
            return None
        return outbox.Lease(self._owner, self._clock.wall() + self._lease)

    def take(self, rows: list[OutboxMessage]) -> None:
        """Send rows written with ``birth_lease`` (their transaction has committed); rows
        written without one are found in the table."""
        leased = [row for row in rows if row.lease_owner == self._owner]
        self.take_claimed([outbox.claimed(row) for row in leased])
        if len(leased) < len(rows):
            self.wake()

    def take_claimed(self, claimed: list[Claimed]) -> None:
        """Send rows written with ``birth_lease``, as their writer describes them."""
        now = self._clock.wall()  # rows handed over as they are written: born now
        self._handed.extend(
            c if c.created_at is not None else dataclasses.replace(c, created_at=now)
            for c in claimed
        )
        self._wake.set()

    async def deliver_due(self) -> int:
        """Send every row due now, claiming more as sends finish; return how many were sent."""
        total = 0
        while True:
            total += (await self._fill())[0]
            if not self._sending:
                await self._settle_records()
                return total
            await asyncio.wait(set(self._sending), return_when=asyncio.FIRST_COMPLETED)

    async def _run(self) -> None:
        try:
            await self._release_own_leases()
            while not self._stopping:
                self._wake.clear()
                self._freed.clear()
                try:
                    _, more = await self._fill()
                    if more:
                        continue  # room may remain and more may be due: claim again first
                    delay = await self._idle_delay()
                except Exception:
                    log.exception("outbox: delivery pass failed; retrying in %gs", ERROR_PAUSE)
                    delay = ERROR_PAUSE
                if not self._stopping:
                    await self._wait(delay)
                    await self._coalesce()
            await self._last_sends()
        finally:
            await self._abandon()

    async def _last_sends(self) -> None:
        """Send what the shutdown itself enqueued (calls ended on the way down), claiming as
        slots free up for one callback timeout; then wait for the sends in flight. The backlog
        beyond that is left to the next start rather than outrun stop()."""
        claim_until = time.monotonic() + self._http.timeout
        while True:
            if time.monotonic() < claim_until:
                try:
                    await self._fill()
                except Exception:
                    log.exception("outbox: the last delivery pass failed")
                    claim_until = 0.0
            if not self._sending:
                return
            await asyncio.wait(set(self._sending), return_when=asyncio.FIRST_COMPLETED)

    async def _release_own_leases(self) -> None:
        """Free rows this instance had claimed when it last stopped (a crash mid-delivery)."""
        try:
            with self._clock.busy():
                async with self._db.session() as session:
                    await outbox.release_leases(session, self._owner)
            # Only now: a row born leased to us before this would have been released with them.
            self._own_leases_back = True
        except Exception:
            log.exception("outbox: could not release this instance's old leases")

    async def _abandon(self) -> None:
        """Cut the requests still waiting for an answer, but record the answers already in."""
        for task in self._sending:
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._recording:
            _, late = await asyncio.wait(set(self._recording), timeout=RECORD_GRACE)
            if late:
                log.warning("outbox: %d answers could not be recorded before stopping", len(late))

    async def _settle_records(self) -> None:
        if self._recording:
            await asyncio.wait(set(self._recording))

    async def _wait(self, delay: float) -> None:
        await _first(self._clock.sleep(delay), self._wake.wait(), self._freed.wait())

    async def _coalesce(self) -> None:
        """After a send finished, let the sends finishing right behind it free their slots too,
        so one claim fills them all (each claim is a write on SQLite's single writer): wait
        while more keep finishing, up to ``CLAIM_COALESCE_MAX``, unless nothing is left in
        flight or new rows wake the loop."""
        give_up = time.monotonic() + CLAIM_COALESCE_MAX
        # Busy: a manual clock must not jump to the next timer during this real-time pause.
        with self._clock.busy():
            while self._freed.is_set() and not self._wake.is_set() and self._sending:
                self._freed.clear()
                pause = min(CLAIM_COALESCE, give_up - time.monotonic())
                if pause <= 0:
                    return
                if await _first(asyncio.sleep(pause), self._wake.wait(), self._freed.wait()) == 0:
                    return  # quiet: no send finished for a while

    async def _fill(self) -> tuple[int, bool]:
        """Start the rows handed over, then claim as many due rows as there is room for and
        start sending each: how many, and whether another claim may find more (this one took
        all it asked for)."""
        room = self._concurrency - len(self._sending)
        with self._clock.busy():
            now = self._clock.wall()
            handed = await self._start_handed(now, max(0, room))
            room -= handed
            if room <= 0 or self._quiet(now):
                return handed, False
            limit = min(room, self._claim_limit)
            async with self._db.session() as session:
                claimed = await outbox.claim(
                    session,
                    owner=self._owner,
                    now=now,
                    lease_until=now + self._lease,
                    limit=limit,
                    rooms=self._destinations.rooms(now),
                )
        for message in claimed:
            self._begin(message, now)
        return handed + len(claimed), len(claimed) == limit

    async def _start_handed(self, now: dt.datetime, room: int) -> int:
        """Start the handed-over rows there is room for; give back those waiting too long."""
        started = 0
        waiting: collections.deque[Claimed] = collections.deque()
        stale: list[int] = []
        while self._handed:
            message = self._handed.popleft()
            if message.lease_until - now < self._lease / 2:
                stale.append(message.id)
            elif started < room and self._has_room(message, now):
                self._begin(message, now)
                started += 1
            else:
                waiting.append(message)
        self._handed = waiting
        if stale:
            async with self._db.session() as session:
                await outbox.release_rows(session, self._owner, stale)
            self._unquiet()
        return started

    def _has_room(self, message: Claimed, now: dt.datetime) -> bool:
        if self._destinations.room(message.destination, now) <= 0:
            return False
        accounts = self._destinations.limited_accounts()
        return accounts.get(message.account_id, 1) > 0

    def _quiet(self, now: dt.datetime) -> bool:
        """Whether the table is known to hold nothing due for us now."""
        return self._quiet_until is not None and now < self._quiet_until

    def _begin(self, message: Claimed, now: dt.datetime) -> None:
        self._destinations.started(message.destination, now, account=message.account_id)
        task = asyncio.get_running_loop().create_task(
            self._deliver(message), name=f"outbox-{message.id}"
        )
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._freed.set()  # a slot is free: claim again soon

    async def _idle_delay(self) -> float:
        if len(self._sending) >= self._concurrency:
            return self._poll_interval  # a finished send wakes the loop
        with self._clock.busy():
            now = self._clock.wall()
            probe = self._destinations.next_probe(now)
            if self._quiet(now):
                assert self._quiet_until is not None
                earliest: dt.datetime | None = self._quiet_until
            else:
                # A destination or account with no room is woken by its own sends finishing
                # (or a destination by its probe).
                rooms = self._destinations.rooms(now)
                looked = self._unquieted
                async with self._db.session() as session:
                    earliest = await outbox.next_due(session, now, rooms.blocked, rooms.full)
                    waiters = await outbox.waiting_for_room(session, now, rooms.blocked, rooms.full)
                if looked == self._unquieted:  # nothing changed meanwhile: this holds
                    self._room_waiters = waiters
                    # Until the earliest due row, the next poll, or a circuit's probe time
                    # (its destination's rows were left out for want of room).
                    until = [now + dt.timedelta(seconds=self._poll_interval)]
                    until += [t for t in (earliest, probe) if t is not None]
                    self._quiet_until = min(until)
        if probe is not None and (earliest is None or probe < earliest):
            earliest = probe
        if earliest is None:
            return self._poll_interval
        wait = (earliest - now).total_seconds()
        return min(self._poll_interval, max(MIN_IDLE, wait))

    async def _bind(self, message: Claimed) -> None:
        """This task's lines (a failed attempt, say) name the call and its account, as every
        line about a call does. An account's SID never changes: each is read once."""
        call_sid = message.payload.get("CallSid")
        if not isinstance(call_sid, str) or not call_sid:
            return
        account_sid = self._account_sids.get(message.account_id)
        if account_sid is None:
            with contextlib.suppress(Exception):  # the database is down: the lines lack it
                async with self._db.session() as session:
                    account = await account_by_id(session, message.account_id)
                if account is not None:
                    account_sid = self._account_sids[message.account_id] = account.sid
        bind_call(call_sid, account_sid)

    async def _deliver(self, message: Claimed) -> None:
        await self._bind(message)
        with self._clock.busy():
            try:
                outcome = await self._send(message)
            except asyncio.CancelledError:
                now = self._clock.wall()
                self._destinations.finished(
                    message.destination, reached=None, now=now, account=message.account_id
                )
                raise
            except Exception as exc:
                # A bug (say, a payload that no longer encodes): count it as a failed attempt so
                # the row ends as failed after max attempts instead of being retried forever.
                log.exception("outbox message %s: unexpected error while sending", message.id)
                outcome = _Outcome(error=f"internal error: {exc!r}")
            had_room = self._has_room(message, self._clock.wall())
            change = self._destinations.finished(
                message.destination,
                reached=outcome.reached,
                now=self._clock.wall(),
                account=message.account_id,
            )
            if not had_room and self._room_waiters:
                self._unquiet()  # rows a look left out for want of room may go now
            # The answer is in: record it even if this task is cancelled now (a stop running
            # out of grace), so a restart never sends an acknowledged callback again.
            recording = asyncio.get_running_loop().create_task(
                self._record(message, outcome, change)
            )
            self._recording.add(recording)
            recording.add_done_callback(self._recording.discard)
            await asyncio.shield(recording)

    async def _send(self, message: Claimed) -> _Outcome:
        body, content_type = encode(message.payload, message.content_type)
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": message.idempotency_key,
            "X-Ringflow-Event": message.event,
        }
        started = time.perf_counter()
        try:
            # The status line is the receiver's answer: a body that stalls after a 2xx must not
            # turn an acknowledged callback into a timeout that is sent again.
            result = await self._http.post(
                message.url,
                content=body,
                headers=headers,
                field="StatusCallback",
                body_wait=ANSWER_BODY_WAIT,
            )
        except InvalidRequest as exc:
            return _Outcome(error=str(exc), permanent=True)
        except FetchError as exc:
            return _Outcome(error=str(exc), latency_ms=_elapsed_ms(started), transport=True)
        return _Outcome(status_code=result.status_code, latency_ms=_elapsed_ms(started))

    async def _record(
        self, message: Claimed, outcome: _Outcome, change: tuple[Change, dt.datetime] | None
    ) -> None:
        with self._clock.busy():
            try:
                await self._record_attempt(message, outcome)
            except Exception:
                log.exception(
                    "outbox message %s: could not record the attempt; it is retried when its "
                    "lease expires",
                    message.id,
                )
            if change is not None:
                await self._apply(message.destination, change)

    async def _record_attempt(self, message: Claimed, outcome: _Outcome) -> None:
        now = self._clock.wall()
        attempts = message.attempts + 1
        next_attempt_at = None
        CALLBACK_ATTEMPTS.labels(outcome.result).inc()
        if outcome.ok:
            state = "delivered"
            if message.created_at is not None:
                CALLBACK_DELAY.observe(max(0.0, (now - message.created_at).total_seconds()))
        elif outcome.permanent or attempts >= self._max_attempts:
            state = "failed"
        else:
            state = "pending"
            next_attempt_at = now + dt.timedelta(seconds=self._delay(attempts))
            # A backed-off destination's rows wait for its probe whatever their own backoff.
            reopen_at = self._destinations.reopen_at(message.destination)
            if reopen_at is not None and reopen_at > next_attempt_at:
                next_attempt_at = reopen_at
            self._unquiet()  # the table holds a row due again, maybe sooner than a look said
        attempt = outbox.Attempt(
            at=now,
            status_code=outcome.status_code,
            error=outcome.error,
            latency_ms=outcome.latency_ms,
            state=state,
            next_attempt_at=next_attempt_at,
        )
        if self._db.is_sqlite:  # one trip to SQLite's thread
            async with self._db.sqlite() as connection:
                await outbox.record_attempt_in_thread(connection, message, attempt)
        else:  # one statement, committed by itself
            async with self._db.driver() as driver:
                await outbox.record_attempt_at_once(driver, message, attempt)
        if not outcome.ok:
            log.warning(
                "outbox message %s (%s) attempt %d failed: %s",
                message.id,
                message.event,
                attempts,
                outcome.describe(),
            )

    async def _apply(self, destination: str, change: tuple[Change, dt.datetime]) -> None:
        """Defer a destination's rows when its circuit opens, make them due when it closes."""
        kind, until = change
        now = self._clock.wall()
        try:
            async with self._db.session() as session:
                if kind is Change.OPENED:
                    moved = await outbox.defer(session, destination, until, now)
                else:
                    moved = await outbox.resume(session, destination, until, now)
        except Exception:
            log.exception("outbox: could not update the rows of %s", destination)
            return
        if kind is Change.OPENED:
            log.warning(
                "outbox: %s keeps failing; %d callbacks deferred for %gs",
                destination, moved, (until - now).total_seconds(),
            )  # fmt: skip
        else:
            log.info("outbox: %s answers again; %d deferred callbacks are due", destination, moved)
            self.wake()

    def _delay(self, attempts: int) -> float:
        delay = retry_delay(attempts)
        return delay * (1 + self._jitter * self._random.random()) if self._jitter else delay


async def _first(*waits: Awaitable[object]) -> int:
    """Wait until one of ``waits`` is done; its position (the others are cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return min(tasks.index(task) for task in done)


def _elapsed_ms(started: float) -> int:
    # Real time, not the injected clock: this measures the network, which a ManualClock skips.
    return round((time.perf_counter() - started) * 1000)
