"""HTTP Basic authentication shared by the Exotel edge and the admin API."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from ringflow.accounts import Accounts
from ringflow.errors import AuthError, Forbidden
from ringflow.storage.models import Account

CHALLENGE = {"WWW-Authenticate": 'Basic realm="ringflow"'}


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


async def authenticate(accounts: Accounts, request: Request, path_sid: str) -> Account:
    """The account the credentials open, which must be the one the path names."""
    username, password = basic_credentials(request)
    account = await accounts.authenticate(username, password)
    if account is None:
        raise AuthError("Authentication failed: wrong API key or token")
    if account.sid != path_sid.lower():
        raise Forbidden(f"these credentials do not belong to account {path_sid}")
    return account
