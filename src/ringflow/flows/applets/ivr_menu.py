"""IVR Menu: play a prompt, take one key, branch on it.

Fields:

- ``text`` (speak it) or ``audio_url`` (play it): the prompt, exactly one of the two.
- ``voice``: TTS voice for ``text`` (optional).
- ``repeats``: how many more times the prompt is played after no key or a key the menu does not
  offer, 0 to 10 (default 2).
- ``timeout``: seconds to wait for a key once the prompt ends, 1 to 60 (default 5).

Exits:

- ``on_1`` ... ``on_9``, ``on_0``, ``on_star``, ``on_hash``: one per key. The keys the menu
  offers are exactly those whose exit is written in the node (``on_3: null`` offers 3 and ends
  the call on it); any other key is invalid.
- ``on_invalid``: the last attempt got a key the menu does not offer.
- ``on_no_input``: the last attempt got no key at all.

The key pressed (valid or not) is kept as ``digits`` for later applets; after no input,
``digits`` is empty, so an earlier applet's digits are never mistaken for this menu's answer.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from ringflow.flows.actions import CollectDigits
from ringflow.flows.applets.fields import (
    PROMPT_FIELDS,
    prompt_action,
    prompt_problems,
    seconds,
    whole_number,
)
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node

KEY_EXITS = {str(d): f"on_{d}" for d in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0)} | {
    "*": "on_star",
    "#": "on_hash",
}
DEFAULT_REPEATS = 2
DEFAULT_TIMEOUT = 5.0


# The menu.


def check(config: Mapping[str, Any]) -> str | None:
    """The problem across fields, if any: the prompt must be exactly one of text and audio_url."""
    return "; ".join(prompt_problems(config)) or None


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Prompt, take one key; replay on no key or an invalid one; leave by the key's exit."""
    offered = {key: name for key, name in KEY_EXITS.items() if name in node.exits}
    prompt = prompt_action(node.config)
    timeout = float(node.config.get("timeout", DEFAULT_TIMEOUT))
    outcome = "on_no_input"
    for _ in range(1 + node.config.get("repeats", DEFAULT_REPEATS)):
        if prompt is not None:
            yield prompt
        # "#" and "*" are menu keys here, so no key finishes the input early.
        key: str = (yield CollectDigits(max_digits=1, timeout=timeout, finish_on="")) or ""
        ctx.vars["digits"] = key
        if key in offered:
            return offered[key]
        outcome = "on_invalid" if key else "on_no_input"
    return outcome


SPEC = AppletSpec(
    name="ivr_menu",
    exits=(*KEY_EXITS.values(), "on_invalid", "on_no_input"),
    required={},
    optional={**PROMPT_FIELDS, "repeats": whole_number(0, 10), "timeout": seconds(1, 60)},
    run=run,
    waits=True,
    check=check,
    spoken=("text",),
)
