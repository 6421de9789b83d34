"""The outbound client against real HTTP servers on loopback: what it sends, what it reads back,
and where it stops (redirects, oversized and compressed bodies, refused connections)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable

import pytest

from ringflow.clock import ManualClock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest
from ringflow.webhooks.http import FetchError, OutboundHttp

Answer = Callable[[bytes], bytes]


class Server:
    """An HTTP/1.1 server on loopback that answers each request with ``answer(head)`` and keeps
    the request heads it got."""

    def __init__(self, answer: Answer):
        self.answer = answer
        self.heads: list[bytes] = []
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(self.answer(head))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], asyncio.Future[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Server:
        server = Server(answer)
        listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(listening)
        server.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
        return server

    yield start  # type: ignore[misc]
    for listening in servers:
        listening.close()


def response(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def client(max_body: int = 1 << 20, allow_private: bool = True) -> OutboundHttp:
    settings = Settings(allow_private_urls=allow_private, data_dir="data", callback_timeout=5)
    return OutboundHttp(settings, ManualClock(), max_body=max_body)


async def test_a_request_carries_its_body_headers_and_query_and_reads_the_answer(serve) -> None:
    server = await serve(lambda head: response("200 OK", b"ok", "Content-Type: text/plain\r\n"))
    async with client() as http:
        posted = await http.post(
            f"{server.url}/cb?a=1",
            content=b"CallSid=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        fetched = await http.get(f"{server.url}/menu?a=1", params={"CallSid": "abc", "d": "x y"})
    assert (posted.status_code, posted.body, posted.ok) == (200, b"ok", True)
    assert posted.headers.get("content-type") == "text/plain"  # read without regard to case
    post_head, get_head = server.heads
    assert post_head.startswith(b"POST /cb?a=1 HTTP/1.1\r\n")
    assert b"\r\nUser-Agent: ringflow/" in post_head
    assert b"\r\nContent-Type: application/x-www-form-urlencoded\r\n" in post_head
    # The URL's own query is kept; the parameters are added to it.
    assert get_head.startswith(b"GET /menu?a=1&CallSid=abc&d=x+y HTTP/1.1\r\n")
    assert fetched.url == f"{server.url}/menu?a=1&CallSid=abc&d=x+y"


async def test_a_redirect_is_the_answer_and_is_not_followed(serve) -> None:
    elsewhere = await serve(lambda head: response("200 OK", b"followed"))
    server = await serve(
        lambda head: response("302 Found", b"", f"Location: {elsewhere.url}/internal\r\n")
    )
    async with client() as http:
        answer = await http.get(f"{server.url}/flow")
    assert answer.status_code == 302 and not answer.ok
    assert elsewhere.heads == []


async def test_bodies_are_cut_at_the_limit_after_decompressing(serve) -> None:
    """A small gzip body that inflates to 10 MB is read only up to the limit."""
    bomb = gzip.compress(b"\0" * 10_000_000)
    server = await serve(
        lambda head: (
            response("200 OK", bomb, "Content-Encoding: gzip\r\n")
            if b"/bomb" in head
            else response("200 OK", b"x" * 5000)
        )
    )
    async with client(max_body=4096) as http:
        inflated = await http.get(f"{server.url}/bomb")
        plain = await http.get(f"{server.url}/plain")
    assert (len(inflated.body), inflated.truncated) == (4096, True)
    assert (plain.body, plain.truncated) == (b"x" * 4096, True)


async def test_a_refused_connection_is_a_fetch_error_naming_the_address() -> None:
    async with client() as http:
        with pytest.raises(FetchError, match=r"^ConnectError: cannot connect to 127\.0\.0\.1:1: "):
            await http.get("http://127.0.0.1:1/cb")


async def test_a_literal_private_address_is_refused_without_connecting(serve) -> None:
    server = await serve(lambda head: response("200 OK"))
    async with client(allow_private=False) as http:
        for url in (server.url, "http://[::ffff:127.0.0.1]:80/x", "http://2130706433/x"):
            with pytest.raises(InvalidRequest, match="private address"):
                await http.get(url, field="url")
    assert server.heads == []


def test_the_host_is_checked_as_the_client_reads_it() -> None:
    """A literal address is connected to without resolving it, so the client's own reading of
    the URL is checked too, beside ``validate_url``'s (two URL parsers may disagree)."""
    http = client(allow_private=False)
    for url in ("http://127.0.0.1/x", "http://[::ffff:10.0.0.1]/x", "http://[2002:7f00:1::]/x"):
        with pytest.raises(InvalidRequest, match="private address"):
            http._target(url, None, "url")
    assert str(http._target("http://93.184.216.34/x?a=1", {"b": "2"}, "url")) == (
        "http://93.184.216.34/x?a=1&b=2"
    )
