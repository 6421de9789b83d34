"""Dashboard sign-in: password hashes, the signed session cookie and its CSRF token.

Passwords are chosen by people, so unlike API tokens they get a slow, salted hash: scrypt
(N=2**14, r=8, p=1, about 16 MiB and tens of milliseconds), stored as
``scrypt$N$r$p$salt$hash`` so the cost can be raised later without breaking old hashes.
Comparisons are constant-time, and a sign-in for an unknown name still pays for one hash.

The session lives in a cookie only: JSON signed with a key derived from the server secret
(``RINGFLOW_SECRET_KEY`` or ``data_dir/secret_key``), HttpOnly and SameSite=Lax. It names who
signed in (an account or an operator), when (sessions last ``SESSION_TTL`` seconds of the
server's clock), a per-session CSRF token every form must echo, and a fingerprint of the password
hash, so setting a new password ends every session opened with the old one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets

from itsdangerous import BadSignature, URLSafeSerializer

COOKIE = "ringflow_session"
SESSION_TTL = 12 * 3600
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT = 16
_KEY_LEN = 32
_PURPOSE = b"ringflow dashboard sessions v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_password_rules(password: str) -> None:
    """ValueError unless ``password`` is acceptable as a dashboard password."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a dashboard password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a dashboard password may have at most {MAX_PASSWORD} characters")


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """The stored form of a dashboard password (salted scrypt)."""
    salt = secrets.token_bytes(_SALT)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=_KEY_LEN, maxmem=2**26
    )
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


# Verifying against this costs what a real check costs, for names that have no password.
_DUMMY = hash_password("ringflow-no-such-user")


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; a missing hash is checked (slowly) and fails."""
    target = stored or _DUMMY
    try:
        scheme, n, r, p, salt, digest = target.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        given = hashlib.scrypt(
            password[:MAX_PASSWORD].encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=2**26,
        )
    except (ValueError, TypeError):  # a malformed stored hash opens nothing
        return False
    return (
        hmac.compare_digest(given, expected)
        and stored is not None
        and len(password) <= MAX_PASSWORD
    )


@dataclasses.dataclass(frozen=True)
class Session:
    """What the cookie carries. ``kind`` is "account", "operator" or "" (not signed in)."""

    kind: str
    name: str  # the account SID or the operator's name
    csrf: str
    issued: int  # unix seconds of the server's clock
    version: str  # fingerprint of the password hash it was opened with


class SessionCodec:
    """Signs and reads session cookies, and fingerprints password hashes."""

    def __init__(self, secret: bytes, ttl: int = SESSION_TTL):
        key = hmac.new(secret, _PURPOSE, hashlib.sha256).digest()
        self._key = key
        self._serializer = URLSafeSerializer(key, salt="session")
        self.ttl = ttl

    def new(self, now: float, kind: str = "", name: str = "", password_hash: str = "") -> Session:
        """A fresh session (with a fresh CSRF token): signed out, or signed in as ``name``."""
        version = self.fingerprint(password_hash) if kind else ""
        return Session(kind, name, secrets.token_urlsafe(24), int(now), version)

    def dump(self, session: Session) -> str:
        return self._serializer.dumps(
            {
                "k": session.kind,
                "n": session.name,
                "c": session.csrf,
                "t": session.issued,
                "v": session.version,
            }
        )

    def load(self, value: str | None, now: float) -> Session | None:
        """The session in a cookie, or None when it is missing, forged or expired."""
        if not value or len(value) > 4096:
            return None
        try:
            data = self._serializer.loads(value)
            session = Session(
                str(data["k"]), str(data["n"]), str(data["c"]), int(data["t"]), str(data["v"])
            )
        except (BadSignature, KeyError, TypeError, ValueError, json.JSONDecodeError):
            return None
        if not session.issued <= now + 60 or now - session.issued > self.ttl:
            return None
        return session

    def fingerprint(self, password_hash: str) -> str:
        """A short keyed digest of a password hash; changes whenever the password does."""
        return hmac.new(self._key, password_hash.encode(), hashlib.sha256).hexdigest()[:16]

    def current(self, session: Session, password_hash: str | None) -> bool:
        """Whether the session was opened with the password that is set now."""
        if password_hash is None:
            return False
        return hmac.compare_digest(session.version, self.fingerprint(password_hash))


def csrf_ok(session: Session, given: object) -> bool:
    """Whether a form's ``csrf`` field is this session's token."""
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", "replace"))
