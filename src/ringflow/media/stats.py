"""Counters for one RTP session and for the whole engine, and the send-lateness histogram.

Counting is on the per-packet path, so it is plain attribute increments and one list index;
percentiles are only computed when someone asks (the bench, a health page).
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(slots=True)
class SessionStats:
    """Counters of one session (or, summed, of an engine)."""

    sent: int = 0  # RTP packets sent
    received: int = 0  # RTP packets accepted
    lost: int = 0  # packets missing from the received sequence
    late: int = 0  # packets sent more than 10 ms after their deadline
    duplicates: int = 0  # repeated or out-of-order packets (dropped)
    malformed: int = 0  # datagrams that are not RTP (dropped)
    foreign: int = 0  # RTP of another payload type, SSRC or source (dropped)
    underruns: int = 0  # frames where the jitter buffer ran dry (late or missing packets)
    overflows: int = 0  # times the jitter buffer dropped old audio
    send_errors: int = 0  # sends the OS refused (unreachable, bad address)
    digits: int = 0  # keys reported, from every source

    def add(self, other: SessionStats) -> None:
        """Add ``other``'s counts into these."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def clear(self) -> None:
        """Set every count back to zero (in place: the receive path holds this object)."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)


@dataclasses.dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine: totals over its sessions and how punctually it sent."""

    sessions: int  # open now
    totals: SessionStats  # summed over every session opened (since the last reset)
    lateness_p50: float  # seconds after the deadline that half the packets left by
    lateness_p99: float
    ticks: int  # 5 ms ticks run
    stalls: int  # times the loop was more than 100 ms late and ticks were skipped

    @property
    def sent(self) -> int:
        """RTP packets sent."""
        return self.totals.sent

    @property
    def received(self) -> int:
        """RTP packets accepted."""
        return self.totals.received

    @property
    def lost(self) -> int:
        """Packets missing from received sequences."""
        return self.totals.lost


class LatencyHistogram:
    """Send lateness in 0.1 ms buckets up to 100 ms; the last bucket holds anything later."""

    RESOLUTION = 1e-4
    SIZE = 1001

    def __init__(self) -> None:
        self.counts = [0] * self.SIZE

    def add(self, seconds: float) -> None:
        """Count one packet that left ``seconds`` after its deadline."""
        index = int(seconds / self.RESOLUTION)
        self.counts[0 if index < 0 else min(index, self.SIZE - 1)] += 1

    @property
    def total(self) -> int:
        """Packets counted."""
        return sum(self.counts)

    def percentile(self, q: float) -> float:
        """The lateness (seconds, bucket's upper edge) that a fraction ``q`` of packets beat."""
        total = self.total
        if not total:
            return 0.0
        rank, seen = math.ceil(q * total), 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return (index + 1) * self.RESOLUTION
        return self.SIZE * self.RESOLUTION

    def clear(self) -> None:
        """Forget every count."""
        self.counts = [0] * self.SIZE
