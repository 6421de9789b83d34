"""Where the trunks' signalling may come from: their host names resolved into ``Sources``.

The SIP core answers only the addresses it is given (``ringflow.sip.sources``) and never looks
a name up itself. ``TrunkPeers`` does that for it, off the SIP loop's hot path: every trunk's
``host`` and ``outbound_proxy`` are resolved at start and again every ``RESOLVE_EVERY`` seconds
(a provider may move its SBCs), and joined with each trunk's configured ``sources``.

A lookup that fails keeps the addresses that name had: a DNS hiccup must not lock a trunk out
of calls that are up. A name that never resolved is logged at start; its trunk is then heard
only from its ``sources`` (and, for a call or registration, from the address each of its
requests was sent to: the SIP adapter resolves names itself and trusts what it sent to). A
round that fails in any other way is logged, and the next one runs on time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ringflow.clock import Clock
from ringflow.sip.resolver import resolve
from ringflow.sip.sources import Sources
from ringflow.telephony.sip.trunks import Trunk

log = logging.getLogger(__name__)

RESOLVE_EVERY = 300.0  # seconds between lookups of the trunks' host names


class TrunkPeers:
    """The trunks' source addresses, kept fresh; ``on_change`` hears every new ``Sources``."""

    def __init__(
        self, trunks: tuple[Trunk, ...], clock: Clock, on_change: Callable[[Sources], None]
    ):
        self.trunks = trunks
        self.clock = clock
        self.on_change = on_change
        self._resolved: dict[str, frozenset[str]] = {}  # host name -> its last known addresses
        self.sources = self._sources()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Sources:
        """Resolve every trunk host now and keep doing so in the background."""
        await self.refresh()
        self._task = asyncio.ensure_future(self._keep_fresh())
        return self.sources

    async def close(self) -> None:
        """Stop the background lookups."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def refresh(self) -> Sources:
        """Look every host up once; tell ``on_change`` if the addresses changed."""
        hosts = sorted({host for trunk in self.trunks for host in trunk.hosts})
        results = await asyncio.gather(*(resolve(host) for host in hosts), return_exceptions=True)
        for host, result in zip(hosts, results, strict=True):
            if isinstance(result, BaseException):
                kept = self._resolved.get(host)
                log.warning(
                    "trunk host %s: lookup failed (%s); %s",
                    host,
                    result or type(result).__name__,
                    "keeping its last addresses" if kept else "no address for it yet",
                )
            else:
                self._resolved[host] = frozenset(result)
        sources = self._sources()
        if sources != self.sources:
            log.info("sip: requests accepted from %s", sources)
            self.on_change(sources)
            self.sources = sources  # only once told: a failed ``on_change`` is retried next time
        return sources

    def _sources(self) -> Sources:
        entries = [address for addresses in self._resolved.values() for address in addresses]
        entries += [source for trunk in self.trunks for source in trunk.sources]
        return Sources(entries)

    async def _keep_fresh(self) -> None:
        while True:
            await self.clock.sleep(RESOLVE_EVERY)
            try:
                with self.clock.busy():
                    await self.refresh()
            except Exception:
                # A failing refresh (or ``on_change``) must not end the lookups for good: the
                # next round may succeed, and until then the last addresses stay in force.
                log.exception("sip: refreshing the trunks' addresses failed; trying again later")
