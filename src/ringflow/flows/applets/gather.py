"""Gather: play a prompt and collect several digits, configured statically or by the customer's URL.

Fields (static form):

- ``text`` (speak it) or ``audio_url`` (play it): the prompt, exactly one of the two.
- ``repeat_text`` or ``repeat_audio_url``: played instead of the prompt on the repeats
  (optional; without it the prompt itself is repeated).
- ``voice``: TTS voice for the texts (optional).
- ``max_digits``: input ends after this many keys, 1 to 32 (default 10).
- ``finish_on_key``: ``"#"``, ``"*"`` or ``""`` (none); ends the input early and is not part
  of the digits (default ``"#"``).
- ``input_timeout``: seconds to wait for the first key and between keys, 1 to 60 (default 5).
- ``repeats``: how many more times the prompt is played when no digits came, 0 to 10
  (default 2).

Dynamic form: ``url`` (and ``url_timeout``, 1 to 30 s, default 10). Before prompting, the URL
gets a GET with the header ``Exotel-Version: 1.0`` and the Passthru query parameters, and answers
200 with JSON (any content type)::

    {"gather_prompt": {"text": "..."} | {"audio_url": "..."}, "max_input_digits": 4,
     "finish_on_key": "#", "input_timeout": 6, "repeat_menu": 2,
     "repeat_gather_prompt": {"text": "..."}}

Fields the answer leaves out take the node's static values, then the defaults; numbers may come
as strings (``"4"``); unknown fields are ignored. The node's ``text``/``audio_url`` are then
optional: the prompt used when the answer has no ``gather_prompt``. A prompt is needed from one
or the other.

Exits:

- ``on_input``: digits came; they are kept as ``digits`` (a later Passthru sends
  ``digits="1234"``).
- ``on_no_input``: every attempt ended without a digit (``digits`` is then empty).
- ``on_error`` (dynamic form only): the URL did not answer 200 in time, or its answer was not a
  JSON object of valid gather settings. No prompt was played and ``digits`` is empty; the reason
  is in ``ctx.vars["gather_error"]``, which the engine writes on the timeline's ``applet.exit``
  step (e.g. ``GET https://...: max_input_digits: must be a whole number from 1 to 32``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Generator, Mapping
from typing import Any

from ringflow.flows.actions import CollectDigits, HttpGet, HttpResult, Play, Say
from ringflow.flows.applets.fields import (
    PROMPT_FIELDS,
    check_text,
    prompt_action,
    prompt_problems,
    seconds,
    whole_number,
)
from ringflow.flows.applets.passthru import check_url, query_params
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node

DEFAULTS = {"max_digits": 10, "finish_on_key": "#", "input_timeout": 5.0, "repeats": 2}
DEFAULT_URL_TIMEOUT = 10.0
FINISH_KEYS = ("#", "*", "")
MAX_DIGITS, MAX_TIMEOUT, MAX_REPEATS = 32, 60, 10
EXOTEL_VERSION = {"Exotel-Version": "1.0"}
ERROR_VAR = "gather_error"  # the engine puts it on the timeline with the on_error exit

Prompt = Say | Play


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one gather plays and collects."""

    prompt: Prompt | None
    repeat_prompt: Prompt | None
    max_digits: int
    finish_on_key: str
    input_timeout: float
    repeats: int


class BadAnswer(ValueError):
    """The dynamic URL's answer cannot configure a gather; the message says why."""


def _finish_key(value: Any) -> str | None:
    return None if value in FINISH_KEYS else "must be '#', '*' or '' (no finish key)"


def check(config: Mapping[str, Any]) -> str | None:
    """Problems across fields: a prompt (unless from the URL), one of each pair, url_timeout."""
    dynamic = "url" in config
    problems = prompt_problems(config, required=not dynamic)
    problems += prompt_problems(config, "repeat_text", "repeat_audio_url", required=False)
    if "url_timeout" in config and not dynamic:
        problems.append("field 'url_timeout': only used with 'url'")
    return "; ".join(problems) or None


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Fetch the settings (dynamic form), then prompt and collect until digits or no repeats."""
    config = node.config
    ctx.vars.pop(ERROR_VAR, None)
    if "url" in config:
        result: HttpResult = yield HttpGet(
            url=config["url"],
            params=query_params(ctx),
            timeout=float(config.get("url_timeout", DEFAULT_URL_TIMEOUT)),
            headers=dict(EXOTEL_VERSION),
        )
        try:
            settings = settings_from_answer(result, config)
        except BadAnswer as exc:
            ctx.vars[ERROR_VAR] = f"GET {config['url']}: {exc}"
            ctx.vars["digits"] = ""
            return "on_error"
    else:
        settings = static_settings(config)
    for attempt in range(1 + settings.repeats):
        prompt = settings.repeat_prompt if attempt and settings.repeat_prompt else settings.prompt
        if prompt is not None:
            yield prompt
        digits: str = (
            yield CollectDigits(settings.max_digits, settings.input_timeout, settings.finish_on_key)
        ) or ""
        if digits:
            ctx.vars["digits"] = digits
            return "on_input"
    ctx.vars["digits"] = ""
    return "on_no_input"


def static_settings(config: Mapping[str, Any]) -> Settings:
    """The settings written in the node (validated when the app was saved)."""
    values = {**DEFAULTS, **{k: config[k] for k in DEFAULTS if k in config}}
    return Settings(
        prompt=prompt_action(config),
        repeat_prompt=prompt_action(config, "repeat_text", "repeat_audio_url"),
        max_digits=int(values["max_digits"]),
        finish_on_key=str(values["finish_on_key"]),
        input_timeout=float(values["input_timeout"]),
        repeats=int(values["repeats"]),
    )


def settings_from_answer(result: HttpResult, config: Mapping[str, Any]) -> Settings:
    """The dynamic URL's answer over the node's static values; BadAnswer says what is wrong."""
    if result.status != 200:
        raise BadAnswer(f"answered {result.status}" if result.status else str(result.error))
    try:
        body = json.loads(result.text)
    except ValueError:
        raise BadAnswer("the answer is not JSON") from None
    if not isinstance(body, dict):
        raise BadAnswer("the answer is not a JSON object")
    base = static_settings(config)
    voice = config.get("voice")
    prompt = _answer_prompt(body, "gather_prompt", voice) or base.prompt
    if prompt is None:
        raise BadAnswer("gather_prompt: required (the node has no text or audio_url)")
    return Settings(
        prompt=prompt,
        repeat_prompt=_answer_prompt(body, "repeat_gather_prompt", voice) or base.repeat_prompt,
        max_digits=_answer_int(body, "max_input_digits", 1, MAX_DIGITS, base.max_digits),
        finish_on_key=_answer_finish_key(body, base.finish_on_key),
        input_timeout=_answer_seconds(body, "input_timeout", base.input_timeout),
        repeats=_answer_int(body, "repeat_menu", 0, MAX_REPEATS, base.repeats),
    )


def _answer_prompt(body: dict[str, Any], name: str, voice: str | None) -> Prompt | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or ("text" in value) == ("audio_url" in value):
        raise BadAnswer(f'{name}: must be {{"text": ...}} or {{"audio_url": ...}}')
    if "text" in value:
        if check_text(value["text"]):
            raise BadAnswer(f"{name}.text: {check_text(value['text'])}")
        return Say(value["text"], voice)
    if check_url(value["audio_url"]):
        raise BadAnswer(f"{name}.audio_url: {check_url(value['audio_url'])}")
    return Play(value["audio_url"])


def _number(body: dict[str, Any], name: str) -> float | None:
    """A JSON number, or a string holding one (customers' servers send both)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise BadAnswer(f"{name}: {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadAnswer(f"{name}: {value!r} is not a number")
    return value


def _answer_int(body: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = _number(body, name)
    if value is None:
        return default
    if value != int(value) or not low <= value <= high:
        raise BadAnswer(f"{name}: must be a whole number from {low} to {high}")
    return int(value)


def _answer_seconds(body: dict[str, Any], name: str, default: float) -> float:
    value = _number(body, name)
    if value is None:
        return default
    if not 1 <= value <= MAX_TIMEOUT:
        raise BadAnswer(f"{name}: must be a number of seconds from 1 to {MAX_TIMEOUT}")
    return float(value)


def _answer_finish_key(body: dict[str, Any], default: str) -> str:
    if "finish_on_key" not in body:
        return default
    value = body["finish_on_key"]
    value = "" if value is None else value
    if value not in FINISH_KEYS:
        raise BadAnswer("finish_on_key: must be '#', '*' or '' (no finish key)")
    return value


SPEC = AppletSpec(
    name="gather",
    exits=("on_input", "on_no_input", "on_error"),
    required={},
    optional={
        **PROMPT_FIELDS,
        "repeat_text": check_text,
        "repeat_audio_url": check_url,
        "max_digits": whole_number(1, MAX_DIGITS),
        "finish_on_key": _finish_key,
        "input_timeout": seconds(1, MAX_TIMEOUT),
        "repeats": whole_number(0, MAX_REPEATS),
        "url": check_url,
        "url_timeout": seconds(1, 30),
    },
    run=run,
    waits=True,
    check=check,
    spoken=("text", "repeat_text"),
    quick_exits=("on_error",),
)
