"""The sandbox carrier and its channels: virtual phones that follow their scripts.

Nothing here touches the network. Every wait reads the injected clock, so under a ManualClock a
ten-minute call runs in milliseconds, and prompts take their real (estimated) duration.

A phone whose script ``says`` something speaks it through text to speech when it is recorded
(a voicemail) or into a recorded conversation, so recordings hold real speech. Without a TTS
engine a voice-like murmur of the estimated length stands in.

A phone with a ``greeting`` (every ``machine``) speaks it on the line as it picks up, and a
machine beeps after it, so answering machine detection hears a sandbox phone as it hears a SIP
one, through the same detector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import numpy as np

from ringflow.clock import Clock, wait_with_timeout
from ringflow.media.audio import RATE, SAMPLE_WIDTH, Prompt
from ringflow.media.dtmf import NOMINAL_MS, Key
from ringflow.media.playout import Playout
from ringflow.telephony.carrier import (
    Answered,
    AttemptEvent,
    Channel,
    ConversationTap,
    DialRequest,
    Outcome,
    Recording,
    Rejected,
    Ringing,
    TrunkStatus,
)
from ringflow.telephony.sandbox.line import InGroups, LiveLine, Tape
from ringflow.telephony.sandbox.phones import (
    ANSWERING,
    DEFAULT_SCRIPT,
    MAGIC_NUMBERS,
    PhoneScript,
    Utterance,
)

log = logging.getLogger(__name__)

ScriptLookup = Callable[[str, str], Awaitable[PhoneScript | None]]
# Renders text as speech (the TTS engine), or None if it cannot.
Speech = Callable[[str, str | None], Awaitable[Prompt | None]]

# Speech rate used to give a spoken prompt its duration on the sandbox (espeak-ng's default
# speed is 175 words a minute).
WORDS_PER_SECOND = 175 / 60
AUDIO_PROMPT_SECONDS = 3.0
KEY_INTERVAL = 0.3
KEY_MS = NOMINAL_MS  # how long a phone holds each key it presses to a bot
BEEP = "(beep)"  # what ``heard`` shows for the beep before a recording
BEEP_SECONDS = 0.5
TURN_GAP = 0.5  # seconds between the callee's and the caller's turns in a conversation
BOT_TURN_GAP = 1.0  # seconds a phone talking to a bot waits before each line it speaks
PICK_UP_PAUSE = 0.3  # seconds between picking up and the greeting
MACHINE_BEEP_GAP = 0.5  # seconds between a machine's greeting and its beep
MACHINE_BEEP_HZ = 1000


def speech_seconds(text: str) -> float:
    """An estimate of how long speaking ``text`` takes, at espeak-ng's default rate."""
    return max(0.5, len(text.split()) / WORDS_PER_SECOND)


class SandboxCarrier:
    """Places legs to virtual phones. ``lookup`` finds a scripted phone (account, number)."""

    name = "sandbox"

    def __init__(
        self, clock: Clock, lookup: ScriptLookup | None = None, speech: Speech | None = None
    ):
        self.clock = clock
        self.lookup = lookup
        self.speech = speech

    def dial(self, request: DialRequest) -> SandboxAttempt:
        """Start ringing a virtual phone."""
        return SandboxAttempt(self, request)

    async def start(self) -> None:
        """Nothing to bind: the sandbox's phones live in this process."""

    async def close(self) -> None:
        """Nothing to release: a call's own task ends its virtual phone."""

    def over_sip(self, account_sid: str) -> bool:
        """Never: every leg rings a virtual phone."""
        return False

    async def trunk_status(self, account_sid: str) -> TrunkStatus | None:
        """None: the sandbox has no trunks."""
        return None

    async def reserve(self, account_sid: str, call_sid: str) -> bool:
        """Virtual phones have no trunk: always."""
        return True

    async def unreserve(self, call_sid: str) -> None:
        """Nothing was reserved."""

    def listen_for_room(self, listener: Callable[[], None]) -> None:
        """No trunk frees channels."""

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
            await self._events.put(
                Rejected(Outcome.FAILED, f"sandbox: script lookup failed: {exc}")
            )
            return
        if script.outcome == "failed" and script.ring == 0:
            await self._events.put(Rejected(Outcome.FAILED, "sandbox: number unreachable"))
            return
        await self._events.put(Ringing())
        await clock.sleep(script.ring)
        if script.outcome in ANSWERING:
            channel = SandboxChannel(clock, self.request.number, script, self.carrier.speech)
            await self._events.put(Answered(channel))
        elif script.outcome == "no-answer":
            await asyncio.Event().wait()  # rings until the caller cancels
        else:
            await self._events.put(
                Rejected(Outcome(script.outcome), f"sandbox: phone scripted {script.outcome}")
            )

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
        self, clock: Clock, number: str, script: PhoneScript, speech: Speech | None = None
    ):
        self.clock = clock
        self.speech = speech
        self.number = number
        self.script = script
        self.heard: list[str] = []  # what was said or played to this phone, for tests
        self._keys = list(script.keys)
        self._says = list(script.says)
        self._closed = asyncio.Event()
        self._closed_by = ""
        self._hangups: set[asyncio.Task[None]] = set()
        self._tapes: list[Tape] = []  # while ``record_call`` runs (the call's and a voicebot's)
        self._line = LiveLine(clock, self._bot_played)  # frames for a stream, while one runs
        self._pressed: asyncio.Queue[Key] = asyncio.Queue()  # keys released to a bot
        self.pressed: list[str] = []  # every key pressed to a bot, for tests
        if script.hangup_after is not None:
            self._hang_up_in(script.hangup_after)
        if script.spoken_greeting:
            self._later(self._greet())

    def _later(self, work: Awaitable[None]) -> None:
        """Run ``work`` for as long as the line is up (a hangup cancels it)."""
        task = asyncio.ensure_future(work)
        self._hangups.add(task)
        task.add_done_callback(self._hangups.discard)

    async def _greet(self) -> None:
        """Pick up with the greeting (and a machine's beep after it) on the line."""
        if not await self._hold(PICK_UP_PAUSE):
            return
        speech = await self.voice(self.script.spoken_greeting)
        if self.script.outcome == "machine" and self.script.beep:
            gap = bytes(round(MACHINE_BEEP_GAP * RATE) * SAMPLE_WIDTH)
            speech += gap + machine_beep()
        at = self.clock.now()
        self._line.heard(at, speech)
        for taping in self._tapes:
            taping.heard(at, speech)

    def _hang_up_in(self, seconds: float) -> None:
        """Hang up (as the far end) ``seconds`` from now."""
        task = asyncio.ensure_future(self._hang_up_later(seconds))
        self._hangups.add(task)
        task.add_done_callback(self._hangups.discard)

    async def _hang_up_later(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        self._close("remote")

    def _close(self, by: str) -> None:
        if not self._closed.is_set():
            self._closed_by = by
            self._closed.set()
            self._line.close()

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
        prompt = None
        if self.speech is not None:
            with self.clock.busy():  # rendering takes real time; the test clock must wait for it
                prompt = await self.speech(text, voice)
        spoken = prompt if prompt is not None else murmur(speech_seconds(text))
        self._sent(self.clock.now(), spoken.pcm)
        await self._hold(prompt.duration if prompt is not None else speech_seconds(text))

    async def play(self, url: str, audio: bytes | None = None) -> None:
        if not self.closed:
            self.heard.append(url)
        # Without the audio (a caller that did not fetch it) a typical prompt length stands in.
        seconds = len(audio) / (RATE * SAMPLE_WIDTH) if audio is not None else AUDIO_PROMPT_SECONDS
        await self._hold(seconds)

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

    def next_utterance(self) -> Utterance:
        """What the phone says the next time it is recorded (nothing once its script runs out)."""
        return self._says.pop(0) if self._says else Utterance("")

    async def voice(self, text: str) -> bytes:
        """``text`` as this phone speaks it: 8 kHz PCM (empty for no text)."""
        if not text.strip():
            return b""
        prompt = None
        if self.speech is not None:
            with self.clock.busy():
                prompt = await self.speech(text, None)
        if prompt is None:
            prompt = murmur(speech_seconds(text))
        return prompt.pcm

    async def record(
        self, max_length: float, finish_on: str, beep: bool, silence_timeout: float
    ) -> Recording:
        """The phone's next ``says`` entry, then silence until its scripted key or hangup, the
        silence timeout or the maximum length."""
        if self.closed:
            return Recording(b"", "hangup")
        if beep:
            self.heard.append(BEEP)
            if not await self._hold(BEEP_SECONDS):
                return Recording(b"", "hangup")
        utterance = self.next_utterance()
        speech = await self.voice(utterance.text)
        start = self.clock.now()
        self._line.heard(start, speech)
        ended, digits = await self._speak_into_recorder(
            utterance, len(speech) / (RATE * SAMPLE_WIDTH), max_length, finish_on, silence_timeout
        )
        samples = round((self.clock.now() - start) * RATE)
        pcm = speech[: samples * SAMPLE_WIDTH].ljust(samples * SAMPLE_WIDTH, b"\0")
        for taping in self._tapes:
            taping.heard(start, pcm)
        return Recording(pcm, ended, digits)

    async def _speak_into_recorder(
        self,
        utterance: Utterance,
        speaking: float,
        max_length: float,
        finish_on: str,
        silence_timeout: float,
    ) -> tuple[str, str]:
        """Let the recording run its course on the clock; returns (ended_by, digits)."""
        if not await self._hold(min(speaking, max_length)):
            return "hangup", ""
        remaining = max_length - speaking
        if remaining <= 0:
            return "max-length", ""
        pause = self.script.silence_after
        if utterance.then == "hangup":
            self._hang_up_in(pause)
        presses = utterance.then not in ("", "hangup") and utterance.then in finish_on
        if presses and pause < silence_timeout:
            if not await self._hold(min(pause, remaining)):
                return "hangup", ""
            return ("key", utterance.then) if pause <= remaining else ("max-length", "")
        if not await self._hold(min(silence_timeout, remaining)):
            return "hangup", ""
        return ("silence", "") if silence_timeout <= remaining else ("max-length", "")

    async def bridge(self, other: Channel, tap: ConversationTap | None = None) -> None:
        near = far = b""
        taped = tap is not None or bool(self._tapes)
        if taped:
            near, far = await self._conversation(other)
        started = self.clock.now()
        self._line.heard(started, near)
        self._line.sent(started, far)
        waits = [
            asyncio.ensure_future(self.wait_closed()),
            asyncio.ensure_future(other.wait_closed()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            if taped:
                # Written when the bridge ends, also by cancellation (a conversation limit).
                size = round((self.clock.now() - started) * RATE) * SAMPLE_WIDTH
                near, far = near[:size].ljust(size, b"\0"), far[:size].ljust(size, b"\0")
                if tap is not None:
                    tap.write(near, far)
                for taping in self._tapes:
                    taping.heard(started, near)
                    taping.sent(started, far)

    async def _conversation(self, other: Channel) -> tuple[bytes, bytes]:
        """The two sides of a recorded conversation: the callee speaks first, the caller
        answers, then both are silent; a ``then: hangup`` ends it after that party's turn."""
        mine = self.next_utterance()
        theirs = other.next_utterance() if isinstance(other, SandboxChannel) else Utterance("")
        far = await other.voice(theirs.text) if isinstance(other, SandboxChannel) else b""
        gap = round(TURN_GAP * RATE) * SAMPLE_WIDTH if far else 0
        near_speech = await self.voice(mine.text)
        near = bytes(len(far) + gap) + near_speech
        bytes_per_second = RATE * SAMPLE_WIDTH
        if theirs.then == "hangup" and isinstance(other, SandboxChannel):
            other._hang_up_in(len(far) / bytes_per_second + other.script.silence_after)
        if mine.then == "hangup":
            self._hang_up_in(len(near) / bytes_per_second + self.script.silence_after)
        return near, far

    def record_call(self, tap: ConversationTap) -> Callable[[], None]:
        """Tape the call from now: what the phone says (near) and what it hears (far), written
        into ``tap`` when the returned function is called."""
        tape = Tape(self.clock.now())
        self._tapes.append(tape)

        def stop() -> None:
            if tape in self._tapes:
                self._tapes.remove(tape)
            tape.write(tap, self.clock.now())

        return stop

    async def hangup(self, cause: str = "normal") -> None:
        self._close("local")
        for task in list(self._hangups):
            task.cancel()

    def _sent(self, at: float, pcm: bytes) -> None:
        for taping in self._tapes:
            taping.sent(at, pcm)
        self._line.sent(at, pcm)

    def _bot_played(self, at: float, frame: bytes) -> None:
        for taping in self._tapes:
            taping.sent(at, frame)

    # -- a stream to a bot ------------------------------------------------------------------

    def listen(self, sink: Callable[[bytes, bytes], None]) -> Callable[[], None]:
        """Give ``sink(heard, sent)`` every 20 ms of clock time while the line is up."""
        if self.closed:
            return _nothing
        return self._line.listen(sink)

    def hear(self, sink: Callable[[bytes], None], frames: int = 1) -> Callable[[], None]:
        """Give ``sink`` what the phone says, ``frames`` 20 ms of clock time at a time."""
        if self.closed:
            return _nothing
        return self._line.listen(InGroups(sink, frames))

    def play_out(
        self, playout: Playout, on_marks: Callable[[list[str]], None]
    ) -> Callable[[], None]:
        """Play a bot's audio to the phone, which answers: it speaks its ``says`` lines and
        presses its keys (see ``_converse``)."""
        if self.closed:
            return _nothing
        undo = self._line.play_out(playout, on_marks)
        talk = asyncio.ensure_future(self._converse())
        self._hangups.add(talk)
        talk.add_done_callback(self._hangups.discard)

        def stop() -> None:
            undo()
            talk.cancel()

        return stop

    async def next_key(self) -> Key | None:
        """The next key the phone presses to a bot, once released (each is held KEY_MS); None
        once it hung up."""
        if not self._pressed.empty():
            return self._pressed.get_nowait()
        key = None
        getting = asyncio.ensure_future(self._pressed.get())
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({getting, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not getting.done():
                getting.cancel()
        if getting.done() and not getting.cancelled():
            key = getting.result()
        return key

    async def _press(self, key: str) -> bool:
        """Press ``key`` to a bot and release it KEY_MS later; False if the line closed first."""
        self.pressed.append(key)
        if not await self._hold(KEY_MS / 1000):
            return False
        self._pressed.put_nowait(Key(key, KEY_MS))
        return True

    async def _converse(self) -> None:
        """Talk to a bot: each ``says`` line in turn (at its ``at`` seconds from now, or a
        second after the line before), with its ``then``; then each ``keys`` entry, a second
        apart, its keys KEY_INTERVAL apart."""
        began = self.clock.now()
        free_at = began + BOT_TURN_GAP
        while self._says:
            utterance = self._says.pop(0)
            at = began + utterance.at if utterance.at is not None else free_at
            if not await self._hold(max(0.0, at - self.clock.now())):
                return
            speech = await self.voice(utterance.text)
            self._line.heard(self.clock.now(), speech)
            for taping in self._tapes:
                taping.heard(self.clock.now(), speech)
            if not await self._hold(len(speech) / (RATE * SAMPLE_WIDTH)):
                return
            free_at = self.clock.now() + BOT_TURN_GAP
            if utterance.then == "hangup":
                self._hang_up_in(self.script.silence_after)
                return
            if utterance.then:
                if not await self._hold(self.script.silence_after):
                    return
                if not await self._press(utterance.then):
                    return
        while self._keys:
            entry = self._keys.pop(0)
            if not await self._hold(max(0.0, free_at - self.clock.now())):
                return
            for key in entry:
                if not await self._press(key) or not await self._hold(KEY_INTERVAL - KEY_MS / 1000):
                    return
            free_at = self.clock.now() + BOT_TURN_GAP


def _nothing() -> None:
    """Undoes what never started (the line had hung up)."""


def machine_beep() -> bytes:
    """An answering machine's beep: 1 kHz for half a second, 8 kHz PCM."""
    t = np.arange(round(BEEP_SECONDS * RATE)) / RATE
    return (np.sin(2 * np.pi * MACHINE_BEEP_HZ * t) * 8000).astype("<i2").tobytes()


def murmur(seconds: float) -> Prompt:
    """A voice-like sound (a low buzz at syllable rate) standing in for speech without TTS."""
    t = np.arange(round(seconds * RATE)) / RATE
    tone = (
        np.sin(2 * np.pi * 140 * t)
        + 0.5 * np.sin(2 * np.pi * 280 * t)
        + 0.25 * np.sin(2 * np.pi * 420 * t)
    )
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return Prompt((tone * syllables * 5000).astype("<i2").tobytes())


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sandbox attempt failed", exc_info=task.exception())
