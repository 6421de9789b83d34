"""The two interfaces every carrier implements: Carrier (places calls) and Channel (a live leg).

A ``Carrier.dial`` returns an ``Attempt`` whose events are read one by one: ``Ringing``,
``Answered`` (carrying the ``Channel``) or ``Rejected``. The call engine enforces the ring
timeout itself and calls ``Attempt.cancel`` when it expires, so carriers need no timers for it.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class DialRequest:
    """One leg to place."""

    number: str  # E.164 or a sip: URI
    caller_id: str  # E.164
    account_sid: str
    call_sid: str
    leg_no: int


@dataclasses.dataclass(frozen=True)
class Ringing:
    """The far end is alerting."""


@dataclasses.dataclass(frozen=True)
class Answered:
    """The far end picked up; media flows on ``channel``."""

    channel: Channel


@dataclasses.dataclass(frozen=True)
class Rejected:
    """The leg ended before an answer. ``outcome`` is busy, no-answer or failed."""

    outcome: str
    cause: str


AttemptEvent = Ringing | Answered | Rejected


class Attempt(Protocol):
    """A leg being placed."""

    async def next_event(self) -> AttemptEvent:
        """Wait for the next progress event."""

    async def cancel(self) -> None:
        """Stop ringing (ring timeout, or the other party left)."""


class Channel(Protocol):
    """One answered leg. Every method returns promptly once the leg has hung up."""

    number: str

    @property
    def closed(self) -> bool:
        """True once either side hung up."""

    async def wait_closed(self) -> str:
        """Wait until the leg hangs up; returns who hung up: "remote" or "local"."""

    async def say(self, text: str, voice: str | None = None) -> None:
        """Speak ``text`` to the party."""

    async def play(self, url: str) -> None:
        """Play an audio file to the party."""

    async def collect_digits(self, max_digits: int, timeout: float, finish_on: str) -> str:
        """Collect up to ``max_digits`` keys, ending early on ``finish_on`` or ``timeout``."""

    async def bridge(self, other: Channel) -> None:
        """Connect this party with ``other``; returns when either hangs up."""

    async def hangup(self, cause: str = "normal") -> None:
        """Hang up from our side."""


class Carrier(Protocol):
    """Places legs."""

    name: str

    def dial(self, request: DialRequest) -> Attempt:
        """Start placing ``request``; progress arrives through the returned Attempt."""
