"""Log lines as operators read them: one JSON object a line, a call's lines carrying the call,
and no secret in any of them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ringflow.logs import CallFilter, JsonFormatter, RedactingFilter, bind_call, call_context

SID = "a" * 32
OTHER = "b" * 32


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """A logger whose handler is set up as with RINGFLOW_LOG_FORMAT=json; reads its lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CallFilter("box:8080"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("ringflow.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_a_calls_lines_carry_it_and_its_tasks_inherit_it(lines):
    log = logging.getLogger("ringflow.test_logs")

    async def call() -> None:
        bind_call(SID, "acme")
        log.info("answered")
        await asyncio.create_task(child())

    async def child() -> None:
        log.info("playing")

    log.info("before")
    asyncio.run(call())
    with call_context(SID, "acme"):
        log.info("call %s leaves the queue", OTHER)  # the text names another call of acme
    log.info("after")
    lines_ = lines()
    assert [(x["message"], x.get("call_sid"), x.get("account")) for x in lines_] == [
        ("before", None, None),
        ("answered", SID, "acme"),
        ("playing", SID, "acme"),
        (f"call {OTHER} leaves the queue", OTHER, "acme"),
        ("after", None, None),
    ]
    assert all(x["instance"] == "box:8080" and x["logger"] == "ringflow.test_logs" for x in lines_)


def test_json_lines_are_redacted_tracebacks_included(lines):
    log = logging.getLogger("ringflow.test_logs")
    try:
        raise ValueError("POST https://hooks.example.com/cb?token=hunter2 failed\nsecond line")
    except ValueError:
        log.exception("callback to %s failed", "https://u:pw@example.com/cb?Signature=xyz")
    [line] = lines()
    text = json.dumps(line)
    assert "hunter2" not in text and "pw@" not in text and "xyz" not in text
    assert line["level"] == "error" and "[redacted]" in str(line["message"])
    assert "ValueError" in str(line["exception"]) and "second line" in str(line["exception"])
