"""The Exotel v1 edge: routing, authentication, rate limits, the Calls endpoints and recordings.

Paths are matched without regard to letter case (``/v1/accounts/x/calls/connect`` works), a
``.json`` suffix selects JSON, and every error is a RestException in the endpoint's format.

``POST Calls/{CallSid}`` (beyond Exotel v1) controls a live call: ``Status=completed`` hangs it
up, ``Url=`` runs another app on it; calls/control.py reaches whichever process carries it.

A recording (``Recordings/{sid}.mp3`` or ``.wav``) is served to the account's Basic credentials
or to a signed, unexpired link (``?Expires=...&Signature=...``, see recordings.py), never
without one of the two.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ringflow.api import call_list
from ringflow.api.auth import authenticate
from ringflow.api.connect import app_in_account, parse_connect
from ringflow.api.errors import internal_error, rest_exception
from ringflow.api.params import Params, read_params
from ringflow.api.render import call_details, call_fields, error, respond
from ringflow.calls.callbacks import fmt_date
from ringflow.calls.status import Status
from ringflow.errors import InvalidRequest, NotFound, RateLimited, RingflowError
from ringflow.metrics import RATE_LIMITED, ROUTE_KEY
from ringflow.phone import display
from ringflow.recordings import CONTENT_TYPES, extension
from ringflow.storage import call_views
from ringflow.storage.models import Account

if TYPE_CHECKING:
    from ringflow.app import Services

log = logging.getLogger(__name__)

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (
        "POST",
        re.compile(r"^accounts/(?P<sid>[^/]+)/calls/connect(?P<json>\.json)?/?$", re.IGNORECASE),
        "connect",
    ),
    (
        "GET",
        re.compile(r"^accounts/(?P<sid>[^/]+)/calls(?P<json>\.json)?/?$", re.IGNORECASE),
        "list_calls",
    ),
    (
        "GET",
        # "connect" is the POST endpoint, not a call SID: a GET on it is a 405, not a 404.
        re.compile(
            r"^accounts/(?P<sid>[^/]+)/calls/(?!connect(?:\.json)?/?$)(?P<call>[a-z0-9]+)(?P<json>\.json)?/?$",
            re.IGNORECASE,
        ),
        "get_call",
    ),
    (
        "POST",
        re.compile(
            r"^accounts/(?P<sid>[^/]+)/calls/(?!connect(?:\.json)?/?$)(?P<call>[a-z0-9]+)(?P<json>\.json)?/?$",
            re.IGNORECASE,
        ),
        "update_call",
    ),
    (
        "GET",
        re.compile(
            r"^accounts/(?P<sid>[^/]+)/incomingphonenumbers(?P<json>\.json)?/?$", re.IGNORECASE
        ),
        "numbers",
    ),
    (
        "GET",
        re.compile(r"^accounts/(?P<sid>[^/]+)/activestreams(?P<json>\.json)?/?$", re.IGNORECASE),
        "active_streams",
    ),
]


_RECORDING = re.compile(
    r"^accounts/(?P<sid>[^/]+)/recordings/(?P<rec>[a-z0-9]+)\.(?P<ext>mp3|wav)$", re.IGNORECASE
)


async def count_request(services: Services, account: Account) -> dict[str, str]:
    """Count a request against the account's rate limit (shared by /v1 and /v2): its
    X-RateLimit headers, or RateLimited with Retry-After."""
    limit = account.rate_limit_per_minute or services.settings.rate_limit_per_minute
    decision = await services.rate_limiter.hit(f"api:{account.sid}", limit, 60.0)
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(decision.reset_after)),
    }
    if not decision.allowed:
        RATE_LIMITED.labels("api").inc()
        headers["Retry-After"] = str(decision.retry_after)
        raise RateLimited(
            f"Too many requests: the limit is {decision.limit} requests per minute", headers
        )
    return headers


class ExotelApi:
    """The ``/v1`` endpoints; ``services`` is the wired application (see app.py)."""

    def __init__(self, services: Services):
        self.s = services

    def routes(self) -> list[Route]:
        # Every method reaches dispatch, so a wrong one is a RestException in the endpoint's
        # format rather than Starlette's plain-text 405.
        methods = ["GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]
        return [Route("/v1/{path:path}", self.dispatch, methods=methods)]

    async def dispatch(self, request: Request) -> Response:
        path = request.path_params["path"]
        as_json = path.lower().rstrip("/").endswith(".json")
        method = "GET" if request.method == "HEAD" else request.method
        recording = _RECORDING.match(path)
        if recording:
            request.scope[ROUTE_KEY] = "exotel:recording"
            if method != "GET":
                return error(
                    405,
                    f"{request.method} is not allowed on this resource",
                    as_json=False,
                    headers={"Allow": "GET, HEAD"},
                )
            return await self.recording(request, recording)
        for route_method, pattern, handler in _ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                request.scope[ROUTE_KEY] = f"exotel:{handler}"
                return await self._handle(request, match, handler, bool(match["json"]))
        allowed = {route_method for route_method, pattern, _ in _ROUTES if pattern.match(path)}
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            return error(
                405,
                f"{request.method} is not allowed on this resource",
                as_json=as_json,
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        return rest_exception(
            request, NotFound(f"no such resource: {request.url.path}"), as_json=as_json
        )

    async def _handle(
        self, request: Request, match: re.Match[str], handler: str, as_json: bool
    ) -> Response:
        quota: dict[str, str] = {}
        try:
            account = await authenticate(
                self.s.accounts, self.s.failed_logins, request, match["sid"]
            )
            quota = await count_request(self.s, account)
            params = await read_params(request)
            response = await getattr(self, handler)(request, account, params, match, as_json)
        except RingflowError as exc:
            return rest_exception(request, exc, as_json=as_json, quota=quota)
        except Exception:  # a fault of ours (the database, a bug): still a RestException
            log.exception("%s %s failed", request.method, request.url.path)
            return internal_error(as_json=as_json, quota=quota)
        response.headers.update(quota)
        return response

    async def recording(self, request: Request, match: re.Match[str]) -> Response:
        """``GET Recordings/{sid}.mp3``: the file, to credentials or a signed link."""
        query = {k.lower(): v for k, v in request.query_params.items()}
        signed = "signature" in query or "expires" in query
        headers: dict[str, str] = {}
        try:
            if signed and "authorization" not in request.headers:
                self.s.recordings.check_link(
                    match["sid"], match["rec"], query.get("expires", ""), query.get("signature", "")
                )
                async with self.s.db.session() as session:
                    account = await self.s.accounts.get(session, match["sid"])
            else:
                account = await authenticate(
                    self.s.accounts, self.s.failed_logins, request, match["sid"]
                )
                headers = await count_request(self.s, account)
            row = await self.s.recordings.find(account.id, match["rec"])
            if row is None or extension(row.format) != match["ext"].lower():
                raise NotFound(f"Recording {match['rec']}.{match['ext']} not found")
            path = self.s.recordings.file(row)
            if not path.is_file():
                log.error("recording %s: file %s is missing", row.sid, path)
                raise NotFound(f"Recording {match['rec']}.{match['ext']} not found")
        except RingflowError as exc:
            return rest_exception(request, exc, as_json=False, quota=headers)
        except Exception:  # a fault of ours: still a RestException
            log.exception("%s %s failed", request.method, request.url.path)
            return internal_error(as_json=False, quota=headers)
        ext = extension(row.format)
        headers["Cache-Control"] = "private, no-store"
        headers["Content-Disposition"] = f'inline; filename="{row.sid}.{ext}"'
        return FileResponse(path, media_type=CONTENT_TYPES[ext], headers=headers)

    async def connect(
        self,
        request: Request,
        account: Account,
        params: Params,
        match: re.Match[str],
        as_json: bool,
    ) -> Response:
        """``POST Calls/connect``: place a call in the flow or the two-number shape."""
        call_request = await parse_connect(params, account, self.s)
        call, started = await self.s.dispatcher.submit(call_request)
        # Clients expect "in-progress" the moment a call is accepted (spec section 1).
        status = Status.IN_PROGRESS if started else Status.QUEUED
        body = {
            "Call": call_fields(
                call, account.sid, account.time_zone, json_uri=as_json, status=status
            )
        }
        log.info("call %s created (%s shape) for %s", call.sid, call.shape, account.sid)
        return respond(body, as_json=as_json)

    async def get_call(
        self,
        request: Request,
        account: Account,
        params: Params,
        match: re.Match[str],
        as_json: bool,
    ) -> Response:
        """``GET Calls/{CallSid}``, with ``Details`` when ``details=true``."""
        async with self.s.db.session() as session:
            call = await call_views.call_in_account(session, account.id, match["call"])
        if call is None:
            raise NotFound(f"Call {match['call']} not found")
        fields = call_fields(call, account.sid, account.time_zone, json_uri=as_json)
        if params.get_bool("details"):
            fields["Details"] = call_details(call)
        return respond({"Call": fields}, as_json=as_json)

    async def update_call(
        self,
        request: Request,
        account: Account,
        params: Params,
        match: re.Match[str],
        as_json: bool,
    ) -> Response:
        """``POST Calls/{CallSid}``: ``Status=completed`` hangs up, ``Url=`` redirects."""
        status, url = params.get("Status"), params.get("Url")
        if status and url:
            raise InvalidRequest("Status and Url cannot be given together: send one at a time")
        if not status and not url:
            raise InvalidRequest("Status or Url is a mandatory parameter")
        sid = match["call"].lower()
        if status:
            if status.strip().lower() != "completed":
                raise InvalidRequest(f"Status {status} is not supported: only completed (hang up)")
            call = await self.s.control.hang_up(sid, "api", account_id=account.id)
        else:
            app_id = await app_in_account(url or "", account, self.s)
            call = await self.s.control.redirect(sid, app_id, "api", account_id=account.id)
        log.info("call %s: %s requested by API", sid, "hangup" if status else "redirect")
        body = {"Call": call_fields(call, account.sid, account.time_zone, json_uri=as_json)}
        return respond(body, as_json=as_json)

    async def list_calls(
        self,
        request: Request,
        account: Account,
        params: Params,
        match: re.Match[str],
        as_json: bool,
    ) -> Response:
        """``GET Calls``: the bulk list with filters, sorting and cursors."""
        async with self.s.db.session() as session:
            page = await call_list.list_calls(session, account, params, base_path=request.url.path)
        calls = [
            call_fields(c, account.sid, account.time_zone, json_uri=as_json) for c in page.calls
        ]
        body = {
            "Metadata": page.metadata,
            "Calls": calls if as_json else [{"Call": c} for c in calls],
        }
        return respond(body, as_json=as_json)

    async def numbers(
        self,
        request: Request,
        account: Account,
        params: Params,
        match: re.Match[str],
        as_json: bool,
    ) -> Response:
        """``GET IncomingPhoneNumbers``: the account's ExoPhones."""
        async with self.s.db.session() as session:
            rows = await self.s.accounts.numbers(session, account.id)
        items = [
            {
                "IncomingPhoneNumber": {
                    "Sid": display(row.number),
                    "AccountSid": account.sid,
                    "PhoneNumber": display(row.number),
                    "FriendlyName": row.friendly_name or display(row.number),
                    "Capabilities": {"Voice": True, "Sms": False},
                    "DateCreated": fmt_date(row.created_at, account.time_zone),
                }
            }
            for row in rows
        ]
        return respond({"IncomingPhoneNumbers": items}, as_json=as_json)

    async def active_streams(
        self,
        request: Request,
        account: Account,
        params: Params,
        match: re.Match[str],
        as_json: bool,
    ) -> Response:
        """``GET ActiveStreams``: the account's streams to bots now, and its limit."""
        streams = self.s.streams
        body = {
            "ActiveStreamCount": await streams.active(account.sid),
            "ThrottleLimit": streams.limit(account.max_concurrent_streams),
        }
        return respond({"ActiveStreams": body} if not as_json else body, as_json=as_json)
