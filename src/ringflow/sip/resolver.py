"""Host names to IP addresses for the SIP adapter, looked up off the event loop and cached.

The sans-IO core never looks a name up; ``SipTransport`` does, through ``NameCache``, before it
sends anything to a name. Sending to an address we looked up ourselves (never handing a name to
``sendto``, which would resolve it again, blocking the loop) is what lets the agent trust the
very address each request went to (``UserAgent.resolved``), even when a name's DNS answers
change from one lookup to the next.

Only the addresses of the socket's own family are kept: a UDP socket bound to 127.0.0.1 cannot
send to ``::1``.
"""

from __future__ import annotations

import asyncio
import socket
import time

from ringflow.sip.sources import ip_of

RESOLVE_TIMEOUT = 5.0  # seconds one lookup may take
CACHE_FOR = 60.0  # seconds a lookup is reused (the system resolver has its own cache too)
MAX_NAMES = 1024  # names cached at most


async def resolve(host: str, family: int = socket.AF_UNSPEC) -> tuple[str, ...]:
    """The IP addresses of ``host`` in ``family`` (itself if it is one); OSError if none.

    Every way a lookup fails is an OSError, so callers catch one thing.
    """
    if ip_of(host) is not None:
        return (host,)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, family=family, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT
        )
    except TimeoutError as exc:
        raise OSError(f"looking up {host} took over {RESOLVE_TIMEOUT:g} s") from exc
    except UnicodeError as exc:  # a name IDNA cannot encode (an empty or 64-byte label)
        raise OSError(f"{host!r} is not a valid host name") from exc
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))  # in order, once each
    if not addresses:
        raise OSError(f"{host} has no address")
    return addresses


class NameCache:
    """Recent lookups of host names, for one socket family."""

    def __init__(self, family: int, cache_for: float = CACHE_FOR):
        self.family = family
        self.cache_for = cache_for
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}

    def get(self, name: str) -> tuple[str, ...] | None:
        """The addresses ``name`` had at its last lookup, if that was recent enough."""
        entry = self._cache.get(name.lower())
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def lookup(self, name: str) -> tuple[str, ...]:
        """Look ``name`` up now and remember the answer; OSError if it has no address."""
        addresses = await resolve(name, self.family)
        if len(self._cache) >= MAX_NAMES:  # names come from our trunks and our peers' Contacts
            now = time.monotonic()
            self._cache = {k: v for k, v in self._cache.items() if v[0] >= now}
            if len(self._cache) >= MAX_NAMES:
                self._cache.clear()
        self._cache[name.lower()] = (time.monotonic() + self.cache_for, addresses)
        return addresses
