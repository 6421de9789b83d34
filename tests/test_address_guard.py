"""The private-address guard judges the IPv4 address inside every IPv6 form that embeds one.

6to4, NAT64, IPv4-mapped, IPv4-compatible and Teredo addresses all carry an IPv4 address that a
packet ends up at; ``2002:7f00:1::`` is 127.0.0.1 reached through a 6to4 relay. Python calls
several of these forms global, so the guard must look inside them.
"""

from __future__ import annotations

import ipaddress

import pytest

from ringflow.clock import ManualClock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest
from ringflow.webhooks.http import OutboundHttp, embedded_ipv4, is_public_address, validate_url

PRIVATE_INSIDE = [
    ("2002:7f00:1::", "127.0.0.1"),  # 6to4 of loopback
    ("2002:a00:1::1", "10.0.0.1"),  # 6to4 of a private network
    ("2002:a9fe:a9fe::", "169.254.169.254"),  # 6to4 of the cloud metadata address
    ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
    ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
    ("::ffff:c0a8:1", "192.168.0.1"),
    ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible (deprecated)
    ("::a00:1", "10.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo, client 127.0.0.1
]


@pytest.mark.parametrize(("v6", "v4"), PRIVATE_INSIDE)
def test_an_ipv6_address_that_embeds_a_private_ipv4_is_private(v6: str, v4: str) -> None:
    ip = ipaddress.IPv6Address(v6)
    assert ipaddress.IPv4Address(v4) in embedded_ipv4(ip)
    assert not is_public_address(ip)
    with pytest.raises(InvalidRequest, match="private address"):
        validate_url(f"http://[{v6}]/cb", allow_private=False)


@pytest.mark.parametrize("v6", ["2002:808:808::", "64:ff9b::808:808", "2606:4700::1111"])
def test_public_ipv4_inside_and_plain_public_ipv6_stay_public(v6: str) -> None:
    assert is_public_address(ipaddress.IPv6Address(v6))
    assert validate_url(f"http://[{v6}]/cb", allow_private=False) == f"http://[{v6}]/cb"


def test_the_local_use_nat64_prefix_is_refused_whole() -> None:
    # RFC 8215: the IPv4 address may sit at any of several offsets, so none can be trusted.
    assert not is_public_address(ipaddress.IPv6Address("64:ff9b:1::808:808"))


def test_ipv6_loopback_and_unspecified_are_not_read_as_ipv4_compatible() -> None:
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) == []
    assert embedded_ipv4(ipaddress.IPv6Address("::")) == []
    assert not is_public_address(ipaddress.IPv6Address("::1"))


async def test_a_name_resolving_to_6to4_loopback_is_refused_before_connecting() -> None:
    """The check at connect time (what DNS answered) looks inside 6to4 too."""

    async def resolver(host: str, _port: int) -> list[str]:
        return ["2002:7f00:1::"]

    settings = Settings(allow_private_urls=False, data_dir="data")
    async with OutboundHttp(settings, ManualClock(), resolver=resolver) as http:
        with pytest.raises(InvalidRequest, match=r"private address \(2002:7f00:1::, which reaches"):
            await http.post(
                "http://hooks.example.com/cb", content=b"{}", headers={}, field="StatusCallback"
            )
