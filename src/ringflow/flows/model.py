"""An app: a graph of applet nodes with named exits, parsed and validated before any call uses it.

The stored form (JSON, or YAML through the CLI)::

    name: Demo
    start: welcome
    nodes:
      welcome: {applet: greeting, text: "Hello", next: check}
      check:   {applet: passthru, url: "https://example.com/hook", on_200: bye, on_302: bye}
      bye:     {applet: hangup}

An exit left out (or null) ends the call. Validation collects every problem, each naming the
node and field at fault, and raises ``AppInvalid`` with all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Mapping
from typing import Any

from ringflow.errors import AppInvalid
from ringflow.flows.actions import TransferTo

FieldCheck = Callable[[Any], str | None]  # returns a problem, or None when the value is fine


@dataclasses.dataclass(frozen=True)
class AppletSpec:
    """What an applet type accepts and how it runs."""

    name: str
    exits: tuple[str, ...]
    required: Mapping[str, FieldCheck]
    optional: Mapping[str, FieldCheck]
    # Returns the exit it leaves by (or HANGUP), or a TransferTo to continue in another app.
    run: Callable[..., Generator[Any, Any, str | TransferTo]]
    waits: bool  # spends time on the caller's line, so a loop through it cannot spin
    # A check across fields (e.g. "numbers or url"); returns a problem or None.
    check: Callable[[Mapping[str, Any]], str | None] | None = None
    # Exits written inside the config rather than as fields of their own (Switch Case's
    # ``cases``): config -> {exit name: target node or None}; checked and followed like the rest.
    config_exits: Callable[[Mapping[str, Any]], Mapping[str, str | None]] | None = None
    # Fields holding text that is spoken by TTS (in the node's ``voice``), checked at save time.
    spoken: tuple[str, ...] = ()
    # Exits an applet that otherwise waits can take without waiting (an error before playing).
    quick_exits: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Node:
    """One applet in an app."""

    name: str
    applet: str
    config: Mapping[str, Any]
    exits: Mapping[str, str | None]


@dataclasses.dataclass(frozen=True)
class AppGraph:
    """A validated app."""

    name: str
    start: str
    nodes: Mapping[str, Node]


def parse_app(data: Any, registry: Mapping[str, AppletSpec]) -> AppGraph:
    """Validate ``data`` and return the graph; AppInvalid lists every problem found."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise AppInvalid(["an app must be a mapping with name, start and nodes"])
    unknown = set(data) - {"name", "start", "nodes", "description"}
    if unknown:
        problems.append(f"unknown top-level fields: {', '.join(sorted(map(str, unknown)))}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("name: required, a non-empty string")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise AppInvalid([*problems, "nodes: required, a mapping of node names to applets"])
    nodes = {}
    for node_name, raw in raw_nodes.items():
        node = _parse_node(str(node_name), raw, registry, problems)
        if node is not None:
            nodes[node.name] = node
    start = data.get("start")
    if not isinstance(start, str) or start not in raw_nodes:
        problems.append(f"start: {start!r} is not a node of this app")
    _check_exits(nodes, raw_nodes, problems)
    if not problems and isinstance(start, str):
        _check_reachable(start, nodes, problems)
        _check_spinning_cycles(nodes, registry, problems)
    if problems:
        raise AppInvalid(problems)
    return AppGraph(name=str(name).strip(), start=str(start), nodes=nodes)


def _parse_node(
    name: str, raw: Any, registry: Mapping[str, AppletSpec], problems: list[str]
) -> Node | None:
    where = f"node {name!r}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with an 'applet' field")
        return None
    applet = raw.get("applet")
    if not isinstance(applet, str) or applet not in registry:
        known = ", ".join(sorted(registry))
        problems.append(f"{where}: field 'applet': {applet!r} is not an applet ({known})")
        return None
    spec = registry[applet]
    config: dict[str, Any] = {}
    exits: dict[str, str | None] = {}
    for key, value in raw.items():
        if key == "applet":
            continue
        if key in spec.exits:
            if value is not None and not isinstance(value, str):
                problems.append(f"{where}: exit {key!r}: must be a node name")
            exits[key] = value
        elif key in spec.required or key in spec.optional:
            check = spec.required.get(key) or spec.optional[key]
            problem = check(value)
            if problem:
                problems.append(f"{where}: field {key!r}: {problem}")
            config[key] = value
        else:
            allowed = ", ".join([*spec.required, *spec.optional, *spec.exits])
            problems.append(f"{where}: field {key!r}: not a field of {applet} ({allowed})")
    for key in spec.required:
        if key not in raw:
            problems.append(f"{where}: field {key!r}: required by {applet}")
    problem = spec.check(config) if spec.check is not None else None
    if problem:
        problems.append(f"{where}: {problem}")
    if spec.config_exits is not None:
        exits.update(spec.config_exits(config))
    return Node(name=name, applet=applet, config=config, exits=exits)


def _check_exits(nodes: dict[str, Node], raw_nodes: dict, problems: list[str]) -> None:
    for node in nodes.values():
        for exit_name, target in node.exits.items():
            if isinstance(target, str) and target not in raw_nodes:
                problems.append(f"node {node.name!r}: exit {exit_name!r}: unknown node {target!r}")


def _successors(node: Node) -> list[str]:
    return [t for t in node.exits.values() if t]


def _check_reachable(start: str, nodes: dict[str, Node], problems: list[str]) -> None:
    seen, stack = {start}, [start]
    while stack:
        for nxt in _successors(nodes[stack.pop()]):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    for name in nodes:
        if name not in seen:
            problems.append(f"node {name!r}: unreachable from start {start!r}")


def _check_spinning_cycles(
    nodes: dict[str, Node], registry: Mapping[str, AppletSpec], problems: list[str]
) -> None:
    """A loop made only of steps that never wait on the caller would spin forever.

    A step is quick when its applet never waits, or when it leaves by one of the applet's
    ``quick_exits`` (e.g. a dynamic Gather's ``on_error``, taken before anything is played).
    """
    graph: dict[str, list[str]] = {}
    for name, node in nodes.items():
        spec = registry[node.applet]
        graph[name] = [
            target
            for exit_name, target in node.exits.items()
            if target and (not spec.waits or exit_name in spec.quick_exits)
        ]
    for component in _strongly_connected(graph):
        looped = len(component) > 1 or component[0] in graph[component[0]]
        if looped:
            names = ", ".join(repr(n) for n in sorted(component))
            problems.append(f"nodes {names}: form a loop with no input or wait, which would spin")


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so a long chain cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root, edges in graph.items():
        if root in index:
            continue
        work = [(root, iter(edges))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
    return result
