"""Hangup: end the call."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ringflow.flows.actions import HANGUP
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """End the call."""
    return HANGUP
    yield  # a generator like every applet, though it asks for nothing


SPEC = AppletSpec(name="hangup", exits=(), required={}, optional={}, run=run, waits=True)
