"""Answering machine detection: who picked up, judged from the first seconds of their audio.

Pure (no I/O, no clock): ``Detector.feed`` takes the answered party's audio one 20 ms frame
(8 kHz 16-bit PCM) at a time, in order from the answer, and returns a ``Decision`` once it has
one; time is counted in frames, so the same audio gives the same answer on SIP, on the sandbox
and in a test.

The heuristics are those of Asterisk's ``app_amd`` (and the carriers' detectors built like it),
because what tells a person from a machine is the shape of the greeting, not its words:

- a person answers with a short word or two ("hello?") and then waits for the caller: a short
  utterance followed by ``AFTER_GREETING_SILENCE`` of silence is ``human``;
- a machine plays a greeting of several seconds with only short pauses: an utterance longer
  than ``MAX_GREETING``, or of ``MAX_WORDS`` words or more, is a machine;
- a machine's greeting ends in a beep, a single steady tone (400-2100 Hz) that speech never
  holds: ``MIN_BEEP`` of one frequency is a machine too, and with ``DetectMessageEnd`` the end
  of that tone is the end of its message (``machine_end_beep``); a greeting that just falls
  silent for ``END_SILENCE`` ends it as ``machine_end_silence``;
- nobody saying anything for ``INITIAL_SILENCE``, or no verdict within the analysis time, is
  ``unknown``.

Speech is told from silence by energy against a noise floor the detector follows, so a noisy
line does not read as a party who never stops talking. The beep test is spectral: one 512-point
FFT per frame, where nearly all of the frame's power sits within 110 Hz of one peak that stays
put frame after frame (a vowel spreads its power over harmonics and glides).
"""

from __future__ import annotations

import collections
import dataclasses
import enum

import numpy as np

FRAME_MS = 20
FRAME_SAMPLES = 160
RATE = 8000

# A person's answer: at most this long, then this much silence.
MAX_GREETING = 2000
AFTER_GREETING_SILENCE = 800
MAX_WORDS = 5
MIN_WORD = 100  # a voiced stretch shorter than this is no word (a syllable in noise, a click)
MIN_SOUND = 40  # but one this long breaks a silence (a click does not)
BETWEEN_WORDS = 100  # a pause this long ends a word
INITIAL_SILENCE = 2500  # nobody spoke: unknown
ANALYSIS_TIME = 5000  # Enable: the latest verdict
MESSAGE_TIME = 30000  # DetectMessageEnd: the latest verdict
END_SILENCE = 1500  # silence that ends a machine's message when no beep came
MIN_BEEP = 160
MAX_BEEP = 3000  # a tone this long is decided on without waiting for its end

# Energy (RMS of a frame): speech is this far above the noise floor, and above an absolute
# minimum (phone lines are never truly silent, and a quiet line must not make noise speech).
MIN_SPEECH_RMS = 250.0
SPEECH_OVER_FLOOR = 2.0
FLOOR_FRAMES = 50  # the floor is the quietest frame of the last second

# The beep: power within 110 Hz of the peak (the Hann window's main lobe on 160 samples)
# against the whole frame, and how far its frequency may wander between frames.
FFT_SIZE = 512
TONE_PURITY = 0.8
TONE_LOW_HZ, TONE_HIGH_HZ = 400.0, 2100.0
TONE_DRIFT_HZ = 30.0
_LOBE = round(110 * FFT_SIZE / RATE)
_WINDOW = np.hanning(FRAME_SAMPLES)
_BIN_HZ = RATE / FFT_SIZE


class Mode(enum.StrEnum):
    """What the caller asked for: a fast human/machine verdict, or to wait for the beep."""

    ENABLE = "Enable"
    DETECT_MESSAGE_END = "DetectMessageEnd"


class Result(enum.StrEnum):
    """The verdicts, as ``AnsweredBy`` reports them."""

    HUMAN = "human"
    MACHINE_START = "machine_start"
    MACHINE_END_BEEP = "machine_end_beep"
    MACHINE_END_SILENCE = "machine_end_silence"
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class Decision:
    """A verdict and when it was reached, in milliseconds after the answer."""

    result: Result
    ms: int
    reason: str  # what decided it, for the timeline


def parse_mode(value: str) -> Mode:
    """``Enable`` or ``DetectMessageEnd``, in any case; ValueError for anything else."""
    for mode in Mode:
        if value.strip().lower() == mode.value.lower():
            return mode
    raise ValueError(value)


class Detector:
    """Decides who answered from the frames fed to it (see the module's docstring)."""

    def __init__(self, mode: Mode = Mode.ENABLE):
        self.mode = mode
        self.ms = 0  # audio fed so far
        self.floor = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=FLOOR_FRAMES)
        self.decision: Decision | None = None
        self._machine = ""  # why it is a machine, once known (DetectMessageEnd waits on)
        self._words = 0
        self._first_word: int | None = None  # when the first word began
        self._voiced = 0  # ms of the current voiced stretch
        self._silence = 0  # ms of the current silence
        self._in_word = False
        self._tone_hz = 0.0
        self._tone = 0  # ms of the current steady tone
        self._beeped = False

    def feed(self, frame: bytes) -> Decision | None:
        """Take the next 20 ms frame; the decision, once there is one (then always it)."""
        if self.decision is not None:
            return self.decision
        samples = np.frombuffer(frame, dtype="<i2", count=FRAME_SAMPLES).astype(np.float64)
        self.ms += FRAME_MS
        rms = float(np.sqrt(np.dot(samples, samples) / FRAME_SAMPLES))
        self._recent.append(rms)
        self.floor = min(self._recent)
        voiced = rms > max(MIN_SPEECH_RMS, self.floor * SPEECH_OVER_FLOOR)
        tone = self._tone_frame(samples) if voiced else False
        self.decision = self._beep(tone) or self._speech(voiced) or self._deadline()
        return self.decision

    def _tone_frame(self, samples: np.ndarray) -> bool:
        """Whether this frame continues (or starts) a steady single tone."""
        power = np.abs(np.fft.rfft(samples * _WINDOW, FFT_SIZE)) ** 2
        power[:2] = 0.0
        total = float(power.sum())
        peak = int(power.argmax())
        hz = peak * _BIN_HZ
        lobe = float(power[max(0, peak - _LOBE) : peak + _LOBE + 1].sum())
        pure = total > 0 and lobe / total >= TONE_PURITY and TONE_LOW_HZ <= hz <= TONE_HIGH_HZ
        if pure and self._tone and abs(hz - self._tone_hz) <= TONE_DRIFT_HZ:
            self._tone += FRAME_MS
        elif pure:
            self._tone, self._tone_hz = FRAME_MS, hz
        else:
            self._tone = 0
        return pure

    def _beep(self, tone: bool) -> Decision | None:
        if self._tone >= MIN_BEEP and not self._beeped:
            self._beeped = True
            if self.mode is Mode.ENABLE:
                return self._verdict(Result.MACHINE_START, f"a {self._tone_hz:.0f} Hz beep")
            self._machine = self._machine or "a beep"
        ending = not tone or self._tone >= MAX_BEEP
        if self._beeped and self.mode is Mode.DETECT_MESSAGE_END and ending:
            return self._verdict(Result.MACHINE_END_BEEP, f"the {self._tone_hz:.0f} Hz beep ended")
        return None

    def _speech(self, voiced: bool) -> Decision | None:
        if self._beeped:
            return None  # the beep is the machine's last word: nothing else matters now
        if voiced:
            self._voiced += FRAME_MS
            if self._voiced >= MIN_WORD and not self._in_word:
                self._in_word = True
                self._words += 1
                if self._first_word is None:
                    self._first_word = self.ms - self._voiced
            if self._in_word or self._voiced >= MIN_SOUND:
                self._silence = 0
        else:
            self._silence += FRAME_MS
            if self._silence >= BETWEEN_WORDS:
                self._in_word, self._voiced = False, 0
        if self._first_word is None:
            return None
        if not self._machine:
            return self._greeting()
        if self._silence >= END_SILENCE:
            return self._verdict(Result.MACHINE_END_SILENCE, "the message ended in silence")
        return None

    def _greeting(self) -> Decision | None:
        """Judge the greeting so far: long or wordy is a machine, short then quiet a person."""
        assert self._first_word is not None
        length = self.ms - self._silence - self._first_word
        if length > MAX_GREETING:
            return self._machine_found(f"a greeting longer than {MAX_GREETING} ms")
        if self._words >= MAX_WORDS:
            return self._machine_found(f"{self._words} words without a pause")
        if self._silence >= AFTER_GREETING_SILENCE:
            return self._verdict(Result.HUMAN, f"a {length} ms greeting, then silence")
        return None

    def _machine_found(self, why: str) -> Decision | None:
        self._machine = why
        if self.mode is Mode.ENABLE:
            return self._verdict(Result.MACHINE_START, why)
        return None

    def _deadline(self) -> Decision | None:
        if self._first_word is None and not self._beeped and self.ms >= INITIAL_SILENCE:
            return self._verdict(Result.UNKNOWN, f"silence for {INITIAL_SILENCE} ms")
        if not self._machine and self.ms >= ANALYSIS_TIME:
            return self._verdict(Result.UNKNOWN, f"no verdict within {ANALYSIS_TIME} ms")
        if self._machine and self.ms >= MESSAGE_TIME:  # its message did not end in time
            return self._verdict(Result.MACHINE_START, self._machine)
        return None

    def _verdict(self, result: Result, reason: str) -> Decision:
        return Decision(result, self.ms, reason)

    def finish(self) -> Decision:
        """The verdict when the audio stops early (the party hung up): what is known by now."""
        if self.decision is not None:
            return self.decision
        if self._machine:
            return self._verdict(Result.MACHINE_START, self._machine)
        return self._verdict(Result.UNKNOWN, "the audio ended before a verdict")


def detect(pcm: bytes, mode: Mode = Mode.ENABLE) -> Decision:
    """The verdict on a whole recording (8 kHz 16-bit PCM from the answer on)."""
    detector = Detector(mode)
    step = FRAME_SAMPLES * 2
    for start in range(0, len(pcm) - step + 1, step):
        decision = detector.feed(pcm[start : start + step])
        if decision is not None:
            return decision
    return detector.finish()
