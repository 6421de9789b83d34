"""Which carrier places an account's legs: the deployment's default, or SIP for chosen accounts.

``RINGFLOW_CARRIER=sip`` sends every account's calls through its SIP trunk. With the sandbox as
the default and a trunks file, only the accounts a trunk names (``accounts: [...]``) go over
SIP; every other account keeps its virtual phones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ringflow.telephony.carrier import Attempt, Carrier, DialRequest, TrunkStatus

if TYPE_CHECKING:
    from ringflow.telephony.sip.carrier import SipCarrier


class RoutingCarrier:
    """The sandbox for most accounts, SIP for the accounts a trunk lists."""

    def __init__(self, default: Carrier, sip: SipCarrier):
        self.default = default
        self.sip = sip
        self.name = f"{default.name}+sip"

    def over_sip(self, account_sid: str) -> bool:
        """Whether a trunk names this account."""
        return any(trunk.serves(account_sid) for trunk in self.sip.trunks)

    def dial(self, request: DialRequest) -> Attempt:
        """Route by the account's trunk."""
        if self.over_sip(request.account_sid):
            return self.sip.dial(request)
        return self.default.dial(request)

    async def trunk_status(self, account_sid: str) -> TrunkStatus | None:
        """The account's trunk, if its calls go over SIP."""
        return await self.sip.trunk_status(account_sid) if self.over_sip(account_sid) else None

    async def start(self) -> None:
        """Start both sides (binds the SIP side's sockets)."""
        await self.default.start()
        await self.sip.start()

    async def close(self) -> None:
        """End both sides' calls and close the SIP side's sockets."""
        await self.sip.close()
        await self.default.close()

    async def reserve(self, account_sid: str, call_sid: str) -> bool:
        """A channel of the account's trunk, when its calls go over SIP."""
        if self.over_sip(account_sid):
            return await self.sip.reserve(account_sid, call_sid)
        return True

    async def unreserve(self, call_sid: str) -> None:
        """Give back a channel the SIP side reserved."""
        await self.sip.unreserve(call_sid)

    def listen_for_room(self, listener: Callable[[], None]) -> None:
        """Trunk channels given back on the SIP side."""
        self.sip.listen_for_room(listener)
