"""Digest access authentication for SIP (RFC 2617, RFC 7616, RFC 8760).

A 401 carries ``WWW-Authenticate`` and is answered with ``Authorization``; a 407 carries
``Proxy-Authenticate`` and is answered with ``Proxy-Authorization``. ``Challenge.parse`` and
``Authorization.parse`` pair with ``str``. ``Authenticator`` holds one account's credentials,
answers challenges (MD5, SHA-256 and their ``-sess`` variants, ``qop=auth``/``auth-int`` with a
nonce count and cnonce, ``opaque`` echoed), and decides when to give up: a second challenge for
a realm we already answered means the password is wrong, unless it says ``stale=true``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Callable

from ringflow.sip.errors import SipParseError
from ringflow.sip.headers import TOKEN, quote, split_outside
from ringflow.sip.message import Request, Response

HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
MAX_NONCES = 64  # nonce counts remembered per account
CHALLENGE_HEADERS = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


def _parse_params(text: str, what: str) -> tuple[str, dict[str, str]]:
    """``Digest a="b", c=d`` -> ("Digest", {"a": "b", "c": "d"}) with lower-case names."""
    scheme, _, rest = text.strip().partition(" ")
    if not TOKEN.match(scheme):
        raise SipParseError(what, f"bad auth scheme {scheme[:20]!r}")
    params: dict[str, str] = {}
    for item in split_outside(rest, ","):
        if not item.strip():
            continue
        name, eq, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq or not TOKEN.match(name):
            raise SipParseError(what, f"bad auth parameter {item.strip()[:40]!r}")
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                raise SipParseError(what, f"unterminated quoted value for {name}")
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif not TOKEN.match(value):
            raise SipParseError(what, f"bad value for {name}")
        params[name] = value
    return scheme, params


@dataclasses.dataclass(frozen=True)
class Challenge:
    """A Digest challenge from ``WWW-Authenticate`` or ``Proxy-Authenticate``."""

    realm: str
    nonce: str
    algorithm: str | None = None  # as the server spelled it; None means MD5
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False

    @classmethod
    def parse(cls, text: str) -> Challenge:
        """Parse a Digest challenge; other schemes raise ``SipParseError``."""
        scheme, p = _parse_params(text, "challenge")
        if scheme.lower() != "digest":
            raise SipParseError("challenge", f"unsupported scheme {scheme[:20]!r}")
        if "realm" not in p or "nonce" not in p:
            raise SipParseError("challenge", "realm and nonce are required")
        qop = tuple(q.strip().lower() for q in p.get("qop", "").split(",") if q.strip())
        return cls(
            p["realm"],
            p["nonce"],
            p.get("algorithm"),
            qop,
            p.get("opaque"),
            p.get("stale", "").lower() == "true",
            p.get("userhash", "").lower() == "true",
        )

    def __str__(self) -> str:
        parts = [f"realm={quote(self.realm)}", f"nonce={quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        if self.qop:
            parts.append(f"qop={quote(','.join(self.qop))}")
        if self.algorithm:
            parts.append(f"algorithm={self.algorithm}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)

    @property
    def hash_name(self) -> str | None:
        """hashlib name of the algorithm, or None when we do not support it."""
        base = (self.algorithm or "MD5").upper().removesuffix("-SESS")
        return HASHES.get(base)


@dataclasses.dataclass(frozen=True)
class Authorization:
    """Credentials for ``Authorization`` or ``Proxy-Authorization``."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: int | None = None
    userhash: bool = False

    @classmethod
    def parse(cls, text: str) -> Authorization:
        """Parse an Authorization value (used to verify what we send)."""
        scheme, p = _parse_params(text, "credentials")
        if scheme.lower() != "digest":
            raise SipParseError("credentials", f"unsupported scheme {scheme[:20]!r}")
        try:
            nc = int(p["nc"], 16) if "nc" in p else None
            return cls(
                p["username"],
                p["realm"],
                p["nonce"],
                p["uri"],
                p["response"],
                p.get("algorithm"),
                p.get("cnonce"),
                p.get("opaque"),
                p.get("qop"),
                nc,
                p.get("userhash", "").lower() == "true",
            )
        except (KeyError, ValueError) as exc:
            raise SipParseError("credentials", f"missing or bad {exc}") from exc

    def __str__(self) -> str:
        parts = [
            f"username={quote(self.username)}",
            f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce)}",
            f"uri={quote(self.uri)}",
            f"response={quote(self.response)}",
        ]
        if self.algorithm:
            parts.append(f"algorithm={self.algorithm}")
        if self.cnonce is not None:
            parts.append(f"cnonce={quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        if self.qop:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def digest_response(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    *,
    qop: str | None,
    cnonce: str | None,
    nc: int | None,
    body: bytes = b"",
) -> str:
    """The ``response`` value: KD(H(A1), nonce:nc:cnonce:qop:H(A2)) (RFC 7616 3.4.1)."""
    name = challenge.hash_name
    if name is None:
        raise SipParseError("challenge", f"unsupported algorithm {challenge.algorithm!r}")

    def h(data: str | bytes) -> str:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        return hashlib.new(name, raw).hexdigest()

    ha1 = h(f"{username}:{challenge.realm}:{password}")
    if (challenge.algorithm or "").lower().endswith("-sess"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    a2 = f"{method}:{uri}" if qop != "auth-int" else f"{method}:{uri}:{h(body)}"
    if qop is None:
        return h(f"{ha1}:{challenge.nonce}:{h(a2)}")  # RFC 2069 compatibility
    return h(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{h(a2)}")


def answer(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    *,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> Authorization:
    """Credentials answering one challenge."""
    qop = "auth" if "auth" in challenge.qop else "auth-int" if "auth-int" in challenge.qop else None
    user = username
    if challenge.userhash and challenge.hash_name:
        raw = f"{username}:{challenge.realm}".encode()
        user = hashlib.new(challenge.hash_name, raw).hexdigest()
    response = digest_response(
        challenge,
        username,
        password,
        method,
        uri,
        qop=qop,
        cnonce=cnonce if qop else None,
        nc=nc if qop else None,
        body=body,
    )
    return Authorization(
        user,
        challenge.realm,
        challenge.nonce,
        uri,
        response,
        challenge.algorithm,
        cnonce if qop else None,
        challenge.opaque,
        qop,
        nc if qop else None,
        challenge.userhash,
    )


class Authenticator:
    """One account's credentials, answering 401/407 challenges for the requests it is shown."""

    def __init__(
        self, username: str, password: str, cnonce: Callable[[], str] = lambda: secrets.token_hex(8)
    ):
        self.username = username
        self._password = password
        self._cnonce = cnonce
        self._counts: dict[str, int] = {}  # nonce -> nonce count used so far

    def respond(self, request: Request, response: Response) -> list[tuple[str, str]] | None:
        """Credential header lines for retrying ``request``, or None to give up.

        Giving up is decided from the challenged request itself: if it already carried our
        credentials for the realm, the password was refused, unless the server says the nonce
        was merely stale (and the new nonce differs from the one we used).
        """
        names = CHALLENGE_HEADERS.get(response.status)
        if names is None:
            return None
        chosen: dict[str, Challenge] = {}
        for value in response.headers.get_all(names[0]):
            try:
                challenge = Challenge.parse(value)
            except SipParseError:
                continue  # another scheme, or one we cannot read: try the next header
            if challenge.hash_name and challenge.realm not in chosen:
                chosen[challenge.realm] = challenge  # RFC 8760: the first supported one
        if not chosen:
            return None
        sent = _sent_nonces(request, names[1])
        for realm, challenge in chosen.items():
            if realm in sent and (not challenge.stale or sent[realm] == challenge.nonce):
                return None
        lines = []
        for challenge in chosen.values():
            nc = self._counts.pop(challenge.nonce, 0) + 1
            self._counts[challenge.nonce] = nc
            if len(self._counts) > MAX_NONCES:
                del self._counts[next(iter(self._counts))]  # forget the oldest nonce
            auth = answer(
                challenge,
                self.username,
                self._password,
                request.method,
                str(request.uri),
                cnonce=self._cnonce(),
                nc=nc,
                body=request.body,
            )
            lines.append((names[1], str(auth)))
        return lines


def _sent_nonces(request: Request, header: str) -> dict[str, str]:
    """realm -> nonce of the credentials ``request`` already carried."""
    out = {}
    for value in request.headers.get_all(header):
        try:
            auth = Authorization.parse(value)
        except SipParseError:
            continue
        out[auth.realm] = auth.nonce
    return out
