"""HTTP Basic authentication shared by the Exotel edge and the admin API.

Failed logins are throttled per client address and per key id (``FailedLogins``), in memory or
through Redis like the request rate limit, and refused with 429 and Retry-After before their
credentials are looked up, so a flood of wrong tokens costs no database work:

- a client address with too many failures in a minute waits, whatever key it tries;
- a key id with too many failures in a minute (a guess spread over many addresses) waits only for
  addresses that have themselves failed lately: each guessing address gets one try, and the
  key's owner, whose address has not failed, is not locked out by strangers.

Successful logins are never counted. A client address is an IPv4 address or an IPv6 /64 (one
subscriber's network: rotating through it must not buy fresh attempts). Failures are counted
after the lookup, so to bound what one burst of concurrent guesses costs before the first of
them is counted, an address has at most ``MAX_CHECKS_AT_ONCE`` credential checks in flight in
this process, and one while it has failures in the window.

When the counters cannot be read (Redis down) the limiter raises ``Unavailable``: a login is
refused, never let through unthrottled.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
from collections.abc import AsyncIterator

from starlette.requests import Request

from ringflow.accounts import Accounts
from ringflow.errors import AuthError, Forbidden, RateLimited
from ringflow.metrics import RATE_LIMITED
from ringflow.ratelimit import Decision, RateLimiter
from ringflow.storage.models import Account

CHALLENGE = {"WWW-Authenticate": 'Basic realm="ringflow"'}
FAILURE_WINDOW = 60.0  # seconds over which failed logins are counted
MAX_KEY_ID = 64  # characters of a presented key id kept as a throttle key
MAX_CHECKS_AT_ONCE = 32  # credential checks in flight per client address (1 once it failed)


class FailedLogins:
    """Counts failed logins per client address and per key id; refuses those over the limit."""

    def __init__(self, limiter: RateLimiter, per_client: int, per_key: int):
        self.limiter = limiter
        self.per_client = per_client
        self.per_key = per_key
        self._checking: dict[str, int] = {}  # client -> credential checks in flight

    def _buckets(self, request: Request, key_id: str) -> tuple[str, str]:
        return (
            f"api-login-fail:client:{client_of(request)}",
            f"api-login-fail:key:{key_id.lower()[:MAX_KEY_ID]}",
        )

    @contextlib.asynccontextmanager
    async def attempt(self, request: Request, key_id: str) -> AsyncIterator[None]:
        """Admit one credential check (RateLimited if the client or key is over its limit)."""
        failed_lately = await self.check(request, key_id)
        client = client_of(request)
        at_once = self._checking.get(client, 0)
        if at_once >= (1 if failed_lately else MAX_CHECKS_AT_ONCE):
            RATE_LIMITED.labels("login_burst").inc()
            raise RateLimited(
                "Too many logins at once from this address: try again in 1 s", {"Retry-After": "1"}
            )
        self._checking[client] = at_once + 1
        try:
            yield
        finally:
            if (left := self._checking[client] - 1) > 0:
                self._checking[client] = left
            else:
                del self._checking[client]

    async def check(self, request: Request, key_id: str) -> bool:
        """RateLimited if the client, or the key id for a client that failed too, is over;
        else whether the client has failed lately."""
        client_bucket, key_bucket = self._buckets(request, key_id)
        client = await self.limiter.peek(client_bucket, self.per_client, FAILURE_WINDOW)
        if not client.allowed:
            raise _refused("from this address", client, "login_client")
        if client.remaining == self.per_client:
            return False
        key = await self.limiter.peek(key_bucket, self.per_key, FAILURE_WINDOW)
        if not key.allowed:
            raise _refused("for this key", key, "login_key")
        return True

    async def failed(self, request: Request, key_id: str) -> None:
        """Count one failed login for the client and the key id."""
        client_bucket, key_bucket = self._buckets(request, key_id)
        await self.limiter.hit(client_bucket, self.per_client, FAILURE_WINDOW)
        await self.limiter.hit(key_bucket, self.per_key, FAILURE_WINDOW)


def client_of(request: Request) -> str:
    """The address failures are counted under: the IPv4 address, or the IPv6 /64."""
    host = request.client.host if request.client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def basic_credentials(request: Request) -> tuple[str, str]:
    """(username, password) from the Authorization header, or AuthError."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise AuthError("Authentication required: HTTP Basic with your API key and token")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("Authentication failed: malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise AuthError("Authentication failed: malformed Basic credentials")
    return username, password


def _refused(whose: str, decision: Decision, limit: str) -> RateLimited:
    RATE_LIMITED.labels(limit).inc()
    return RateLimited(
        f"Too many failed logins {whose}: try again in {decision.retry_after} s",
        {"Retry-After": str(decision.retry_after)},
    )


async def authenticate(
    accounts: Accounts, failures: FailedLogins, request: Request, path_sid: str
) -> Account:
    """The account the credentials open, which must be the one the path names."""
    username, password = basic_credentials(request)
    async with failures.attempt(request, username):
        account = await accounts.authenticate(username, password)
        if account is None:
            await failures.failed(request, username)
            raise AuthError("Authentication failed: wrong API key or token")
    if account.sid != path_sid.lower():
        raise Forbidden(f"these credentials do not belong to account {path_sid}")
    return account
