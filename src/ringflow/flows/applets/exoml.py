"""ExoML: fetch a document from the customer's URL and run its verbs.

Each document is fetched with a GET carrying the Passthru query parameters, parsed and
validated whole (flows/exoml.py), then run verb by verb: Say and Play speak and play; Gather
plays its prompts and collects keys, and keys send the call to its ``action`` URL (with
``digits``, quoted as Passthru quotes them), whose answer is the next document; Redirect
fetches the next document; Hangup ends the call. A document that runs to its end leaves by
``next``.

Dial rings its numbers one after another, in document order (as Exotel's Connect applet does
by default; TwiML rings them all at once), each for ``timeout`` seconds, and puts the caller
through to the first that answers, for at most ``timeLimit`` seconds. Afterwards later applets
see ``DialCallStatus``, ``DialCallDuration`` and ``DialWhomNumber`` (and ``RecordingUrl`` when
``record="true"``), as after Connect. With an ``action`` the call goes on with the document
that URL answers (the request carries those variables among the Passthru parameters);
without one, with the verb after the Dial.

Record records the caller (a beep first unless ``playBeep="false"``) until ``finishOnKey``,
``timeout`` seconds of silence or ``maxLength``. The recording's URL becomes ``RecordingUrl``
and goes, with ``digits`` (the key that ended it, ``""`` if none did), to ``action`` (default:
the document's own URL), whose answer runs next. When only silence was heard nothing is kept
and the call goes on with the next verb without asking ``action``, as TwiML does. When the
caller hung up while recording, ``action`` is still told, but its answer is not run.

Anything that stops the document (no answer, a non-2xx status, an invalid document, more
than ``max_documents`` documents in one visit) leaves by ``on_error`` with the reason in
``ctx.vars["exoml_error"]``.

Every request is a GET: a ``method="POST"`` in the document is accepted but not honoured yet,
since applets can only ask the engine for GETs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

from ringflow.flows import exoml
from ringflow.flows.actions import (
    HANGUP,
    CollectDigits,
    Dial,
    DialResult,
    HttpGet,
    HttpResult,
    Play,
    Record,
    RecordResult,
    Say,
)
from ringflow.flows.applets.passthru import DEFAULT_TIMEOUT, check_url, query_params
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node
from ringflow.phone import display

DEFAULT_MAX_DOCUMENTS = 10
ERROR_VAR = "exoml_error"


def _timeout(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 30
    return None if ok else "must be a number of seconds from 1 to 30"


def _max_documents(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 50
    return None if ok else "must be a whole number from 1 to 50"


@dataclasses.dataclass(frozen=True)
class _Fetch:
    """Where the document that runs next comes from."""

    url: str
    run: bool = True  # False: only tell the URL (the caller is gone), then leave by next


@dataclasses.dataclass(frozen=True)
class _Stop:
    """Why the visit cannot go on."""

    reason: str


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Fetch and run documents until one ends, hangs up or fails."""
    ctx.vars.pop(ERROR_VAR, None)
    timeout = float(node.config.get("timeout", DEFAULT_TIMEOUT))
    limit = int(node.config.get("max_documents", DEFAULT_MAX_DOCUMENTS))
    url = node.config["url"]
    for _ in range(limit):
        result = yield HttpGet(url=url, params=query_params(ctx), timeout=timeout)
        document = _document(result, url)
        if isinstance(document, _Stop):
            return _fail(ctx, document.reason)
        outcome = yield from _execute(document, ctx)
        if outcome is None:
            return "next"
        if isinstance(outcome, _Stop):
            return _fail(ctx, outcome.reason)
        if isinstance(outcome, str):
            return outcome  # HANGUP, the only exit a document names itself
        url = outcome.url
        if not outcome.run:
            yield HttpGet(url=url, params=query_params(ctx), timeout=timeout)
            return "next"
    return _fail(
        ctx, f"more than {limit} ExoML documents in one visit (a Redirect or Gather loop?)"
    )


def _fail(ctx: FlowContext, reason: str) -> str:
    ctx.vars[ERROR_VAR] = reason
    return "on_error"


def _document(result: HttpResult | None, url: str) -> exoml.Document | _Stop:
    """The parsed answer of ``url``, or why there is none."""
    if result is None or result.status is None:
        error = result.error if result is not None and result.error else "no answer"
        return _Stop(f"GET {url}: {error}")
    if not 200 <= result.status < 300:
        return _Stop(f"GET {url}: answered {result.status}")
    try:
        return exoml.parse(result.text, url)
    except exoml.ExomlInvalid as exc:
        return _Stop(f"{url}: invalid ExoML: {exc}")


def _execute(
    document: exoml.Document, ctx: FlowContext
) -> Generator[Any, Any, _Fetch | _Stop | str | None]:
    """Run the verbs; return where to go next, HANGUP, a stop, or None at the end."""
    for verb in document.verbs:
        if isinstance(verb, exoml.Say | exoml.Play):
            yield from _prompt(verb)
        elif isinstance(verb, exoml.Gather):
            for prompt in verb.prompts:
                yield from _prompt(prompt)
            digits = yield CollectDigits(
                max_digits=verb.num_digits,
                timeout=float(verb.timeout),
                finish_on=verb.finish_on_key,
            )
            # No keys: on to the next verb, as TwiML does; keys: the action answers next.
            if digits:
                ctx.vars["digits"] = digits
                return _Fetch(verb.action)
        elif isinstance(verb, exoml.Dial):
            yield from _dial(verb, ctx)
            if verb.action is not None:
                return _Fetch(verb.action)
        elif isinstance(verb, exoml.Record):
            recorded: RecordResult = yield Record(
                max_length=float(verb.max_length),
                finish_on=verb.finish_on_key,
                beep=verb.play_beep,
                silence_timeout=float(verb.timeout),
            )
            if recorded.url is not None:
                ctx.vars["RecordingUrl"] = recorded.url
                ctx.vars["digits"] = recorded.digits
                return _Fetch(verb.action, run=recorded.ended_by != "hangup")
        elif isinstance(verb, exoml.Redirect):
            return _Fetch(verb.url)
        elif isinstance(verb, exoml.Hangup):
            return HANGUP
    return None


def _dial(verb: exoml.Dial, ctx: FlowContext) -> Generator[Any, Any, None]:
    """Ring the numbers in turn; leave the outcome in ctx.vars, as Connect does."""
    result: DialResult = yield Dial(
        numbers=verb.numbers,
        ring_timeout=float(verb.timeout),
        simultaneous=False,
        caller_id=verb.caller_id,
        max_conversation=float(verb.time_limit),
        record=verb.record,
    )
    ctx.vars["DialCallStatus"] = result.status
    ctx.vars["DialCallDuration"] = str(result.duration)
    ctx.vars["DialWhomNumber"] = display(result.number) if result.number else ""
    if result.recording_url:
        ctx.vars["RecordingUrl"] = result.recording_url


def _prompt(verb: exoml.Say | exoml.Play) -> Generator[Any, Any, None]:
    for _ in range(verb.loop):
        if isinstance(verb, exoml.Say):
            # ExoML's language picks the TTS voice; man/woman has no counterpart yet.
            yield Say(verb.text, verb.language)
        else:
            yield Play(verb.url)


SPEC = AppletSpec(
    name="exoml",
    exits=("next", "on_error"),
    required={"url": check_url},
    optional={"timeout": _timeout, "max_documents": _max_documents},
    run=run,
    # A document may hold nothing that waits on the caller, so a loop through this applet
    # alone could spin.
    waits=False,
)
