#!/usr/bin/env python3
"""CPU per request of ringflow's outbound client (status callbacks, applets' fetches), against
httpx with the settings ringflow used before, in the same run.

Starts a minimal HTTP/1.1 server in a child process on loopback (it answers every request with
a two-byte 200), then, for each client in turn, POSTs a callback-sized JSON body ``--requests``
times with ``--concurrency`` requests at once, reading each answer's body. Prints each client's
CPU time per request (this process only: the server's work is the same for both) and the ratio.

    .venv/bin/python bench/outbound_http.py [--requests 3000] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import time

import httpx
import uvloop

from ringflow.clock import make_clock
from ringflow.config import Settings
from ringflow.webhooks.http import OutboundHttp

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
BODY = json.dumps(
    {
        "CallSid": "0" * 32,
        "Status": "completed",
        "From": "09812345678",
        "To": "08039591234",
        "Duration": 3,
        "CustomField": "order 1234",
    }
).encode()
HEADERS = {"Content-Type": "application/json"}


def serve(port: int) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


async def measure(send, requests: int, concurrency: int) -> float:
    """CPU microseconds per request of ``send()``, after a warm-up."""
    for _ in range(100):
        await send()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await send()

    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(requests)))
    return (time.process_time() - started) * 1e6 / requests


async def bench(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    # httpx as ringflow configured it: a pool of 100, 20 kept alive, a streamed body.
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=10) as client:

        async def with_httpx() -> None:
            async with client.stream("POST", url, content=BODY, headers=HEADERS) as response:
                async for _ in response.aiter_bytes():
                    pass

        before = await measure(with_httpx, requests, concurrency)
    settings = Settings(allow_private_urls=True, data_dir="data")
    async with OutboundHttp(settings, make_clock()) as http:

        async def with_ringflow() -> None:
            await http.post(url, content=BODY, headers=HEADERS)

        now = await measure(with_ringflow, requests, concurrency)
    return before, now


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    time.sleep(0.5)
    try:
        for concurrency in args.concurrency:
            before, now = uvloop.run(
                bench(f"http://127.0.0.1:{port}/cb", args.requests, concurrency)
            )
            print(
                f"{concurrency:3d} at once: httpx {before:7.0f} us CPU/request, "
                f"ringflow (aiohttp) {now:6.0f} us, ratio {now / before:.3f}"
            )
    finally:
        server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
