"""What a carrier says about an account's calls: the sandbox, SIP, and the sandbox beside SIP
for the accounts a trunk names (what the dashboard's trunks page and test calls go by)."""

from __future__ import annotations

from ringflow.clock import ManualClock
from ringflow.telephony.routing import RoutingCarrier
from ringflow.telephony.sandbox import SandboxCarrier
from ringflow.telephony.sip.carrier import SipCarrier
from ringflow.telephony.sip.trunks import parse_trunks

TRUNKS = {
    "trunks": [
        {"name": "office-pbx", "host": "127.0.0.1", "max_channels": 7, "accounts": ["otherco"]}
    ]
}


async def test_each_carrier_says_which_accounts_go_over_sip_and_through_which_trunk(
    clock: ManualClock,
):
    sandbox = SandboxCarrier(clock)
    sip = SipCarrier(clock, parse_trunks(TRUNKS))  # not started: no sockets are needed here
    routing = RoutingCarrier(sandbox, sip)
    try:
        assert not sandbox.over_sip("otherco") and await sandbox.trunk_status("otherco") is None
        assert sip.over_sip("acme") and sip.over_sip("otherco")
        assert routing.over_sip("otherco") and not routing.over_sip("acme")
        assert await routing.trunk_status("acme") is None
        status = await routing.trunk_status("otherco")
        assert status is not None and status.trunk.name == "office-pbx"
        assert (status.active, status.registration) == (0, None)  # idle, does not register
    finally:
        await sandbox.close()
        await sip.peers.close()
