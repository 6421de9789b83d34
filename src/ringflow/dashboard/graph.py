"""An app drawn as SVG, laid out on the server: nodes in layers, each exit an arrow labelled
with its name.

The layout is the simple layered kind. Exits that loop back (a retry, a repeated menu) are found
by a depth-first walk from the start; without them the app is acyclic, and each node sits one
layer below the lowest node that leads to it (longest path), so every other exit points down.
Nodes of a layer are ordered by where their parents sit (one barycentre pass). An exit to the
next layer is a short curve; one that skips layers runs down the right-hand side, and one that
loops back runs up the left-hand side, each in its own lane so they do not overlap.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from html import escape

from ringflow.flows.model import AppGraph

BOX_W, BOX_H = 168, 48
GAP_X, GAP_Y = 36, 56
MARGIN = 24
LANE = 14  # distance between side lanes
SIDE = 22  # from the boxes to the first side lane


@dataclasses.dataclass(frozen=True)
class Box:
    """A node placed on the canvas (x, y: its top-left corner)."""

    name: str
    applet: str
    layer: int
    x: float
    y: float
    start: bool


@dataclasses.dataclass(frozen=True)
class Arrow:
    """Exits of one node that lead to one other: "down" (next layer), "skip" or "back"."""

    source: str
    target: str
    label: str
    kind: str

    @property
    def back(self) -> bool:
        return self.kind == "back"


@dataclasses.dataclass(frozen=True)
class Layout:
    boxes: dict[str, Box]
    arrows: list[Arrow]
    width: float
    height: float


def _targets(graph: AppGraph, name: str) -> list[str]:
    return [t for t in graph.nodes[name].exits.values() if t and t in graph.nodes]


def back_edges(graph: AppGraph) -> set[tuple[str, str]]:
    """Exits that lead back to a node on the way from the start (they close a loop)."""
    found: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in [graph.start, *graph.nodes]:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(_targets(graph, root)))]
        while stack:
            name, successors = stack[-1]
            for target in successors:
                if state.get(target) == 1:
                    found.add((name, target))
                elif target not in state:
                    state[target] = 1
                    stack.append((target, iter(_targets(graph, target))))
                    break
            else:
                state[name] = 2
                stack.pop()
    return found


def layers(graph: AppGraph) -> dict[str, int]:
    """Each node's layer: one below the lowest node that leads to it, loops set aside."""
    back = back_edges(graph)
    forward = {n: [t for t in _targets(graph, n) if (n, t) not in back] for n in graph.nodes}
    incoming = {n: 0 for n in graph.nodes}
    for targets in forward.values():
        for target in targets:
            incoming[target] += 1
    depth = {n: 0 for n in graph.nodes}
    ready = deque(n for n in graph.nodes if incoming[n] == 0)
    while ready:
        name = ready.popleft()
        for target in forward[name]:
            depth[target] = max(depth[target], depth[name] + 1)
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return depth


def layout(graph: AppGraph) -> Layout:
    """Place every node and sort every exit into an arrow."""
    depth = layers(graph)
    rows: dict[int, list[str]] = {}
    for name in graph.nodes:  # definition order first, so the layout is stable
        rows.setdefault(depth[name], []).append(name)
    parents: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for name in graph.nodes:
        for target in _targets(graph, name):
            if depth[name] < depth[target]:
                parents[target].append(name)
    slot: dict[str, float] = {}
    for layer in sorted(rows):
        names = rows[layer]
        order = {n: i for i, n in enumerate(names)}
        names.sort(key=lambda n: _barycentre(parents[n], slot, order[n]))
        for i, name in enumerate(names):
            slot[name] = i - (len(names) - 1) / 2  # centred, so layers of any width line up
    widest = max(len(names) for names in rows.values())
    middle = MARGIN + (widest * BOX_W + (widest - 1) * GAP_X) / 2
    boxes = {}
    for layer, names in rows.items():
        for name in names:
            x = middle + slot[name] * (BOX_W + GAP_X) - BOX_W / 2
            y = MARGIN + layer * (BOX_H + GAP_Y)
            boxes[name] = Box(name, graph.nodes[name].applet, layer, x, y, name == graph.start)
    # Exits of one node that lead to the same place share one arrow ("on_200, on_302").
    labels: dict[tuple[str, str], list[str]] = {}
    for name, node in graph.nodes.items():
        for exit_name, goes_to in node.exits.items():
            if goes_to and goes_to in boxes:
                labels.setdefault((name, goes_to), []).append(exit_name)
    arrows = [
        Arrow(source, target, ", ".join(names), _kind(depth[source], depth[target]))
        for (source, target), names in labels.items()
    ]
    width = 2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X
    height = 2 * MARGIN + (max(rows) + 1) * BOX_H + max(rows) * GAP_Y
    return Layout(boxes, arrows, width, height)


def _kind(source_layer: int, target_layer: int) -> str:
    if target_layer <= source_layer:
        return "back"
    return "down" if target_layer == source_layer + 1 else "skip"


def _barycentre(parents: list[str], slot: dict[str, float], fallback: int) -> float:
    placed = [slot[p] for p in parents if p in slot]
    return sum(placed) / len(placed) if placed else float(fallback)


@dataclasses.dataclass(frozen=True)
class _Route:
    d: str
    label_x: float
    label_y: float
    anchor: str


def _routes(plan: Layout) -> list[tuple[Arrow, _Route]]:
    """The SVG path of every arrow and where its label goes."""
    right = max(b.x + BOX_W for b in plan.boxes.values()) + SIDE
    left = min(b.x for b in plan.boxes.values()) - SIDE
    lanes = {"skip": 0, "back": 0}
    labelled: dict[tuple[str, bool], int] = {}
    routes = []
    for arrow in plan.arrows:
        a, b = plan.boxes[arrow.source], plan.boxes[arrow.target]
        if arrow.kind == "down":
            x1, y1, x2, y2 = a.x + BOX_W / 2, a.y + BOX_H, b.x + BOX_W / 2, b.y
            mid = (y1 + y2) / 2
            d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2 - 2:.0f}"
            route = _Route(d, (x1 + x2) / 2 + 4, mid + 4, "start" if x1 == x2 else "middle")
        elif arrow.source == arrow.target:  # a loop on the left, where loops go
            x, y = a.x, a.y + BOX_H / 2
            d = f"M{x:.0f},{y - 10:.0f} C{x - 34:.0f},{y - 30:.0f} {x - 34:.0f},{y + 30:.0f} {x - 2:.0f},{y + 10:.0f}"
            route = _Route(d, x - 30, y + 4, "end")
        else:
            # Down the right (skip) or up the left (back), from the side of one box to the other's.
            on_right = arrow.kind == "skip"
            lane = lanes[arrow.kind]
            lanes[arrow.kind] += 1
            out = right + lane * LANE if on_right else left - lane * LANE
            x1 = a.x + BOX_W if on_right else a.x
            x2 = b.x + BOX_W if on_right else b.x
            y1, y2 = a.y + BOX_H / 2, b.y + BOX_H / 2
            step = 2 if on_right else -2
            d = (
                f"M{x1:.0f},{y1:.0f} L{out:.0f},{y1:.0f} L{out:.0f},{y2:.0f} "
                f"L{x2 + step:.0f},{y2:.0f}"
            )
            # Labels of one node's side exits stack up beside it instead of covering each other.
            stacked = labelled.get((arrow.source, on_right), 0)
            labelled[(arrow.source, on_right)] = stacked + 1
            y_label = y1 + 14 + 12 * stacked if y2 > y1 else y1 - 6 - 12 * stacked
            route = _Route(d, x1 + (6 if on_right else -6), y_label, "start" if on_right else "end")
        routes.append((arrow, route))
    return routes


def render_svg(graph: AppGraph) -> str:
    """The app as an SVG element (text escaped), sized to scale down on narrow screens."""
    plan = layout(graph)
    routes = _routes(plan)
    skips = sum(1 for a in plan.arrows if a.kind == "skip")
    backs = sum(1 for a in plan.arrows if a.back)
    pad_left = SIDE + LANE * backs + 100 if backs else 0
    pad_right = SIDE + LANE * skips + 100 if skips else 40
    x0, width = -pad_left, plan.width + pad_left + pad_right
    parts = [
        (
            f'<svg class="app-graph" xmlns="http://www.w3.org/2000/svg" viewBox="{x0:.0f} 0 '
            f'{width:.0f} {plan.height:.0f}" width="{width:.0f}" role="img" '
            f'aria-label="{escape(graph.name)}: {len(plan.boxes)} nodes">'
        ),
        (
            '<defs><marker id="arrowhead" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            'class="head"/></marker></defs>'
        ),
    ]
    for arrow, route in routes:
        parts.append(
            f'<g class="edge {arrow.kind}" data-exit="{escape(arrow.source)}.{escape(arrow.label)}">'
            f'<path d="{route.d}" marker-end="url(#arrowhead)"/>'
            f'<text x="{route.label_x:.0f}" y="{route.label_y:.0f}" text-anchor="{route.anchor}" '
            f'class="exit">{escape(arrow.label)}</text></g>'
        )
    for box in plan.boxes.values():
        cls = f"node applet-{escape(box.applet)}" + (" start" if box.start else "")
        parts.append(
            f'<g class="{cls}" data-node="{escape(box.name)}">'
            f'<rect x="{box.x:.0f}" y="{box.y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="8"/>'
            f'<text x="{box.x + BOX_W / 2:.0f}" y="{box.y + 20:.0f}" class="name">{escape(_short(box.name))}</text>'
            f'<text x="{box.x + BOX_W / 2:.0f}" y="{box.y + 37:.0f}" class="applet">{escape(box.applet)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
