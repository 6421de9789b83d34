"""A voice bot built on pipecat-ai, speaking Exotel's AgentStream protocol through pipecat's own
``ExotelFrameSerializer`` (the published package, unchanged), with no cloud service.

It is wired the way pipecat's Exotel examples wire a bot: a FastAPI WebSocket endpoint, pipecat's
``parse_telephony_websocket`` reading the ``connected`` and ``start`` messages (and detecting the
provider from their keys), then a ``FastAPIWebsocketTransport`` with the serializer. Instead of
speech-to-text, a language model and text-to-speech, one small processor answers: as soon as the
caller's audio arrives, it plays a 660 Hz tone for two seconds, so a test can find the bot's reply
in what the caller hears.

pipecat pins versions of its own, so this runs from its own virtualenv (``make pipecat-venv``
builds ``.venv-pipecat``), as a separate process, as a ringflow user would run a bot::

    .venv-pipecat/bin/python tests/bots/pipecat_bot.py --port 8765 --report /tmp/report.json

It prints ``READY <port>`` once it accepts connections. When a stream's socket closes it prints
``REPORT <json>`` and rewrites ``--report`` (if given) with a JSON list of every stream so far::

    {"provider": "exotel", "stream_sid": "MZ...", "call_sid": "...", "account_sid": "...",
     "from": "...", "to": "...", "custom_parameters": {...}, "path": "/", "sample_rate": 8000,
     "caller_audio_bytes": 32000, "caller_audio_frames": 20, "dtmf": ["5"],
     "tone_bytes_sent": 32000, "tone_hz": 660}

The sample rate is the ``sample-rate`` query parameter of the stream URL (8000 without it): the
serializer is told the rate, as a user configuring a bot for such a URL would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import struct
import sys
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.exotel import ExotelFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

TONE_HZ = 660
TONE_SECONDS = 2.0
FRAME_MS = 20


def tone(rate: int, seconds: float = TONE_SECONDS, freq: float = TONE_HZ) -> bytes:
    """A sine tone as 16-bit little-endian mono PCM."""
    n = int(rate * seconds)
    peak = 0.3 * 32767
    return struct.pack(
        f"<{n}h", *(int(peak * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    )


class ToneReply(FrameProcessor):
    """Counts the caller's audio and answers its first chunk with a tone."""

    def __init__(self, rate: int, report: dict[str, Any]):
        super().__init__()
        self.rate = rate
        self.report = report
        self.replied = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass every frame on; on the caller's first audio, queue the tone behind it."""
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.report["caller_audio_bytes"] += len(frame.audio)
            self.report["caller_audio_frames"] += 1
            if not self.replied:
                self.replied = True
                await self._play(tone(self.rate))
        elif isinstance(frame, InputDTMFFrame):
            self.report["dtmf"].append(frame.button.value)

    async def _play(self, pcm: bytes) -> None:
        # In 20 ms frames, as a TTS service emits them, so the transport paces them out.
        step = self.rate * FRAME_MS // 1000 * 2
        for offset in range(0, len(pcm), step):
            chunk = pcm[offset : offset + step]
            await self.push_frame(
                OutputAudioRawFrame(audio=chunk, sample_rate=self.rate, num_channels=1)
            )
            self.report["tone_bytes_sent"] += len(chunk)


class Reports:
    """Every stream's report, printed and written to a file as each one ends."""

    def __init__(self, path: Path | None):
        self.path = path
        self.done: list[dict[str, Any]] = []

    def add(self, report: dict[str, Any]) -> None:
        """Record one finished stream."""
        self.done.append(report)
        print("REPORT " + json.dumps(report), flush=True)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.done, indent=1))
            os.replace(tmp, self.path)


async def run_stream(websocket: WebSocket, reports: Reports) -> None:
    """Run one stream: the connected and start messages, then the pipeline until it closes."""
    await websocket.accept()
    rate = int(websocket.query_params.get("sample-rate", "8000"))
    report: dict[str, Any] = {
        "path": websocket.url.path,
        "sample_rate": rate,
        "caller_audio_bytes": 0,
        "caller_audio_frames": 0,
        "dtmf": [],
        "tone_bytes_sent": 0,
        "tone_hz": TONE_HZ,
    }
    try:
        provider, call = await parse_telephony_websocket(websocket)
        report.update(
            provider=provider,
            stream_sid=call.get("stream_id"),
            call_sid=call.get("call_id"),
            account_sid=call.get("account_sid"),
            custom_parameters=call.get("custom_parameters"),
            **{"from": call.get("from"), "to": call.get("to")},
        )
        serializer = ExotelFrameSerializer(
            stream_sid=call["stream_id"],
            call_sid=call.get("call_id"),
            params=ExotelFrameSerializer.InputParams(exotel_sample_rate=rate),
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        pipeline = Pipeline([transport.input(), ToneReply(rate, report), transport.output()])
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
            idle_timeout_secs=None,
        )

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport: Any, client: Any) -> None:
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
    except Exception as exc:  # re-raised: the report is how a test learns what went wrong
        report["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        reports.add(report)


def make_app(reports: Reports) -> FastAPI:
    """The bot's web app: a WebSocket stream endpoint on every path."""
    app = FastAPI()

    @app.websocket("/{path:path}")
    async def stream(websocket: WebSocket, path: str) -> None:
        await run_stream(websocket, reports)

    return app


async def main() -> None:
    """Serve until interrupted, saying READY once connections are accepted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report", type=Path, help="JSON file rewritten as each stream ends")
    args = parser.parse_args()
    app = make_app(Reports(args.report))
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        print(f"READY {args.port}", flush=True)
    await task


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
