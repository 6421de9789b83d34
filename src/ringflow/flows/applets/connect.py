"""Connect: ring one or more numbers for the caller and put them through to whoever answers.

Fields:
  numbers           list of numbers to dial (static), or
  url               a URL whose answer names them: ``text/plain`` "0981..., 0982..." or the
                    programmable JSON (``destination.numbers``, ``outgoing_phone_number``,
                    ``max_ringing_duration``, ``max_conversation_duration``, ``record``,
                    ``recording_channels``, ``start_call_playback`` with ``type: text``)
  mode              ``sequential`` (default: in order) or ``simultaneous`` (all at once)
  ring_timeout      seconds each number rings (default 30, at most 60)
  max_conversation  seconds the parties may talk (default: until the call's TimeLimit)
  announce          text spoken to the callee before the caller is put through
  music_on_hold     audio the caller hears while the numbers ring: an http(s) WAV/MP3 URL
                    (the programmable JSON's ``music_on_hold: {"type": "audio_url", "value"}``)
  record            record the conversation (default false; a call placed with Record=true
                    records every conversation of its flow)
  recording_channels  ``single`` (both parties mixed) or ``dual`` (one channel each); default:
                    the call's RecordingChannels

Exits: ``after_conversation`` (someone answered and the conversation ended with the caller still
on the line), ``on_no_answer`` (nobody answered), ``on_nobody`` (there was nobody to dial).
Later applets see ``DialCallStatus``, ``DialCallDuration`` and ``DialWhomNumber``, and
``RecordingUrl`` when the conversation was recorded.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from ringflow.errors import InvalidRequest
from ringflow.flows.actions import Dial, DialResult, HttpGet, HttpResult
from ringflow.flows.applets.fields import (
    RECORDING_CHANNELS,
    check_flag,
    check_recording_channels,
    check_text,
    seconds,
)
from ringflow.flows.applets.passthru import check_url, query_params
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node
from ringflow.phone import display, normalize

DEFAULT_RING = 30
MAX_RING = 60
FETCH_TIMEOUT = 10.0


def _numbers(value: Any) -> str | None:
    if not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value):
        return "must be a non-empty list of phone numbers"
    for number in value:
        try:
            normalize(number, field="number")
        except InvalidRequest as exc:
            return str(exc)
    return None


def _mode(value: Any) -> str | None:
    return None if value in ("sequential", "simultaneous") else "must be sequential or simultaneous"


def _valid_numbers(raw: list[Any]) -> list[str]:
    """The numbers that parse (a customer's list may hold junk; it is skipped, not fatal)."""
    valid = []
    for item in raw:
        try:
            valid.append(normalize(str(item), field="number"))
        except InvalidRequest:
            continue
    return valid


def parse_answer(result: HttpResult, settings: dict[str, Any]) -> list[str]:
    """Numbers (and, from JSON, settings) from the customer's answer; [] when unusable."""
    if result.status != 200:
        return []
    if result.content_type.startswith("application/json") or result.text.lstrip().startswith("{"):
        try:
            body = json.loads(result.text)
        except ValueError:
            return []
        if not isinstance(body, dict):
            return []
        numbers = (body.get("destination") or {}).get("numbers") or []
        for src, dst in (
            ("max_ringing_duration", "ring_timeout"),
            ("max_conversation_duration", "max_conversation"),
        ):
            value = body.get(src)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                settings[dst] = value
        if isinstance(body.get("record"), bool):
            settings["record"] = body["record"]
        if body.get("recording_channels") in RECORDING_CHANNELS:
            settings["recording_channels"] = body["recording_channels"]
        if isinstance(body.get("outgoing_phone_number"), str):
            settings["caller_id"] = body["outgoing_phone_number"]
        playback = body.get("start_call_playback") or {}
        if isinstance(playback, dict) and playback.get("type") == "text" and playback.get("value"):
            settings["announce"] = str(playback["value"])
        hold = body.get("music_on_hold") or {}
        if (
            isinstance(hold, dict)
            and hold.get("type") == "audio_url"
            and check_url(hold.get("value")) is None
        ):
            settings["music"] = hold["value"]
        return _valid_numbers(numbers if isinstance(numbers, list) else [])
    return _valid_numbers([part.strip() for part in result.text.split(",") if part.strip()])


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Find the numbers, dial them, and leave by how it went."""
    cfg = node.config
    settings: dict[str, Any] = {
        "ring_timeout": cfg.get("ring_timeout", DEFAULT_RING),
        "max_conversation": cfg.get("max_conversation"),
        "announce": cfg.get("announce"),
        "music": cfg.get("music_on_hold"),
        "caller_id": None,
        "record": cfg.get("record", False),
        "recording_channels": cfg.get("recording_channels"),
    }
    if "url" in cfg:
        answer = yield HttpGet(cfg["url"], params=query_params(ctx), timeout=FETCH_TIMEOUT)
        numbers = parse_answer(answer, settings)
    else:
        numbers = _valid_numbers(cfg.get("numbers", []))
    if not numbers:
        return "on_nobody"
    caller_id = settings["caller_id"]
    if caller_id:
        try:
            caller_id = normalize(caller_id, field="outgoing_phone_number")
        except InvalidRequest:
            caller_id = None
    result: DialResult = yield Dial(
        numbers=tuple(numbers),
        ring_timeout=min(float(settings["ring_timeout"]), MAX_RING),
        simultaneous=cfg.get("mode") == "simultaneous",
        caller_id=caller_id,
        max_conversation=settings["max_conversation"],
        announce=settings["announce"],
        music=settings["music"],
        record=settings["record"],
        recording_channels=settings["recording_channels"],
    )
    ctx.vars["DialCallStatus"] = result.status
    ctx.vars["DialCallDuration"] = str(result.duration)
    ctx.vars["DialWhomNumber"] = display(result.number) if result.number else ""
    if result.recording_url:
        ctx.vars["RecordingUrl"] = result.recording_url
    return "after_conversation" if result.status == "completed" else "on_no_answer"


def _numbers_or_url(config: Any) -> str | None:
    if ("numbers" in config) == ("url" in config):
        return "give either 'numbers' (a list) or 'url' (where to fetch them), not both"
    return None


SPEC = AppletSpec(
    name="connect",
    exits=("after_conversation", "on_no_answer", "on_nobody"),
    required={},
    optional={
        "numbers": _numbers,
        "url": check_url,
        "mode": _mode,
        "ring_timeout": seconds(1, MAX_RING),
        "max_conversation": seconds(1, 14400),
        "announce": check_text,
        "music_on_hold": check_url,
        "record": check_flag,
        "recording_channels": check_recording_channels,
    },
    run=run,
    waits=True,
    check=_numbers_or_url,
    quick_exits=("on_nobody",),
)
