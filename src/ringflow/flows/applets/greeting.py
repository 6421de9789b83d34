"""Greeting: speak a text (audio and dynamic greetings come with the full catalogue)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ringflow.flows.actions import Say
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty text to speak"
    if len(value) > 4000:
        return "must be at most 4000 characters"
    return None


def _voice(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a voice name such as 'en'"


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Speak the text, then leave by ``next``."""
    yield Say(node.config["text"], node.config.get("voice"))
    return "next"


SPEC = AppletSpec(
    name="greeting",
    exits=("next",),
    required={"text": _text},
    optional={"voice": _voice},
    run=run,
    waits=True,
    spoken=("text",),
)
