"""``/readyz`` of a real ``ringflow serve`` follows its PostgreSQL and its Redis: 503 naming the
one that stopped answering, 200 again once it is back.

The machine's shared PostgreSQL and Redis are never stopped: PostgreSQL is reached through a
TCP relay the test opens and closes, and Redis is a ``redis-server`` of the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import free_port
from tests.processes import Server, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


class Relay:
    """A TCP relay to ``target``: ``stop`` refuses new connections and cuts open ones."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], log: Path) -> AsyncIterator[Server]:
    srv = Server(env, log)
    try:
        await srv.start()
        yield srv
    finally:
        await srv.close()


async def readiness(srv: Server, status: int, naming: str, timeout: float = 20) -> str:
    """Poll ``/readyz`` until it answers ``status`` with ``naming`` in its body; the body."""
    deadline = time.monotonic() + timeout
    body = ""
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            r = await http.get(f"{srv.base}/readyz")
            body = r.text
            if r.status_code == status and naming in body:
                return body
            await asyncio.sleep(0.1)
    raise AssertionError(
        f"/readyz never answered {status} naming {naming!r}; last: {body!r}\n{srv.output()}"
    )


async def test_readyz_goes_503_while_postgresql_is_unreachable(pg_url: str, tmp_path: Path) -> None:
    parts = urlsplit(pg_url)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
    await relay.start()
    through = pg_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{relay.port}", 1)
    env = server_env(through, f"ready-{uuid.uuid4().hex[:6]}")
    try:
        async with serving(env, tmp_path / "server.log") as srv:
            assert await readiness(srv, 200, "ready") == "ready\n"
            await relay.stop()
            body = await readiness(srv, 503, "database:")
            assert body.startswith("not ready\n") and "redis" not in body
            await relay.start()
            assert await readiness(srv, 200, "ready") == "ready\n"
    finally:
        if relay._server is not None:
            await relay.stop()


@pytest.fixture
def redis_port() -> Iterator[int]:
    """A port for the test's own Redis (started and stopped by the test)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    yield free_port()


def start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            import socket

            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"redis-server did not listen on {port}")


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


async def test_readyz_goes_503_while_redis_is_down(redis_port: int, tmp_path: Path) -> None:
    redis = start_redis(redis_port)
    env = server_env(
        f"sqlite+aiosqlite:///{tmp_path / 'ringflow.db'}",
        f"ready-{uuid.uuid4().hex[:6]}",
        RINGFLOW_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
    )
    try:
        async with serving(env, tmp_path / "server.log") as srv:
            assert await readiness(srv, 200, "ready") == "ready\n"
            stop_redis(redis)
            body = await readiness(srv, 503, "redis:")
            assert "database" not in body
            redis = start_redis(redis_port)
            assert await readiness(srv, 200, "ready") == "ready\n"
            assert "RINGFLOW_REDIS_URL" not in srv.output()  # it answered at start-up
    finally:
        if redis.poll() is None:
            stop_redis(redis)


async def test_a_server_started_with_redis_unreachable_says_so(
    redis_port: int, tmp_path: Path
) -> None:
    env = server_env(
        f"sqlite+aiosqlite:///{tmp_path / 'ringflow.db'}",
        f"ready-{uuid.uuid4().hex[:6]}",
        RINGFLOW_REDIS_URL=f"redis://:hunter2@127.0.0.1:{redis_port}/0",
    )
    async with serving(env, tmp_path / "server.log") as srv:
        warning = [line for line in srv.output().splitlines() if "RINGFLOW_REDIS_URL" in line]
        assert len(warning) == 1, srv.output()
        assert f"127.0.0.1:{redis_port}" in warning[0] and "unreachable" in warning[0]
        assert "hunter2" not in srv.output()
        await readiness(srv, 503, "redis:")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_readyz_names_a_dead_callback_deliverer(database_url: str) -> None:
    from tests.e2e import running

    async with running(database_url) as rig:
        assert (await rig.http.get(f"{rig.base}/readyz")).status_code == 200
        task = rig.services.deliverer._task
        assert task is not None
        task.cancel()  # as if it had died of a bug
        with contextlib.suppress(asyncio.CancelledError):
            await task
        r = await rig.http.get(f"{rig.base}/readyz")
        assert r.status_code == 503
        assert "outbox deliverer: its task is not running" in r.text
