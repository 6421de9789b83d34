"""An echo bot speaking Exotel's AgentStream protocol: greets the caller, then echoes them.

What it does on each stream ringflow opens to it:

- on ``start``: speaks a short greeting at the stream's sample rate
  (``start.media_format.sample_rate``: 8000, 16000 or 24000 Hz) and sends the mark
  ``greeting-done`` behind it;
- once ringflow sends that mark back (the greeting has finished playing to the caller), it echoes
  the caller's audio back half a second late, so the caller hears themselves;
- on a key press (``dtmf``): sends ``clear`` (barge-in: ringflow drops the bot audio still queued
  and returns the marks queued behind it, which the bot prints);
- prints every message it receives, one readable line each (caller audio once a second).

The greeting is spoken by espeak-ng: ringflow's own (the ``espeakng-loader`` wheel it installs)
when run from ringflow's virtualenv, else Debian's ``espeak-ng`` command, else three chimes.
Only ``websockets`` (a ringflow dependency) and the standard library are needed.

Run it beside ringflow (``make serve`` prints the demo account's SID, API key and token)::

    .venv/bin/python examples/bots/echo_bot.py --port 8765

and place a call whose answered audio is streamed to it::

    curl -u KEY:TOKEN http://127.0.0.1:8080/v1/Accounts/demo/Calls/connect \\
      -d From=09812345678 -d CallerId=08039591234 -d StreamUrl=ws://127.0.0.1:8765/

For 16 kHz audio, add ``?sample-rate=16000`` to the StreamUrl (quote it for the shell). To have the
sandbox's virtual phone press a key and talk, script it first:
``ringflow sandbox script 09812345678 --keys 5 --says "Hello bot"``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import io
import itertools
import json
import math
import shutil
import subprocess
import sys
import time
import wave
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

GREETING = (
    "Hello from the echo bot. Speak, and you will hear yourself. Press any key to interrupt me."
)
GREETING_MARK = "greeting-done"
ECHO_DELAY = 0.5  # seconds
CHUNK_MS = 100  # the bot's audio goes out in 100 ms messages (a multiple of 20 ms, as Exotel asks)
SAMPLE_WIDTH = 2

_connection_ids = itertools.count(1)


def log(conn: int, text: str) -> None:
    """One readable line: wall time, connection number, what happened."""
    now = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
    print(f"{now} [{conn}] {text}", flush=True)


# Audio: PCM16 little-endian mono, as bytes, with no numpy.


def resample(pcm: bytes, src: int, dst: int) -> bytes:
    """Linear-interpolation resampling, smoothed first when going down (good enough for a demo)."""
    if src == dst or not pcm:
        return pcm
    samples = memoryview(pcm).cast("h")
    if dst < src:
        # A moving average over one output period keeps most aliasing out of the speech band.
        width = math.ceil(src / dst)
        running, smoothed = 0, []
        for i, x in enumerate(samples):
            running += x - (samples[i - width] if i >= width else 0)
            smoothed.append(running // min(i + 1, width))
        samples = memoryview(_pack(smoothed)).cast("h")
    n = int(len(samples) * dst / src)
    out = []
    for j in range(n):
        pos = j * src / dst
        i = int(pos)
        nxt = samples[min(i + 1, len(samples) - 1)]
        out.append(int(samples[i] + (nxt - samples[i]) * (pos - i)))
    return _pack(out)


def _pack(samples: list[int]) -> bytes:
    clipped = (max(-32768, min(32767, s)) for s in samples)
    return b"".join(s.to_bytes(2, "little", signed=True) for s in clipped)


def chimes(rate: int) -> bytes:
    """Three soft rising notes (C, E, G), each faded in and out: the greeting without a voice."""
    out = bytearray()
    for freq in (523.25, 659.25, 783.99):
        n = int(rate * 0.3)
        for i in range(n):
            fade = min(1.0, i / (0.02 * rate), (n - i) / (0.05 * rate))
            out += int(8000 * fade * math.sin(2 * math.pi * freq * i / rate)).to_bytes(
                2, "little", signed=True
            )
        out += bytes(int(rate * 0.05) * SAMPLE_WIDTH)
    return bytes(out)


def speak(text: str, rate: int) -> tuple[bytes, str]:
    """``text`` spoken at ``rate``, and what spoke it; chimes when no espeak-ng is installed."""
    try:
        from ringflow.errors import RingflowError
        from ringflow.media.tts import Espeak
    except ImportError:
        pass
    else:
        try:
            # ringflow renders at 8 kHz for the phone line.
            return resample(Espeak().render(text, "en").pcm, 8000, rate), "espeak-ng (ringflow)"
        except RingflowError as exc:
            print(f"ringflow's espeak-ng cannot speak: {exc}", file=sys.stderr)
    if shutil.which("espeak-ng"):
        proc = subprocess.run(
            ["espeak-ng", "--stdout", text], capture_output=True, timeout=30, check=False
        )
        if proc.returncode == 0:
            with wave.open(io.BytesIO(proc.stdout), "rb") as w:
                pcm = w.readframes(w.getnframes())
                return resample(pcm, w.getframerate(), rate), "espeak-ng (command)"
    return chimes(rate), "chimes (no espeak-ng found)"


# One stream.


class Stream:
    """One WebSocket connection from ringflow: one call's audio."""

    def __init__(self, ws: ServerConnection, greeting: str, delay: float):
        self.ws = ws
        self.id = next(_connection_ids)
        self.greeting = greeting
        self.delay = delay
        self.stream_sid: str | None = None
        self.rate = 8000
        self.echoing = False  # from the moment the greeting has played
        self.echoes: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.caller_bytes = 0
        self.reported_seconds = 0

    async def run(self) -> None:
        """Read until ringflow closes; echo from a second task meanwhile."""
        request = self.ws.request
        log(
            self.id,
            f"connection from {self.ws.remote_address[0]} to {request.path if request else '?'}",
        )
        echo = asyncio.create_task(self._echo())
        try:
            async for frame in self.ws:
                await self.receive(frame)
        except ConnectionClosed:
            pass
        finally:
            echo.cancel()
            log(
                self.id,
                f"closed (code {self.ws.close_code}, {self.caller_bytes} bytes of caller audio)",
            )

    async def receive(self, frame: str | bytes) -> None:
        """Handle one frame; anything malformed is printed and ignored."""
        if isinstance(frame, bytes):
            log(self.id, f"binary frame of {len(frame)} bytes (not in the protocol; ignored)")
            return
        try:
            message = json.loads(frame)
            event = message["event"]
        except (ValueError, KeyError, TypeError):
            log(self.id, f"not a protocol message (ignored): {frame[:80]!r}")
            return
        handler = getattr(self, f"on_{event}", None)
        if handler is None:
            log(self.id, f"unknown event {event!r}: {frame[:120]}")
            return
        await handler(message)

    async def on_connected(self, message: dict[str, Any]) -> None:
        log(self.id, "connected")

    async def on_start(self, message: dict[str, Any]) -> None:
        start = message.get("start", {})
        self.stream_sid = start.get("stream_sid") or message.get("stream_sid")
        self.rate = int(start.get("media_format", {}).get("sample_rate", 8000))
        log(
            self.id,
            f"start: stream {self.stream_sid}, call {start.get('call_sid')}, "
            f"{start.get('from')} -> {start.get('to')}, {self.rate} Hz, "
            f"custom parameters {start.get('custom_parameters', {})}",
        )
        pcm, voice = await asyncio.to_thread(speak, self.greeting, self.rate)
        await self.send_audio(pcm)
        await self.send({"event": "mark", "mark": {"name": GREETING_MARK}})
        log(
            self.id,
            f"sent the greeting ({len(pcm) / (self.rate * 2):.1f} s, {voice}) "
            f"and mark {GREETING_MARK!r}",
        )

    async def on_media(self, message: dict[str, Any]) -> None:
        try:
            pcm = base64.b64decode(message["media"]["payload"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            log(self.id, "media with no valid base64 payload (ignored)")
            return
        self.caller_bytes += len(pcm)
        seconds = self.caller_bytes // (self.rate * SAMPLE_WIDTH)
        if seconds > self.reported_seconds:
            self.reported_seconds = seconds
            media = message["media"]
            log(
                self.id,
                f"caller audio: {seconds} s so far "
                f"(chunk {media.get('chunk')}, {len(pcm)} bytes each)",
            )
        if self.echoing:
            self.echoes.put_nowait((time.monotonic() + self.delay, pcm))

    async def on_dtmf(self, message: dict[str, Any]) -> None:
        digit = message.get("dtmf", {}).get("digit")
        log(self.id, f"caller pressed {digit!r}: sending clear (barge-in)")
        while not self.echoes.empty():
            self.echoes.get_nowait()
        await self.send({"event": "clear"})

    async def on_mark(self, message: dict[str, Any]) -> None:
        name = message.get("mark", {}).get("name")
        log(self.id, f"mark {name!r} came back: the audio before it has played (or was cleared)")
        if name == GREETING_MARK and not self.echoing:
            self.echoing = True
            log(self.id, f"echoing the caller from now on, {self.delay:g} s late")

    async def on_stop(self, message: dict[str, Any]) -> None:
        log(self.id, f"stop: {message.get('stop', {}).get('reason')}")

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message, with the stream's SID."""
        if self.stream_sid:
            message["stream_sid"] = self.stream_sid
        await self.ws.send(json.dumps(message))

    async def send_audio(self, pcm: bytes) -> None:
        """Send PCM as 100 ms media messages (ringflow paces the playout itself)."""
        frame = self.rate * 20 // 1000 * SAMPLE_WIDTH
        pcm += bytes(-len(pcm) % frame)  # whole 20 ms frames, as Exotel asks of bots
        step = self.rate * CHUNK_MS // 1000 * SAMPLE_WIDTH
        for offset in range(0, len(pcm), step):
            payload = base64.b64encode(pcm[offset : offset + step]).decode("ascii")
            await self.send({"event": "media", "media": {"payload": payload}})

    async def _echo(self) -> None:
        while True:
            due, pcm = await self.echoes.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                await self.send_audio(pcm)
            except ConnectionClosed:
                return


async def main() -> None:
    """Serve streams until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on")
    parser.add_argument("--greeting", default=GREETING, help="what the bot says first")
    parser.add_argument("--delay", type=float, default=ECHO_DELAY, help="echo delay in seconds")
    args = parser.parse_args()

    async def handle(ws: ServerConnection) -> None:
        await Stream(ws, args.greeting, args.delay).run()

    async with serve(handle, args.host, args.port) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"echo bot listening on ws://{args.host}:{port}/ (Ctrl-C stops it)", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
