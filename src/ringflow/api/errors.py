"""The error boundary: how each error of ringflow's tree (errors.py) is answered over HTTP.

``ANSWERS`` is the one table from an error class to its HTTP status and the headers that go
with it. A subclass answers as its nearest listed ancestor (``CallOver`` as ``Conflict``,
``AppInvalid`` as ``InvalidRequest``, ``TrunkUnavailable`` as ``Unavailable``). Each face of the
server renders that one answer in its own form:

- the Exotel API (``/v1``): a ``RestException`` in the endpoint's format, XML or JSON;
- the admin API (``/admin/v1``): ``{"error": {"status": ..., "message": ...}}``;
- the dashboard: its error page, with the status and a message only (a Basic challenge there
  would open the browser's password prompt).

An error the table does not list (a ringflow error no request should meet, or a foreign one)
is a fault of ours: the Exotel API answers it as a 500 RestException, since its clients parse
every answer as one (spec section 2); the admin API and the dashboard leave it to Starlette's
500.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ringflow.api.auth import CHALLENGE
from ringflow.api.render import error
from ringflow.errors import (
    AuthError,
    CapacityExceeded,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    RingflowError,
    Unavailable,
)

log = logging.getLogger(__name__)

INTERNAL = "Internal server error"
NO_SUCH_PAGE = "There is no such page in this account."


@dataclasses.dataclass(frozen=True)
class Answer:
    """How one class of error is answered: its status, its headers, and what a dashboard
    page says instead of the error's own message (None: the message itself)."""

    status: int
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    page_message: str | None = None


ANSWERS: dict[type[RingflowError], Answer] = {
    InvalidRequest: Answer(400),
    AuthError: Answer(401, CHALLENGE),
    Forbidden: Answer(403),
    # A page never says whether the object exists in another account.
    NotFound: Answer(404, page_message=NO_SUCH_PAGE),
    Conflict: Answer(409),
    RateLimited: Answer(429),  # the error carries its own Retry-After
    CapacityExceeded: Answer(429),
    Unavailable: Answer(503, {"Retry-After": "5"}),
}


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One error as a request's answer: status, message and headers."""

    status: int
    message: str
    headers: dict[str, str]
    page_message: str


def refusal(exc: RingflowError) -> Refusal | None:
    """How ``exc`` is answered over HTTP, or None if it is a fault of ours."""
    for cls in type(exc).__mro__:
        answer = ANSWERS.get(cls)
        if answer is not None:
            headers = dict(answer.headers)
            if isinstance(exc, RateLimited):
                headers.update(exc.headers)
            message = str(exc)
            return Refusal(answer.status, message, headers, answer.page_message or message)
    return None


def rest_exception(
    request: Request, exc: RingflowError, *, as_json: bool, quota: Mapping[str, str] | None = None
) -> Response:
    """The Exotel API's answer to ``exc``; ``quota`` is the request's X-RateLimit headers, if
    it was counted."""
    refused = refusal(exc)
    if refused is None:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return internal_error(as_json=as_json, quota=quota)
    return error(
        refused.status,
        refused.message,
        as_json=as_json,
        headers=dict(quota or {}) | refused.headers,
    )


def internal_error(*, as_json: bool, quota: Mapping[str, str] | None = None) -> Response:
    """The Exotel API's 500, for a fault of ours (the caller logs it)."""
    return error(500, INTERNAL, as_json=as_json, headers=dict(quota or {}))


def admin_error(refused: Refusal) -> Response:
    """The admin API's JSON error body."""
    body = {"error": {"status": refused.status, "message": refused.message}}
    return JSONResponse(body, status_code=refused.status, headers=refused.headers)
