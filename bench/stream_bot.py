#!/usr/bin/env python3
"""The voice bot of ``bench/streams.py``: an AgentStream server that speaks without pause.

It answers every ``media`` message at once with a message of the same length (100 ms) cut from
a prompt it loops (raw 8 kHz s16le, ``--prompt``, resampled to the stream's rate), so the
caller hears speech continuously and the bot never queues audio ahead: ringflow's playout
buffer holds only what the round trip puts in it. Every message it sends carries, after the
protocol's keys, ``"t"``: ``time.monotonic()`` when it was built (Linux's monotonic clock is
the same in every process, so the bench can time the way in). Other events are read and
dropped; ``stop`` or a close ends the connection.

Run in its own process so its CPU is not counted as ringflow's. Prints ``port N`` once
listening, then on each line read from stdin its own CPU seconds and the counts so far::

    .venv/bin/python bench/stream_bot.py --prompt prompt.pcm [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import sys
import time

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

CHUNK_SECONDS = 0.1


class Voice:
    """The prompt as base64 100 ms chunks at each rate asked for (built once per rate)."""

    def __init__(self, pcm8k: bytes):
        self.pcm8k = pcm8k
        self.by_rate: dict[int, list[str]] = {}

    def chunks(self, rate: int) -> list[str]:
        if rate not in self.by_rate:
            samples = np.frombuffer(self.pcm8k, dtype="<i2")
            if rate != 8000:
                import soxr

                samples = soxr.resample(samples, 8000, rate).astype("<i2")
            size = round(rate * CHUNK_SECONDS)
            samples = np.concatenate([samples, np.zeros(-len(samples) % size, "<i2")])
            self.by_rate[rate] = [
                base64.b64encode(samples[i : i + size].tobytes()).decode()
                for i in range(0, len(samples), size)
            ]
        return self.by_rate[rate]


class Counts:
    connections = 0
    received = 0
    sent = 0
    other = 0


async def handle(ws: ServerConnection, voice: Voice, counts: Counts) -> None:
    counts.connections += 1
    chunks: list[str] = []
    head = ""
    n = 0
    try:
        async for frame in ws:
            if isinstance(frame, str) and frame.startswith('{"event":"media"') and head:
                counts.received += 1
                # Same length as what came in; ringflow sends equal 100 ms chunks.
                await ws.send(f'{head}{chunks[n % len(chunks)]}"}},"t":{time.monotonic():.6f}}}')
                n += 1
                counts.sent += 1
                continue
            message = json.loads(frame)
            if message.get("event") == "start":
                start = message["start"]
                chunks = voice.chunks(int(start["media_format"]["sample_rate"]))
                head = (
                    '{"event":"media","stream_sid":"'
                    + start["stream_sid"]
                    + '","media":{"payload":"'
                )
            elif message.get("event") == "stop":
                break
            else:
                counts.other += 1
    except ConnectionClosed:
        pass


async def report(counts: Counts) -> None:
    """One line per line read on stdin: CPU seconds used, connections, messages in and out."""
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(
            f"{ru.ru_utime + ru.ru_stime:.3f} {counts.connections} {counts.received} {counts.sent}",
            flush=True,
        )


async def main(voice: Voice, port: int) -> None:
    counts = Counts()
    async with serve(
        lambda ws: handle(ws, voice, counts),
        "127.0.0.1",
        port,
        compression=None,
        max_size=1 << 20,
        ping_interval=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"port {port}", flush=True)
        await report(counts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", required=True, help="raw 8 kHz s16le mono")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with open(args.prompt, "rb") as f:
        bot_voice = Voice(f.read())
    try:
        import uvloop

        uvloop.run(main(bot_voice, args.port))
    except ImportError:
        asyncio.run(main(bot_voice, args.port))
