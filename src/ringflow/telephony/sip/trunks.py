"""SIP trunks: where calls go, how numbers are written, and how much a trunk may carry.

Trunks are read once at start-up from the YAML file named by ``RINGFLOW_SIP_TRUNKS``::

    trunks:
      - name: office-pbx
        host: 10.0.0.5            # the trunk's SIP server
        port: 5060
        transport: udp            # udp or tcp
        username: ringflow        # digest credentials (optional)
        password: s3cret
        from_domain: pbx.example  # From host (default: host)
        number_format: e164       # e164 (+9198...), e164-digits (9198...), national (098...)
        caller_id_format: e164    # the same choices, for the From user
        outbound_proxy: 10.0.0.6:5060   # send every request here (optional)
        register: false           # REGISTER with the trunk (and refresh) at start-up
        register_expires: 3600
        max_channels: 30          # concurrent calls on this trunk
        max_cps: 5                # new calls per second
        accounts: [AC123]         # only these accounts use it; omit for the default trunk
        sources: [10.0.0.7, 192.0.2.0/28]   # more addresses its requests may come from
        symmetric_rtp: false      # true: the trunk is behind NAT, latch RTP to where it comes from

An account uses the first trunk that lists it, else the first trunk without ``accounts``.

Only trunks may talk to ringflow's SIP port: a request is answered only if it comes from a
trunk's ``host`` or ``outbound_proxy`` (host names resolved at start and every few minutes) or
from its ``sources``; inside a call, also from the address the call's Contact or Record-Route
names. Anything else gets no answer at all. RTP is heard only from the address the callee's SDP
announced, unless the trunk says ``symmetric_rtp: true``.
Every mistake is reported with the trunk's position and field, at start-up, never mid-call.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import phonenumbers
import yaml

from ringflow.errors import ConfigError
from ringflow.numeric import whole_number
from ringflow.sip.sources import network_of


class NumberFormat(enum.StrEnum):
    """How a phone number is written in a Request-URI or From user part."""

    E164 = "e164"  # +919876543210
    E164_DIGITS = "e164-digits"  # 919876543210
    NATIONAL = "national"  # 09876543210 (the trunk's country dials with its trunk prefix)

    def write(self, number: str) -> str:
        """``number`` (E.164, or anything else left as is) in this format."""
        if not number.startswith("+"):
            return number  # an extension or a ready-made user part
        if self is NumberFormat.E164:
            return number
        if self is NumberFormat.E164_DIGITS:
            return number[1:]
        try:
            parsed = phonenumbers.parse(number)
        except phonenumbers.NumberParseException:
            return number
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return "".join(ch for ch in national if ch.isdigit())


@dataclasses.dataclass(frozen=True)
class Trunk:
    """One SIP trunk or PBX that ringflow places calls through."""

    name: str
    host: str
    port: int = 5060
    transport: str = "udp"
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    from_domain: str | None = None
    number_format: NumberFormat = NumberFormat.E164
    caller_id_format: NumberFormat = NumberFormat.E164
    outbound_proxy: tuple[str, int] | None = None
    register: bool = False
    register_expires: int = 3600
    max_channels: int = 100
    max_cps: float = 10.0
    accounts: frozenset[str] | None = None
    sources: tuple[str, ...] = ()  # addresses and networks, beyond host and outbound_proxy
    symmetric_rtp: bool = False

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts (names or addresses) this trunk's signalling comes from, to be resolved."""
        proxy = (self.outbound_proxy[0],) if self.outbound_proxy else ()
        return (self.host, *proxy)

    def request_uri(self, number: str) -> str:
        """The Request-URI that rings ``number`` on this trunk (a sip: URI passes through)."""
        if number.lower().startswith(("sip:", "sips:")):
            return number
        user = self.number_format.write(number)
        transport = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{user}@{_host_port(self.host, self.port)}{transport}"

    def from_header(self, caller_id: str) -> str:
        """The From header value for calls showing ``caller_id``."""
        user = self.caller_id_format.write(caller_id) if caller_id else "ringflow"
        return f"<sip:{user}@{self.from_domain or self.host}>"

    @property
    def aor(self) -> str:
        """The address of record this trunk registers: our username at its domain."""
        return f"sip:{self.username or 'ringflow'}@{self.from_domain or self.host}"

    @property
    def registrar(self) -> str:
        """Where REGISTER goes: the trunk itself."""
        transport = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{_host_port(self.host, self.port)}{transport}"

    def serves(self, account_sid: str) -> bool:
        """True if this trunk lists the account (a default trunk lists nobody)."""
        return self.accounts is not None and account_sid in self.accounts

    @property
    def next_hop(self) -> tuple[str, int]:
        """Where this trunk's requests are sent first."""
        return self.outbound_proxy or (self.host, self.port)


def _host_port(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port == 5060 else f"{host}:{port}"


def choose_trunk(trunks: tuple[Trunk, ...], account_sid: str) -> Trunk | None:
    """The trunk an account's calls use: one that lists it, else the first default one."""
    for trunk in trunks:
        if trunk.serves(account_sid):
            return trunk
    return next((t for t in trunks if t.accounts is None), None)


FIELDS = {f.name for f in dataclasses.fields(Trunk)}


def load_trunks(path: str | Path) -> tuple[Trunk, ...]:
    """Read and check the trunks file; raises ConfigError naming the trunk and field."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"RINGFLOW_SIP_TRUNKS: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"RINGFLOW_SIP_TRUNKS: {path} is not valid YAML: {exc}") from None
    return parse_trunks(document, str(path))


def parse_trunks(document: Any, where: str = "trunks") -> tuple[Trunk, ...]:
    """Trunks from the parsed document ``{"trunks": [...]}``."""
    if not isinstance(document, Mapping) or not isinstance(document.get("trunks"), list):
        raise ConfigError(f"{where}: expected a mapping with a `trunks` list")
    trunks = tuple(
        _trunk(entry, f"{where}: trunks[{i}]") for i, entry in enumerate(document["trunks"])
    )
    if not trunks:
        raise ConfigError(f"{where}: the `trunks` list is empty")
    names = [t.name for t in trunks]
    if duplicate := next((n for n in names if names.count(n) > 1), None):
        raise ConfigError(f"{where}: two trunks are named {duplicate!r}")
    return trunks


def _trunk(entry: Any, where: str) -> Trunk:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(entry) - FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})"
        )
    for required in ("name", "host"):
        if not isinstance(entry.get(required), str) or not entry[required].strip():
            raise ConfigError(f"{where}.{required}: required, a non-empty string")
    where = f"{where} ({entry['name']})"
    values: dict[str, Any] = {k: v for k, v in entry.items() if v is not None}
    values["port"] = _int(values, "port", where, 1, 65535, 5060)
    values["register_expires"] = _int(values, "register_expires", where, 60, 86400, 3600)
    values["max_channels"] = _int(values, "max_channels", where, 1, 100000, 100)
    cps = values.get("max_cps", 10.0)
    if isinstance(cps, bool) or not isinstance(cps, (int, float)) or not 0 < cps <= 10000:
        raise ConfigError(f"{where}.max_cps: a number above 0 and at most 10000")
    values["max_cps"] = float(cps)
    transport = str(values.get("transport", "udp")).lower()
    if transport not in ("udp", "tcp"):
        raise ConfigError(f"{where}.transport: udp or tcp, not {transport!r}")
    values["transport"] = transport
    for name in ("number_format", "caller_id_format"):
        raw = values.get(name, "e164")
        try:
            values[name] = NumberFormat(str(raw).lower())
        except ValueError:
            choices = ", ".join(f.value for f in NumberFormat)
            raise ConfigError(f"{where}.{name}: one of {choices}, not {raw!r}") from None
    if "outbound_proxy" in values:
        values["outbound_proxy"] = _address(values["outbound_proxy"], f"{where}.outbound_proxy")
    if ("username" in values) != ("password" in values):
        raise ConfigError(f"{where}: username and password go together")
    for flag in ("register", "symmetric_rtp"):
        if not isinstance(values.get(flag, False), bool):
            raise ConfigError(f"{where}.{flag}: true or false")
    if "sources" in values:
        values["sources"] = _sources(values["sources"], f"{where}.sources")
    if values.get("register") and "username" not in values:
        raise ConfigError(f"{where}.register: registering needs username and password")
    if "accounts" in values:
        accounts = values["accounts"]
        if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
            raise ConfigError(f"{where}.accounts: a list of account SIDs")
        values["accounts"] = frozenset(accounts)
    for text in ("username", "password", "from_domain"):
        if text in values and not isinstance(values[text], str):
            raise ConfigError(f"{where}.{text}: a string")
    return Trunk(**values)


def _int(
    values: Mapping[str, Any], name: str, where: str, low: int, high: int, default: int
) -> int:
    raw = values.get(name, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ConfigError(f"{where}.{name}: a whole number from {low} to {high}, not {raw!r}")
    return raw


def _sources(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise ConfigError(f"{where}: a list of IP addresses or networks (10.0.0.0/24)")
    try:
        return tuple(str(network_of(s)) for s in raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _address(raw: Any, where: str) -> tuple[str, int]:
    host, _, port = str(raw).rpartition(":")
    if not host:
        raise ConfigError(f"{where}: host:port, not {raw!r}")
    return host.strip("[]"), whole_number(
        port, f"{where}: the port of {raw!r}", low=1, high=65535, error=ConfigError
    )
