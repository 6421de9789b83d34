"""A trunk's limits: how many calls it carries at once and how fast new ones may start.

Legs wait their turn in FIFO order: first for a free channel, then for the next start the
calls-per-second pace allows (starts are spaced evenly, ``1 / max_cps`` apart, on the
injectable clock). A waiting leg that is cancelled leaves the line without taking a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ringflow.clock import Clock
from ringflow.telephony.sip.trunks import Trunk


class TrunkGate:
    """Admission to one trunk."""

    def __init__(self, trunk: Trunk, clock: Clock):
        self.trunk = trunk
        self.clock = clock
        self._channels = asyncio.Semaphore(trunk.max_channels)
        self._pace = asyncio.Lock()
        self._next_start = 0.0
        self.in_use = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the trunk's channels for the life of a call."""
        async with self._channels:
            self.in_use += 1
            try:
                await self._paced()
                yield
            finally:
                self.in_use -= 1

    async def _paced(self) -> None:
        async with self._pace:
            now = self.clock.now()
            wait = self._next_start - now
            if wait > 0:
                await self.clock.sleep(wait)
            self._next_start = max(now, self._next_start) + 1.0 / self.trunk.max_cps
