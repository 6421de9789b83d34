"""The one outbound HTTP client for customer URLs (status callbacks, applet fetches).

Errors::

    RingflowError
    ├── InvalidRequest      the URL is refused (scheme, host, private address): not retried
    └── FetchError          the request was made but failed (connection, protocol): retryable
        └── FetchTimeout    no complete answer within the timeout

Addresses are checked twice: ``validate_url`` checks the text (and literal IPs) without DNS, so
an API request with a bad URL is refused at once; then every connection the client opens
resolves the host itself, refuses private addresses and connects to exactly the address it
checked, so DNS rebinding between the check and the connect cannot reach an internal host. The
host the client connects to is read from the URL as the client itself reads it, so a URL that
two parsers read differently cannot slip a literal address past the check. Redirects are not
followed: a 3xx is the answer.

The client is aiohttp's: every call sends a callback, and one costs this client 0.26-0.44 ms of
CPU against 1.0-2.4 ms through httpx (``bench/outbound_http.py``, 1 to 16 requests at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Self

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ringflow import __version__
from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest, RingflowError

MAX_BODY = 1 << 20
USER_AGENT = f"ringflow/{__version__}"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class FetchError(RingflowError):
    """A request to a customer URL failed after it was allowed (connection, protocol, status)."""


class FetchTimeout(FetchError):
    """The customer's server did not answer in time."""


@dataclasses.dataclass(frozen=True)
class FetchResult:
    """What a customer's server answered (body cut at ``max_body`` bytes)."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive keys
    body: bytes
    truncated: bool
    url: str
    elapsed_ms: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


def validate_url(url: str, *, allow_private: bool, field: str = "StatusCallback") -> str:
    """Check a customer URL without DNS; return it (trimmed) or raise ``InvalidRequest``."""
    text = url.strip() if isinstance(url, str) else ""
    # Backslashes and control characters are where URL parsers disagree about the host.
    if not text or "\\" in text or any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise InvalidRequest(f"{field} must be an http or https URL")
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"{field} is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequest(f"{field} must be an http or https URL")
    host = parsed.host
    if not host:
        raise InvalidRequest(f"{field} must name a host")
    if not allow_private:
        if _is_localhost_name(host):
            raise _private(field, host)
        literal = _literal_ip(host)
        if literal is not None and not is_public_address(literal):
            raise _private(field, _shown(literal))
    return text


# NAT64 prefixes (RFC 6052, RFC 8215): a translator turns the low 32 bits into an IPv4 peer.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # its IPv4 may sit anywhere: refused whole
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible (RFC 4291 2.5.5.1)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches through: mapped, compatible, 6to4, NAT64, Teredo.

    A packet to such an address ends up at (or comes from) the IPv4 address inside it, so the
    address guard must judge that IPv4 address, not the IPv6 wrapper, which Python's
    ``is_global`` calls public for 6to4 (``2002:7f00:1::`` is 127.0.0.1) and NAT64.
    """
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # (server, client): the client is where packets go
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are IPv6's own
        return [low32]
    return []


def is_public_address(ip: IpAddress) -> bool:
    """True when ``ip`` is a globally routable unicast address, and so is any IPv4 inside it."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        inner = embedded_ipv4(ip)
        if inner:
            return all(is_public_address(v4) for v4 in inner)
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _shown(ip: IpAddress) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)):
        return f"{ip}, which reaches {inner[-1]}"
    return str(ip)


def _private(field: str, where: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field} points to a private address ({where}); "
        "set RINGFLOW_ALLOW_PRIVATE_URLS=1 to allow it"
    )


def _is_localhost_name(host: str) -> bool:
    # RFC 6761: localhost and *.localhost always mean this machine, whatever DNS says.
    host = host.rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost")


def _literal_ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # getaddrinfo accepts inet_aton forms too ("127.1", "2130706433", "0x7f.0.0.1").
    if all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


async def _getaddrinfo(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_addresses(
    resolve: Resolver, host: str, port: int, *, allow_private: bool
) -> list[str]:
    """The addresses ``host`` resolves to, all public unless ``allow_private``.

    OSError when it resolves to nothing; ``PrivateAddress`` when any address is private (an
    attacker may mix one public and one private address in one answer).
    """
    addresses = await resolve(host, port)
    if not addresses:
        raise OSError("no addresses")
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if not is_public_address(ip):
                raise PrivateAddress(_shown(ip))
    return addresses


def private_address_error(field: str, exc: Exception) -> InvalidRequest:
    """The InvalidRequest for a ``PrivateAddress`` met while connecting for ``field``."""
    return _private(field, getattr(exc, "address", str(exc)))


class PrivateAddress(Exception):
    """Raised by the resolver; OutboundHttp turns it into InvalidRequest with the field."""

    def __init__(self, address: str):
        super().__init__(address)
        self.address = address


class _GuardedResolver(AbstractResolver):
    """Resolves each host itself; only addresses it has checked reach the connector."""

    def __init__(self, resolver: Resolver, allow_private: bool):
        self._resolve = resolver
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await checked_addresses(
            self._resolve, host, port, allow_private=self._allow_private
        )
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


class OutboundHttp:
    """One aiohttp session for every request ringflow makes to a customer's server."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        max_body: int = MAX_BODY,
        user_agent: str = USER_AGENT,
        resolver: Resolver | None = None,
    ):
        self.allow_private = settings.allow_private_urls
        self.timeout = settings.callback_timeout
        self.max_body = max_body
        self._clock = clock
        self._user_agent = user_agent
        self._resolver = _GuardedResolver(resolver or _getaddrinfo, self.allow_private)
        self._session: aiohttp.ClientSession | None = None  # made in the loop that uses it

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver,
                use_dns_cache=False,  # every new connection resolves and checks again
                limit=100,
                keepalive_timeout=5,
                ssl=ssl.create_default_context(),
            )
            # trust_env=False: an HTTP(S)_PROXY in the environment would bypass the guard.
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self._user_agent},
                trust_env=False,
                auto_decompress=True,
            )
        return self._session

    def _target(self, url: str, params: Mapping[str, str] | None, field: str) -> URL:
        """The URL as the client reads it, with ``params`` added to its query. A literal
        address in it is checked here: the client connects to one without resolving it."""
        target = URL(url)
        if params:
            target = target.extend_query(params)
        host = target.raw_host or ""
        if not self.allow_private:
            try:
                ip = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                ip = None
            if ip is not None and not is_public_address(ip):
                raise _private(field, _shown(ip))
        return target

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        field: str = "URL",
        body_wait: float | None = None,
    ) -> FetchResult:
        """Send one request; raises InvalidRequest (refused), FetchError or FetchTimeout.

        ``body_wait``: seconds to wait for the response body once the status has come (None:
        as long as the whole exchange may take). Past it the result keeps the status and what
        body came, ``truncated``: for a callback the status is the answer, and a receiver that
        stalls after its 2xx has still acknowledged.
        """
        url = validate_url(url, allow_private=self.allow_private, field=field)
        target = self._target(url, params, field)
        limit = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        with self._clock.busy():
            try:
                # This bounds the whole exchange, so a server dribbling bytes cannot hold a
                # delivery slot forever.
                async with asyncio.timeout(limit):
                    return await self._send(method, target, content, headers, started, body_wait)
            except PrivateAddress as exc:
                raise _private(field, exc.address) from None
            except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
                raise FetchTimeout(f"no answer within {limit:g}s") from exc
            except aiohttp.ClientError as exc:
                raise FetchError(_failure(exc)) from exc

    async def _send(
        self,
        method: str,
        target: URL,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        started: float,
        body_wait: float | None,
    ) -> FetchResult:
        async with self._client().request(
            method,
            target,
            data=content,
            headers=headers,
            allow_redirects=False,
        ) as response:
            try:
                async with asyncio.timeout(body_wait):
                    body, truncated = await _read_capped(response, self.max_body)
            except (TimeoutError, aiohttp.ClientError):
                if body_wait is None:
                    raise
                body, truncated = b"", True  # the status came; the connection is not reused
            return FetchResult(
                status_code=response.status,
                headers=response.headers,
                body=body,
                truncated=truncated,
                url=str(response.url),
                elapsed_ms=round((time.perf_counter() - started) * 1000),
            )

    async def post(
        self,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
        timeout: float | None = None,
        field: str = "URL",
        body_wait: float | None = None,
    ) -> FetchResult:
        """POST ``content`` to ``url`` (``body_wait`` as for ``request``)."""
        return await self.request(
            "POST",
            url,
            content=content,
            headers=headers,
            timeout=timeout,
            field=field,
            body_wait=body_wait,
        )

    async def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        field: str = "URL",
    ) -> FetchResult:
        """GET ``url``."""
        return await self.request(
            "GET", url, params=params, headers=headers, timeout=timeout, field=field
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _failure(exc: aiohttp.ClientError) -> str:
    """What went wrong, for the attempt's record and the logs."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        return f"ConnectError: cannot connect to {exc.host}:{exc.port}: {reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False
