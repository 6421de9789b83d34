"""The HTTP edge of a real ``ringflow serve`` against hostile clients over loopback: bodies that
would exhaust memory, JSON nested past any app, clients that dribble their head, their body or
their trailers, idle connections, and more connections than the process may hold. Where the app
must misbehave on cue (answer late, read late), a stand-in app runs behind the same protocol in
a real uvicorn server in this process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import resource
import sys
import time
import wave
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from ringflow.http_connections import (
    BODY_GRACE,
    LINGER,
    ConnectionLimits,
    protocol_class,
)
from tests.conftest import free_port
from tests.processes import Server, cli, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MB = 1024 * 1024
CAP = 50  # RINGFLOW_MAX_CONNECTIONS of the test server
HEAD_TIMEOUT = 1.0
KEEP_ALIVE = 1
BODY_TIMEOUT = 1.5
RSS_SLACK_KB = 12 * 1024  # a refused upload may cost the server a few MB, never the upload
# What a client may have sent of an upload by the time it reads the refusal: the route's cap,
# loopback's socket buffers (a few MB each way) and a chunk or two. A server that read on would
# let it send the whole upload (hundreds of MB).
SENT_BEFORE_REFUSAL = 32 * MB
ROOT = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def ringflow(tmp_path: Path, **env: str) -> AsyncIterator[Server]:
    """``ringflow serve`` with small connection limits (``env`` may change them), on a SQLite file
    of its own."""
    settings = {
        "RINGFLOW_MAX_CONNECTIONS": str(CAP),
        "RINGFLOW_HTTP_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
        "RINGFLOW_HTTP_KEEP_ALIVE": str(KEEP_ALIVE),
        **env,
    }
    base = server_env(
        f"sqlite+aiosqlite:///{tmp_path}/ringflow.db", f"limits-{tmp_path.name}", **settings
    )
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


async def exchange(
    port: int, head: bytes, body: Iterable[bytes] = (), within: float = 10.0
) -> tuple[int, int]:
    """Send ``head`` then ``body`` chunk by chunk until the server answers or hangs up:
    (status or 0, bytes of the body sent by then)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    answer = asyncio.create_task(reader.read(200))
    sent = 0
    try:
        writer.write(head)
        for chunk in body:
            await asyncio.sleep(0)  # lets ``answer`` see what arrived, however fast the socket
            if answer.done() or time.monotonic() - start > within:
                break
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # the server hung up on the rest of the upload: what it answered is in ``answer``
    try:
        data = await asyncio.wait_for(answer, within)
    except (ConnectionError, OSError):
        data = b""
    writer.close()
    status = int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, sent


def multipart_bomb(parts: int, chunked: bool) -> Iterator[bytes]:
    """``parts`` file parts of 1 MB each, optionally in chunked transfer coding."""
    blob = b"x" * MB
    for i in range(parts):
        part = (
            (
                b'--BOMB\r\nContent-Disposition: form-data; name="f%d"; filename="f%d"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n" % (i, i)
            )
            + blob
            + b"\r\n"
        )
        yield b"%x\r\n%s\r\n" % (len(part), part) if chunked else part
    yield b"--BOMB--\r\n"


def post_head(
    path: str, content_type: str, length: int | None, auth: str = "", extra: str = ""
) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    if auth:
        extra += f"Authorization: Basic {auth}\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: ringflow\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\n"
        f"{framing}\r\n{extra}\r\n"
    ).encode()


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
                head = post_head(
                    path,
                    "multipart/form-data; boundary=BOMB",
                    None if chunked else 900 * (MB + 150),
                )
                status, sent = await exchange(server.port, head, multipart_bomb(900, chunked))
                grown = rss_kb(server) - before
                assert (status, sent < SENT_BEFORE_REFUSAL, grown < RSS_SLACK_KB) == (
                    415,
                    True,
                    True,
                ), (path, chunked, status, sent, grown)
        # Url-encoded, as the forms are, but far larger than any form: refused as it streams.
        for chunked in (False, True):
            big = (b"a=" + b"x" * MB for _ in range(200))
            body = (b"%x\r\n%s\r\n" % (len(c), c) for c in big) if chunked else big
            head = post_head(
                "/logout", "application/x-www-form-urlencoded", None if chunked else 200 * (MB + 2)
            )
            status, sent = await exchange(server.port, head, body)
            grown = rss_kb(server) - before
            assert (status, sent < SENT_BEFORE_REFUSAL, grown < RSS_SLACK_KB) == (
                413,
                True,
                True,
            ), (chunked, status, sent, grown)


async def test_an_oversized_admin_body_is_refused_as_it_streams(tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        apps, auth = await admin_apps(server)
        await warm_up(server)
        before = rss_kb(server)
        chunk = b" " * MB
        for chunked in (False, True):
            body = (b"%x\r\n%s\r\n" % (MB, chunk) if chunked else chunk for _ in range(100))
            head = post_head(apps, "application/json", None if chunked else 100 * MB, auth)
            status, sent = await exchange(server.port, head, body)
            grown = rss_kb(server) - before
            assert (status, sent < SENT_BEFORE_REFUSAL, grown < RSS_SLACK_KB) == (
                413,
                True,
                True,
            ), (chunked, status, sent, grown)
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


async def admin_account(server: Server) -> tuple[str, str]:
    """A new account's admin URL path prefix and its Basic credentials."""
    creds = json.loads(await cli(server.env, "accounts", "create", "Limits", "--json"))
    auth = base64.b64encode(f"{creds['api_key']}:{creds['api_token']}".encode()).decode()
    return f"/admin/v1/accounts/{creds['sid']}", auth


async def admin_apps(server: Server) -> tuple[str, str]:
    """A new account's admin apps URL path and its Basic credentials."""
    prefix, auth = await admin_account(server)
    return f"{prefix}/apps", auth


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
        assert HEAD_TIMEOUT - 0.1 < time.monotonic() - start < HEAD_TIMEOUT + 2
        writer.close()

        # A connection that never sends a byte.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        start = time.monotonic()
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < HEAD_TIMEOUT + 2
        writer.close()

        # An idle keep-alive connection after its response.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert time.monotonic() - start < KEEP_ALIVE + 2
        writer.close()

        # Blank lines between requests are no request: the head deadline still runs.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        answer = asyncio.create_task(reader.read())
        while not answer.done() and time.monotonic() - start < 5:
            with contextlib.suppress(ConnectionError):
                writer.write(b"\r\n")
                await writer.drain()
            await asyncio.wait([answer], timeout=0.2)
        assert answer.done(), "blank lines kept a connection open for 5 s"
        assert answer.result().startswith(b"HTTP/1.1 408"), answer.result()
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
        assert BODY_TIMEOUT - 0.1 < time.monotonic() - start < BODY_TIMEOUT + 2
        writer.close()


async def test_an_endless_header_line_is_refused_not_buffered(tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        await warm_up(server)
        before = rss_kb(server)
        line = (b"X-Long: " + b"y" * MB for _ in range(200))
        status, sent = await exchange(server.port, b"GET /healthz HTTP/1.1\r\n", line)
        grown = rss_kb(server) - before
        assert (status, sent < SENT_BEFORE_REFUSAL, grown < RSS_SLACK_KB) == (431, True, True), (
            status,
            sent,
            grown,
        )


async def test_the_next_head_on_a_keep_alive_connection_is_capped_from_its_first_read(
    tmp_path: Path,
) -> None:
    async with ringflow(tmp_path) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\n"
        pad = [b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(100)]  # 100 KB
        writer.write(request + b"\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)).startswith(b"HTTP/1.1 200")
        # A large head within the cap is served, on the same connection.
        writer.write(request + b"".join(pad[:40]) + b"\r\n")
        answer = await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        # Past the cap in a single write, which the server may well read in one go: 431 at once,
        # not the head deadline's 408.
        writer.write(request + b"".join(pad))
        answer = await asyncio.wait_for(reader.read(1024), 5)
        assert answer.startswith(b"HTTP/1.1 431"), answer
        writer.close()


def trailers(start: bytes, line: bytes, total: int) -> Iterator[bytes]:
    """A chunked form body (one chunk, then the last chunk) and trailers that never end:
    ``start``, then ``line`` repeated, 64 KB a write, ``total`` bytes in all."""
    yield b"6\r\na=b&c=\r\n0\r\n" + start
    block = line * (64 * 1024 // len(line))
    for _ in range(total // len(block)):
        yield block


async def test_trailers_past_their_cap_are_refused_not_buffered(tmp_path: Path) -> None:
    async with ringflow(tmp_path) as server:
        await warm_up(server)
        before = rss_kb(server)
        head = post_head("/login", "application/x-www-form-urlencoded", None)
        many = trailers(b"", b"X-Trailer: " + b"t" * 100 + b"\r\n", 100 * MB)
        endless = trailers(b"X-Endless: ", b"t" * 1024, 100 * MB)
        for body in (many, endless):
            status, sent = await exchange(server.port, head, body)
            grown = rss_kb(server) - before
            assert (status, sent < SENT_BEFORE_REFUSAL, grown < RSS_SLACK_KB) == (
                431,
                True,
                True,
            ), (status, sent, grown)
        # A trailer within the cap is read (and dropped): the form is answered as usual.
        status, _ = await exchange(server.port, head, [b"6\r\na=b&c=\r\n0\r\nX-Sum: 1\r\n\r\n"])
        assert status == 403  # the form carries no sign-in token


async def slow_body(port: int, path: str, every: float, chunk: bytes, closed: list[float]) -> bytes:
    """Send a form head declaring 500,000 bytes, then ``chunk`` every ``every`` seconds until the
    server answers or hangs up; what it answered (b"" if nothing). Appends when that was."""
    answer, writer = b"", None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post_head(path, "application/x-www-form-urlencoded", 500_000))
        read = asyncio.create_task(reader.read(1024))
        while not read.done():
            writer.write(chunk)
            await writer.drain()
            await asyncio.wait([read], timeout=every)
        answer = read.result()
        while not reader.at_eof():  # a refusal lingers: keep sending until the server closes
            writer.write(chunk)
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(1024), every)
    except (ConnectionError, OSError):
        pass  # cut by the server
    finally:
        closed.append(time.monotonic())
        if writer is not None:
            writer.close()
    return answer


async def test_slow_bodies_are_displaced_at_the_cap(tmp_path: Path) -> None:
    """A body far slower than any link (a byte every 0.2 s) loses its place at the connection cap
    once its grace has passed, long before its body deadline (30 s here)."""
    cap = 20
    async with ringflow(tmp_path, RINGFLOW_MAX_CONNECTIONS=str(cap)) as server:
        closed: list[float] = []
        start = time.monotonic()
        clients = [
            asyncio.create_task(slow_body(server.port, "/login", 0.2, b"a", closed))
            for _ in range(cap + 5)
        ]
        # The five past the cap go first: displacing a client that had not sent its head yet,
        # or answered 503 from the health reserve and closed after lingering.
        while len(closed) < 5 and time.monotonic() - start < 10:
            await asyncio.sleep(0.05)
        assert len(closed) == 5 and max(closed) - start < LINGER + 2, [c - start for c in closed]
        await asyncio.sleep(max(0.0, start + BODY_GRACE + 1 - time.monotonic()))
        # A quick client at the cap displaces the slow body that has lagged longest.
        status, _ = await exchange(
            server.port, b"GET /login HTTP/1.1\r\nHost: ringflow\r\nConnection: close\r\n\r\n"
        )
        assert status == 200, status
        while len(closed) < 6 and time.monotonic() - start < 10:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert len(closed) == 6, "one slow body, and only one, gave up its place"
        for client in clients:
            client.cancel()
        answers = await asyncio.gather(*clients, return_exceptions=True)
        assert not any(a.startswith(b"HTTP/1.1 408") for a in answers if isinstance(a, bytes))


async def test_the_health_reserve_answers_only_the_health_check(tmp_path: Path) -> None:
    """Every connection busy with a request that keeps up (here an upload at 20 KB/s): one more
    connection answers the health check, and 503 to anything else."""
    cap = 10
    async with ringflow(tmp_path, RINGFLOW_MAX_CONNECTIONS=str(cap)) as server:
        closed: list[float] = []
        clients = [
            asyncio.create_task(slow_body(server.port, "/login", 0.1, b"a" * 2048, closed))
            for _ in range(cap)
        ]
        await asyncio.sleep(BODY_GRACE + 0.5)  # past their grace: held to the minimum rate
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and time.monotonic() - start < 1, answer
        writer.close()
        for request in (b"GET /login HTTP/1.1\r\n", b"GET /healthz/more HTTP/1.1\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request + b"Host: ringflow\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
            writer.close()
        assert closed == [], "a request that kept up lost its place"
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)


@contextlib.asynccontextmanager
async def stand_in(app: Any, limits: ConnectionLimits) -> AsyncIterator[int]:
    """``app`` behind ringflow's HTTP protocol, in a real uvicorn server in this event loop; its
    port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            http=protocol_class(limits),
            log_level="warning",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


STAND_IN_BODY_TIMEOUT = 0.5
STAND_IN = ConnectionLimits(
    max_connections=50, head_timeout=5.0, body_timeout=STAND_IN_BODY_TIMEOUT
)


async def late_reader(scope: Any, receive: Any, send: Any) -> None:
    """Reads its body only after three body timeouts (as an upload waits for its slot), then
    answers with its size; a disconnect ends it."""
    await asyncio.sleep(3 * STAND_IN_BODY_TIMEOUT)
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"%d" % size
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def test_a_body_the_app_holds_back_is_not_charged_to_the_client() -> None:
    async with stand_in(late_reader, STAND_IN) as port:
        # Sent at once; the server reads 64 KB of it, then stops until the app reads.
        body = b"x" * MB
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post_head("/upload", "application/octet-stream", len(body)) + body)
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"%d" % MB), answer
        writer.close()

        # A client that waits for 100 Continue, which comes when the app first reads.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = post_head(
            "/upload", "application/octet-stream", len(body), extra="Expect: 100-continue\r\n"
        )
        writer.write(head)
        go_on = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert go_on == b"HTTP/1.1 100 Continue\r\n\r\n", go_on
        writer.write(body)
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"%d" % MB), answer
        writer.close()

        # Once the app reads, the clock runs again: a client that stops sending is cut.
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post_head("/upload", "application/octet-stream", len(body)) + body[: MB // 4])
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - start > 3 * STAND_IN_BODY_TIMEOUT
        writer.close()


async def test_after_a_408_the_app_answers_into_nothing() -> None:
    """A refusal ends the request for its app: its late answer is dropped, not written after
    the 408 and the end of the stream (which raised in the app)."""
    sent = asyncio.Event()
    failures: list[RuntimeError] = []

    async def late_answer(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(STAND_IN_BODY_TIMEOUT + LINGER / 4)  # the connection lingers
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"5")],
                }
            )
            await send({"type": "http.response.body", "body": b"late\n"})
        except RuntimeError as exc:  # uvicorn's, or the transport's "write() after write_eof()"
            failures.append(exc)
        sent.set()

    async with stand_in(late_answer, STAND_IN) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post_head("/form", "application/x-www-form-urlencoded", 100) + b"a=b")
        answer = await asyncio.wait_for(reader.read(), 10)  # the 408, then the server's FIN
        await asyncio.wait_for(sent.wait(), 10)  # our end still open, as a client still sending
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408") and answer.count(b"HTTP/1.1") == 1, answer
        assert failures == []


async def test_an_upload_waiting_for_a_slot_is_not_charged_the_wait(tmp_path: Path) -> None:
    """Four stalled uploads hold the admin API's upload slots until their body deadline; an
    upload that waits for 100 Continue meanwhile, then takes a second to send, is stored."""
    timeout = 3.0  # the upload's own second fits; its wait for a slot (2.5 s) and that would not
    async with ringflow(tmp_path, RINGFLOW_HTTP_BODY_TIMEOUT=str(timeout)) as server:
        prefix, auth = await admin_account(server)
        audio = wav_seconds(20)  # 320 KB
        head = post_head(f"{prefix}/audio", "audio/wav", len(audio), auth)
        holders = [
            asyncio.create_task(exchange(server.port, head, [audio[:4]], within=10))
            for _ in range(4)
        ]
        await asyncio.sleep(0.5)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            post_head(
                f"{prefix}/audio", "audio/wav", len(audio), auth, extra="Expect: 100-continue\r\n"
            )
        )
        go_on = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert go_on == b"HTTP/1.1 100 Continue\r\n\r\n", go_on
        piece = len(audio) // 10 + 1
        for i in range(0, len(audio), piece):  # a second for the whole of it
            writer.write(audio[i : i + piece])
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 201"), answer
        assert [status for status, _ in await asyncio.gather(*holders)] == [408] * 4
        assert "Exception in ASGI application" not in server.output()


def wav_seconds(seconds: int) -> bytes:
    """A WAV of silence, 8 kHz mono 16-bit."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 8000 * seconds)
    return out.getvalue()


async def slow_heads(port: int, clients: int, seconds: float) -> None:
    """Load for the test below, run in a process of its own so that it takes no time from the
    test's health check: ``clients`` clients that each send one header line every 0.2 s and
    connect again when cut, for ``seconds`` after all have connected. Prints "ready" then, and
    at the end each connection's (connected, answered or cut, cut by the server) as JSON."""
    lifetimes: list[tuple[float, float, bool]] = []
    connected = 0
    all_connected = asyncio.Event()
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal connected
        first = True
        while not stop.is_set():
            start = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            if first:
                first, connected = False, connected + 1
                if connected == clients:
                    all_connected.set()
            read = asyncio.create_task(reader.read(1024))
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\n")
                while not read.done() and not stop.is_set():
                    writer.write(b"X-Slow: yes\r\n")
                    await writer.drain()
                    await asyncio.wait([read], timeout=0.2)
                cut = read.done()  # answered (408), or closed, or reset
            except (ConnectionError, OSError):
                cut = True
            read.cancel()
            lifetimes.append((start, time.monotonic(), cut))
            writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await all_connected.wait()
    print("ready", flush=True)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(lifetimes), flush=True)


async def test_the_health_check_answers_while_slow_clients_hold_every_connection(
    tmp_path: Path,
) -> None:
    async with ringflow(tmp_path) as server:
        assert server.proc is not None
        # As a server at its descriptor limit: more slow clients than it may open files.
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (256, 256))
        clients, seconds = 300, 3.0
        load = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import asyncio, sys; from tests.test_http_limits_e2e import "
            "slow_heads; port, n, seconds = sys.argv[1:]; "
            "asyncio.run(slow_heads(int(port), int(n), float(seconds)))",
            str(server.port),
            str(clients),
            str(seconds),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * MB,
        )
        assert load.stdout is not None
        try:
            assert await asyncio.wait_for(load.stdout.readline(), 30) == b"ready\n"
            answered = []
            for _ in range(3):  # within a second each time, while the load goes on
                asked = time.monotonic()
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", server.port), 1
                )
                writer.write(
                    b"GET /healthz HTTP/1.1\r\nHost: ringflow\r\nConnection: close\r\n\r\n"
                )
                answer = await asyncio.wait_for(reader.read(), 1)
                answered.append(time.monotonic())
                writer.close()
                assert answer.startswith(b"HTTP/1.1 200") and answered[-1] - asked < 1, answer
                await asyncio.sleep(0.3)
            lifetimes = json.loads(await asyncio.wait_for(load.stdout.readline(), 30))
        finally:
            with contextlib.suppress(ProcessLookupError):
                load.kill()
            await load.wait()
        # The slow clients held more than every connection while the health check answered...
        for at in answered:
            assert sum(start < at < end for start, end, _ in lifetimes) > CAP
        # ...and none kept its connection much past the head deadline: displaced at the cap, or
        # answered 408 (and those that outlived the load were not cut only because it stopped).
        assert max(end - start for start, end, _ in lifetimes) < HEAD_TIMEOUT + 2
        assert "Too many open files" not in server.output()
