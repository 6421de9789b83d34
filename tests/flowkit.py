"""Running applets as pure generators in tests: a call context and a driver."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ringflow.flows.applets import REGISTRY
from ringflow.flows.context import FlowContext
from ringflow.flows.model import Node, parse_app

UTC = dt.UTC
CREATED = dt.datetime(2022, 2, 23, 7, 1, 59, tzinfo=UTC)  # Wed, 23 Feb 2022 12:31:59 IST


def ctx(**vars: Any) -> FlowContext:
    """A flow call created at CREATED, now 10 s later, with these ``vars``."""
    return FlowContext(
        call_sid="abc",
        account_id=7,
        app_id=42,
        customer="09812345678",
        exophone="08039591234",
        direction="outbound-dial",
        created_at=CREATED,
        started_at=CREATED,
        time_zone="Asia/Kolkata",
        custom_field="cf",
        now=lambda: CREATED + dt.timedelta(seconds=10),
        vars=dict(vars),
    )


def run_node(node: Node, context: FlowContext, results: list[Any]) -> tuple[list[Any], Any]:
    """Run one node's applet, answering its actions with ``results`` in turn (then None)."""
    gen = REGISTRY[node.applet].run(node, context)
    actions: list[Any] = []
    result = None
    results = list(results)
    try:
        while True:
            actions.append(gen.send(result))
            result = results.pop(0) if results else None
    except StopIteration as stop:
        return actions, stop.value


def drive(
    node_cfg: dict[str, Any], context: FlowContext, results: list[Any]
) -> tuple[list[Any], Any]:
    """Validate ``node_cfg`` as a one-node app and run it; returns (actions, exit)."""
    node = parse_app({"name": "t", "start": "n", "nodes": {"n": node_cfg}}, REGISTRY).nodes["n"]
    return run_node(node, context, results)
