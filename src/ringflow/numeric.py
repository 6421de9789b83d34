"""Numbers from untrusted text: the one checked parser for every numeric parameter.

Python's own tests and converters disagree about what a number is: ``'²'.isdigit()`` is true
but ``int('²')`` raises; ``int`` and ``float`` accept ``' 5 '``, ``'1_000'``, Arabic-Indic and
other Unicode digits, and ``float`` accepts ``'nan'``, ``'inf'`` and ``'1e999'``. A parameter
from the network (query string, form field, header) is therefore matched against an ASCII
pattern of bounded length first, then converted, then range-checked, and every failure is one
error of the caller's choosing (``InvalidRequest`` for the API, ``Forbidden`` for a signed link)
whose message names the parameter. Protocol parsers with errors of their own (the SIP core)
use ``as_whole``, which answers None instead of raising.
"""

from __future__ import annotations

import re

from ringflow.errors import InvalidRequest, RingflowError

# [0-9], not \d: \d matches every Unicode decimal digit. Lengths are bounded so int() of a
# huge digit string (slow, or refused outright above 4300 digits) never runs.
_DIGITS = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,15}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})")


def as_whole(text: str | None, low: int, high: int) -> int | None:
    """``text``, ASCII digits only, as a number from ``low`` to ``high``; None if it is not."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def whole_number(
    text: str | None, name: str, *, low: int, high: int, error: type[RingflowError] = InvalidRequest
) -> int:
    """``text`` (a sign allowed) as a whole number from ``low`` to ``high``; ``error`` naming
    ``name`` if not."""
    stripped = (text or "").strip(" \t")
    sign = -1 if stripped[:1] == "-" else 1
    magnitude = as_whole(stripped[1:] if stripped[:1] in "+-" and stripped else stripped, 0, 10**18)
    if magnitude is None or not low <= sign * magnitude <= high:
        raise error(f"{name} must be a whole number from {low} to {high}, got {_show(text)}")
    return sign * magnitude


def decimal(
    text: str | None,
    name: str,
    *,
    low: float,
    high: float,
    error: type[RingflowError] = InvalidRequest,
) -> float:
    """``text`` as a finite decimal number from ``low`` to ``high``; ``error`` if not."""
    stripped = (text or "").strip(" \t")
    if not _DECIMAL.fullmatch(stripped) or not low <= (value := float(stripped)) <= high:
        raise error(f"{name} must be a number from {low:g} to {high:g}, got {_show(text)}")
    return value


def _show(text: str | None) -> str:
    """The offending value, quoted and cut short, for an error message."""
    if text is None:
        return "nothing"
    return repr(text if len(text) <= 40 else text[:40] + "...")
