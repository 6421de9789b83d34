"""examples/bots/echo_bot.py as a user runs it, driven by a websockets client playing ringflow."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.test_sip_carrier_e2e import sqlite_db  # noqa: F401 (the fixture)
from tests.wsbot import decode_payload, pcm_tone

ROOT = Path(__file__).resolve().parents[1]
BOT = ROOT / "examples" / "bots" / "echo_bot.py"
SID = "MZ00000000000000000000000000000001"


class EchoBot:
    """The example bot as a child process, its output kept."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.lines: list[str] = []
        self.url = ""

    async def read_until(self, pattern: str, timeout: float) -> re.Match[str]:
        """Read its output until a line matches ``pattern``."""
        assert self.proc.stdout is not None
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        async with asyncio.timeout(timeout):
            while raw := await self.proc.stdout.readline():
                self.lines.append(raw.decode(errors="replace"))
                if found := re.search(pattern, self.lines[-1]):
                    return found
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.lines)}")


@pytest.fixture
async def echo_bot() -> AsyncIterator[EchoBot]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BOT),
        "--port",
        "0",
        "--delay",
        "0.3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    bot = EchoBot(proc)
    try:
        found = await bot.read_until(r"listening on (ws://\S+)", timeout=30)
        bot.url = found.group(1)
        yield bot
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class Ringflow:
    """ringflow's side of one stream: numbered messages out, the bot's messages in."""

    def __init__(self, ws: ClientConnection, rate: int):
        self.ws = ws
        self.rate = rate
        self.seq = 0
        self.chunk = 0
        self.got: list[tuple[float, dict[str, Any]]] = []

    async def send(self, event: str, **body: Any) -> None:
        self.seq += 1
        message = {"event": event, "sequence_number": str(self.seq), "stream_sid": SID} | body
        await self.ws.send(json.dumps(message))

    async def media(self, pcm: bytes) -> None:
        """Caller audio in 100 ms chunks."""
        step = self.rate // 10 * 2
        for offset in range(0, len(pcm), step):
            self.chunk += 1
            payload = base64.b64encode(pcm[offset : offset + step]).decode()
            media = {"chunk": str(self.chunk), "timestamp": str((self.chunk - 1) * 100)}
            await self.send("media", media=media | {"payload": payload})

    async def read(self) -> None:
        async for frame in self.ws:
            assert isinstance(frame, str), "the bot sent a binary frame"
            self.got.append((time.monotonic(), json.loads(frame)))

    async def wait(self, check: Any, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.02)

    def events(self) -> list[str]:
        return [m["event"] for _, m in self.got]

    def audio(self, since: float = 0.0) -> bytes:
        media = [m for at, m in self.got if m["event"] == "media" and at >= since]
        return b"".join(decode_payload(m["media"]["payload"]) for m in media)


@pytest.mark.e2e
@pytest.mark.timeout(60)
@pytest.mark.parametrize("rate", [8000, 16000])
async def test_echo_bot_greets_marks_echoes_and_clears(echo_bot: EchoBot, rate: int) -> None:
    async with connect(echo_bot.url + "?k=v", open_timeout=10) as ws:
        ringflow = Ringflow(ws, rate)
        reader = asyncio.create_task(ringflow.read())
        await ringflow.send("connected")
        start = {
            "stream_sid": SID,
            "call_sid": "CA1",
            "account_sid": "demo",
            "from": "09812345678",
            "to": "08039591234",
            "custom_parameters": {"k": "v"},
            "media_format": {"encoding": "audio/x-raw", "sample_rate": str(rate), "bit_rate": "16"},
        }
        await ringflow.send("start", start=start)
        await ringflow.media(bytes(rate // 10 * 2 * 3))  # the caller is silent during the greeting
        await ringflow.wait(lambda: "mark" in ringflow.events())

        greeting = ringflow.audio()
        assert len(greeting) > rate * 2 * 0.5, "a greeting of less than half a second"
        assert any(greeting), "a silent greeting"
        assert ringflow.events()[-1] == "mark" and set(ringflow.events()) == {"media", "mark"}
        mark = ringflow.got[-1][1]
        assert mark["mark"] == {"name": "greeting-done"} and mark["stream_sid"] == SID
        sizes = [len(decode_payload(m["media"]["payload"])) for _, m in ringflow.got[:-1]]
        assert all(size % (rate // 50 * 2) == 0 for size in sizes), "not whole 20 ms frames"

        # The greeting has played: ringflow returns the mark, and the bot echoes from then on.
        await ringflow.send("mark", mark={"name": "greeting-done"})
        await echo_bot.read_until(r"echoing the caller", timeout=10)
        said_at = time.monotonic()
        voice = pcm_tone(500, 0.5, rate)
        await ringflow.media(voice)
        await ringflow.wait(lambda: len(ringflow.audio(since=said_at)) >= len(voice))
        echoed_at = next(at for at, m in ringflow.got if at >= said_at and m["event"] == "media")
        assert ringflow.audio(since=said_at) == voice
        assert echoed_at - said_at >= 0.25  # --delay 0.3

        await ringflow.send("dtmf", dtmf={"digit": "5", "duration": "100"})
        await ringflow.wait(lambda: ringflow.events()[-1] == "clear")
        await ringflow.send("mark", mark={"name": "greeting-done"})
        await echo_bot.read_until(r"mark 'greeting-done' came back", timeout=10)
        stop = {"call_sid": "CA1", "account_sid": "demo", "reason": "callended"}
        await ringflow.send("stop", stop=stop)
        await ws.close()
        await asyncio.wait_for(reader, 10)

    await echo_bot.read_until(r"closed \(code 1000", timeout=10)
    output = "".join(echo_bot.lines)
    assert f"{rate} Hz" in output and "custom parameters {'k': 'v'}" in output
    assert "caller pressed '5': sending clear" in output
    assert "stop: callended" in output


@pytest.mark.usefixtures("sqlite_db")
async def test_the_example_bot_on_a_ringflow_call(echo_bot: EchoBot, tmp_path: Path) -> None:
    """What the README shows: a StreamUrl call to the example bot on the sandbox; the phone
    speaks, presses a key (the bot clears) and hears the greeting and its own echo."""
    import numpy as np

    from ringflow.clock import RealClock
    from tests.e2e import running
    from tests.test_sip_carrier_e2e import call_to_end, story
    from tests.test_streams_e2e import recorded_channels, script_phone

    async with running(f"sqlite+aiosqlite:///{tmp_path / 'ringflow.db'}", clock=RealClock()) as rig:
        await script_phone(
            rig,
            "09812345678",
            {
                "ring": 0.2,
                "says": [{"text": "Hello bot, can you hear me?", "at": 1}],
                "keys": ["5"],
                "hangup_after": 9,
            },
        )
        r = await rig.connect(
            From="09812345678",
            StreamUrl=echo_bot.url,
            Record="true",
            RecordingChannels="dual",
            RecordingFormat="wav",
        )
        assert r.status_code == 200, r.text
        sid = r.json()["Call"]["Sid"]
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        await echo_bot.read_until(r"caller pressed .5.", timeout=5)
        await echo_bot.read_until(r"stop: callended", timeout=5)
        said, heard = await recorded_channels(rig, sid)
        assert np.abs(said).max() > 1000, "the phone spoke"
        assert np.count_nonzero(heard) > 8000, "the phone heard the bot's greeting and echo"
        steps = [e["kind"] for e in await rig.timeline(sid)]
        assert "stream.clear" in steps and "stream.mark" in steps
