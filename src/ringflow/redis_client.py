"""The Redis client of every limit ringflow shares between processes (rate limits, trunks).

redis-py's default pool refuses the 101st concurrent command with "Too many connections": a
burst of API requests would get 503s from the rate limiter, and a burst of calls could not
reach their trunk's shared gate. Here a command waits up to ``timeout`` for one of
``POOL_SIZE`` connections, and every wait is bounded, so a hung Redis fails the request instead
of hanging every API call.
"""

from __future__ import annotations

import redis.asyncio

POOL_SIZE = 32  # connections per process; a command takes well under a millisecond


def connect(url: str, timeout: float = 2.0) -> redis.asyncio.Redis:
    """A client for ``url`` whose pool waits (at most ``timeout``) for a free connection."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout)
    return redis.asyncio.Redis.from_pool(pool)
