"""Switch Case: branch on a value an earlier applet left, a Passthru's ``select`` or the digits.

Fields:

- ``variable``: ``select`` (default: the ``{"select": "..."}`` body of a Passthru's 200
  ``text/plain`` answer), ``digits`` (from an IVR Menu or a Gather) or ``AnsweredBy`` (who
  answered, for a call placed with ``MachineDetection``: ``human``, ``machine_start``,
  ``machine_end_beep``, ``machine_end_silence`` or ``unknown``; unset without detection).
- ``cases``: a mapping of values to node names (``null`` ends the call). Values are compared
  with the variable as text, exactly (case and spaces count); a YAML key ``1:`` means ``"1"``.
  At most 100 cases.

Exits:

- ``cases.<value>``, one per case, written inside ``cases`` rather than as fields of their own
  (so any value can be a case); the timeline shows the exit taken as, e.g., ``cases.gold``.
- ``default``: the variable is not set, or matches no case.

The exits inside ``cases`` reach the model through ``AppletSpec.config_exits``, so their
targets are checked (unknown nodes, reachability, spinning loops) and followed like any exit.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node

VARIABLES = ("select", "digits", "AnsweredBy")
MAX_CASES = 100
EXIT_PREFIX = "cases."


def case_value(key: Any) -> str | None:
    """A case key as the text it matches, or None when it cannot be one."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return str(key)
    return key if isinstance(key, str) and key != "" else None


def _variable(value: Any) -> str | None:
    return None if value in VARIABLES else f"must be one of {', '.join(VARIABLES)}"


def _cases(value: Any) -> str | None:
    if not isinstance(value, dict) or not value:
        return "must be a mapping of values to node names, such as {gold: vip, silver: regular}"
    if len(value) > MAX_CASES:
        return f"at most {MAX_CASES} cases"
    seen: set[str] = set()
    for key, target in value.items():
        text = case_value(key)
        if text is None:
            return f"{key!r} cannot be a case: use a non-empty text or a whole number"
        if text in seen:
            return f"{text!r} appears twice"
        seen.add(text)
        if target is not None and not isinstance(target, str):
            return f"case {text!r}: must lead to a node name (or null to end the call)"
    return None


def config_exits(config: Mapping[str, Any]) -> dict[str, Any]:
    """The exits written inside ``cases``: ``{"cases.gold": "vip", ...}``."""
    cases = config.get("cases")
    if not isinstance(cases, dict):
        return {}
    # Called on every node, valid or not: entries the ``cases`` check refuses are left out.
    return {
        EXIT_PREFIX + text: target
        for key, target in cases.items()
        if (text := case_value(key)) is not None and (target is None or isinstance(target, str))
    }


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, str]:
    """Leave by the case matching the variable, or by ``default``."""
    value = ctx.vars.get(node.config.get("variable", "select"))
    if value is not None and EXIT_PREFIX + value in config_exits(node.config):
        return EXIT_PREFIX + value
    return "default"
    yield  # a generator like every applet, though it asks for nothing


SPEC = AppletSpec(
    name="switch_case",
    exits=("default",),
    required={"cases": _cases},
    optional={"variable": _variable},
    run=run,
    waits=False,
    config_exits=config_exits,
)
