"""Voicebot: hand the caller to a bot over WebSocket (Exotel's AgentStream, bidirectional).

The caller's audio goes to the bot and the bot's audio to the caller, with keys, marks and
clears, until one side ends it. The bot closing the socket continues the flow at ``next`` (for
example a Connect to a human); a stream that could not be opened (the handshake failed twice,
the account's stream limit, a refused URL) leaves by ``on_error``. The caller hanging up ends
the call. Passthru requests after it carry the ``Stream[...]`` fields of the stream.

``record: true`` records the conversation with the bot while the stream runs (what the caller
said and what the bot played; ``recording_channels`` ``single`` or ``dual``, by default the
call's ``RecordingChannels``): the recording belongs to the call and its URL is
``Stream[RecordingUrl]`` (and ``RecordingUrl``) for the applets after it.

    bot: {applet: voicebot, url: "wss://bot.example.com/agent?lang=en", next: agent, on_error: sorry}
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

from ringflow.flows.actions import StreamAudio
from ringflow.flows.applets.fields import check_flag, check_recording_channels
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node
from ringflow.streams.target import MAX_URL


def check_stream_url(value: Any) -> str | None:
    """A stream URL field: ws, wss, or an http(s) endpoint answering {"url": ...}."""
    if not isinstance(value, str) or len(value) > MAX_URL:
        return f"must be a ws://, wss:// or http(s):// URL of at most {MAX_URL} characters"
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("ws", "wss", "http", "https") or not parts.hostname:
        return f"{value!r} is not a ws://, wss:// or http(s):// URL"
    return None


def remember(ctx: FlowContext, outcome: Any) -> None:
    """Keep the stream's fields for the Passthru requests that follow."""
    ctx.vars.update(outcome.passthru_fields())


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Stream until the bot or the caller ends it."""
    outcome = yield StreamAudio(
        url=node.config["url"].strip(),
        bidirectional=True,
        record=node.config.get("record", False),
        recording_channels=node.config.get("recording_channels"),
    )
    if outcome is None:
        return "on_error"
    remember(ctx, outcome)
    if outcome.recording_url:
        ctx.vars["RecordingUrl"] = outcome.recording_url
    if outcome.status == "failed":
        ctx.vars["voicebot_error"] = outcome.detailed_status
        return "on_error"
    return "next"


SPEC = AppletSpec(
    name="voicebot",
    exits=("next", "on_error"),
    required={"url": check_stream_url},
    optional={"record": check_flag, "recording_channels": check_recording_channels},
    run=run,
    waits=True,
    quick_exits=("on_error",),
)
