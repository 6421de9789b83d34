"""Identifiers handed out on the wire."""

from __future__ import annotations

import secrets
import string

_ALNUM = string.ascii_lowercase + string.digits
_NON_HEX = "ghijklmnopqrstuvwxyz"


def _alnum(count: int) -> str:
    """``count`` uniformly random lowercase alphanumerics, from one draw of the OS's randomness
    (a draw per character was a system call each, 32 for every call placed)."""
    number = secrets.randbelow(len(_ALNUM) ** count)
    chars = []
    for _ in range(count):
        number, digit = divmod(number, len(_ALNUM))
        chars.append(_ALNUM[digit])
    return "".join(chars)


def new_call_sid() -> str:
    """32 lowercase alphanumerics ending in a non-hex letter, like Exotel's."""
    return _alnum(31) + secrets.choice(_NON_HEX)


def new_api_key() -> str:
    """A public API key (the Basic-auth username)."""
    return secrets.token_hex(24)


def new_api_token() -> str:
    """A secret API token (the Basic-auth password); shown once, stored hashed."""
    return secrets.token_urlsafe(32)


def new_recording_sid() -> str:
    """A recording's id in its URL: 32 lowercase alphanumerics, unguessable."""
    return _alnum(32)
