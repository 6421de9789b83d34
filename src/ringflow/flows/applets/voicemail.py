"""Voicemail: record a message from the caller.

Fields:
  prompt           text spoken first (optional), e.g. "Please leave a message after the beep"
  voice            TTS voice of the prompt (default en)
  max_length       longest message, seconds (default 120, at most 3600)
  finish_on_key    keys that end the message (default "#"; "" for none)
  silence_timeout  seconds of silence that end the message (default 5, at most 60)
  beep             play a beep before recording (default true)

Exits: ``next`` (a message was recorded), ``on_no_message`` (only silence, or the caller hung
up before speaking). The recording's URL reaches later applets as ``RecordingUrl`` (Passthru
sends it) and becomes the call's ``RecordingUrl``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ringflow.flows.actions import Record, RecordResult, Say
from ringflow.flows.applets.fields import check_text, check_voice, seconds
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node

DEFAULT_MAX_LENGTH = 120
MAX_LENGTH = 3600
DEFAULT_SILENCE = 5
MAX_SILENCE = 60
KEYS = set("0123456789*#")


def _keys(value: Any) -> str | None:
    if isinstance(value, str) and set(value) <= KEYS:
        return None
    return 'must be keys from 0-9, * and # (such as "#"), or "" for none'


def _beep(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Speak the prompt, record, and hand the recording's URL on."""
    cfg = node.config
    if cfg.get("prompt"):
        yield Say(cfg["prompt"], cfg.get("voice"))
    result: RecordResult = yield Record(
        max_length=float(cfg.get("max_length", DEFAULT_MAX_LENGTH)),
        finish_on=cfg.get("finish_on_key", "#"),
        beep=cfg.get("beep", True),
        silence_timeout=float(cfg.get("silence_timeout", DEFAULT_SILENCE)),
    )
    if result.url is None:
        return "on_no_message"
    ctx.vars["RecordingUrl"] = result.url
    return "next"


SPEC = AppletSpec(
    name="voicemail",
    exits=("next", "on_no_message"),
    required={},
    optional={
        "prompt": check_text,
        "voice": check_voice,
        "max_length": seconds(1, MAX_LENGTH),
        "finish_on_key": _keys,
        "silence_timeout": seconds(1, MAX_SILENCE),
        "beep": _beep,
    },
    run=run,
    waits=True,
    spoken=("prompt",),
)
