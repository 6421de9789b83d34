"""Who may talk to the user agent: an allow-list of IP addresses and networks.

ringflow places calls and receives none, so every request it should answer comes from a trunk
it dials through, or, inside a dialog, from the address the dialog's Contact or Record-Route
names. ``Sources`` is that list for the trunks. It only compares addresses: the adapter that
owns the sockets resolves trunk host names into it (at start, and again now and then) and
hands the agent a new one, so the core never waits on DNS.

Source addresses are compared as IP addresses, not strings (``::1`` and ``0:0::1`` are one
address; an IPv4-mapped ``::ffff:10.0.0.5`` from a dual-stack socket is ``10.0.0.5``). Ports
are not compared: a trunk may send from any of its ports.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def ip_of(host: str) -> IpAddress | None:
    """``host`` as an IP address (brackets, zone and IPv4 mapping undone), or None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def network_of(text: str) -> IpNetwork:
    """An address (``10.0.0.5``) or network (``10.0.0.0/24``); ValueError for anything else."""
    network = ipaddress.ip_network(text.strip(), strict=False)
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen == 128
        and network.network_address.ipv4_mapped is not None
    ):
        return ipaddress.ip_network(network.network_address.ipv4_mapped)
    return network


class Sources:
    """A set of IP addresses and networks that requests may come from."""

    __slots__ = ("_addresses", "_networks")

    def __init__(self, entries: Iterable[str | IpAddress | IpNetwork] = ()):
        addresses: set[IpAddress] = set()
        networks: list[IpNetwork] = []
        for entry in entries:
            network = entry if isinstance(entry, IpNetwork) else network_of(str(entry))
            if network.num_addresses == 1:
                addresses.add(network.network_address)
            else:
                networks.append(network)
        self._addresses = frozenset(addresses)
        self._networks = tuple(networks)

    def allows(self, host: str) -> bool:
        """Whether a datagram from ``host`` (an IP address as the socket reports it) may talk."""
        address = ip_of(host)
        if address is None:
            return False
        return address in self._addresses or any(address in n for n in self._networks)

    def __or__(self, other: Sources) -> Sources:
        return Sources([*self._addresses, *self._networks, *other._addresses, *other._networks])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sources) and (self._addresses, set(self._networks)) == (
            other._addresses,
            set(other._networks),
        )

    def __hash__(self) -> int:
        return hash((self._addresses, frozenset(self._networks)))

    def __repr__(self) -> str:
        entries = sorted(map(str, self._addresses)) + sorted(map(str, self._networks))
        return f"Sources({entries!r})"


def host_key(host: str) -> IpAddress | str:
    """What two spellings of one host share: its IP address, or its name in lower case."""
    return ip_of(host) or host.lower()
