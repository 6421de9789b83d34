"""Trunk configuration: parsing with clear errors, routing accounts, writing numbers, limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ringflow.clock import ManualClock
from ringflow.config import Settings
from ringflow.errors import ConfigError
from ringflow.telephony.sip.capacity import TrunkGate
from ringflow.telephony.sip.trunks import (
    NumberFormat,
    Trunk,
    choose_trunk,
    load_trunks,
    parse_trunks,
)


def test_a_full_trunk_entry_parses() -> None:
    (trunk,) = parse_trunks(
        {
            "trunks": [
                {
                    "name": "pbx",
                    "host": "10.0.0.5",
                    "port": 5070,
                    "transport": "TCP",
                    "username": "u",
                    "password": "p",
                    "from_domain": "pbx.example",
                    "number_format": "national",
                    "caller_id_format": "e164-digits",
                    "outbound_proxy": "10.0.0.6:5060",
                    "register": True,
                    "register_expires": 600,
                    "max_channels": 30,
                    "max_cps": 2.5,
                    "accounts": ["AC1"],
                    "sources": ["10.0.0.7", "192.0.2.0/28", "::ffff:10.0.0.9"],
                    "symmetric_rtp": True,
                }
            ]
        }
    )
    assert trunk.transport == "tcp" and trunk.port == 5070
    assert trunk.outbound_proxy == ("10.0.0.6", 5060) and trunk.next_hop == ("10.0.0.6", 5060)
    assert trunk.request_uri("+919876543210") == "sip:09876543210@10.0.0.5:5070;transport=tcp"
    assert trunk.from_header("+918041234567") == "<sip:918041234567@pbx.example>"
    assert trunk.accounts == frozenset({"AC1"}) and trunk.max_cps == 2.5
    assert trunk.sources == ("10.0.0.7/32", "192.0.2.0/28", "10.0.0.9/32")
    assert trunk.symmetric_rtp and trunk.hosts == ("10.0.0.5", "10.0.0.6")
    assert "p" not in repr(trunk).split("password")[-1][:5]  # the password stays out of logs


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"host": "h"}, "trunks[0].name: required"),
        ({"name": "t"}, "trunks[0].host: required"),
        ({"name": "t", "host": "h", "port": 70000}, "(t).port: a whole number from 1 to 65535"),
        ({"name": "t", "host": "h", "transport": "sctp"}, "(t).transport: udp or tcp"),
        ({"name": "t", "host": "h", "username": "u"}, "username and password go together"),
        ({"name": "t", "host": "h", "register": True}, "registering needs username and password"),
        ({"name": "t", "host": "h", "number_format": "weird"}, "number_format: one of e164"),
        ({"name": "t", "host": "h", "max_cps": 0}, "max_cps: a number above 0"),
        ({"name": "t", "host": "h", "outbound_proxy": "nohost"}, "outbound_proxy: host:port"),
        ({"name": "t", "host": "h", "outbound_proxy": "p:5²60"}, "the port of 'p:5²60' must be"),
        ({"name": "t", "host": "h", "outbound_proxy": "p:0"}, "from 1 to 65535, got '0'"),
        ({"name": "t", "host": "h", "accounts": "AC1"}, "accounts: a list of account SIDs"),
        ({"name": "t", "host": "h", "colour": "red"}, "unknown field 'colour'"),
        ({"name": "t", "host": "h", "sources": "10.0.0.1"}, "(t).sources: a list of IP addresses"),
        ({"name": "t", "host": "h", "sources": ["pbx.example"]}, "(t).sources: 'pbx.example' does"),
        ({"name": "t", "host": "h", "symmetric_rtp": "yes"}, "(t).symmetric_rtp: true or false"),
    ],
)
def test_mistakes_name_the_trunk_and_field(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        parse_trunks({"trunks": [entry]})
    assert message in str(caught.value)


def test_the_file_must_hold_a_trunks_list(tmp_path: Path) -> None:
    path = tmp_path / "trunks.yaml"
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="expected a mapping with a `trunks` list"):
        load_trunks(path)
    path.write_text("trunks: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_trunks(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_trunks(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="two trunks are named 'a'"):
        parse_trunks({"trunks": [{"name": "a", "host": "h"}, {"name": "a", "host": "g"}]})


def test_accounts_use_their_own_trunk_else_the_default() -> None:
    own = Trunk("own", "h1", accounts=frozenset({"AC1"}))
    default = Trunk("default", "h2")
    assert choose_trunk((own, default), "AC1") is own
    assert choose_trunk((own, default), "AC2") is default
    assert choose_trunk((own,), "AC2") is None


@pytest.mark.parametrize(
    ("fmt", "written"),
    [
        (NumberFormat.E164, "+919876543210"),
        (NumberFormat.E164_DIGITS, "919876543210"),
        (NumberFormat.NATIONAL, "09876543210"),
    ],
)
def test_number_formats(fmt: NumberFormat, written: str) -> None:
    assert fmt.write("+919876543210") == written
    assert fmt.write("2001") == "2001"  # an extension is left alone


def test_a_sip_uri_passes_through_the_trunk() -> None:
    trunk = Trunk("t", "pbx.example")
    assert trunk.request_uri("sip:alice@10.1.1.1:5080") == "sip:alice@10.1.1.1:5080"
    assert trunk.request_uri("+14155550100") == "sip:+14155550100@pbx.example"


def test_carrier_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="RINGFLOW_CARRIER=sip needs RINGFLOW_SIP_TRUNKS"):
        Settings.from_env({"RINGFLOW_CARRIER": "sip"})
    with pytest.raises(ConfigError, match="supported carriers: sandbox, sip"):
        Settings.from_env({"RINGFLOW_CARRIER": "pstn"})
    with pytest.raises(ConfigError, match="RINGFLOW_RTP_PORT_MIN"):
        Settings.from_env({"RINGFLOW_RTP_PORT_MIN": "40000", "RINGFLOW_RTP_PORT_MAX": "30000"})
    settings = Settings.from_env({"RINGFLOW_CARRIER": "sip", "RINGFLOW_SIP_TRUNKS": "t.yaml"})
    assert settings.carrier == "sip" and settings.sip_port == 5060


async def test_the_gate_paces_starts_and_caps_channels() -> None:
    clock = ManualClock()
    gate = TrunkGate(Trunk("t", "h", max_channels=2, max_cps=2.0), clock)
    started: list[float] = []
    release = asyncio.Event()

    async def call() -> None:
        async with gate.slot():
            started.append(clock.now())
            await release.wait()

    t0 = clock.now()
    tasks = [asyncio.ensure_future(call()) for _ in range(3)]
    await clock.run_until(lambda: len(started) == 2, limit=10)
    assert [round(s - t0, 3) for s in started] == [0.0, 0.5]  # two a second, evenly spaced
    await clock.advance(5)
    assert len(started) == 2 and gate.in_use == 2  # the third waits for a channel
    release.set()
    await clock.run_until(lambda: len(started) == 3, limit=10)
    await asyncio.gather(*tasks)
    assert gate.in_use == 0
