"""Greeting: speak a text, play an audio, or ask the customer's server what to say.

Exactly one of:

- ``text``: spoken by TTS in ``voice``;
- ``audio``: the id of an audio uploaded to the account (``POST .../audio``), played from disk;
- ``audio_url``: an http(s) WAV or MP3, fetched and converted when the call plays it;
- ``url``: a dynamic greeting. HEAD, then GET with ``CallSid``, ``From``, ``To``,
  ``DialWhomNumber`` and ``CustomField``; a 200 ``text/plain`` answer is either audio URLs, one a
  line (played in order), or a text to speak. Anything else (no answer, another status or
  content type, an empty or oversized body) skips the greeting.

A greeting always leaves by ``next``; when it could not play (in full), the reason is in
``greeting_error`` and so on the timeline's ``applet.exit`` step.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping
from typing import Any

from ringflow.flows.actions import HttpGet, HttpResult, Play, Say
from ringflow.flows.applets.passthru import check_url
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node

MAX_TEXT = 4000
MAX_AUDIO_URLS = 20
DEFAULT_TIMEOUT = 10.0
PROMPT_FIELDS = ("text", "audio", "audio_url", "url")
STORED_SCHEME = "audio:"  # Play URL of an uploaded audio: audio:{id}
AUDIO_ID = re.compile(r"^[0-9a-f]{24}$")
# A server that does not implement HEAD still gets its GET.
HEAD_UNSUPPORTED = (405, 501)


def stored_url(audio_id: str) -> str:
    """The URL a Play uses for an uploaded audio."""
    return STORED_SCHEME + audio_id


def check_audio_id(value: Any) -> str | None:
    """An uploaded audio's id (whether it is the account's own is checked as the call runs)."""
    if isinstance(value, str) and AUDIO_ID.match(value):
        return None
    return "must be the id of an uploaded audio (24 hex digits, as the upload answered)"


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty text to speak"
    if len(value) > MAX_TEXT:
        return f"must be at most {MAX_TEXT} characters"
    return None


def _voice(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a voice name such as 'en'"


def _timeout(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 30
    return None if ok else "must be a number of seconds from 1 to 30"


def _one_prompt(config: Mapping[str, Any]) -> str | None:
    given = [name for name in PROMPT_FIELDS if name in config]
    if not given:
        # (the wording of a missing required field; 'audio', 'audio_url' or 'url' also do)
        return "field 'text': required by greeting"
    if len(given) > 1:
        names = ", ".join(repr(n) for n in PROMPT_FIELDS)
        return f"field {given[1]!r}: give exactly one of {names}"
    if "timeout" in config and "url" not in config:
        return "field 'timeout': only for a dynamic greeting ('url')"
    return None


def greeting_params(ctx: FlowContext) -> dict[str, str]:
    """The query parameters of a dynamic greeting's requests."""
    return {
        "CallSid": ctx.call_sid,
        "From": ctx.customer,
        "To": ctx.exophone,
        "DialWhomNumber": ctx.vars.get("DialWhomNumber", ""),
        "CustomField": ctx.custom_field or "",
    }


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Play the greeting, then leave by ``next``."""
    ctx.vars.pop("greeting_error", None)  # a reason from an earlier greeting is not this one's
    config = node.config
    if "url" in config:
        error = yield from _dynamic(node, ctx)
    elif "audio" in config:
        error = yield Play(stored_url(config["audio"]))
    elif "audio_url" in config:
        error = yield Play(config["audio_url"])
    else:
        error = yield Say(config["text"], config.get("voice"))
    if error:
        ctx.vars["greeting_error"] = error
    return "next"


def _dynamic(node: Node, ctx: FlowContext) -> Generator[Any, Any, str | None]:
    """Ask the customer's server, then speak or play its answer; returns why it could not."""
    url = node.config["url"]
    timeout = float(node.config.get("timeout", DEFAULT_TIMEOUT))
    params = greeting_params(ctx)
    head: HttpResult = yield HttpGet(url=url, params=params, timeout=timeout, method="HEAD")
    if head.status is None:
        return f"HEAD {url}: {head.error or 'no answer'}"
    if head.status != 200 and head.status not in HEAD_UNSUPPORTED:
        return f"HEAD {url} answered {head.status}, not 200"
    got: HttpResult = yield HttpGet(url=url, params=params, timeout=timeout)
    if got.status is None:
        return f"GET {url}: {got.error or 'no answer'}"
    if got.status != 200:
        return f"GET {url} answered {got.status}, not 200"
    if got.content_type.split(";")[0].strip().lower() != "text/plain":
        return f"GET {url} answered {got.content_type or 'no content type'}, not text/plain"
    lines = [line.strip() for line in got.text.splitlines() if line.strip()]
    if not lines:
        return f"GET {url} answered an empty text"
    if all(check_url(line) is None for line in lines):
        if len(lines) > MAX_AUDIO_URLS:
            return f"GET {url} answered {len(lines)} audio URLs; at most {MAX_AUDIO_URLS} play"
        errors = []
        for line in lines:
            error = yield Play(line)
            if error:
                errors.append(error)
        return "; ".join(errors) or None
    text = got.text.strip()
    if len(text) > MAX_TEXT:
        return f"GET {url} answered {len(text)} characters; at most {MAX_TEXT} are spoken"
    yield Say(text, node.config.get("voice"))
    return None


SPEC = AppletSpec(
    name="greeting",
    exits=("next",),
    required={},
    optional={
        "text": _text,
        "voice": _voice,
        "audio": check_audio_id,
        "audio_url": check_url,
        "url": check_url,
        "timeout": _timeout,
    },
    run=run,
    waits=True,
    check=_one_prompt,
    spoken=("text",),
)
