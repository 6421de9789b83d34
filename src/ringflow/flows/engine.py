"""Runs an app on an answered Channel: drives each applet's generator, executes what it asks.

Applets never touch the Channel or the network themselves; they yield actions (flows/actions.py)
and the engine carries them out, records each step on the call's timeline and feeds the result
back. The run ends at a Hangup applet, at an exit that leads nowhere, when the line closes, or
after ``max_steps`` nodes (a guard against loops that validation could not rule out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ringflow.errors import RingflowError
from ringflow.flows.actions import (
    HANGUP,
    CollectDigits,
    Dial,
    DialResult,
    HttpGet,
    HttpResult,
    Play,
    Record,
    RecordResult,
    Say,
    StreamAudio,
    TransferTo,
)
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppGraph, AppletSpec
from ringflow.media.audio import is_silence
from ringflow.telephony.carrier import Channel, Recording

log = logging.getLogger(__name__)

HttpGetter = Callable[[HttpGet], Awaitable[HttpResult]]
EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]
AppLoader = Callable[[int], Awaitable[AppGraph | None]]
Dialer = Callable[[Dial], Awaitable[DialResult]]
# Keeps a recording (a file and its row); returns its (sid, url).
RecordingSaver = Callable[[Recording], Awaitable[tuple[str, str]]]

MAX_TRANSFERS = 10


class Streamer(Protocol):
    """Runs the call's streams to bots (wired by the call runner)."""

    async def run(self, action: StreamAudio) -> Any:
        """Carry a bidirectional stream to its end and return its outcome; start a
        unidirectional one beside the flow and return None."""

    async def stop_all(self) -> None:
        """Stop the streams still running (the flow ended)."""


class FlowEngine:
    """One app run on one call."""

    def __init__(
        self,
        graph: AppGraph,
        registry: dict[str, AppletSpec] | Any,
        ctx: FlowContext,
        channel: Channel,
        http_get: HttpGetter,
        record: EventSink,
        max_steps: int = 500,
        load_app: AppLoader | None = None,
        dial: Dialer | None = None,
        save_recording: RecordingSaver | None = None,
        streamer: Streamer | None = None,
    ):
        self.graph = graph
        self.registry = registry
        self.ctx = ctx
        self.channel = channel
        self.http_get = http_get
        self.record = record
        self.max_steps = max_steps
        self.load_app = load_app
        self.dial = dial
        self.save_recording = save_recording
        self.streamer = streamer
        self.transfers = 0
        self._background: set[asyncio.Task[Any]] = set()

    async def run(self) -> str:
        """Run from the start node; returns why the run ended."""
        graph = self.graph
        current: str | None = graph.start
        for _ in range(self.max_steps):
            if current is None:
                return "end of flow"
            if self.channel.closed:
                return "caller hung up"
            node = graph.nodes[current]
            log.info("call %s: %s %r", self.ctx.call_sid, node.applet, node.name)
            await self.record("applet.enter", {"node": node.name, "applet": node.applet})
            exit_name = await self._run_node(node)
            if exit_name == HANGUP:
                await self.record("applet.exit", {"node": node.name, "exit": "hangup"})
                return "hangup applet"
            if isinstance(exit_name, TransferTo):
                target = await self._transfer(node.name, exit_name.app_id)
                if target is None:
                    return "transfer failed"
                graph, current = target, target.start
                continue
            current = node.exits.get(exit_name)
            data = {"node": node.name, "exit": exit_name, "next": current}
            # An applet explains an error exit in ctx.vars["<applet>_error"].
            if error := self.ctx.vars.get(f"{node.applet}_error"):
                data["error"] = error
            await self.record("applet.exit", data)
        await self.record("flow.aborted", {"reason": f"more than {self.max_steps} steps"})
        return "step limit"

    async def _transfer(self, node: str, app_id: int) -> AppGraph | None:
        """The app a Transfer leads to, or None (recorded) when it cannot be followed."""
        self.transfers += 1
        target = None
        if self.transfers > MAX_TRANSFERS:
            reason = f"more than {MAX_TRANSFERS} transfers"
        elif self.load_app is None or (target := await self.load_app(app_id)) is None:
            reason = f"app {app_id} does not exist in this account"
        else:
            await self.record("applet.exit", {"node": node, "exit": "transfer", "app": app_id})
            self.ctx.app_id = app_id
            return target
        await self.record("flow.aborted", {"node": node, "reason": reason})
        return None

    async def _run_node(self, node: Any) -> str | TransferTo:
        spec = self.registry[node.applet]
        gen = spec.run(node, self.ctx)
        result: Any = None
        try:
            while True:
                action = gen.send(result)
                result = await self._perform(action)
        except StopIteration as stop:
            return stop.value

    async def _perform(self, action: Any) -> Any:
        if isinstance(action, Say):
            text = action.text if len(action.text) <= 80 else action.text[:77] + "..."
            log.info("call %s: say %r", self.ctx.call_sid, text)  # the timeline has all of it
            await self.record("say", {"text": action.text})
            await self.channel.say(action.text, action.voice)
            return None
        if isinstance(action, Play):
            return await self._play(action)
        if isinstance(action, CollectDigits):
            digits = await self.channel.collect_digits(
                action.max_digits, action.timeout, action.finish_on
            )
            log.info("call %s: digits %r", self.ctx.call_sid, digits)
            await self.record("digits", {"digits": digits})
            return digits
        if isinstance(action, Dial):
            if self.dial is None:
                return DialResult("failed")
            await self.record(
                "dial", {"numbers": list(action.numbers), "simultaneous": action.simultaneous}
            )
            result = await self.dial(action)
            log.info(
                "call %s: dial -> %s %s", self.ctx.call_sid, result.status, result.number or ""
            )
            end = {"status": result.status, "number": result.number, "duration": result.duration}
            if result.recording_url:
                end["recording_url"] = result.recording_url
            await self.record("dial.end", end)
            return result
        if isinstance(action, Record):
            return await self._record(action)
        if isinstance(action, StreamAudio):
            if self.streamer is None:
                await self.record(
                    "stream.failed", {"url": action.url, "reason": "streams are not available here"}
                )
                return None
            return await self.streamer.run(action)
        if isinstance(action, HttpGet):
            if not action.wait:
                task = asyncio.ensure_future(self._fetch(action))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return None
            return await self._fetch(action)
        raise TypeError(f"applet yielded an unknown action: {action!r}")

    async def _play(self, action: Play) -> str | None:
        """Fetch and convert the audio, then play it for its real length; returns the reason
        it could not be played (recorded on the timeline, the prompt skipped), else None."""
        await self.record("play", {"url": action.url})
        # The getter may also load audio (services wire one that does); without it the channel
        # plays the URL as it can.
        load = getattr(self.http_get, "audio", None)
        if load is None:
            await self.channel.play(action.url)
            return None
        try:
            prompt = await load(action.url, self.ctx.account_id)
        except RingflowError as exc:
            log.info("call %s: cannot play %s: %s", self.ctx.call_sid, action.url, exc)
            await self.record("play.failed", {"url": action.url, "error": str(exc)})
            return str(exc)
        await self.channel.play(action.url, prompt.pcm)
        return None

    async def _record(self, action: Record) -> RecordResult:
        """Record the caller; keep the audio only if someone spoke (silence is no message)."""
        heard = await self.channel.record(
            action.max_length, action.finish_on, action.beep, action.silence_timeout
        )
        step: dict[str, Any] = {
            "duration": round(heard.duration, 2),
            "ended_by": heard.ended_by,
            "digits": heard.digits,
        }
        if is_silence(heard.pcm) or self.save_recording is None:
            log.info("call %s: recorded no message (%s)", self.ctx.call_sid, heard.ended_by)
            await self.record("recording", {**step, "message": False})
            return RecordResult(None, 0.0, heard.digits, heard.ended_by)
        sid, url = await self.save_recording(heard)
        log.info("call %s: recording %s, %.1f s", self.ctx.call_sid, sid, heard.duration)
        await self.record("recording", {**step, "message": True, "sid": sid, "url": url})
        return RecordResult(url, heard.duration, heard.digits, heard.ended_by, sid)

    async def _fetch(self, action: HttpGet) -> HttpResult:
        started = time.perf_counter()
        result = await self.http_get(action)
        latency = round((time.perf_counter() - started) * 1000)
        log.info(
            "call %s: %s %s -> %s (%d ms)",
            self.ctx.call_sid,
            action.method,
            action.url,
            result.status or result.error,
            latency,
        )
        await self.record(
            "http",
            {
                "method": action.method,
                "url": action.url,
                "params": action.params,
                "status": result.status,
                "error": result.error,
                "latency_ms": latency,
            },
        )
        return result

    async def drain(self) -> None:
        """Stop streams still running beside the flow; wait for fire-and-forget requests
        (async Passthru) to finish."""
        if self.streamer is not None:
            await self.streamer.stop_all()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
