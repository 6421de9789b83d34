"""Passthru: tell the customer's server about the call, and branch on its answer.

The request is a GET with Exotel's query parameters and their quirks: ``digits`` in literal double
quotes, ``Direction`` ``outbound-dial`` for API-started calls, the constant ``EndTime``. In sync
mode a 200 leaves by ``on_200`` and anything else (302, another status, a timeout) by ``on_302``;
a 200 ``text/plain`` body ``{"select": "case"}`` is kept for a following Switch Case.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

from ringflow.flows.actions import HttpGet, HttpResult
from ringflow.flows.context import CREATED_FORMAT, FlowContext
from ringflow.flows.model import AppletSpec, Node

CONSTANT_END_TIME = "1970-01-01 05:30:00"
DEFAULT_TIMEOUT = 10.0
# Variables set by earlier applets, passed on under Exotel's names when they are known.
CARRIED = (
    "DialCallDuration",
    "DialWhomNumber",
    "DialCallStatus",
    "RecordingUrl",
    # After a voicebot applet (AgentStream spec, section 4).
    "Stream[StreamSID]",
    "Stream[Status]",
    "Stream[Duration]",
    "Stream[StreamUrl]",
    "Stream[DisconnectedBy]",
    "Stream[DetailedStatus]",
    "Stream[RecordingUrl]",
    # A call placed with MachineDetection (a ringflow extension): who answered.
    "AnsweredBy",
)


def check_url(value: Any) -> str | None:
    """A URL field: http or https with a host."""
    if not isinstance(value, str):
        return "must be an http or https URL"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value!r} is not an http or https URL"
    return None


def _mode(value: Any) -> str | None:
    return None if value in ("sync", "async") else "must be 'sync' or 'async'"


def _timeout(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 30
    return None if ok else "must be a number of seconds from 1 to 30"


def call_type(ctx: FlowContext) -> str:
    """Exotel's CallType so far: a conversation happened, a message was left, or neither."""
    if ctx.vars.get("DialCallStatus") == "completed":
        return "completed"
    if ctx.vars.get("RecordingUrl"):
        return "voicemail"
    return "call-attempt"


def query_params(ctx: FlowContext) -> dict[str, str]:
    """The query parameters Exotel sends to a Passthru URL at this point of the call."""
    now = ctx.now()
    params = {
        "CallSid": ctx.call_sid,
        "CallFrom": ctx.customer,
        "CallTo": ctx.exophone,
        "From": ctx.customer,
        "To": ctx.exophone,
        "Direction": ctx.direction,
        "Created": ctx.local(ctx.created_at).strftime(CREATED_FORMAT),
        "StartTime": ctx.fmt(ctx.started_at),
        "EndTime": CONSTANT_END_TIME,
        "CurrentTime": ctx.fmt(now),
        "CallType": call_type(ctx),
        "flow_id": str(ctx.app_id),
        "tenant_id": str(ctx.account_id),
    }
    for name in CARRIED:
        if name in ctx.vars:
            params[name] = ctx.vars[name]
    if "digits" in ctx.vars:
        params["digits"] = f'"{ctx.vars["digits"]}"'
    if ctx.custom_field:
        params["CustomField"] = ctx.custom_field
    return params


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """GET the URL; branch on the answer in sync mode, continue at once in async mode."""
    # A select from an earlier Passthru must not drive a Switch Case after this one.
    ctx.vars.pop("select", None)
    sync = node.config.get("mode", "sync") == "sync"
    request = HttpGet(
        url=node.config["url"],
        params=query_params(ctx),
        timeout=float(node.config.get("timeout", DEFAULT_TIMEOUT)),
        wait=sync,
    )
    result: HttpResult | None = yield request
    if not sync:
        return "next"
    if result is None or result.status != 200:
        return "on_302"
    select = _select(result)
    if select is not None:
        ctx.vars["select"] = select
    return "on_200"


def _select(result: HttpResult) -> str | None:
    """The Switch Case selector in a 200 text/plain body, if there is one."""
    if not result.content_type.startswith("text/plain"):
        return None
    try:
        body = json.loads(result.text)
    except ValueError:
        return None
    value = body.get("select") if isinstance(body, dict) else None
    return str(value) if value is not None else None


SPEC = AppletSpec(
    name="passthru",
    exits=("on_200", "on_302", "next"),
    required={"url": check_url},
    optional={"mode": _mode, "timeout": _timeout},
    run=run,
    waits=False,
)
