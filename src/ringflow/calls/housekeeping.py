"""Periodic care of the call tables, shared by every ringflow process on one database.

Each round: this process's heartbeat; calls carried by a process silent for longer than
``RINGFLOW_INSTANCE_LEASE`` are finished and its streams' places freed (so they never hold an
account's lines or stream places forever);
calls queued longer than ``RINGFLOW_QUEUE_MAX_AGE`` fail with a clear reason; accounts with
queued calls get their free lines filled (a line freed by another process is noticed here at
the latest).

Every PRUNE_EVERY seconds, on a thread, the prompt cache drops rendered prompts unused for
``RINGFLOW_PROMPT_CACHE_MAX_AGE`` and then the least recently used beyond
``RINGFLOW_PROMPT_CACHE_MAX_MB``, so speech of unique texts (one-time codes, names) cannot fill
the disk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from ringflow.calls.status import Event, Status
from ringflow.calls.transitions import Change, apply, finish_calls_of
from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.media.cache import PromptCache
from ringflow.metrics import CALLS_ENDED
from ringflow.storage import admission, instances, streams
from ringflow.storage.calls import queued_before
from ringflow.storage.db import Database
from ringflow.storage.session import Session

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 10.0  # seconds; more often when the lease is short (a beat per quarter)
PRUNE_EVERY = 600.0


def heartbeat_every(settings: Settings) -> float:
    """Seconds between rounds: a silent process is noticed within its lease and a round."""
    return min(HEARTBEAT_EVERY, settings.instance_lease / 4)


class Housekeeper:
    """Runs ``tend`` every HEARTBEAT_EVERY seconds of the clock (or a quarter of the lease)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        release: Callable[[int], Awaitable[None]],
        on_enqueued: Callable[[], None],
        prompts: PromptCache | None = None,
    ):
        self.db = db
        self.clock = clock
        self.settings = settings
        self.release = release
        self.on_enqueued = on_enqueued
        self.prompts = prompts
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the rounds (and the prompt cache's pruning, if there is a cache)."""
        self._tasks.append(asyncio.ensure_future(self._run()))
        if self.prompts is not None:
            self._tasks.append(asyncio.ensure_future(self._prune_prompts(self.prompts)))

    async def stop(self) -> None:
        """Stop the rounds and remove this process's heartbeat."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self.db.session() as session:
            await streams.forget_owner(session, self.settings.instance_name)
            await instances.forget(session, self.settings.instance_name)

    async def _run(self) -> None:
        while True:
            try:
                await self.tend()
            except Exception:  # one bad round must not stop the heartbeat for good
                log.exception("housekeeping round failed")
            await self.clock.sleep(heartbeat_every(self.settings))

    async def _prune_prompts(self, prompts: PromptCache) -> None:
        max_age = self.settings.prompt_cache_max_age
        max_bytes = self.settings.prompt_cache_max_mb * 1024 * 1024
        while True:
            try:
                removed = await asyncio.to_thread(prompts.prune, max_age, max_bytes)
                if removed:
                    log.info("prompt cache: removed %d unused prompts", removed)
            except Exception:  # a full or read-only disk, or a bug: this loop must not die
                log.exception("pruning the prompt cache failed")
            await self.clock.sleep(PRUNE_EVERY)

    async def tend(self) -> None:
        """One round: beat, reclaim silent processes' calls, expire old queued calls, fill lines."""
        now = self.clock.wall()
        async with self.db.session() as session:
            await self._beat(session, now)
            finished = await self._reclaim(session, now)
            finished += await self._expire(session, now)
            accounts = await admission.accounts_waiting(session, Status.QUEUED)
        if finished:
            self.on_enqueued()
        for account_id in accounts:
            await self.release(account_id)

    async def _beat(self, session: Session, now: dt.datetime) -> None:
        await instances.beat(session, self.settings.instance_name, now)

    async def _reclaim(self, session: Session, now: dt.datetime) -> int:
        # A process silent this long is gone: its calls are finished by whoever notices first.
        cutoff = now - dt.timedelta(seconds=self.settings.instance_lease)
        count = 0
        for name in await instances.silent_since(session, cutoff, self.settings.instance_name):
            reason = f"ringflow instance {name} stopped while carrying the call"
            finished = await finish_calls_of(session, name, reason, now)
            freed = await streams.forget_owner(session, name)
            log.warning(
                "instance %s is silent: finished %d of its calls, freed %d stream places",
                name,
                finished,
                freed,
            )
            await instances.forget(session, name)
            count += finished
        return count

    async def _expire(self, session: Session, now: dt.datetime) -> int:
        max_age = self.settings.queue_max_age
        stale = await queued_before(session, Status.QUEUED, now - dt.timedelta(seconds=max_age))
        reason = f"waited more than {max_age:g}s in the queue for a free line"
        for call in stale:
            await apply(session, call, Change(call=Event.FAIL, reason=reason), now)
            CALLS_ENDED.labels(call.status, "none").inc()  # never dialled: no carrier
        return len(stale)
