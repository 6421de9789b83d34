"""Text to speech with espeak-ng, rendered to 8 kHz Prompts and cached on disk.

The engine is libespeak-ng from the ``espeakng-loader`` wheel (a ringflow dependency: it bundles
the library and the voice data for English, Hindi and about a hundred other languages, so pip
alone installs it); without the wheel, Debian's ``libespeak-ng1`` is used. Each render runs the
library in a short-lived worker process (``espeak_worker.py``), because the library keeps
global state and reads text that customers control: a crash or a hang costs that one prompt,
never the server. Renders are cached by (engine version, voice, text), so a prompt is spoken
once per deployment.

Errors::

    RingflowError
    └── TtsError            the engine failed to speak this text (crash, timeout)
        └── TtsUnavailable  no engine installed; the message says how to install one
    InvalidRequest          empty or too long text, unknown voice
"""

from __future__ import annotations

import asyncio
import ctypes.util
import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import wave
from pathlib import Path

import numpy as np

from ringflow.errors import InvalidRequest, RingflowError
from ringflow.media.audio import MAX_SECONDS, Prompt, from_pcm
from ringflow.media.cache import PromptCache, key_for

DEFAULT_VOICE = "en"
MAX_TEXT = 5000  # characters; about six minutes of speech
RENDER_TIMEOUT = 30.0  # seconds; a render takes milliseconds, so this only catches a hang
PIPELINE = "tts-1"  # bump when rendering changes, so old renders are not reused
WORKER = Path(__file__).with_name("espeak_worker.py")
EXIT_VOICE, EXIT_LOAD = 2, 3  # as in espeak_worker.py
INSTALL_HINT = (
    "install espeak-ng into ringflow's environment with `pip install espeakng-loader` "
    "(a ringflow dependency, so `pip install -e .` or `make install` brings it), "
    "or install Debian's library with `apt-get install libespeak-ng1`"
)


class TtsError(RingflowError):
    """The text-to-speech engine failed to speak a text."""


class TtsUnavailable(TtsError):
    """No text-to-speech engine is installed, or it cannot start; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    """What a working engine reported about itself."""

    version: str  # e.g. "espeak-ng 1.52.0"
    rate: int  # the rate it renders at (22050 Hz), before conversion to 8 kHz
    voices: tuple[str, ...]  # language codes of its voices, e.g. "en", "en-us", "hi"


class Espeak:
    """libespeak-ng, run in a worker process per render.

    ``library`` and ``data`` name the shared library and its voice data; by default the
    espeakng-loader wheel's, else the system's ``libespeak-ng.so.1`` with its built-in data path.
    """

    def __init__(
        self,
        library: str | os.PathLike[str] | None = None,
        data: str | os.PathLike[str] | None = None,
        *,
        timeout: float = RENDER_TIMEOUT,
        python: str = sys.executable,
    ):
        if library is None:
            library, data = _find_library()
        self.library = None if library is None else str(library)
        self.data = None if data is None else str(data)
        self.timeout = timeout
        self.python = python
        self._info: EngineInfo | str | None = None  # what the probe found, or why it failed
        self._lock = threading.Lock()

    @property
    def probed(self) -> bool:
        """True once the engine was asked what it can do (so info() returns at once)."""
        return self._info is not None

    def info(self) -> EngineInfo:
        """Version and voices; TtsUnavailable if there is no working engine. Asked once."""
        with self._lock:
            if self._info is None:
                self._info = self._probe()
            if isinstance(self._info, str):
                raise TtsUnavailable(self._info)
            return self._info

    def available(self) -> bool:
        """Whether text can be spoken."""
        try:
            self.info()
        except TtsUnavailable:
            return False
        return True

    def render(self, text: str, voice: str) -> Prompt:
        """Speak ``text`` with ``voice`` (blocking: tens of milliseconds)."""
        self.info()
        try:
            proc = self._run(["speak", "--voice", voice], text.encode("utf-8"), self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise TtsError(
                f"espeak-ng took longer than {self.timeout:g} s to speak the text"
            ) from exc
        reason = _reason(proc)
        if proc.returncode == EXIT_VOICE:
            raise InvalidRequest(f"unknown TTS voice {voice!r}: {reason}")
        if proc.returncode == EXIT_LOAD:
            raise TtsUnavailable(f"text to speech is unavailable: {reason}; {INSTALL_HINT}")
        if proc.returncode < 0:
            raise TtsError(f"espeak-ng crashed (signal {-proc.returncode}) speaking the text")
        if proc.returncode != 0:
            raise TtsError(f"espeak-ng failed (exit {proc.returncode}): {reason}")
        try:
            with wave.open(io.BytesIO(proc.stdout), "rb") as w:
                rate = w.getframerate()
                pcm = w.readframes(w.getnframes())
        except (wave.Error, EOFError) as exc:
            raise TtsError("espeak-ng worker printed no WAV") from exc
        return from_pcm(np.frombuffer(pcm, dtype="<i2"), rate)

    def _probe(self) -> EngineInfo | str:
        if self.library is None:
            return f"text to speech is unavailable: no espeak-ng found; {INSTALL_HINT}"
        try:
            proc = self._run(["info"], b"", timeout=10.0)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"text to speech is unavailable: {exc}; {INSTALL_HINT}"
        if proc.returncode != 0:
            return f"text to speech is unavailable: {_reason(proc)}; {INSTALL_HINT}"
        found = json.loads(proc.stdout)
        return EngineInfo(f"espeak-ng {found['version']}", found["rate"], tuple(found["voices"]))

    def _run(
        self, args: list[str], stdin: bytes, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        # -I -S: no environment variables, no site-packages; the worker needs only the stdlib.
        command = [self.python, "-I", "-S", str(WORKER), "--library", str(self.library)]
        if self.data:
            command += ["--data", self.data]
        return subprocess.run(
            command + args, input=stdin, capture_output=True, timeout=timeout, check=False
        )


def _reason(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The worker's one-line reason (the library may print its own lines before it)."""
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _find_library() -> tuple[str | None, str | None]:
    """The espeakng-loader wheel's library and data, else the system's library, else nothing."""
    try:
        import espeakng_loader
    except ImportError:
        pass
    else:
        library = Path(espeakng_loader.get_library_path())
        data = library.parent / "espeak-ng-data"
        if library.exists() and data.is_dir():
            return str(library), str(data)
    return ctypes.util.find_library("espeak-ng"), None


class TextToSpeech:
    """Speaks text as Prompts, each (engine, voice, text) rendered once and cached in ``cache``."""

    def __init__(self, cache: PromptCache | str | os.PathLike[str], engine: Espeak | None = None):
        self.cache = cache if isinstance(cache, PromptCache) else PromptCache(cache)
        self.engine = engine if engine is not None else default_engine()
        self.renders = 0  # renders done by the engine (cache misses), for tests and metrics
        self._count_lock = threading.Lock()

    def close(self) -> None:
        """Stop the cache's worker threads."""
        self.cache.close()

    async def ready(self) -> bool:
        """Ask the engine what it can do, off the event loop; True if text can be spoken."""
        if not self.engine.probed:
            await asyncio.to_thread(self.engine.available)
        return self.engine.available()

    def available(self) -> bool:
        """Whether text can be spoken (the first call starts the engine once: about 0.1 s)."""
        return self.engine.available()

    def require(self) -> None:
        """Raise TtsUnavailable, with the install hint, if text cannot be spoken."""
        self.engine.info()

    def voices(self) -> list[str]:
        """Language codes the engine speaks, e.g. "en", "en-us", "hi" (TtsUnavailable if none)."""
        return list(self.engine.info().voices)

    def check(self, text: str, voice: str | None = None) -> tuple[str, str]:
        """Validate ``text`` and ``voice`` as an app is saved; returns them normalised."""
        text = text.replace("\0", "").strip()
        if not text:
            raise InvalidRequest("text to speak is empty")
        if len(text) > MAX_TEXT:
            raise InvalidRequest(
                f"text to speak is {len(text)} characters long; at most {MAX_TEXT}"
            )
        voice = (voice or DEFAULT_VOICE).strip().lower().replace("_", "-")
        known = self.engine.info().voices
        # A regional variant espeak-ng lacks ("en-in") is spoken by the language's closest voice.
        if voice not in known and voice.split("-")[0] not in known:
            raise InvalidRequest(
                f"unknown TTS voice {voice!r}; espeak-ng speaks {len(known)} languages, "
                "such as en, en-us, en-in (as en) and hi"
            )
        return text, voice

    async def speak(self, text: str, voice: str | None = None) -> Prompt:
        """``text`` spoken by ``voice`` as an 8 kHz Prompt, rendered once and cached."""
        if not self.engine.probed:
            await self.ready()
        text, voice = self.check(text, voice)
        key = key_for(PIPELINE, self.engine.info().version, voice, text)
        return await self.cache.get_or_make(key, lambda: self._render(text, voice))

    def _render(self, text: str, voice: str) -> Prompt:
        prompt = self.engine.render(text, voice)
        with self._count_lock:
            self.renders += 1
        if prompt.duration > MAX_SECONDS:
            raise InvalidRequest(
                f"spoken text would last {prompt.duration:.0f} s; at most {MAX_SECONDS:.0f} s"
            )
        return prompt


_default_engine: Espeak | None = None


def default_engine() -> Espeak:
    """The process-wide engine found by default (the wheel's library, else the system's)."""
    global _default_engine
    if _default_engine is None:
        _default_engine = Espeak()
    return _default_engine


def available() -> bool:
    """Whether the default engine can speak (for app validation without a TextToSpeech at hand)."""
    return default_engine().available()


def voices() -> list[str]:
    """Language codes the default engine speaks (TtsUnavailable if there is no engine)."""
    return list(default_engine().info().voices)
