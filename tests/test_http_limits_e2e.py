"""The HTTP edge of a real ``ringflow serve`` against hostile clients over loopback: bodies that
would exhaust memory, JSON nested past any app, clients that dribble their head, idle
connections, and more connections than the process may hold."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import resource
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest

from tests.processes import Server, cli, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MB = 1024 * 1024
CAP = 50  # RINGFLOW_MAX_CONNECTIONS of the test server
HEAD_TIMEOUT = 1.0
KEEP_ALIVE = 1
BODY_TIMEOUT = 1.5
RSS_SLACK_KB = 12 * 1024  # a refused upload may cost the server a few MB, never the upload


@contextlib.asynccontextmanager
async def ringflow(tmp_path: Path, **env: str) -> AsyncIterator[Server]:
    """``ringflow serve`` with small connection limits, on a SQLite file of its own."""
    base = server_env(f"sqlite+aiosqlite:///{tmp_path}/ringflow.db", f"limits-{tmp_path.name}",
                      RINGFLOW_MAX_CONNECTIONS=str(CAP),
                      RINGFLOW_HTTP_HEAD_TIMEOUT=str(HEAD_TIMEOUT),
                      RINGFLOW_HTTP_KEEP_ALIVE=str(KEEP_ALIVE), **env)
    server = Server(base, tmp_path / "server.log")
    try:
        await server.start()
        yield server
    finally:
        await server.close()


def rss_kb(server: Server) -> int:
    """The server process's resident memory (VmRSS), in kB."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def exchange(port: int, head: bytes, body: Iterable[bytes] = (),
                   within: float = 10.0) -> tuple[int, float]:
    """Send ``head`` then ``body`` chunk by chunk until the server answers or hangs up:
    (status or 0, seconds until the answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    answer = asyncio.create_task(reader.read(200))
    try:
        writer.write(head)
        for chunk in body:
            if answer.done() or time.monotonic() - start > within:
                break
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # the server hung up on the rest of the upload: what it answered is in ``answer``
    try:
        data = await asyncio.wait_for(answer, within)
    except (ConnectionError, OSError):
        data = b""
    elapsed = time.monotonic() - start
    writer.close()
    status = int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, elapsed


def multipart_bomb(parts: int, chunked: bool) -> Iterator[bytes]:
    """``parts`` file parts of 1 MB each, optionally in chunked transfer coding."""
    blob = b"x" * MB
    for i in range(parts):
        part = (b"--BOMB\r\nContent-Disposition: form-data; name=\"f%d\"; filename=\"f%d\"\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n" % (i, i)) + blob + b"\r\n"
        yield b"%x\r\n%s\r\n" % (len(part), part) if chunked else part
    yield b"--BOMB--\r\n"


def post_head(path: str, content_type: str, length: int | None, auth: str = "") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    extra = f"Authorization: Basic {auth}\r\n" if auth else ""
    return (f"POST {path} HTTP/1.1\r\nHost: ringflow\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\n"
            f"{framing}\r\n{extra}\r\n").encode()


async def warm_up(server: Server) -> None:
    """Requests that load what a first request loads, so RSS measures only what follows."""
    for path in ("/login", "/logout"):
        form = post_head(path, "application/x-www-form-urlencoded", 6) + b"csrf=x"
        await exchange(server.port, form)


async def test_a_multipart_bomb_to_the_sign_in_pages_is_refused_unread(tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        await warm_up(server)
        before = rss_kb(server)
        for path in ("/logout", "/login"):
            for chunked in (False, True):
                head = post_head(path, "multipart/form-data; boundary=BOMB",
                                 None if chunked else 900 * (MB + 150))
                status, elapsed = await exchange(server.port, head, multipart_bomb(900, chunked))
                grown = rss_kb(server) - before
                assert (status, elapsed < 2, grown < RSS_SLACK_KB) == (415, True, True), (
                    path, chunked, status, elapsed, grown)
        # Url-encoded, as the forms are, but far larger than any form: refused as it streams.
        for chunked in (False, True):
            big = (b"a=" + b"x" * MB for _ in range(200))
            body = (b"%x\r\n%s\r\n" % (len(c), c) for c in big) if chunked else big
            head = post_head("/logout", "application/x-www-form-urlencoded",
                             None if chunked else 200 * (MB + 2))
            status, elapsed = await exchange(server.port, head, body)
            grown = rss_kb(server) - before
            assert (status, elapsed < 2, grown < RSS_SLACK_KB) == (413, True, True), (
                chunked, status, elapsed, grown)


async def test_an_oversized_admin_body_is_refused_as_it_streams(tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        apps, auth = await admin_apps(server)
        await warm_up(server)
        before = rss_kb(server)
        chunk = b" " * MB
        for chunked in (False, True):
            body = (b"%x\r\n%s\r\n" % (MB, chunk) if chunked else chunk for _ in range(100))
            head = post_head(apps, "application/json", None if chunked else 100 * MB, auth)
            status, elapsed = await exchange(server.port, head, body)
            grown = rss_kb(server) - before
            assert (status, elapsed < 2, grown < RSS_SLACK_KB) == (413, True, True), (
                chunked, status, elapsed, grown)
        multipart = post_head(apps, "multipart/form-data; boundary=B", 9, auth) + b"--B--\r\n\r\n"
        assert (await exchange(server.port, multipart))[0] == 415


async def test_deeply_nested_json_is_a_400(tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        apps, auth = await admin_apps(server)
        for nested in (b"[" * 50_000, b'{"a":' * 40 + b"1" + b"}" * 40):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(post_head(apps, "application/json", len(nested), auth) + nested)
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 400") and b"nested deeper than" in answer, answer


async def admin_apps(server: Server) -> tuple[str, str]:
    """A new account's admin apps URL path and its Basic credentials."""
    creds = json.loads(await cli(server.env, "accounts", "create", "Limits", "--json"))
    auth = base64.b64encode(f"{creds['api_key']}:{creds['api_token']}".encode()).decode()
    return f"/admin/v1/accounts/{creds['sid']}/apps", auth


async def test_a_slow_head_and_an_idle_connection_are_cut_off(tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        # A head dribbled one header line at a time, each well within any per-read timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        start = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\n")
        answer = asyncio.create_task(reader.read())
        while not answer.done() and time.monotonic() - start < 5:
            with contextlib.suppress(ConnectionError):
                writer.write(b"X-Slow: yes\r\n")
                await writer.drain()
            await asyncio.wait([answer], timeout=0.2)
        assert answer.done(), "a slow head was still open after 5 s"
        assert answer.result().startswith(b"HTTP/1.1 408")
        assert HEAD_TIMEOUT - 0.1 < time.monotonic() - start < HEAD_TIMEOUT + 1
        writer.close()

        # A connection that never sends a byte.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        start = time.monotonic()
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < HEAD_TIMEOUT + 1
        writer.close()

        # An idle keep-alive connection after its response.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert time.monotonic() - start < KEEP_ALIVE + 1
        writer.close()


async def test_a_slow_body_is_cut_off_at_the_body_deadline(tmp_path: Path) -> None:
    async with ringflow(tmp_path, RINGFLOW_HTTP_BODY_TIMEOUT=str(BODY_TIMEOUT)) as server:
        # A small form whose bytes come one every 0.2 s.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        start = time.monotonic()
        writer.write(post_head("/login", "application/x-www-form-urlencoded", 100))
        answer = asyncio.create_task(reader.read())
        while not answer.done() and time.monotonic() - start < 5:
            with contextlib.suppress(ConnectionError):
                writer.write(b"a")
                await writer.drain()
            await asyncio.wait([answer], timeout=0.2)
        assert answer.done(), "a slow body was still being read after 5 s"
        assert answer.result().startswith(b"HTTP/1.1 408"), answer.result()
        assert BODY_TIMEOUT - 0.1 < time.monotonic() - start < BODY_TIMEOUT + 1
        writer.close()


async def test_an_endless_header_line_is_refused_not_buffered(tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        await warm_up(server)
        before = rss_kb(server)
        line = (b"X-Long: " + b"y" * MB for _ in range(200))
        status, elapsed = await exchange(server.port, b"GET /healthz HTTP/1.1\r\n", line)
        grown = rss_kb(server) - before
        assert (status, elapsed < 2, grown < RSS_SLACK_KB) == (431, True, True), (
            status, elapsed, grown)


async def slow_client(port: int, closed: list[float], start: float) -> None:
    """A client that sends one header line every 0.2 s until the server hangs up."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed.append(time.monotonic() - start)
        return
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\n")
    try:
        while not reader.at_eof():
            writer.write(b"X-Slow: yes\r\n")
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                if not await asyncio.wait_for(reader.read(1024), 0.2):
                    break
    except (ConnectionError, OSError):
        pass
    closed.append(time.monotonic() - start)
    writer.close()


async def test_the_health_check_answers_while_slow_clients_hold_every_connection(
        tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        assert server.proc is not None
        # As a server at its descriptor limit: more slow clients than it may open files.
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (256, 256))
        closed: list[float] = []
        start = time.monotonic()
        clients = [asyncio.create_task(slow_client(server.port, closed, start))
                   for _ in range(300)]
        await asyncio.sleep(0.5)  # let them all connect and start dribbling
        asked = time.monotonic()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.port), 1)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 1)
        assert answer.startswith(b"HTTP/1.1 200") and time.monotonic() - asked < 1, answer
        writer.close()
        await asyncio.wait_for(asyncio.gather(*clients), 10)
        # Displaced at the cap, or cut at the head deadline: none outlived it by much.
        assert len(closed) == 300 and max(closed) < HEAD_TIMEOUT + 2, max(closed)
        assert "Too many open files" not in server.output()
