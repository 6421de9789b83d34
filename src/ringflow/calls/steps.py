"""One line of text for a step of a call's timeline, as the dashboard, ``ringflow calls show``
and ``ringflow dial`` print it."""

from __future__ import annotations

from typing import Any


def describe(kind: str, data: dict[str, Any]) -> str:
    """One line describing a timeline step of ``kind`` with its ``data``."""
    if kind == "status":
        legs = " ".join(f"leg {n}: {s or '-'}" for n, s in (data.get("legs") or {}).items())
        extra = data.get("reason") or data.get("cause") or ""
        return " · ".join(p for p in (f"call {data.get('call')}", legs, extra) if p)
    if kind == "http":
        result = data.get("status") or data.get("error")
        return f"{data.get('method', 'GET')} {data.get('url')} → {result} ({data.get('latency_ms')} ms)"
    if kind in ("applet.enter", "applet.exit"):
        rest = ", ".join(f"{k}={v}" for k, v in data.items() if k != "node")
        return f"{data.get('node')}" + (f" ({rest})" if rest else "")
    if kind == "stream.end":
        return (
            f"{data.get('status')}, ended by {data.get('disconnected_by') or '-'}: "
            f"{data.get('reason')} · {data.get('duration')} s · "
            f"{data.get('bytes_to_bot')} bytes to the bot, {data.get('bytes_from_bot')} from it"
        )
    if kind == "say":
        return f"“{data.get('text', '')}”"
    return ", ".join(f"{k}={v}" for k, v in data.items())
