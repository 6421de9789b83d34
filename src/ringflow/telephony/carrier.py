"""The two interfaces every carrier implements: Carrier (places calls) and Channel (a live leg).

A ``Carrier.dial`` returns an ``Attempt`` whose events are read one by one: ``Ringing``,
``Answered`` (carrying the ``Channel``) or ``Rejected``. The call engine enforces the ring
timeout itself and calls ``Attempt.cancel`` when it expires, so carriers need no timers for it.
A carrier whose trunk is full says ``Waiting`` first and ``Placed`` once the leg is really
dialled: the ring timeout runs from then, not while the leg waits for room.

Audio crossing this seam is what a phone line carries: 8 kHz mono 16-bit little-endian PCM.
``Channel.record`` returns what one party said as a ``Recording``; ``Channel.bridge`` given a
``ConversationTap`` writes both parties' audio into it, time-aligned, as the conversation goes.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ringflow.media.dtmf import Key
    from ringflow.media.playout import Playout
    from ringflow.telephony.sip.trunks import Trunk


@dataclasses.dataclass(frozen=True)
class DialRequest:
    """One leg to place."""

    number: str  # E.164 or a sip: URI
    caller_id: str  # E.164
    account_sid: str
    call_sid: str
    leg_no: int


@dataclasses.dataclass(frozen=True)
class Waiting:
    """The leg waits for room on its trunk (channels or calls per second); not dialled yet."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Placed:
    """A leg that was ``Waiting`` is dialled now."""


@dataclasses.dataclass(frozen=True)
class Ringing:
    """The far end is alerting."""


@dataclasses.dataclass(frozen=True)
class Answered:
    """The far end picked up; media flows on ``channel``."""

    channel: Channel


class Outcome(enum.StrEnum):
    """How a leg ended before an answer; the values are the leg statuses they become."""

    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"  # never a carrier's: the engine's own, for a hang-up asked mid-ring


@dataclasses.dataclass(frozen=True)
class Rejected:
    """The leg ended before an answer, with the carrier's ``cause`` in words."""

    outcome: Outcome
    cause: str


AttemptEvent = Waiting | Placed | Ringing | Answered | Rejected


class Attempt(Protocol):
    """A leg being placed."""

    async def next_event(self) -> AttemptEvent:
        """Wait for the next progress event."""

    async def cancel(self) -> Rejected | None:
        """Stop ringing (ring timeout, or the other party left).

        Returns a ``Rejected`` when the carrier knows better than "no answer" why the leg never
        answered (a trunk that never responded at all), else None.
        """


SAMPLE_RATE = 8000
SAMPLE_BYTES = 2


@dataclasses.dataclass(frozen=True)
class Recording:
    """What ``Channel.record`` heard from the party: 8 kHz mono 16-bit PCM.

    ``ended_by``: ``key`` (one of the finish keys, given in ``digits``), ``silence`` (the
    silence timeout ran out), ``max-length`` or ``hangup``.
    """

    pcm: bytes
    ended_by: str
    digits: str = ""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / (SAMPLE_RATE * SAMPLE_BYTES)


class ConversationTap:
    """Both sides of a bridged conversation, as two time-aligned 8 kHz mono 16-bit tracks.

    ``near`` is the party whose ``bridge`` was called (the caller), ``far`` the other one. A
    carrier appends audio as it flows; a write whose sides differ in length is padded with
    silence, so the tracks always stay aligned.
    """

    def __init__(self) -> None:
        self.near = bytearray()
        self.far = bytearray()

    def write(self, near: bytes, far: bytes) -> None:
        """Append the next stretch of audio heard from each party."""
        length = max(len(near), len(far))
        length += length % SAMPLE_BYTES
        self.near += near.ljust(length, b"\0")
        self.far += far.ljust(length, b"\0")

    @property
    def duration(self) -> float:
        """Seconds of conversation written so far."""
        return len(self.near) / (SAMPLE_RATE * SAMPLE_BYTES)


class Channel(Protocol):
    """One answered leg. Every method returns promptly once the leg has hung up."""

    number: str

    @property
    def closed(self) -> bool:
        """True once either side hung up."""

    async def wait_closed(self) -> str:
        """Wait until the leg hangs up; returns who hung up: "remote" or "local"."""

    def record_call(self, tap: ConversationTap) -> Callable[[], None]:
        """Record the call from now into ``tap``: ``near`` what the party says, ``far`` what it
        hears (prompts, a bridged party). Returns the function that stops it (after which every
        byte is in ``tap``)."""

    async def say(self, text: str, voice: str | None = None) -> None:
        """Speak ``text`` to the party."""

    async def play(self, url: str, audio: bytes | None = None) -> None:
        """Play the audio of ``url`` to the party: ``audio`` when the caller fetched it
        (8 kHz mono 16-bit PCM, played for exactly its length)."""

    async def collect_digits(self, max_digits: int, timeout: float, finish_on: str) -> str:
        """Collect up to ``max_digits`` keys, ending early on ``finish_on`` or ``timeout``."""

    async def record(
        self, max_length: float, finish_on: str, beep: bool, silence_timeout: float
    ) -> Recording:
        """Record the party (after a beep if asked) until a key of ``finish_on``, ``silence_timeout``
        seconds of silence, ``max_length`` seconds in all, or a hangup."""

    async def bridge(self, other: Channel, tap: ConversationTap | None = None) -> None:
        """Connect this party with ``other``; returns when either hangs up. With ``tap``, the
        conversation's audio is written into it (also when the bridge is cancelled)."""

    async def hangup(self, cause: str = "normal") -> None:
        """Hang up from our side."""

    # -- what a stream (a voice bot) uses: raw audio both ways, and keys as they come -----------

    def listen(self, sink: Callable[[bytes, bytes], None]) -> Callable[[], None]:
        """Give ``sink(heard, sent)`` every 20 ms: what the party said and what it was sent,
        each 320 bytes of 8 kHz PCM. Returns the function that stops it."""

    def hear(self, sink: Callable[[bytes], None], frames: int = 1) -> Callable[[], None]:
        """Give ``sink`` what the party said, ``frames`` 20 ms frames at a time (320 bytes of
        8 kHz PCM each), on the tick that completes them: the audio ``listen`` would give as
        ``heard``, without decoding what was sent. A carrier may pad the first group in front
        with silence, to end every call's groups on the same ticks. Returns the function that
        stops it."""

    def play_out(
        self, playout: Playout, on_marks: Callable[[list[str]], None]
    ) -> Callable[[], None]:
        """Play ``playout`` to the party, one 20 ms frame per tick, while nothing else is sent
        to it; ``on_marks`` gets the names of the marks each frame completes. A sandbox phone
        answers a bot: it speaks its ``says`` lines and presses its keys. Returns the undo."""

    async def next_key(self) -> Key | None:
        """The next key the party presses, however it was signalled, once it is released: its
        digit and how long it was held (ms; 100 where the carrier cannot know). A key whose end
        never comes is released after a bounded wait. None once hung up. (Menus and gathers
        take keys as they start, through ``collect_digits`` and ``record``.)"""


@dataclasses.dataclass(frozen=True)
class TrunkStatus:
    """A trunk as the dashboard shows it: calls up now and its registration, if it registers."""

    trunk: Trunk
    active: int
    registration: str | None  # None: the trunk does not register
    registration_cause: str
    registered_until: float | None  # wall-clock seconds
    retry_at: float | None


class Carrier(Protocol):
    """Places legs, and says what carries an account's calls."""

    name: str

    def dial(self, request: DialRequest) -> Attempt:
        """Start placing ``request``; progress arrives through the returned Attempt."""

    async def start(self) -> None:
        """Bind what the carrier needs (sockets) before any leg is placed."""

    async def close(self) -> None:
        """End the legs still up and release what ``start`` bound."""

    def over_sip(self, account_sid: str) -> bool:
        """Whether this account's legs go over a SIP trunk (False: the sandbox's phones)."""

    async def trunk_status(self, account_sid: str) -> TrunkStatus | None:
        """The trunk that carries this account's legs now, or None if no trunk does."""

    async def reserve(self, account_sid: str, call_sid: str) -> bool:
        """Take a channel of the account's trunk for the call's first leg, now or not at all
        (False: the trunk is full, and the call waits queued). Asking again for the same call
        keeps the channel it has."""

    async def unreserve(self, call_sid: str) -> None:
        """Give back the channel reserved for a call whose first leg never used it."""

    def listen_for_room(self, listener: Callable[[], None]) -> None:
        """Have ``listener`` told whenever a trunk channel is given back."""
