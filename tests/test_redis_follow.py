"""Subscriptions between processes (``redis_client.follow``) against a real Redis, and against
a server that drops every connection: retried with a growing pause, one warning per outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import redis.asyncio

from ringflow.redis_client import follow, publish
from tests.conftest import REDIS_URL


async def test_messages_reach_the_follower_of_the_same_database_only() -> None:
    """Redis hands a publish to every subscriber of the server: a deployment on another
    database of the same server (here: the next one) must not hear it."""
    heard: list[dict] = []
    task = asyncio.ensure_future(
        follow(REDIS_URL, "ringflow:test:follow", heard.append, what="test")
    )
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    elsewhere = redis.asyncio.Redis.from_url(REDIS_URL.rsplit("/", 1)[0] + f"/{(db + 1) % 16}")
    try:
        for _ in range(100):
            if any(m["type"] == "subscribe" for m in heard):
                break
            await asyncio.sleep(0.02)
        await publish(elsewhere, "ringflow:test:follow", "not for us")
        await publish(client, "ringflow:test:follow", "hello")
        for _ in range(100):
            if any(m["type"] == "message" for m in heard):
                break
            await asyncio.sleep(0.02)
        assert [m["data"] for m in heard if m["type"] == "message"] == [b"hello"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
        await elsewhere.aclose()


async def test_a_redis_that_drops_us_is_retried_slower_and_warned_of_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal tries
        tries += 1
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    caplog.set_level(logging.WARNING, logger="ringflow.redis_client")
    task = asyncio.ensure_future(
        follow(
            f"redis://127.0.0.1:{port}/0",
            "c",
            lambda m: None,
            what="test",
            retry=0.1,
            retry_cap=0.4,
        )
    )
    await asyncio.sleep(1.6)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    server.close()
    # Pauses of 0.1, 0.2, 0.4, 0.4 ... s: about six tries in 1.6 s, not one every 0.1 s.
    assert 3 <= tries <= 8, tries
    lost = [r for r in caplog.records if "subscription lost" in r.getMessage()]
    assert len(lost) == 1
