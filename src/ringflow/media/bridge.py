"""Two sessions carrying each other's audio, and the tap that records both sides in step.

Each session hands its party's audio to listeners one 20 ms frame per tick; a bridge listens to
both and queues each frame for the other session to send at its own next tick (encoded in that
session's law, which is the PCMU<->PCMA transcoding). Every session ticks exactly once per
20 ms on the shared pacer, so the two sides' frames arrive alternately; the tap is called with
one frame of each, in order. If one side stops ticking (it closed), the other's frames are
paired with silence after a short wait rather than held back.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Protocol

from ringflow.media.g711 import SILENCE_PCM

QUEUE = 3  # frames waiting to be sent to the other party; older ones are dropped
WAIT = 2  # frames one side of the tap waits for the other before pairing with silence


class Bridgeable(Protocol):
    """What a bridge needs from a session."""

    bridge_in: collections.deque[bytes] | None

    def listen(self, sink: Callable[[bytes], None]) -> Callable[[], None]:
        """Subscribe to the party's audio."""

    def unbridged(self, bridge: Bridge) -> None:
        """``bridge`` was undone."""


class Bridge:
    """Audio both ways between ``near`` and ``far``; ``tap(near, far)`` gets both, in step."""

    def __init__(
        self, near: Bridgeable, far: Bridgeable, tap: Callable[[bytes, bytes], None] | None = None
    ) -> None:
        self.near, self.far, self.tap = near, far, tap
        self._heard_near: collections.deque[bytes] = collections.deque()
        self._heard_far: collections.deque[bytes] = collections.deque()
        self._to_near: collections.deque[bytes] = collections.deque(maxlen=QUEUE)
        self._to_far: collections.deque[bytes] = collections.deque(maxlen=QUEUE)
        near.bridge_in, far.bridge_in = self._to_near, self._to_far
        self._stops = [near.listen(self._from_near), far.listen(self._from_far)]
        self.active = True

    def _from_near(self, frame: bytes) -> None:
        self._to_far.append(frame)
        if self.tap is not None:
            self._heard_near.append(frame)
            self._pair()

    def _from_far(self, frame: bytes) -> None:
        self._to_near.append(frame)
        if self.tap is not None:
            self._heard_far.append(frame)
            self._pair()

    def _pair(self, flush: bool = False) -> None:
        near, far, tap = self._heard_near, self._heard_far, self.tap
        assert tap is not None
        while near and far:
            tap(near.popleft(), far.popleft())
        limit = 0 if flush else WAIT
        while len(near) > limit:
            tap(near.popleft(), SILENCE_PCM)
        while len(far) > limit:
            tap(SILENCE_PCM, far.popleft())

    def undo(self) -> None:
        """Stop carrying audio; the tap gets what was still waiting. Safe to call twice."""
        if not self.active:
            return
        self.active = False
        for stop in self._stops:
            stop()
        if self.tap is not None:
            self._pair(flush=True)
        self.near.unbridged(self)
        self.far.unbridged(self)
