"""Stream: send the call's audio to a WebSocket server while the flow goes on (unidirectional).

For live transcription and agent assist: ``track`` ``inbound`` (what the caller says, the
default), ``outbound`` (what the caller hears) or ``both`` (each media message says its
track). Nothing comes back from the server. The stream runs until the call ends, the flow
ends, or the server closes it; the flow continues at ``next`` at once.

    listen: {applet: stream, url: "wss://asr.example.com/live", track: both, next: menu}
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ringflow.flows.actions import StreamAudio
from ringflow.flows.applets.voicebot import check_stream_url
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node
from ringflow.streams.protocol import TRACKS


def _track(value: Any) -> str | None:
    return None if value in TRACKS else f"must be one of {', '.join(TRACKS)}"


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Start the stream beside the flow and go on."""
    yield StreamAudio(
        url=node.config["url"].strip(),
        bidirectional=False,
        track=node.config.get("track", "inbound"),
        wait=False,
    )
    return "next"


SPEC = AppletSpec(
    name="stream",
    exits=("next",),
    required={"url": check_stream_url},
    optional={"track": _track},
    run=run,
    waits=False,
)
