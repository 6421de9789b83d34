"""The deliverer: sends due outbox rows, records each attempt, retries with backoff.

Retries on: timeouts, connection and protocol errors, and any non-2xx answer. Not retried: a
URL refused by ``validate_url`` or the address guard (marked ``failed`` at once). After a 2xx the
row is ``delivered`` and never sent again. Delivery is at-least-once: a process that dies between
the receiver's 2xx and recording it leaves a lease that expires and the row is sent again, which
is what the ``Idempotency-Key`` header is for.

Rows are claimed with a lease (``lease_until``) in a short transaction of its own, one UPDATE
statement, so several deliverers (several processes) share one table: PostgreSQL skips rows
another deliverer has locked (``FOR UPDATE SKIP LOCKED``); SQLite has a single writer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import random
import time
from typing import Any

from sqlalchemy import case, func, or_, select, update

from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest
from ringflow.storage.db import Database
from ringflow.storage.models import OutboxAttempt, OutboxMessage
from ringflow.webhooks.http import FetchError, OutboundHttp
from ringflow.webhooks.outbox import encode

log = logging.getLogger(__name__)

M = OutboxMessage
BACKOFF_BASE = 5.0
BACKOFF_CAP = 600.0
POLL_INTERVAL = 30.0  # picks up rows other processes enqueued (their wake() does not reach us)
ERROR_PAUSE = 5.0  # after a pass failed (database away), before trying again
MIN_IDLE = 0.05


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: 5, 10, 20 ... at most 600."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))


@dataclasses.dataclass(frozen=True)
class _Claimed:
    id: int
    event: str
    url: str
    content_type: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int
    lease_until: dt.datetime


@dataclasses.dataclass(frozen=True)
class _Outcome:
    status_code: int | None = None
    error: str | None = None
    latency_ms: int = 0
    permanent: bool = False  # the URL was refused: retrying cannot help

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        return self.error or f"HTTP {self.status_code}"


class Deliverer:
    """Sends pending outbox rows in the background; ``deliver_due`` runs one pass."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        http: OutboundHttp,
        settings: Settings,
        *,
        jitter: float = 0.1,
        batch_size: int = 20,
        poll_interval: float = POLL_INTERVAL,
    ):
        self._db = db
        self._clock = clock
        self._http = http
        self._max_attempts = max(1, settings.callback_max_attempts)
        # Clock seconds a claim stays ours: longer than any send can take (sends are bounded by
        # the callback timeout in real time, and a scaled clock runs faster than real time).
        # Leases carry the instance name: a restart under the same name takes its rows back.
        self._owner = settings.instance_name
        self._lease = dt.timedelta(
            seconds=(2 * settings.callback_timeout + 60) * max(1.0, settings.clock_scale)
        )
        self._jitter = jitter
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._random = random.Random()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background, starting with everything already pending (restart resume)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox")

    async def stop(self, grace: float | None = None) -> None:
        """Finish the pass in progress, send one last batch of what is due now (the callbacks
        of calls ended by the shutdown), then stop; all bounded by ``grace`` real seconds."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        # Room for two batches (the one in flight and the last one), each bounded by the timeout.
        limit = grace if grace is not None else 2 * self._http.timeout + 5
        try:
            await asyncio.wait_for(asyncio.shield(task), limit)
        except TimeoutError:
            # Rows still claimed stay leased until the lease expires, then any deliverer retries.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def wake(self) -> None:
        """Look for due rows now (call after committing a transaction that enqueued one)."""
        self._wake.set()

    async def deliver_due(self) -> int:
        """Send every row due now, batch by batch; return how many were attempted."""
        total = 0
        while True:
            with self._clock.busy():
                batch = await self._claim()
                if not batch:
                    return total
                await asyncio.gather(*(self._deliver(message) for message in batch))
            total += len(batch)
            if self._stopping:  # leave the backlog to the next start rather than outrun stop()
                return total

    async def _release_own_leases(self) -> None:
        """Free rows this instance had claimed when it last stopped (a crash mid-delivery)."""
        stmt = (
            update(M)
            .where(M.state == "pending", M.lease_owner == self._owner)
            .values(lease_until=None, lease_owner=None)
            .execution_options(synchronize_session=False)
        )
        async with self._db.session() as session:
            await session.execute(stmt)

    async def _run(self) -> None:
        try:
            await self._release_own_leases()
        except Exception:
            log.exception("outbox: could not release this instance's old leases")
        while True:
            self._wake.clear()
            # A pass begun after stop() was asked for is the last: it sends what the shutdown
            # itself enqueued (calls ended on the way down), which a pass already in flight
            # may have claimed too early to see.
            last = self._stopping
            try:
                with self._clock.busy():
                    await self.deliver_due()
                    delay = 0.0 if last else await self._idle_delay()
            except Exception:
                log.exception("outbox: delivery pass failed; retrying in %gs", ERROR_PAUSE)
                delay = ERROR_PAUSE
            if last:
                return
            if not self._stopping:
                await self._wait(delay)

    async def _wait(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _claim(self) -> list[_Claimed]:
        now = self._clock.wall()
        lease_until = now + self._lease
        due = (
            select(M.id)
            .where(M.state == "pending", M.next_attempt_at <= now, _lease_free(now))
            .order_by(M.next_attempt_at, M.id)
            .limit(self._batch_size)
            # PostgreSQL: skip rows another deliverer is claiming; SQLite renders no clause.
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(M)
            .where(M.id.in_(due.scalar_subquery()))
            .values(lease_until=lease_until, lease_owner=self._owner)
            .returning(
                M.id, M.event, M.url, M.content_type, M.payload, M.idempotency_key, M.attempts
            )
            .execution_options(synchronize_session=False)
        )
        async with self._db.session() as session:
            rows = (await session.execute(stmt)).all()
        return [_Claimed(*row, lease_until=lease_until) for row in rows]

    async def _idle_delay(self) -> float:
        now = self._clock.wall()
        # A leased row is due again when its lease runs out (if its holder never reports back).
        due_at = case((_lease_free(now), M.next_attempt_at), else_=M.lease_until)
        async with self._db.session() as session:
            earliest = await session.scalar(select(func.min(due_at)).where(M.state == "pending"))
        if earliest is None:
            return self._poll_interval
        wait = (earliest - now).total_seconds()
        return min(self._poll_interval, max(MIN_IDLE, wait))

    async def _deliver(self, message: _Claimed) -> None:
        try:
            outcome = await self._send(message)
        except Exception as exc:
            # A bug (say, a payload that no longer encodes): count it as a failed attempt so
            # the row ends as failed after max attempts instead of being retried forever.
            log.exception("outbox message %s: unexpected error while sending", message.id)
            outcome = _Outcome(error=f"internal error: {exc!r}")
        try:
            await self._record(message, outcome)
        except Exception:
            log.exception(
                "outbox message %s: could not record the attempt; it is retried when its "
                "lease expires",
                message.id,
            )

    async def _send(self, message: _Claimed) -> _Outcome:
        body, content_type = encode(message.payload, message.content_type)
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": message.idempotency_key,
            "X-Ringflow-Event": message.event,
        }
        started = time.perf_counter()
        try:
            result = await self._http.post(
                message.url, content=body, headers=headers, field="StatusCallback"
            )
        except InvalidRequest as exc:
            return _Outcome(error=str(exc), permanent=True)
        except FetchError as exc:
            return _Outcome(error=str(exc), latency_ms=_elapsed_ms(started))
        return _Outcome(status_code=result.status_code, latency_ms=_elapsed_ms(started))

    async def _record(self, message: _Claimed, outcome: _Outcome) -> None:
        now = self._clock.wall()
        attempts = message.attempts + 1
        where = [M.id == message.id, M.state == "pending"]
        values: dict[str, Any] = {"attempts": M.attempts + 1, "lease_until": None, "lease_owner": None}
        if outcome.ok:
            values.update(state="delivered", delivered_at=now, last_error=None)
        else:
            # Only the lease holder may reschedule or fail a row; a success counts whoever
            # reports it, since the receiver has it either way.
            where.append(M.lease_until == message.lease_until)
            values["last_error"] = outcome.describe()
            if outcome.permanent or attempts >= self._max_attempts:
                values["state"] = "failed"
            else:
                values["next_attempt_at"] = now + dt.timedelta(seconds=self._delay(attempts))
        async with self._db.session() as session:
            await session.execute(
                update(M)
                .where(*where)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            session.add(
                OutboxAttempt(
                    message_id=message.id,
                    at=now,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    latency_ms=outcome.latency_ms,
                )
            )
        if not outcome.ok:
            log.warning(
                "outbox message %s (%s) attempt %d failed: %s",
                message.id,
                message.event,
                attempts,
                outcome.describe(),
            )

    def _delay(self, attempts: int) -> float:
        delay = retry_delay(attempts)
        return delay * (1 + self._jitter * self._random.random()) if self._jitter else delay


def _lease_free(now: dt.datetime) -> Any:
    return or_(M.lease_until.is_(None), M.lease_until <= now)


def _elapsed_ms(started: float) -> int:
    # Real time, not the injected clock: this measures the network, which a ManualClock skips.
    return round((time.perf_counter() - started) * 1000)
