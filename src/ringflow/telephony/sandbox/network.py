"""The sandbox carrier and its channels: virtual phones that follow their scripts.

Nothing here touches the network. Every wait reads the injected clock, so under a ManualClock a
ten-minute call runs in milliseconds, and prompts take their real (estimated) duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ringflow.clock import Clock, wait_with_timeout
from ringflow.telephony.carrier import (
    Answered,
    AttemptEvent,
    Channel,
    DialRequest,
    Rejected,
    Ringing,
)
from ringflow.telephony.sandbox.phones import DEFAULT_SCRIPT, MAGIC_NUMBERS, PhoneScript

log = logging.getLogger(__name__)

ScriptLookup = Callable[[str, str], Awaitable[PhoneScript | None]]
# Renders text and returns how long speaking it takes (the TTS engine), or None if it cannot.
SpeechTimer = Callable[[str, str | None], Awaitable[float | None]]

# Speech rate used to give a spoken prompt its duration on the sandbox (espeak-ng's default
# speed is 175 words a minute).
WORDS_PER_SECOND = 175 / 60
AUDIO_PROMPT_SECONDS = 3.0
KEY_INTERVAL = 0.3


def speech_seconds(text: str) -> float:
    """An estimate of how long speaking ``text`` takes, at espeak-ng's default rate."""
    return max(0.5, len(text.split()) / WORDS_PER_SECOND)


class SandboxCarrier:
    """Places legs to virtual phones. ``lookup`` finds a scripted phone (account, number)."""

    name = "sandbox"

    def __init__(
        self, clock: Clock, lookup: ScriptLookup | None = None, speech: SpeechTimer | None = None
    ):
        self.clock = clock
        self.lookup = lookup
        self.speech = speech

    def dial(self, request: DialRequest) -> SandboxAttempt:
        """Start ringing a virtual phone."""
        return SandboxAttempt(self, request)

    async def script_for(self, account_sid: str, number: str) -> PhoneScript:
        """A scripted behaviour wins over the magic numbers, which win over the default."""
        if self.lookup is not None:
            script = await self.lookup(account_sid, number)
            if script is not None:
                return script
        return MAGIC_NUMBERS.get(number, DEFAULT_SCRIPT)


class SandboxAttempt:
    """A leg ringing a virtual phone."""

    def __init__(self, carrier: SandboxCarrier, request: DialRequest):
        self.carrier = carrier
        self.request = request
        self._events: asyncio.Queue[AttemptEvent] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._run())
        self._task.add_done_callback(_log_failure)

    async def _run(self) -> None:
        clock = self.carrier.clock
        try:
            script = await self.carrier.script_for(self.request.account_sid, self.request.number)
        except Exception as exc:  # the phone book is storage: a failure there fails this leg only
            log.exception("sandbox script lookup failed for %s", self.request.number)
            await self._events.put(Rejected("failed", f"sandbox: script lookup failed: {exc}"))
            return
        if script.outcome == "failed" and script.ring == 0:
            await self._events.put(Rejected("failed", "sandbox: number unreachable"))
            return
        await self._events.put(Ringing())
        await clock.sleep(script.ring)
        if script.outcome == "answer":
            channel = SandboxChannel(clock, self.request.number, script, self.carrier.speech)
            await self._events.put(Answered(channel))
        elif script.outcome == "no-answer":
            await asyncio.Event().wait()  # rings until the caller cancels
        else:
            await self._events.put(Rejected(script.outcome, f"sandbox: phone scripted {script.outcome}"))

    async def next_event(self) -> AttemptEvent:
        """Wait for the next progress event."""
        return await self._events.get()

    async def cancel(self) -> None:
        """Stop ringing."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class SandboxChannel:
    """An answered virtual phone."""

    def __init__(
        self, clock: Clock, number: str, script: PhoneScript, speech: SpeechTimer | None = None
    ):
        self.clock = clock
        self.speech = speech
        self.number = number
        self.script = script
        self.heard: list[str] = []  # what was said or played to this phone, for tests
        self._keys = list(script.keys)
        self._closed = asyncio.Event()
        self._closed_by = ""
        self._hangup_task: asyncio.Task[None] | None = None
        if script.hangup_after is not None:
            self._hangup_task = asyncio.ensure_future(self._hang_up_later(script.hangup_after))

    async def _hang_up_later(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        self._close("remote")

    def _close(self, by: str) -> None:
        if not self._closed.is_set():
            self._closed_by = by
            self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self._closed_by

    async def _hold(self, seconds: float) -> bool:
        """Let ``seconds`` pass on the line; False if the line closed first."""
        if self.closed:
            return False
        await wait_with_timeout(self.clock, self._closed.wait(), seconds)
        return not self.closed

    async def say(self, text: str, voice: str | None = None) -> None:
        if self.closed:
            return
        self.heard.append(text)
        seconds = None
        if self.speech is not None:
            with self.clock.busy():  # rendering takes real time; the test clock must wait for it
                seconds = await self.speech(text, voice)
        await self._hold(seconds if seconds is not None else speech_seconds(text))

    async def play(self, url: str) -> None:
        if not self.closed:
            self.heard.append(url)
        await self._hold(AUDIO_PROMPT_SECONDS)

    async def collect_digits(self, max_digits: int, timeout: float, finish_on: str) -> str:
        digits = ""
        pressed = self._keys.pop(0) if self._keys else ""
        for key in pressed:
            if not await self._hold(KEY_INTERVAL):
                return digits
            if key in finish_on:
                return digits
            digits += key
            if len(digits) >= max_digits:
                return digits
        await self._hold(timeout)
        return digits

    async def bridge(self, other: Channel) -> None:
        waits = [asyncio.ensure_future(self.wait_closed()), asyncio.ensure_future(other.wait_closed())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def hangup(self, cause: str = "normal") -> None:
        self._close("local")
        if self._hangup_task is not None:
            self._hangup_task.cancel()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sandbox attempt failed", exc_info=task.exception())
