"""The pipecat bot (tests/bots/pipecat_bot.py) from its own virtualenv, driven by a websockets
client playing ringflow's part exactly as spec/agentstream.md says: its reply reaches the caller.

The bot runs on the published pipecat-ai package and its unchanged ExotelFrameSerializer; the
virtualenv is built by `make pipecat-venv`, which `make test` runs first.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.pipecatbot import TONE_HZ, TONE_SECONDS, BotProcess, pipecat_bot
from tests.wsbot import decode_payload

SID = "MZ7e0c1f2a3b4c5d6e7f8091a2b3c4d5e6"
CALL_SID = "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6"


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[BotProcess]:
    async with pipecat_bot(tmp_path) as running:
        yield running


def start(rate: int, custom: dict[str, str]) -> dict[str, Any]:
    """``start`` exactly as ringflow sends it: snake_case keys only, every number a string."""
    return {
        "event": "start",
        "sequence_number": "1",
        "stream_sid": SID,
        "start": {
            "stream_sid": SID,
            "call_sid": CALL_SID,
            "account_sid": "ringflow1",
            "from": "09812345678",
            "to": "08039591234",
            "custom_parameters": custom,
            "media_format": {"encoding": "audio/x-raw", "sample_rate": str(rate), "bit_rate": "16"},
        },
    }


def caller_audio(rate: int, seconds: float) -> bytes:
    """The caller: a quiet 300 Hz hum, so the bot's reply cannot be mistaken for an echo."""
    t = np.arange(int(rate * seconds)) / rate
    return (0.1 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def play_caller(ws: ClientConnection, pcm: bytes, rate: int) -> int:
    """Send ``pcm`` as ringflow does: 100 ms media chunks, paced in real time; returns seq."""
    step = rate // 10 * 2
    seq = 1
    began = time.monotonic()
    for n, offset in enumerate(range(0, len(pcm), step), start=1):
        seq += 1
        media = {
            "chunk": str(n),
            "timestamp": str((n - 1) * 100),
            "payload": base64.b64encode(pcm[offset : offset + step]).decode(),
        }
        await ws.send(
            json.dumps(
                {"event": "media", "sequence_number": str(seq), "stream_sid": SID, "media": media}
            )
        )
        if n == 5:
            seq += 1
            dtmf = {"digit": "5", "duration": "100"}
            message = {"event": "dtmf", "sequence_number": str(seq), "stream_sid": SID}
            await ws.send(json.dumps(message | {"dtmf": dtmf}))
        await asyncio.sleep(max(0.0, began + n * 0.1 - time.monotonic()))
    return seq


async def collect_replies(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    """Every message the bot sends, until the socket closes."""
    async for frame in ws:
        assert isinstance(frame, str), f"the bot sent a binary frame ({len(frame)} bytes)"
        into.append(json.loads(frame))


async def until_heard(replies: list[dict[str, Any]], size: float, timeout: float) -> None:
    """Wait until the bot's media adds up to ``size`` bytes (it plays out in real time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        media = [m["media"]["payload"] for m in replies if m.get("event") == "media"]
        if sum(len(base64.b64decode(p)) for p in media) >= size:
            return
        await asyncio.sleep(0.05)


def peak_hz(pcm: bytes, rate: int) -> float:
    """The strongest frequency in ``pcm``."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.e2e
@pytest.mark.timeout(90)
@pytest.mark.parametrize("rate", [8000, 16000])
async def test_pipecat_bot_hears_the_caller_and_its_tone_reaches_them(
    bot: BotProcess, rate: int
) -> None:
    query = "lang=en" + ("" if rate == 8000 else f"&sample-rate={rate}")
    replies: list[dict[str, Any]] = []
    sent = caller_audio(rate, 3.0)
    async with connect(bot.url(query), open_timeout=10) as ws:
        reader = asyncio.create_task(collect_replies(ws, replies))
        await ws.send(json.dumps({"event": "connected"}))
        await ws.send(json.dumps(start(rate, {"lang": "en"})))
        seq = await play_caller(ws, sent, rate)
        await until_heard(replies, TONE_SECONDS * rate * 2, timeout=10)
        stop = {"call_sid": CALL_SID, "account_sid": "ringflow1", "reason": "callended"}
        message = {"event": "stop", "sequence_number": str(seq + 1), "stream_sid": SID}
        await ws.send(json.dumps(message | {"stop": stop}))
        await ws.close()
        await asyncio.wait_for(reader, 10)

    events = {m.get("event") for m in replies}
    assert events <= {"media", "mark", "clear"}, f"unexpected events from the bot: {events}"
    media = [m for m in replies if m.get("event") == "media"]
    assert media, "the bot sent no audio"
    for m in media:
        assert m.get("stream_sid", m.get("streamSid", SID)) == SID
    heard = b"".join(decode_payload(m["media"]["payload"]) for m in media)
    assert len(heard) >= TONE_SECONDS * rate * 2 * 0.98, f"{len(heard) / (rate * 2):.2f} s heard"
    assert abs(peak_hz(heard, rate) - TONE_HZ) < 10

    (report,) = await bot.reports(1, timeout=10)
    assert report["provider"] == "exotel"  # not mistaken for Twilio (no camelCase keys)
    assert (report["stream_sid"], report["call_sid"]) == (SID, CALL_SID)
    assert report["account_sid"] == "ringflow1"
    assert report["custom_parameters"] == {"lang": "en"}
    assert report["sample_rate"] == rate
    assert report["dtmf"] == ["5"]
    # The serializer resamples through a stream resampler, which may hold back a few ms.
    assert len(sent) * 0.9 <= report["caller_audio_bytes"] <= len(sent)
    assert "error" not in report
