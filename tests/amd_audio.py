"""The audio answering machine detection is tuned and tested on: people answering and machines
greeting, spoken by espeak-ng, with line noise and G.711 as a phone line adds them.

Each ``Sample`` is what a callee sends from the moment it answers: a person waits a moment,
says a short phrase ("hello?") and waits for the caller; a machine plays a greeting of several
sentences, then a beep (of one of the tones voicemail systems use) or nothing. Samples cut from
a real recording (the speech SIPp ships, ``/usr/share/sip-tester/g711a.pcap``) join them when
it is installed. Noise is seeded, so every run hears the same audio.

``python -m tests.amd_audio`` rewrites the files in ``tests/fixtures/amd/`` (raw u-law, as SIPp
streams them): the two callees of the SIP tests.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path

import numpy as np

from ringflow.media.amd import Mode, Result
from ringflow.media.tts import Espeak

with warnings.catch_warnings():  # deprecated in 3.11, kept by audioop-lts: as media.g711
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
FIXTURES = Path(__file__).parent / "fixtures" / "amd"
SIPP_SPEECH = Path("/usr/share/sip-tester/g711a.pcap")

HUMAN_PHRASES = [
    ("Hello?", "en"),
    ("Hello?", "en-us+f3"),
    ("Hi.", "en-gb-x-rp"),
    ("Yes?", "en+m3"),
    ("Hello, who is this?", "en-us"),
    ("Yeah, hello.", "en-029"),
    ("Good morning.", "en+f2"),
    ("Ravi speaking.", "en-gb"),
    ("Hello, yes?", "en-us+m3"),
    ("Haan, hello?", "hi"),
]
# (words, voice, beep Hz and seconds, or None for a greeting that just ends)
MACHINE_GREETINGS = [
    (
        (
            "Hi, you have reached Priya. I can't take your call right now. Please leave a message "
            "after the tone."
        ),
        "en",
        (1000, 0.5),
    ),
    (
        "The number you have called is not available. Please leave your message after the beep.",
        "en-us+f3",
        (850, 0.3),
    ),
    (
        (
            "Hello, this is the voicemail of Arjun Mehta. Leave your name and number and I will call "
            "you back."
        ),
        "en-gb-x-rp",
        (1400, 0.4),
    ),
    (
        "You've reached the Sharma residence. We're not home right now, please leave a message.",
        "en-us",
        None,
    ),
    (
        (
            "Thank you for calling. Nobody is available to take your call. Please record your "
            "message after the tone."
        ),
        "en+f2",
        (440, 0.8),
    ),
    (
        "Hi, it's Meera. Sorry I missed you. Leave a message and I'll get back to you soon.",
        "en-029",
        (1000, 0.25),
    ),
    ("The person you are calling is busy. Please leave a message.", "en+m3", None),
    (
        "Hey, this is Karan, I'm probably driving. Text me or leave a voicemail.",
        "en-us+m3",
        (1200, 0.6),
    ),
]
# Held out: added after the detector was tuned, to show what tuning on the set above is worth.
HELD_OUT_PHRASES = [
    ("Hello, Anita here.", "en-gb-scotland"),
    ("Yes, tell me.", "en-us-nyc+f4"),
    ("Hello, who's calling?", "en+m2"),
    ("Speaking.", "en-us+f2"),
    ("Hmm, hello?", "en-029+m1"),
    ("Hello, good evening, yes?", "en-gb-x-gbclan"),
]
HELD_OUT_GREETINGS = [
    (
        (
            "Welcome to the voicemail box of nine eight four five zero, one two three four five. "
            "Please leave a message."
        ),
        "en-us-nyc",
        (950, 0.4),
    ),
    (
        "Namaste. I am not available at the moment. Please leave your name and number.",
        "en-gb-scotland+f3",
        None,
    ),
    ("This is Dev. Can't talk now, leave a message after the beep.", "en+m2", (1100, 0.35)),
    (
        (
            "The subscriber you are trying to reach cannot take your call. Record your message "
            "at the tone."
        ),
        "en-us+f4",
        (700, 0.5),
    ),
]
NOISE_DB = (None, 30.0, 20.0, 10.0)  # signal-to-noise ratios heard (None: a clean line)


@dataclasses.dataclass(frozen=True)
class Sample:
    """A callee's audio from its answer on, and the verdicts it should get."""

    name: str
    kind: str  # human, machine, silent
    pcm: bytes  # 8 kHz 16-bit, clean
    beep: bool = False

    def expected(self, mode: Mode) -> Result:
        """The right verdict for this callee under ``mode``."""
        if self.kind == "human":
            return Result.HUMAN
        if self.kind == "silent":
            return Result.UNKNOWN
        if mode is Mode.ENABLE:
            return Result.MACHINE_START
        return Result.MACHINE_END_BEEP if self.beep else Result.MACHINE_END_SILENCE


@functools.cache
def _engine() -> Espeak:
    return Espeak()


@functools.cache
def speech(text: str, voice: str = "en") -> np.ndarray:
    """``text`` spoken by espeak-ng, 8 kHz samples."""
    return np.frombuffer(_engine().render(text, voice).pcm, dtype="<i2").astype(np.float64)


def silence(seconds: float) -> np.ndarray:
    """``seconds`` of digital silence."""
    return np.zeros(round(seconds * RATE))


def tone(hz: float, seconds: float, level: float = 8000.0) -> np.ndarray:
    """A beep: ``hz`` for ``seconds``, with 5 ms ramps as real ones have."""
    t = np.arange(round(seconds * RATE)) / RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)
    return np.sin(2 * np.pi * hz * t) * level * ramp


def pcm(*parts: np.ndarray) -> bytes:
    """Parts joined as 8 kHz 16-bit PCM."""
    joined = np.concatenate(parts) if parts else np.zeros(0)
    return np.clip(joined, -32768, 32767).astype("<i2").tobytes()


def human(text: str, voice: str, delay: float, wait: float = 4.0) -> bytes:
    """A person: ``delay`` s of silence, ``text``, then ``wait`` s of silence."""
    return pcm(silence(delay), speech(text, voice), silence(wait))


def machine(
    text: str,
    voice: str,
    beep: tuple[float, float] | None,
    delay: float = 0.3,
    gap: float = 0.6,
    after: float = 3.0,
) -> bytes:
    """A machine: its greeting, a pause of ``gap`` s, the beep (if any), then silence."""
    parts = [silence(delay), speech(text, voice), silence(gap)]
    if beep is not None:
        parts.append(tone(*beep))
    return pcm(*parts, silence(after))


def noisy(clean: bytes, snr_db: float | None, seed: int) -> bytes:
    """``clean`` as heard over a phone line: noise ``snr_db`` below its speech (None: none),
    then through G.711 u-law and back."""
    x = np.frombuffer(clean, dtype="<i2").astype(np.float64)
    if snr_db is not None:
        active = x[np.abs(x) > 500]
        level = np.sqrt(np.mean(active**2)) if active.size else 2000.0
        rng = np.random.default_rng(seed)
        noise = rng.normal(0.0, 1.0, x.size)
        hum = 0.3 * np.sin(2 * np.pi * 50 * np.arange(x.size) / RATE)
        x = x + (noise + hum) * level / (10 ** (snr_db / 20))
    line = np.clip(x, -32768, 32767).astype("<i2").tobytes()
    return audioop.ulaw2lin(audioop.lin2ulaw(line, 2), 2)


def from_ulaw(data: bytes) -> bytes:
    """Raw u-law (a SIPp callee's file) as 8 kHz 16-bit PCM."""
    return audioop.ulaw2lin(data, 2)


def sipp_speech() -> np.ndarray | None:
    """The real speech SIPp ships (7 s, A-law RTP), or None without sip-tester."""
    if not SIPP_SPEECH.exists():
        return None
    from tests.pcap import udp_payloads

    payloads = udp_payloads(SIPP_SPEECH)
    decoded = b"".join(audioop.alaw2lin(p[12:], 2) for p in payloads)
    return np.frombuffer(decoded, dtype="<i2").astype(np.float64)


def samples() -> list[Sample]:
    """Every callee of the fixture set (clean: ``noisy`` adds the line)."""
    found = []
    for i, (text, voice) in enumerate(HUMAN_PHRASES):
        delay = 0.2 + 0.1 * i
        found.append(Sample(f"human-{i}", "human", human(text, voice, delay)))
    found.append(
        Sample(
            "human-twice",
            "human",
            pcm(silence(0.4), speech("Hello?"), silence(0.5), speech("Hello?"), silence(4.0)),
        )
    )
    for i, (text, voice, beep) in enumerate(MACHINE_GREETINGS):
        found.append(
            Sample(f"machine-{i}", "machine", machine(text, voice, beep), beep=beep is not None)
        )
    found.append(Sample("silent", "silent", pcm(silence(6.0))))
    real = sipp_speech()
    if real is not None:
        # A long stretch of talk (a greeting), and one short phrase of it alone (an answer).
        found.append(Sample("real-talk", "machine", pcm(real, silence(3.0))))
        found.append(
            Sample(
                "real-phrase",
                "human",
                pcm(silence(0.5), real[round(5.1 * RATE) : round(5.9 * RATE)], silence(4.0)),
            )
        )
    return found


def held_out() -> list[Sample]:
    """Callees the detector was not tuned on (other words, voices, beeps and timings)."""
    found = [
        Sample(f"held-human-{i}", "human", human(text, voice, 0.35 + 0.15 * i))
        for i, (text, voice) in enumerate(HELD_OUT_PHRASES)
    ]
    found += [
        Sample(
            f"held-machine-{i}",
            "machine",
            machine(text, voice, beep, delay=0.1 + 0.2 * i, gap=0.4 + 0.2 * i),
            beep=beep is not None,
        )
        for i, (text, voice, beep) in enumerate(HELD_OUT_GREETINGS)
    ]
    return found


def write_fixtures() -> None:
    """The SIP tests' two callees, as raw u-law for SIPp's ``rtp_stream``."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    callees = {
        "human_hello.ulaw": human("Hello?", "en", 0.4, wait=5.0),
        "machine_beep.ulaw": machine(*MACHINE_GREETINGS[1]),  # 4.5 s, then an 850 Hz beep
    }
    for name, clean in callees.items():
        (FIXTURES / name).write_bytes(audioop.lin2ulaw(noisy(clean, 30.0, seed=1), 2))


if __name__ == "__main__":
    write_fixtures()
