"""The test bot itself, driven by a plain websockets client playing ringflow's part."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.wsbot import (
    BotConnection,
    WsBot,
    decode_payload,
    pcm_silence,
    pcm_tone,
    tone_power,
    url_endpoint,
)

SID = "MZ0123456789abcdef"


def start_message(rate: int = 8000, **custom: str) -> str:
    """A ``start`` as ringflow sends it."""
    return json.dumps(
        {
            "event": "start",
            "sequence_number": "1",
            "stream_sid": SID,
            "start": {
                "stream_sid": SID,
                "call_sid": "CA1",
                "account_sid": "AC1",
                "from": "09812345678",
                "to": "08039591234",
                "custom_parameters": custom,
                "media_format": {
                    "encoding": "audio/x-raw",
                    "sample_rate": str(rate),
                    "bit_rate": "16",
                },
            },
        }
    )


def media_message(pcm: bytes, chunk: int) -> str:
    """One caller ``media`` message."""
    return json.dumps(
        {
            "event": "media",
            "sequence_number": str(chunk + 2),
            "stream_sid": SID,
            "media": {
                "chunk": str(chunk),
                "timestamp": str((chunk - 1) * 100),
                "payload": base64.b64encode(pcm).decode(),
            },
        }
    )


async def test_records_handshake_messages_and_close() -> None:
    async with WsBot(params={"k": "v"}, sample_rate=16000, path="/agent") as bot:
        assert bot.url == f"ws://127.0.0.1:{bot.port}/agent?k=v&sample-rate=16000"
        tone = pcm_tone(440, 0.3, 16000)
        async with connect(bot.url, additional_headers={"X-Test": "1"}) as ws:
            await ws.send(json.dumps({"event": "connected"}))
            await ws.send(start_message(16000, k="v"))
            for i in range(3):
                await ws.send(media_message(tone[i * 3200 : (i + 1) * 3200], i + 1))
            await ws.send(b"\x00\x01")
            await ws.send("not json")
            await bot.wait_for(event=None, count=7, timeout=5)
            await ws.close(1000, "bye")
        conn = await bot.wait_closed(timeout=5)
        assert conn.path == "/agent"
        assert conn.query == {"k": "v", "sample-rate": "16000"}
        assert conn.headers["x-test"] == "1"
        assert conn.events() == ["connected", "start", "media", "media", "media", None, None]
        assert bot.events() == conn.events()
        assert conn.binary() == [b"\x00\x01"]
        assert conn.messages[-1].raw == "not json" and conn.messages[-1].data is None
        assert conn.stream_sid == SID and conn.sample_rate == 16000
        assert conn.start["custom_parameters"] == {"k": "v"}
        assert bot.media_pcm() == tone[: 3 * 3200]
        times = [m.at for m in conn.messages]
        assert times == sorted(times) and times[0] <= time.monotonic()
        assert (conn.close_code, conn.close_reason, conn.closed_by_bot) == (1000, "bye", False)


async def test_handler_sends_media_mark_clear_raw_and_closes() -> None:
    async def handler(conn: BotConnection) -> None:
        await conn.wait_for(event="start", timeout=5)
        await conn.send_media(pcm_tone(660, 0.2), chunk=1600)
        await conn.send_mark("greeting-done")
        await conn.wait_for(event="dtmf", timeout=5)
        await conn.send_clear(sid=False)
        await conn.send_raw("{broken")
        await conn.send_raw(b"\xff")
        await conn.close(1000, "done")

    async with WsBot(handler) as bot:
        async with connect(bot.url) as ws:
            await ws.send(json.dumps({"event": "connected"}))
            await ws.send(start_message())
            got = [json.loads(await ws.recv()) for _ in range(3)]
            await ws.send(json.dumps({"event": "dtmf", "stream_sid": SID, "dtmf": {"digit": "5"}}))
            got.append(json.loads(await ws.recv()))
            raw = [await ws.recv(), await ws.recv()]
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert [m["event"] for m in got] == ["media", "media", "mark", "clear"]
        assert got[0]["stream_sid"] == SID and "stream_sid" not in got[3]
        assert got[2]["mark"] == {"name": "greeting-done"}
        pcm = b"".join(decode_payload(m["media"]["payload"]) for m in got[:2])
        assert len(pcm) == 3200 and tone_power(pcm, 660, 8000) > 0.9
        assert tone_power(pcm, 440, 8000) < 0.05
        assert raw == ["{broken", b"\xff"]
        conn = await bot.wait_closed(timeout=5)
        assert conn.closed_by_bot and not bot.handler_errors


async def test_credentials_travel_as_basic_auth_not_in_the_request_line() -> None:
    async with WsBot() as bot:
        url = bot.url_with(auth=("KEY1", "TOKEN1"))
        assert url.startswith("ws://KEY1:TOKEN1@127.0.0.1:")
        async with connect(url):
            conn = await bot.wait_connection(timeout=5)
        assert conn.basic_auth() == ("KEY1", "TOKEN1")
        assert "KEY1" not in conn.target and "TOKEN1" not in conn.target
        assert bot.attempts[0].headers["authorization"].startswith("Basic ")


async def test_refused_then_accepted_handshake_counts_attempts() -> None:
    async with WsBot(handshakes=[503]) as bot:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(bot.url):
                pass
        assert refused.value.response.status_code == 503
        async with connect(bot.url):
            await bot.wait_connection(timeout=5)
        assert [a.answer for a in bot.attempts] == ["refuse 503", "accept"]
        assert len(bot.connections) == 1


async def test_stalled_handshake_is_never_answered_until_released() -> None:
    async with WsBot(handshakes=["stall", ("stall", 0.2)]) as bot:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with connect(bot.url, open_timeout=0.5):
                pass
        assert time.monotonic() - started >= 0.5
        with pytest.raises(InvalidStatus):
            async with connect(bot.url, open_timeout=5):
                pass
        async with connect(bot.url, open_timeout=5):
            pass
        await bot.wait_attempts(3, timeout=1)
        assert [a.answer for a in bot.attempts] == ["stall", "stall", "accept"]
        assert len(bot.connections) == 1


async def test_exiting_the_bot_releases_a_stalled_handshake() -> None:
    bot = WsBot(handshakes=["stall"])
    async with bot:
        client = asyncio.create_task(connect(bot.url, open_timeout=30).__aenter__())
        await bot.wait_attempts(1, timeout=5)
    with pytest.raises(InvalidStatus):
        await asyncio.wait_for(client, 5)


async def test_wait_for_names_what_came_when_it_times_out() -> None:
    async with WsBot() as bot, connect(bot.url) as ws:
        await ws.send(json.dumps({"event": "connected"}))
        with pytest.raises(AssertionError, match=r"no start #1 within 0.2 s.*'connected'"):
            await bot.wait_for(event="start", timeout=0.2)


async def test_handler_errors_are_kept_for_the_test() -> None:
    async def broken(conn: BotConnection) -> None:
        raise ValueError("scripted failure")

    async with WsBot(broken) as bot:
        async with connect(bot.url) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        conn = await bot.wait_closed(timeout=5)
        assert isinstance(bot.handler_errors[0], ValueError)
        assert conn.ws.close_code is not None


async def test_url_endpoint_answers_the_ws_url_and_records_passthru() -> None:
    async with WsBot() as bot, url_endpoint(bot.url) as endpoint:
        async with httpx.AsyncClient() as client:
            answer = await client.get(endpoint.url, params={"CallSid": "CA1", "From": "0981"})
            assert answer.json() == {"url": bot.url}
            endpoint.answer = (500, "text/plain", "down")
            assert (await client.get(endpoint.url)).status_code == 500
        assert endpoint.seen[0].query == {"CallSid": "CA1", "From": "0981"}
        assert endpoint.seen[0].path == "/bot"


def test_audio_helpers() -> None:
    assert pcm_silence(0.1) == bytes(1600)
    assert tone_power(pcm_silence(0.1), 660, 8000) == 0.0
    with pytest.raises(AssertionError, match="base64"):
        decode_payload("%%%")
    with pytest.raises(AssertionError, match="odd-length"):
        decode_payload(base64.b64encode(b"abc").decode())
