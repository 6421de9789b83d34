"""How a virtual phone behaves: a script per number, with a few magic numbers built in."""

from __future__ import annotations

import dataclasses
from typing import Any

from ringflow.errors import InvalidRequest

OUTCOMES = ("answer", "machine", "busy", "no-answer", "failed")
ANSWERING = ("answer", "machine")
# What a voicemail says when its script gives no greeting of its own.
MACHINE_GREETING = (
    "Hello, you have reached the voicemail of this number. Nobody is available "
    "to take your call. Please leave your message after the tone."
)
KEYS = set("0123456789*#")
MAX_SAYS = 2000  # characters in one utterance


@dataclasses.dataclass(frozen=True)
class Utterance:
    """What the phone says into one recording or conversation, and what it does afterwards.

    ``then``: "" (falls silent), one key (pressed ``silence_after`` seconds after speaking) or
    "hangup" (hangs up ``silence_after`` seconds after speaking).
    """

    text: str
    then: str = ""
    at: float | None = None  # to a bot: seconds after the stream began (None: a turn later)

    @classmethod
    def from_json(cls, value: Any) -> Utterance:
        """A text, or ``{"text": ..., "then": "#" | "hangup", "at": seconds}``."""
        if isinstance(value, str):
            value = {"text": value}
        if not isinstance(value, dict) or set(value) - {"text", "then", "at"}:
            raise InvalidRequest(
                "says entries must be texts or objects "
                '{"text": "...", "then": "#" or "hangup", "at": seconds}'
            )
        at = value.get("at")
        if at is not None:
            at = _number(at, "says: at", 0, 14400)
        text, then = value.get("text", ""), value.get("then") or ""
        if not isinstance(text, str) or len(text) > MAX_SAYS:
            raise InvalidRequest(f"says: text must be a string of at most {MAX_SAYS} characters")
        if then != "hangup" and not (
            isinstance(then, str) and len(then) <= 1 and set(then) <= KEYS
        ):
            raise InvalidRequest('says: then must be one key (0-9, * or #) or "hangup"')
        return cls(text=text, then=then, at=at)

    def to_json(self) -> str | dict[str, Any]:
        """A plain text when nothing else is set, else the object form."""
        if not self.then and self.at is None:
            return self.text
        data: dict[str, Any] = {"text": self.text}
        if self.then:
            data["then"] = self.then
        if self.at is not None:
            data["at"] = self.at
        return data


@dataclasses.dataclass(frozen=True)
class PhoneScript:
    """What a virtual phone does when called.

    ``ring``: seconds of ringing before the outcome. ``outcome``: ``answer``, ``machine`` (an
    answering machine picks up), ``busy``, ``no-answer`` (rings until the caller gives up) or
    ``failed`` (unreachable).
    ``greeting``: what the phone says as it picks up (through text to speech, as ``says``), so
    answering machine detection has something to judge: a person's "Hello?" (an ``answer``
    phone without one says nothing) or a machine's greeting (``machine``: a voicemail greeting
    by default). ``beep``: a machine beeps (1 kHz, half a second) after its greeting; False
    for one whose message just ends in silence. Only a ``machine`` takes ``beep``.
    ``keys``: one entry per time the app waits for input, pressed one key at a time.
    ``hangup_after``: seconds after answering that the phone hangs up (None: stays on).
    ``says``: one entry per time the app records this phone (a voicemail, or a conversation
    Connect records), spoken through text to speech so the recording holds real speech; then
    the phone is silent, or presses a key or hangs up ``silence_after`` seconds later. Talking
    to a bot (a stream), the phone speaks its lines in turn, each at its ``at`` (seconds after
    the stream began) or a second after the line before, then presses its ``keys`` entries.
    """

    ring: float = 1.0
    outcome: str = "answer"
    keys: tuple[str, ...] = ()
    hangup_after: float | None = None
    says: tuple[Utterance, ...] = ()
    silence_after: float = 1.0
    greeting: str | None = None
    beep: bool = True

    @property
    def spoken_greeting(self) -> str:
        """What the phone says as it picks up ("" for nothing)."""
        if self.greeting is not None:
            return self.greeting
        return MACHINE_GREETING if self.outcome == "machine" else ""

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
            raise InvalidRequest('keys must be a list of strings such as ["2", "1234#"]')
        for entry in keys:
            bad = set(entry) - KEYS
            if bad:
                raise InvalidRequest(
                    f"keys may hold only 0-9, * and #, not {''.join(sorted(bad))!r}"
                )
        hangup_after = data.get("hangup_after")
        if hangup_after is not None:
            hangup_after = _number(hangup_after, "hangup_after", 0, 86400)
        says = data.get("says", [])
        if isinstance(says, str | dict):
            says = [says]
        if not isinstance(says, list):
            raise InvalidRequest('says must be a list of texts, such as ["Hello, call me back."]')
        silence_after = _number(data.get("silence_after", 1.0), "silence_after", 0, 3600)
        greeting = data.get("greeting")
        if greeting is not None and (not isinstance(greeting, str) or len(greeting) > MAX_SAYS):
            raise InvalidRequest(f"greeting must be a text of at most {MAX_SAYS} characters")
        if greeting is not None and outcome not in ANSWERING:
            raise InvalidRequest("greeting is for a phone that answers (outcome answer or machine)")
        beep = data.get("beep", True)
        if not isinstance(beep, bool):
            raise InvalidRequest("beep must be true or false")
        if "beep" in data and outcome != "machine":
            raise InvalidRequest("beep is for an answering machine (outcome machine)")
        return cls(
            ring=ring,
            outcome=outcome,
            keys=tuple(keys),
            hangup_after=hangup_after,
            says=tuple(Utterance.from_json(entry) for entry in says),
            silence_after=silence_after,
            greeting=greeting,
            beep=beep,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as stored (speech fields only for a phone that speaks)."""
        data: dict[str, Any] = {
            "ring": self.ring,
            "outcome": self.outcome,
            "keys": list(self.keys),
            "hangup_after": self.hangup_after,
        }
        if self.says:
            data["says"] = [u.to_json() for u in self.says]
            data["silence_after"] = self.silence_after
        if self.greeting is not None:
            data["greeting"] = self.greeting
        if self.outcome == "machine":
            data["beep"] = self.beep
        return data


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number of seconds")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g} seconds")
    return float(value)


# E.164 forms of the documented magic numbers (09999900001 ... 09999900006).
MAGIC_NUMBERS: dict[str, PhoneScript] = {
    "+919999900001": PhoneScript(ring=1.0, outcome="busy"),
    "+919999900002": PhoneScript(ring=0.0, outcome="no-answer"),
    "+919999900003": PhoneScript(ring=0.0, outcome="failed"),
    "+919999900004": PhoneScript(ring=1.0, outcome="answer", hangup_after=5.0),
    # For answering machine detection: a voicemail (its greeting, then a beep), and a person.
    "+919999900005": PhoneScript(ring=1.0, outcome="machine"),
    "+919999900006": PhoneScript(ring=1.0, outcome="answer", greeting="Hello?"),
}

DEFAULT_SCRIPT = PhoneScript()
