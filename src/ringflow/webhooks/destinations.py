"""Destinations: the receivers callbacks go to, how busy each is, and whether it is backed off.

A destination is one receiving server: the scheme, host and port of a callback URL. The
deliverer keeps at most ``per_destination`` requests in flight to each one, so a receiver that
accepts connections and never answers holds a few delivery slots, never the others'. Since one
account can name any number of destinations (one tarpit on many ports or host names), requests
are also capped at ``per_account`` for each account, whatever servers they go to: an account's
slow receivers hold that account's slots, never all of them.

Each destination has a circuit. After a transport failure (a timeout, a refused or broken
connection) a destination gets one request at a time until it answers again, so a receiver that
has stopped answering is not sent a new request each time one of those in flight fails; one
that is sent nothing for ``cooldown_cap`` after such a failure is forgotten. ``failures``
consecutive transport failures open the circuit: its rows are deferred until ``reopen_at`` and
its in-flight requests run out. Then one probe is sent; any HTTP answer (even a 500: the server
is there) closes the circuit and its deferred rows are due again at once; another transport
failure reopens it with twice the cooldown, up to ``cooldown_cap``. Deferred rows are not
attempted, so a receiver's outage does not spend its callbacks' attempts.

Pure bookkeeping: time is passed in, nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import TypeVar

import httpx

from ringflow.storage.outbox import Rooms

K = TypeVar("K")

DEFAULT_PORTS = {"http": 80, "https": 443}


def destination_of(url: str) -> str:
    """``scheme://host:port`` of a callback URL ("" for one that does not parse)."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError):
        return ""
    scheme = parsed.scheme.lower()
    if not parsed.host:
        return ""
    port = parsed.port or DEFAULT_PORTS.get(scheme, 0)
    host = parsed.host.lower()
    if ":" in host:  # an IPv6 literal keeps its brackets, as in the URL
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class Change(enum.Enum):
    """What a finished request did to its destination's circuit."""

    OPENED = "opened"  # defer the destination's rows until ``Circuit.reopen_at``
    CLOSED = "closed"  # the rows deferred until ``Circuit.reopen_at`` are due again now


@dataclasses.dataclass
class Circuit:
    """One destination's health, as seen by this process."""

    failures: int = 0  # consecutive transport failures
    failed_at: dt.datetime | None = None  # the last of them
    reopen_at: dt.datetime | None = None  # open until then (None: closed)
    cooldown: float = 0.0  # seconds the circuit was last opened for
    probing: bool = False  # the one request of a half-open circuit is in flight

    @property
    def is_open(self) -> bool:
        return self.reopen_at is not None


class Destinations:
    """In-flight counts and circuits of every destination this process is sending to."""

    def __init__(
        self,
        *,
        per_destination: int,
        failures: int,
        cooldown: float,
        cooldown_cap: float,
        per_account: int | None = None,
    ):
        self.per_destination = max(1, per_destination)
        self.per_account = max(1, per_account) if per_account is not None else None
        self._failures = max(1, failures)
        self._cooldown = max(0.001, cooldown)
        self._cooldown_cap = max(self._cooldown, cooldown_cap)
        self.in_flight: dict[str, int] = {}
        self.account_in_flight: dict[int, int] = {}
        self.circuits: dict[str, Circuit] = {}

    @property
    def total_in_flight(self) -> int:
        """Requests in flight to every destination together."""
        return sum(self.in_flight.values())

    def room(self, destination: str, now: dt.datetime) -> int:
        """How many more requests may go to ``destination`` now."""
        busy = self.in_flight.get(destination, 0)
        circuit = self.circuits.get(destination)
        if circuit is None:
            return max(0, self.per_destination - busy)
        if not circuit.is_open:  # it failed lately: one at a time until it answers
            return 1 if busy == 0 else 0
        assert circuit.reopen_at is not None
        if now < circuit.reopen_at or circuit.probing:
            return 0
        return 1 if busy == 0 else 0  # the probe goes once the requests that failed are over

    def limited(self, now: dt.datetime) -> dict[str, int]:
        """The room of every destination whose room is not the full ``per_destination``."""
        self._forget_quiet(now)
        names = set(self.in_flight) | set(self.circuits)
        return {d: self.room(d, now) for d in names if self.room(d, now) < self.per_destination}

    def limited_accounts(self) -> dict[int, int]:
        """The room of every account with requests in flight (none without ``per_account``)."""
        if self.per_account is None:
            return {}
        cap = self.per_account
        return {a: max(0, cap - busy) for a, busy in self.account_in_flight.items()}

    def rooms(self, now: dt.datetime) -> Rooms:
        """The room of every destination and account, as a claim needs it."""
        return Rooms(
            per_destination=self.per_destination,
            destinations=self.limited(now),
            per_account=self.per_account,
            accounts=self.limited_accounts(),
        )

    def next_probe(self, now: dt.datetime) -> dt.datetime | None:
        """When the earliest open circuit may send its probe (None: no circuit waits)."""
        waiting = [
            c.reopen_at
            for c in self.circuits.values()
            if c.reopen_at is not None and not c.probing and c.reopen_at > now
        ]
        return min(waiting, default=None)

    def reopen_at(self, destination: str) -> dt.datetime | None:
        """Until when rows for ``destination`` are deferred (None: its circuit is closed)."""
        circuit = self.circuits.get(destination)
        return circuit.reopen_at if circuit is not None else None

    def started(self, destination: str, now: dt.datetime, *, account: int | None = None) -> None:
        """A request to ``destination`` (for ``account``, if given) is going out."""
        self.in_flight[destination] = self.in_flight.get(destination, 0) + 1
        if account is not None:
            self.account_in_flight[account] = self.account_in_flight.get(account, 0) + 1
        circuit = self.circuits.get(destination)
        if circuit is not None and circuit.reopen_at is not None and now >= circuit.reopen_at:
            circuit.probing = True

    def finished(
        self,
        destination: str,
        *,
        reached: bool | None,
        now: dt.datetime,
        account: int | None = None,
    ) -> tuple[Change, dt.datetime] | None:
        """A request ended: ``reached`` if the server answered at all, False on a transport
        failure, None if it says nothing of the server (refused URL, cancelled). The circuit's
        change, if any, with the time rows were (or are to be) deferred until."""
        _release(self.in_flight, destination)
        if account is not None:
            _release(self.account_in_flight, account)
        if reached is None:
            circuit = self.circuits.get(destination)
            if circuit is not None and circuit.probing:
                circuit.probing = False  # the next request is the probe
            return None
        circuit = self.circuits.setdefault(destination, Circuit())
        if reached:
            return self._close(destination, circuit)
        circuit.failures += 1
        circuit.failed_at = now
        if circuit.probing:
            circuit.probing = False
            return self._open(circuit, now, min(self._cooldown_cap, 2 * circuit.cooldown))
        if not circuit.is_open and circuit.failures >= self._failures:
            return self._open(circuit, now, self._cooldown)
        return None

    def _forget_quiet(self, now: dt.datetime) -> None:
        """Forget the closed circuits of destinations that failed, then were sent nothing for
        ``cooldown_cap``: the table keeps only destinations that matter now."""
        quiet = now - dt.timedelta(seconds=self._cooldown_cap)
        for destination, circuit in list(self.circuits.items()):
            if circuit.is_open or self.in_flight.get(destination, 0):
                continue
            if circuit.failed_at is not None and circuit.failed_at <= quiet:
                del self.circuits[destination]

    def _open(
        self, circuit: Circuit, now: dt.datetime, cooldown: float
    ) -> tuple[Change, dt.datetime]:
        circuit.cooldown = cooldown
        circuit.reopen_at = now + dt.timedelta(seconds=cooldown)
        return Change.OPENED, circuit.reopen_at

    def _close(self, destination: str, circuit: Circuit) -> tuple[Change, dt.datetime] | None:
        deferred_until = circuit.reopen_at
        # A healthy destination keeps no entry, so the table only holds troubled ones.
        del self.circuits[destination]
        if deferred_until is None:
            return None
        return Change.CLOSED, deferred_until


def _release(counts: dict[K, int], key: K) -> None:
    # Idle keys are dropped, so the tables only hold what is busy now.
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
