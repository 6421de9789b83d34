"""Failed API logins are throttled per client address and per key id, in memory or in Redis.

Over real HTTP from several loopback source addresses (all of 127/8 is this machine): after too
many wrong tokens, an address (or a key id, from any address) gets 429 with Retry-After, even
with the right token, until the window has passed; other addresses and keys are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio
from conftest import REDIS_URL

from ringflow.ratelimit.redis import PREFIX
from tests.e2e import Rig, running

pytestmark = pytest.mark.timeout(60)
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PER_CLIENT = 5
PER_KEY = 8


@pytest.fixture(params=["memory", "redis"])
async def limiter_backend(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """No Redis (the in-process limiter), or Redis with this test's throttle keys cleared."""
    if request.param == "memory":
        yield None
        return
    client = redis.asyncio.Redis.from_url(REDIS_URL)

    async def clear() -> None:
        async for key in client.scan_iter(match=PREFIX + "api-login-fail:*"):
            await client.delete(key)

    await clear()
    try:
        yield REDIS_URL
    finally:
        await clear()
        await client.aclose()


@contextlib.asynccontextmanager
async def client_from(address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``address``."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        yield client


async def calls(
    client: httpx.AsyncClient, rig: Rig, token: str, key: str | None = None
) -> httpx.Response:
    return await client.get(rig.url("Calls.json"), auth=(key or rig.key, token))


@sqlite_only
async def test_an_address_with_too_many_failures_waits_even_with_the_right_token(
    database_url, limiter_backend
):
    async with (
        running(
            database_url,
            redis_url=limiter_backend,
            auth_failures_per_client=PER_CLIENT,
            auth_failures_per_key=100,
        ) as rig,
        client_from("127.0.0.3") as attacker,
        client_from("127.0.0.4") as other,
    ):
        for _ in range(PER_CLIENT):
            assert (await calls(attacker, rig, "wrong")).status_code == 401
        refused = await calls(attacker, rig, "wrong")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "60"
        assert "Too many failed logins from this address" in refused.text
        # Refused before the credentials are looked at: the right token waits too.
        assert (await calls(attacker, rig, rig.token)).status_code == 429
        admin = f"{rig.base}/admin/v1/accounts/{rig.sid}/apps"
        assert (await attacker.get(admin, auth=rig.auth)).status_code == 429
        # Another address is not affected.
        assert (await calls(other, rig, rig.token)).status_code == 200

        await rig.clock.advance(59)
        assert (await calls(attacker, rig, rig.token)).status_code == 429
        await rig.clock.advance(1)
        assert (await calls(attacker, rig, rig.token)).status_code == 200


@sqlite_only
async def test_a_key_id_guessed_from_many_addresses_waits_but_its_owner_does_not(
    database_url, limiter_backend
):
    async with running(
        database_url,
        redis_url=limiter_backend,
        auth_failures_per_client=100,
        auth_failures_per_key=PER_KEY,
    ) as rig:
        for i in range(PER_KEY):
            async with client_from(f"127.0.1.{i + 1}") as client:
                assert (await calls(client, rig, "wrong")).status_code == 401
        # A guessing address that failed waits for this key, even with the right token.
        async with client_from("127.0.1.1") as guesser:
            refused = await calls(guesser, rig, rig.token)
            assert refused.status_code == 429 and "for this key" in refused.text
        # A new guessing address gets one try, then waits.
        async with client_from("127.0.2.2") as newcomer:
            assert (await calls(newcomer, rig, "wrong")).status_code == 401
            assert (await calls(newcomer, rig, "wrong")).status_code == 429
        # The key's owner, from an address that has not failed, is not locked out, and
        # successful logins are never counted.
        async with client_from("127.0.2.1") as owner:
            for _ in range(PER_KEY + 2):
                assert (await calls(owner, rig, rig.token)).status_code == 200


@sqlite_only
async def test_a_burst_of_concurrent_wrong_tokens_is_bounded_before_any_is_counted(
    database_url, limiter_backend
):
    """Failures are counted after the lookup: a burst must not all reach the database first."""
    import asyncio

    from ringflow.api.auth import MAX_CHECKS_AT_ONCE

    async with running(
        database_url,
        redis_url=limiter_backend,
        auth_failures_per_client=PER_CLIENT,
        auth_failures_per_key=1000,
    ) as rig:
        limits = httpx.Limits(max_connections=200)
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.6", limits=limits)
        async with httpx.AsyncClient(transport=transport, timeout=30) as burst:
            answers = await asyncio.gather(*(calls(burst, rig, f"wrong{i}") for i in range(150)))
        codes = [a.status_code for a in answers]
        assert set(codes) <= {401, 429}
        checked = codes.count(401)  # each 401 is one credential lookup
        assert checked <= MAX_CHECKS_AT_ONCE + PER_CLIENT, codes


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    from starlette.requests import Request

    from ringflow.api.auth import client_of

    def request_from(host: str) -> Request:
        return Request({"type": "http", "client": (host, 1234), "headers": []})

    assert client_of(request_from("2001:db8:1:2::5")) == client_of(
        request_from("2001:db8:1:2:ffff::9")
    )
    assert client_of(request_from("2001:db8:1:2::5")) == "2001:db8:1:2::/64"
    assert client_of(request_from("2001:db8:1:3::5")) != client_of(request_from("2001:db8:1:2::5"))
    assert client_of(request_from("::ffff:192.0.2.7")) == "192.0.2.7"
    assert client_of(request_from("192.0.2.7")) == "192.0.2.7"
