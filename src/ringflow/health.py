"""Readiness: whether this process can do its work now, and what is wrong when it cannot.

``/healthz`` is liveness (the process answers); ``/readyz`` asks every dependency a call needs:
the database, Redis when one is configured, each trunk that must register, and the outbox
deliverer's task. Each check is bounded by ``CHECK_TIMEOUT``, so a hung dependency makes the
answer a 503 rather than a hang (a load balancer's probe has its own short timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from ringflow.storage import gauges
from ringflow.storage.db import Database
from ringflow.telephony.carrier import Carrier

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0  # seconds each dependency has to answer


class Readiness:
    """The checks behind ``/readyz``; holds its own small Redis client."""

    def __init__(self, db: Database, carrier: Carrier, deliverer: Any, redis_url: str | None):
        self.db = db
        self.carrier = carrier
        self.deliverer = deliverer  # webhooks.deliverer.Deliverer: ``running``
        self.redis_url = redis_url
        self._redis: Any = None

    async def problems(self) -> list[str]:
        """What is not working now, one line each; empty when ready."""
        checks: dict[str, Awaitable[None]] = {"database": self._database()}
        if self.redis_url:
            checks["redis"] = self._ping_redis()
        results = await asyncio.gather(
            *(asyncio.wait_for(check, CHECK_TIMEOUT) for check in checks.values()),
            return_exceptions=True,
        )
        found = [
            f"{name}: {_describe(result)}"
            for name, result in zip(checks, results, strict=True)
            if isinstance(result, BaseException)
        ]
        found.extend(trunk_problems(self.carrier))
        if not getattr(self.deliverer, "running", True):
            found.append("outbox deliverer: its task is not running (callbacks are not sent)")
        return found

    async def _database(self) -> None:
        async with self.db.session() as session:
            await gauges.ping(session)

    async def _ping_redis(self) -> None:
        if self._redis is None:
            from ringflow.redis_client import connect

            assert self.redis_url is not None
            self._redis = connect(self.redis_url, timeout=CHECK_TIMEOUT)
        await self._redis.ping()

    async def warn_if_redis_unreachable(self) -> None:
        """At start-up: say so at once when the configured Redis does not answer."""
        if not self.redis_url:
            return
        try:
            await asyncio.wait_for(self._ping_redis(), CHECK_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "Redis at %s (RINGFLOW_REDIS_URL) is unreachable: %s; rate limits, "
                "trunk limits and hang-ups across processes fail until it answers",
                redact(self.redis_url),
                _describe(exc),
            )

    async def close(self) -> None:
        """Close the Redis client, if one was made."""
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None


def sip_side(carrier: Carrier) -> Any:
    """The SIP carrier behind ``carrier`` (itself, or a routing carrier's SIP side), or None."""
    if getattr(carrier, "name", "") == "sip":
        return carrier
    return getattr(carrier, "sip", None)


def trunk_problems(carrier: Carrier) -> list[str]:
    """Trunks that must register and are not registered now."""
    sip = sip_side(carrier)
    if sip is None:
        return []
    problems = []
    for name, registration in sip.registrations.items():
        if not registration.registered:
            cause = f" ({registration.cause})" if registration.cause else ""
            problems.append(f"trunk {name}: not registered, {registration.state}{cause}")
    return problems


def redact(url: str) -> str:
    """A URL without its password, for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=f"{user}{host}{port}").geturl()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:g} s"
    # Database errors carry the statement and a help link on later lines: the first says it.
    return (str(exc) or type(exc).__name__).splitlines()[0][:300]
