"""Identifiers a user agent mints: branches, tags, Call-IDs, cnonces.

Random by default; ``IdSource(seed=...)`` is deterministic so tests can compare whole messages
with golden files.
"""

from __future__ import annotations

import random
import secrets

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 8.1.1.7: marks a branch as globally unique


class IdSource:
    """Mints identifiers; deterministic when seeded."""

    def __init__(self, seed: int | None = None):
        self._random = random.Random(seed) if seed is not None else None

    def _hex(self, nbytes: int) -> str:
        if self._random is None:
            return secrets.token_hex(nbytes)
        return self._random.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()

    def branch(self) -> str:
        """A Via branch carrying the RFC 3261 magic cookie."""
        return MAGIC_COOKIE + self._hex(10)

    def tag(self) -> str:
        """A From/To tag."""
        return self._hex(6)

    def call_id(self) -> str:
        """A Call-ID."""
        return self._hex(12)

    def cnonce(self) -> str:
        """A digest client nonce."""
        return self._hex(8)

    def session_id(self) -> int:
        """An SDP o= session id (NTP-sized, positive)."""
        return int(self._hex(4), 16) or 1
