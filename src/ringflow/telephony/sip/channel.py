"""An answered SIP leg as a ``Channel``: the flow's verbs played out on the leg's RTP session.

The SIP side (BYE either way, INFO digits, re-INVITEs) is pumped by the carrier into
``SipChannel.on_*``; every verb here waits on the media session and returns promptly once the
leg has hung up. Audio is real time: a prompt takes as long to play as it lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np

from ringflow.clock import Clock, wait_with_timeout
from ringflow.media import g711
from ringflow.media.audio import RATE, SAMPLE_WIDTH, Prompt
from ringflow.media.dtmf import Key
from ringflow.media.engine import RtpSession
from ringflow.media.playout import Playout
from ringflow.media.session import SessionClosed
from ringflow.sip.sdp import MediaPlan
from ringflow.sip.transport import OutgoingCallHandle
from ringflow.telephony.carrier import Channel, ConversationTap, Recording

log = logging.getLogger(__name__)

T = TypeVar("T")
Speech = Callable[[str, str | None], Awaitable[Prompt | None]]

BEEP_SECONDS = 0.5
BEEP_HZ = 1000
# A 20 ms frame quieter than this RMS counts as silence when recording (speech peaks near
# 3000-10000 on a phone line; line noise stays in the low hundreds).
SILENCE_RMS = 300


def beep_tone() -> bytes:
    """The tone played before a recording: 1 kHz for half a second, 8 kHz PCM."""
    t = np.arange(round(BEEP_SECONDS * RATE)) / RATE
    return (np.sin(2 * np.pi * BEEP_HZ * t) * 8000).astype("<i2").tobytes()


class SipChannel:
    """One answered SIP leg."""

    def __init__(
        self,
        clock: Clock,
        number: str,
        handle: OutgoingCallHandle,
        session: RtpSession,
        speech: Speech | None,
        on_close: Callable[[], None] = lambda: None,
    ):
        self.clock = clock
        self.number = number
        self.handle = handle
        self.session = session
        self.speech = speech
        self._on_close = on_close
        self._closed = asyncio.Event()
        self._closed_by = ""

    # -- what the carrier's event pump reports ------------------------------------------------

    def on_ended(self, by_remote: bool) -> None:
        """The SIP dialog is over (their BYE, our BYE answered, or a failure)."""
        self._close("remote" if by_remote else "local")

    def on_digit(self, digit: str, duration_ms: int | None = None) -> None:
        """A digit that came by SIP INFO (with its Duration, if it gave one) joins the RTP and
        in-band ones."""
        self.session.push_digit(digit, duration_ms)

    def on_media(self, plan: MediaPlan) -> None:
        """A re-INVITE moved the media."""
        self.session.start(plan)

    def _close(self, by: str) -> None:
        if self._closed.is_set():
            return
        self._closed_by = by
        self._closed.set()
        self.session.close()
        self._on_close()

    # -- Channel --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self._closed_by

    async def _until_closed(self, work: Awaitable[T]) -> T | None:
        """Run ``work`` unless the leg hangs up first (then it is cancelled and None returned)."""
        task = asyncio.ensure_future(work)
        if self.closed:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return task.result() if task.done() and not task.cancelled() else None

    async def say(self, text: str, voice: str | None = None) -> None:
        prompt = await self.speech(text, voice) if self.speech is not None else None
        if prompt is None:
            log.warning("no speech for %r: nothing played", text[:40])
            return
        await self._until_closed(self.session.play(prompt.pcm))

    async def play(self, url: str, audio: bytes | None = None) -> None:
        if audio:
            await self._until_closed(self.session.play(audio))

    async def collect_digits(self, max_digits: int, timeout: float, finish_on: str) -> str:
        """Keys pressed since the prompt began count (type-ahead); ``timeout`` runs from the
        last key."""
        digits = ""
        while len(digits) < max_digits and not self.closed:
            key = await self._until_closed(
                wait_with_timeout(self.clock, self.session.next_digit(), timeout)
            )
            if key is None or key in finish_on:
                break
            digits += key
        return digits

    async def record(
        self, max_length: float, finish_on: str, beep: bool, silence_timeout: float
    ) -> Recording:
        if self.closed:
            return Recording(b"", "hangup")
        if beep:
            await self._until_closed(self.session.play(beep_tone()))
        self.session.clear_digits()  # keys pressed during the prompt do not end the message
        return await _Recorder(self, max_length, finish_on, silence_timeout).run()

    def record_call(self, tap: ConversationTap) -> Callable[[], None]:
        """Tape the call from now: the party's audio and everything sent to it, 20 ms at a time."""
        return self.session.tap(tap.write)

    def listen(self, sink: Callable[[bytes, bytes], None]) -> Callable[[], None]:
        """Give ``sink(heard, sent)`` every 20 ms, as the RTP session ticks."""
        return self.session.tap(sink)

    def hear(self, sink: Callable[[bytes], None], frames: int = 1) -> Callable[[], None]:
        """Give ``sink`` the party's audio ``frames`` frames at a time, as the session ticks."""
        return self.session.listen(sink, frames)

    def play_out(
        self, playout: Playout, on_marks: Callable[[list[str]], None]
    ) -> Callable[[], None]:
        """The RTP session sends ``playout``'s frames on its ticks."""
        return self.session.play_out(playout, on_marks)

    async def next_key(self) -> Key | None:
        """The next key the party pressed (RTP event, INFO or tone), once released, with its
        length; None once hung up."""
        try:
            return await self.session.next_key()
        except SessionClosed:
            return None

    async def bridge(self, other: Channel, tap: ConversationTap | None = None) -> None:
        if not isinstance(other, SipChannel):
            raise TypeError("a SIP leg can only be bridged with another SIP leg")
        undo = self.session.bridge(other.session, tap.write if tap is not None else None)
        try:
            waits = [
                asyncio.ensure_future(self._closed.wait()),
                asyncio.ensure_future(other._closed.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        finally:
            undo()

    async def hangup(self, cause: str = "normal") -> None:
        if self.closed:
            return
        log.debug("hanging up %s: %s", self.number, cause)
        self.handle.hangup()
        self._close("local")


class _Recorder:
    """Collects what the party says until a finish key, silence, the length limit or hangup."""

    def __init__(
        self, channel: SipChannel, max_length: float, finish_on: str, silence_timeout: float
    ):
        self.channel = channel
        self.max_bytes = round(max_length * RATE) * SAMPLE_WIDTH
        self.finish_on = finish_on
        self.silence_bytes = round(silence_timeout * RATE) * SAMPLE_WIDTH
        self.pcm = bytearray()
        self.quiet = 0  # bytes of silence at the end so far
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def _hear(self, frame: bytes) -> None:
        if self.done.done():
            return
        self.pcm += frame
        if g711.level(frame) < SILENCE_RMS:
            self.quiet += len(frame)
        else:
            self.quiet = 0
        if len(self.pcm) >= self.max_bytes:
            self.done.set_result("max-length")
        elif self.silence_bytes and self.quiet >= self.silence_bytes:
            self.done.set_result("silence")

    async def _finish_key(self) -> str:
        while True:
            key = await self.channel.session.next_digit()
            if key in self.finish_on:
                return key

    async def run(self) -> Recording:
        unsubscribe = self.channel.session.listen(self._hear)
        key_task = asyncio.ensure_future(self._finish_key()) if self.finish_on else None
        try:
            waits: set[asyncio.Future] = {
                self.done,
                asyncio.ensure_future(self.channel.wait_closed()),
            }
            if key_task is not None:
                waits.add(key_task)
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            unsubscribe()
            for waiting in (key_task, *waits):
                if waiting is not None and not waiting.done():
                    waiting.cancel()
        pcm = bytes(self.pcm[: self.max_bytes])
        if key_task is not None and key_task in done and not key_task.cancelled():
            return Recording(pcm, "key", key_task.result())
        if self.done.done() and not self.done.cancelled():
            return Recording(pcm, self.done.result())
        return Recording(pcm, "hangup")
