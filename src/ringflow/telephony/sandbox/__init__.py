"""The sandbox phone network: virtual phones in-process, the embedded default carrier."""

from ringflow.telephony.sandbox.network import SandboxCarrier
from ringflow.telephony.sandbox.phones import MAGIC_NUMBERS, PhoneScript

__all__ = ["MAGIC_NUMBERS", "PhoneScript", "SandboxCarrier"]
