"""A per-process cache of the lookups every API request makes (accounts, API keys, ExoPhones,
apps), forgotten whenever one of them changes.

A change made here is forgotten here at once. Other processes learn of it in one of two ways:

- with Redis (``RINGFLOW_REDIS_URL``), the changing process publishes on ``CHANNEL`` and every
  process forgets its whole cache on the message. Entries then live up to ``SHARED_TTL``, but only
  while the subscription is known to be alive: it is pinged every ``PING_EVERY`` seconds, and
  once no answer has come for ``HEALTH_WINDOW`` seconds (Redis down, a cut connection) entries
  older than ``LOCAL_TTL`` are not used, and the cache is forgotten when the subscription is back
  (a notice may have been missed meanwhile);
- without Redis, entries live ``LOCAL_TTL`` seconds, so another process (the CLI beside a
  server, or a second server on the same database) sees a change within that time.

Changes are rare (an operator revoking a key, a new app version), so a change forgets everything
rather than tracking what depended on what. A lookup that was reading the database while a change
was announced does not store what it read, which may predate the change.

A lookup that runs in a transaction of its own (``shared``) is read once however many requests
miss it at the same moment: when an entry expires under load, every request in flight would
otherwise read the same row. A request that arrives after a change does not join a read begun
before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from ringflow.clock import Clock
from ringflow.redis_client import publish

log = logging.getLogger(__name__)

T = TypeVar("T")
CHANNEL = "ringflow:lookups"
LOCAL_TTL = 0.5  # seconds: how stale another process's change may be seen without Redis
SHARED_TTL = 60.0  # seconds an entry lives while Redis notices are known to arrive
PING_EVERY = 0.2
HEALTH_WINDOW = 0.8  # seconds without an answer from Redis before notices count as lost
PUBLISH_TRIES = 5
MAX_ENTRIES = 10_000


class Lookups:
    """Cached lookups of one process (see the module docstring for how they are forgotten)."""

    def __init__(self, clock: Clock, redis_url: str | None = None, max_entries: int = MAX_ENTRIES):
        self.clock = clock
        self.redis_url = redis_url
        self.max_entries = max_entries
        self.generation = 0  # how many times this cache was forgotten
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        # key -> (generation it began in, the read): reads under way that others may join
        self._loading: dict[Hashable, tuple[int, asyncio.Future[Any]]] = {}
        # Monotonic real time until which the subscription counts as alive: it is a matter of
        # the network, not of the clock that call timers run on.
        self._alive_until = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._publisher: Any = None

    async def get(
        self,
        key: Hashable,
        load: Callable[[], Awaitable[T]],
        keep: Callable[[T], bool] = lambda value: True,
        *,
        shared: bool = False,
    ) -> T:
        """The value cached under ``key``, or what ``load()`` reads (cached if ``keep`` says).

        ``shared``: ``load`` needs nothing of its caller's (it opens its own transaction), so
        callers that miss ``key`` while it is being read wait for that read instead of reading
        again; one that gives up leaves the read to the others."""
        entry = self._entries.get(key)
        if entry is not None:
            if self.clock.now() - entry[0] <= self._ttl():
                self._entries.move_to_end(key)
                # Entries of every key share one dict, so it holds Any; this key's load gave a T.
                return entry[1]  # type: ignore[no-any-return]
            del self._entries[key]
        generation = self.generation
        if not shared:
            return self._kept(key, generation, await load(), keep)
        loading = self._loading.get(key)
        read: asyncio.Future[T]
        if loading is None or loading[0] != generation:
            read = asyncio.ensure_future(self._read(key, generation, load, keep))
            self._loading[key] = (generation, read)
            read.add_done_callback(functools.partial(self._read_done, key))
        else:
            read = loading[1]  # every key's reads share one dict; this key's load gives a T
        return await asyncio.shield(read)

    async def _read(
        self, key: Hashable, generation: int, load: Callable[[], Awaitable[T]], keep: Any
    ) -> T:
        return self._kept(key, generation, await load(), keep)

    def _read_done(self, key: Hashable, read: asyncio.Future[Any]) -> None:
        loading = self._loading.get(key)
        if loading is not None and loading[1] is read:
            del self._loading[key]
        if not read.cancelled():
            read.exception()  # retrieved: an error whose callers all gave up is not "lost"

    def _kept(self, key: Hashable, generation: int, value: T, keep: Callable[[T], bool]) -> T:
        """``value``, stored under ``key`` if ``keep`` says and no change came since
        ``generation``."""
        if keep(value) and generation == self.generation:
            self._entries[key] = (self.clock.now(), value)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def _ttl(self) -> float:
        if self.redis_url and time.monotonic() < self._alive_until:
            return SHARED_TTL
        return LOCAL_TTL

    def forget(self) -> None:
        """Drop every entry, and any lookup now reading the database."""
        self.generation += 1
        self._entries.clear()

    async def changed(self) -> None:
        """Call after a change is committed: forget it here, and tell the other processes."""
        self.forget()
        if not self.redis_url:
            return
        for attempt in range(PUBLISH_TRIES):
            try:
                await publish(self._client(), CHANNEL, "changed")
                return
            except (RedisError, OSError) as exc:
                if attempt == PUBLISH_TRIES - 1:
                    log.error(
                        "cannot tell other processes of a change of accounts, keys, "
                        "numbers or apps (%s): those cut off from Redis see it within "
                        "%g s, others within %g s",
                        exc,
                        HEALTH_WINDOW,
                        SHARED_TTL,
                    )
                    return
                await asyncio.sleep(0.1 * (attempt + 1))

    def _client(self) -> Any:
        if self._publisher is None:
            from ringflow.redis_client import connect

            assert self.redis_url is not None
            self._publisher = connect(self.redis_url)
        return self._publisher

    def start(self) -> None:
        """Listen for other processes' changes (with Redis; without, entries just expire)."""
        if self.redis_url and self._task is None:
            self._task = asyncio.ensure_future(self._listen())

    async def close(self) -> None:
        """Stop listening; close the Redis connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._publisher is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._publisher.aclose()
            self._publisher = None

    async def _listen(self) -> None:
        from ringflow.redis_client import follow

        assert self.redis_url is not None
        # While it is lost, entries live only LOCAL_TTL.
        await follow(
            self.redis_url, CHANNEL, self._heard, what="lookup cache", ping_every=PING_EVERY
        )

    def _heard(self, message: dict[str, Any]) -> None:
        """Forget on every notice (and on subscribing: notices before it may have been
        missed); any answer, pongs included, says notices are arriving."""
        if message["type"] in ("subscribe", "message"):
            self.forget()
        self._alive_until = time.monotonic() + HEALTH_WINDOW
