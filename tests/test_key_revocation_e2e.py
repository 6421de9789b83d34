"""A key revoked with the CLI is refused by a running server (another process, which has the
account cached) within a second: on SQLite without Redis (its cache's TTL) and on PostgreSQL with
Redis (the notice)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.processes import Server, cli, server_env

DELAY = 1.0  # seconds: the longest a revoked key may still open a server elsewhere


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_key_revoked_by_the_cli_is_refused_by_the_server_within_a_second(
    database_url: str, tmp_path: Path
):
    extra = {"RINGFLOW_REDIS_URL": REDIS_URL} if database_url.startswith("postgresql") else {}
    env = server_env(database_url, "revoke-e2e", **extra)
    creds = json.loads(await cli(env, "accounts", "create", "Revoke Co", "--json"))
    spare = json.loads(await cli(env, "keys", "create", creds["sid"], "--json"))
    server = Server(env, tmp_path / "server.log")
    await server.start()
    try:
        url = f"{server.base}/v1/Accounts/{creds['sid']}/Calls.json"
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(3):  # the server has the key cached from the first of these
                r = await http.get(url, auth=(creds["api_key"], creds["api_token"]))
                assert r.status_code == 200, r.text

            await cli(env, "keys", "revoke", creds["sid"], creds["api_key"])
            revoked = time.monotonic()
            while True:
                r = await http.get(url, auth=(creds["api_key"], creds["api_token"]))
                if r.status_code == 401:
                    break
                assert r.status_code == 200, r.text
                assert time.monotonic() - revoked < DELAY, "the revoked key still opens the server"
            # Refused from then on; the account's other key still works.
            r = await http.get(url, auth=(creds["api_key"], creds["api_token"]))
            assert r.status_code == 401
            r = await http.get(url, auth=(spare["api_key"], spare["api_token"]))
            assert r.status_code == 200, r.text
    except AssertionError:
        print(server.output())
        raise
    finally:
        await server.close()
