"""The Redis client of every limit ringflow shares between processes (rate limits, trunks),
and the subscriptions by which processes tell each other of changes (``follow``).

redis-py's default pool refuses the 101st concurrent command with "Too many connections": a
burst of API requests would get 503s from the rate limiter, and a burst of calls could not
reach their trunk's shared gate. Here a command waits up to ``timeout`` for one of
``POOL_SIZE`` connections, and every wait is bounded, so a hung Redis fails the request instead
of hanging every API call.

Redis delivers a publish to every subscriber on the server, whatever database each uses, so
channels are named within the URL's database (``scoped``): deployments that share one Redis
server on different databases do not hear each other's notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

POOL_SIZE = 32  # connections per process; a command takes well under a millisecond


def connect(url: str, timeout: float = 2.0) -> redis.asyncio.Redis:
    """A client for ``url`` whose pool waits (at most ``timeout``) for a free connection."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return redis.asyncio.Redis.from_pool(pool)


def scoped(client: redis.asyncio.Redis, channel: str) -> str:
    """``channel`` within the database ``client`` uses (e.g. ``ringflow:lookups@3``)."""
    return f"{channel}@{client.connection_pool.connection_kwargs.get('db', 0)}"


async def publish(client: redis.asyncio.Redis, channel: str, message: str) -> None:
    """Publish ``message`` on ``channel`` (scoped to ``client``'s database)."""
    await client.publish(scoped(client, channel), message)


async def follow(
    url: str,
    channel: str,
    on_message: Callable[[dict[str, Any]], None],
    *,
    what: str,
    ping_every: float | None = None,
    retry: float = 0.2,
    retry_cap: float = 5.0,
) -> None:
    """Subscribe to ``channel`` (scoped to the URL's database) for good; ``on_message`` gets everything the subscription
    answers (its ``subscribe`` confirmation, each ``message``, and the ``pong`` of a ping sent
    every ``ping_every`` seconds, when given).

    A lost subscription is retried after a pause that doubles up to ``retry_cap``: a Redis that
    is down costs a few attempts a minute, and one warning naming ``what``, not a line each.
    """
    pause = retry
    while True:
        client = connect(url)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(scoped(client, channel))
            next_ping = 0.0
            while True:
                now = time.monotonic()
                if ping_every is not None and now >= next_ping:
                    await pubsub.ping()
                    next_ping = now + ping_every
                message = await pubsub.get_message(timeout=ping_every or 1.0)
                if message is not None:
                    if pause > retry:
                        log.info("%s: Redis subscription is back", what)
                    pause = retry
                    on_message(message)
        except (RedisError, OSError) as exc:
            if pause == retry:
                log.warning("%s: Redis subscription lost (%s); retrying", what, exc)
            await asyncio.sleep(pause)
            pause = min(retry_cap, pause * 2)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
                await client.aclose()
