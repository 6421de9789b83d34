"""How a virtual phone behaves: a script per number, with a few magic numbers built in."""

from __future__ import annotations

import dataclasses
from typing import Any

from ringflow.errors import InvalidRequest

OUTCOMES = ("answer", "busy", "no-answer", "failed")


@dataclasses.dataclass(frozen=True)
class PhoneScript:
    """What a virtual phone does when called.

    ``ring``: seconds of ringing before the outcome. ``outcome``: ``answer``, ``busy``,
    ``no-answer`` (rings until the caller gives up) or ``failed`` (unreachable).
    ``keys``: one entry per time the app waits for input, pressed one key at a time.
    ``hangup_after``: seconds after answering that the phone hangs up (None: stays on).
    """

    ring: float = 1.0
    outcome: str = "answer"
    keys: tuple[str, ...] = ()
    hangup_after: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhoneScript:
        """Validate a script given as JSON (admin API, CLI)."""
        if not isinstance(data, dict):
            raise InvalidRequest("a phone script must be a JSON object")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidRequest(f"unknown phone script fields: {', '.join(sorted(unknown))}")
        ring = _number(data.get("ring", 1.0), "ring", 0, 600)
        outcome = data.get("outcome", "answer")
        if outcome not in OUTCOMES:
            raise InvalidRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
        keys = data.get("keys", [])
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise InvalidRequest("keys must be a list of strings such as [\"2\", \"1234#\"]")
        for entry in keys:
            bad = set(entry) - set("0123456789*#")
            if bad:
                raise InvalidRequest(f"keys may hold only 0-9, * and #, not {''.join(sorted(bad))!r}")
        hangup_after = data.get("hangup_after")
        if hangup_after is not None:
            hangup_after = _number(hangup_after, "hangup_after", 0, 86400)
        return cls(ring=ring, outcome=outcome, keys=tuple(keys), hangup_after=hangup_after)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as stored."""
        return {
            "ring": self.ring,
            "outcome": self.outcome,
            "keys": list(self.keys),
            "hangup_after": self.hangup_after,
        }


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number of seconds")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g} seconds")
    return float(value)


# E.164 forms of the documented magic numbers (09999900001 ... 09999900004).
MAGIC_NUMBERS: dict[str, PhoneScript] = {
    "+919999900001": PhoneScript(ring=1.0, outcome="busy"),
    "+919999900002": PhoneScript(ring=0.0, outcome="no-answer"),
    "+919999900003": PhoneScript(ring=0.0, outcome="failed"),
    "+919999900004": PhoneScript(ring=1.0, outcome="answer", hangup_after=5.0),
}

DEFAULT_SCRIPT = PhoneScript()
