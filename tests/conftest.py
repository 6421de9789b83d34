"""Shared fixtures: a migrated database on every backend, clocks, free ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ringflow.clock import ManualClock
from ringflow.storage.db import Database, migrate
from ringflow.storage.models import Base

PG_ADMIN_URL = os.environ.get("RINGFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# make test runs the suite in parallel processes (pytest-xdist); each takes a Redis database of
# its own (gw0: 15, gw1: 14, ...), as it makes its own PostgreSQL database, so that one's trunk
# channels, rate limits and notices are not another's.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = os.environ.get("RINGFLOW_TEST_REDIS", f"redis://127.0.0.1:6379/{15 - _WORKER % 15}")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated once."""
    name = f"ringflow_test_{uuid.uuid4().hex[:10]}"
    _pg_execute(PG_ADMIN_URL, f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    migrate(async_url)
    yield async_url
    _pg_execute(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_execute(url: str, sql: str) -> Any:
    """Run one statement outside any event loop (fixtures here are synchronous); the first
    value it returns, if any."""

    async def run() -> Any:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated database, once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "ringflow.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_url")
        _truncate(url)
        yield url


@pytest.fixture
def empty_pg(pg_url: str) -> str:
    """The session's PostgreSQL database, emptied (for tests of several processes on it)."""
    _truncate(pg_url)
    return pg_url


def _truncate(async_url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    _pg_execute(async_url, f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture
async def db(database_url: str, clock: ManualClock) -> AsyncIterator[Database]:
    # With the test's clock, as the server wires it: run_until does not jump the clock while a
    # statement is under way (a loaded machine can take longer than a few loop rounds).
    database = Database(database_url, clock)
    yield database
    await database.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
