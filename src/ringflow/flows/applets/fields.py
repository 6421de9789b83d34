"""Field checks and prompt helpers shared by the applets of the catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ringflow.flows.actions import Play, Say
from ringflow.flows.applets.passthru import check_url
from ringflow.flows.model import FieldCheck

MAX_TEXT = 4000
RECORDING_CHANNELS = ("single", "dual")


def check_text(value: Any) -> str | None:
    """A text to speak."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty text to speak"
    if len(value) > MAX_TEXT:
        return f"must be at most {MAX_TEXT} characters"
    return None


def check_voice(value: Any) -> str | None:
    """A TTS voice name."""
    return None if isinstance(value, str) and value else "must be a voice name such as 'en'"


def check_flag(value: Any) -> str | None:
    """true or false."""
    return None if isinstance(value, bool) else "must be true or false"


def check_recording_channels(value: Any) -> str | None:
    """How a recorded conversation is kept: both parties mixed, or one channel each."""
    return None if value in RECORDING_CHANNELS else "must be single or dual"


def whole_number(low: int, high: int) -> FieldCheck:
    """A check for an integer from ``low`` to ``high`` (booleans are not numbers)."""

    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be a whole number from {low} to {high}"

    return check


def seconds(low: float, high: float) -> FieldCheck:
    """A check for a number of seconds from ``low`` to ``high``."""

    def check(value: Any) -> str | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be a number of seconds from {low:g} to {high:g}"

    return check


def prompt_problems(
    config: Mapping[str, Any], text: str = "text", audio: str = "audio_url", required: bool = True
) -> list[str]:
    """A prompt is ``text`` or ``audio``, not both (and, when ``required``, one of them)."""
    if text in config and audio in config:
        return [f"field {text!r}: give {text!r} or {audio!r}, not both"]
    if required and text not in config and audio not in config:
        return [f"field {text!r}: a prompt is required: {text!r} to speak or {audio!r} to play"]
    return []


def prompt_action(
    config: Mapping[str, Any], text: str = "text", audio: str = "audio_url"
) -> Say | Play | None:
    """The action that plays the prompt held in ``config`` under these names, if any."""
    if config.get(audio):
        return Play(config[audio])
    if config.get(text):
        return Say(config[text], config.get("voice"))
    return None


PROMPT_FIELDS: dict[str, FieldCheck] = {
    "text": check_text,
    "audio_url": check_url,
    "voice": check_voice,
}
