"""The app editor's source handling: YAML or JSON text in, the app's data out, and every
validation problem pinned to the line it is about.

Validation (flows/model.py) names what is wrong by node and field ("node 'ask': exit 'on_1':
unknown node 'sales'"); the editor finds that node and field in the text through YAML's
composed node tree, which keeps the line of every key. JSON is YAML, so one parser serves both.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import yaml

from ringflow.errors import InvalidRequest

MAX_SOURCE = 256 * 1024

# "node 'ask': field 'text': ..." / "node 'ask': exit 'on_1': ..." / "node 'ask': ..."
_NODE = re.compile(
    r"""^node (?P<q>['"])(?P<node>.+?)(?P=q)(?:: (?:field|exit) (?P<k>['"])(?P<key>.+?)(?P=k))?"""
)
# "nodes 'a', 'b': form a loop ..."
_NODES = re.compile(r"""^nodes (?P<q>['"])(?P<node>.+?)(?P=q)""")
_TOP = re.compile(r"^(?P<key>name|start|nodes|description):")


class SourceError(InvalidRequest):
    """The text is not YAML or JSON; ``line`` is 1-based (None when unknown)."""

    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.line = line


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of the source as the editor shows it, with the problems found on it."""

    number: int
    text: str
    problems: tuple[str, ...]


def load(text: str) -> Any:
    """The app's data from YAML or JSON text; SourceError for a syntax error (with its line)."""
    if len(text) > MAX_SOURCE:
        raise SourceError(f"the app is too large: at most {MAX_SOURCE // 1024} KiB", None)
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(part for part in (exc.context, exc.problem) if part)
        raise SourceError(f"not valid YAML or JSON: {reason}", line) from None
    except yaml.YAMLError as exc:
        raise SourceError(f"not valid YAML or JSON: {exc}", None) from None


def dump(data: Any, fmt: str) -> str:
    """An app's stored graph as editor text, YAML or JSON."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The 1-based line of every key down to a node's fields: ("nodes", "ask", "text") -> 7."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str, ...], int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        top = str(key.value)
        lines[(top,)] = key.start_mark.line + 1
        if top != "nodes" or not isinstance(value, yaml.MappingNode):
            continue
        for node_key, node_value in value.value:
            name = str(node_key.value)
            lines[("nodes", name)] = node_key.start_mark.line + 1
            if isinstance(node_value, yaml.MappingNode):
                for field_key, _ in node_value.value:
                    lines[("nodes", name, str(field_key.value))] = field_key.start_mark.line + 1
    return lines


def locate(problem: str, lines: dict[tuple[str, ...], int]) -> int | None:
    """The line a validation problem is about, or None when it is about the whole app."""
    match = _NODE.match(problem) or _NODES.match(problem)
    if match:
        node = match["node"]
        key = match.groupdict().get("key")
        if key and ("nodes", node, key) in lines:
            return lines[("nodes", node, key)]
        return lines.get(("nodes", node))
    top = _TOP.match(problem)
    if top:
        return lines.get((top["key"],))
    return None


def annotate(
    text: str, problems: list[str], syntax_line: int | None = None
) -> tuple[list[Line], list[str]]:
    """The source's lines with their problems attached, and the problems that have no line."""
    lines = key_lines(text)
    by_line: dict[int, list[str]] = {}
    loose: list[str] = []
    source = text.splitlines() or [""]
    for problem in problems:
        where = syntax_line if syntax_line is not None else locate(problem, lines)
        if where is None or not 1 <= where <= len(source):
            loose.append(problem)
        else:
            by_line.setdefault(where, []).append(problem)
    shown = [Line(n, line, tuple(by_line.get(n, ()))) for n, line in enumerate(source, start=1)]
    return shown, loose
