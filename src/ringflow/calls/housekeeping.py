"""Periodic care of the call tables, shared by every ringflow process on one database.

Each round: this process's heartbeat; calls carried by a process silent for longer than
``RINGFLOW_INSTANCE_LEASE`` are finished (so they never hold an account's lines forever);
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

from sqlalchemy import delete, select

from ringflow.calls.status import Event, Status
from ringflow.calls.transitions import Change, apply, finish_calls_of
from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.media.cache import PromptCache
from ringflow.storage import admission
from ringflow.storage.db import Database
from ringflow.storage.models import Call, Instance

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
            await session.execute(delete(Instance).where(Instance.name == self.settings.instance_name))

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

    async def _beat(self, session, now: dt.datetime) -> None:  # type: ignore[no-untyped-def]
        me = await session.get(Instance, self.settings.instance_name)
        if me is None:
            session.add(Instance(name=self.settings.instance_name, started_at=now, heartbeat_at=now))
        else:
            me.heartbeat_at = now

    async def _reclaim(self, session, now: dt.datetime) -> int:  # type: ignore[no-untyped-def]
        # A process silent this long is gone: its calls are finished by whoever notices first.
        cutoff = now - dt.timedelta(seconds=self.settings.instance_lease)
        silent = (
            await session.execute(
                select(Instance).where(
                    Instance.heartbeat_at < cutoff, Instance.name != self.settings.instance_name
                )
            )
        ).scalars().all()
        count = 0
        for instance in silent:
            reason = f"ringflow instance {instance.name} stopped while carrying the call"
            finished = await finish_calls_of(session, instance.name, reason, now)
            log.warning("instance %s is silent: finished %d of its calls", instance.name, finished)
            await session.delete(instance)
            count += finished
        return count

    async def _expire(self, session, now: dt.datetime) -> int:  # type: ignore[no-untyped-def]
        max_age = self.settings.queue_max_age
        cutoff = now - dt.timedelta(seconds=max_age)
        stale = (
            await session.execute(
                select(Call)
                .where(Call.status == Status.QUEUED, Call.created_at < cutoff)
                .with_for_update(skip_locked=True)
            )
        ).scalars().all()
        reason = f"waited more than {max_age:g}s in the queue for a free line"
        for call in stale:
            await apply(session, call, Change(call=Event.FAIL, reason=reason), now)
        return len(stale)
