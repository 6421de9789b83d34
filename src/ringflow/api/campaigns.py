"""The Exotel v2 campaigns edge: ``/v2/accounts/{sid}/campaigns`` and contact lists.

JSON only, the same Basic credentials and rate limit as ``/v1``. Every answer, success or
error, is the v2 envelope: ``{"request_id", "method", "http_code", "response": [{"code",
"error_data", "status", "data"}]}``. Bodies may come wrapped (``{"campaigns": [{...}]}``) or
bare. Paths match without regard to letter case.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ringflow.api.auth import authenticate
from ringflow.api.connect import app_in_account
from ringflow.api.errors import INTERNAL, refusal
from ringflow.api.exotel import count_request
from ringflow.api.render import call_fields
from ringflow.campaigns import states
from ringflow.campaigns.service import CampaignView
from ringflow.campaigns.spec import unwrap
from ringflow.errors import InvalidRequest, RingflowError
from ringflow.metrics import ROUTE_KEY
from ringflow.phone import display
from ringflow.storage import call_views
from ringflow.storage.models import Account, ContactList, ContactUpload

if TYPE_CHECKING:
    from ringflow.app import Services

log = logging.getLogger(__name__)

MAX_JSON_BODY = 1024 * 1024  # a campaign of 5,000 numbers is about 100 KB
MAX_CSV_BODY = 16 * 1024 * 1024  # a list of 100,000 rows with a few columns
DEFAULT_PAGE, MAX_PAGE = 20, 100

_ID = r"(?P<id>[A-Za-z0-9]{1,64})"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(r"^accounts/(?P<sid>[^/]+)/" + path + r"/?$", re.IGNORECASE), handler)
    for method, path, handler in (
        ("POST", "campaigns", "create"),
        ("GET", "campaigns", "list"),
        ("GET", f"campaigns/{_ID}", "get"),
        ("PUT", f"campaigns/{_ID}", "update"),
        ("DELETE", f"campaigns/{_ID}", "delete"),
        ("GET", f"campaigns/{_ID}/call-details", "call_details"),
        ("POST", "contacts/csv-upload", "upload"),
        ("GET", f"csv-status/{_ID}", "upload_status"),
    )
]


def envelope(
    request: Request,
    code: int,
    data: Any = None,
    *,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A v2 answer: ``data`` on success, or an error ``message`` with status ``code``."""
    failed = message is not None
    error_data = None
    if failed:
        error_data = {"code": code, "message": HTTPStatus(code).phrase, "description": message}
    item = {
        "code": code,
        "error_data": error_data,
        "status": "failure" if failed else "success",
        "data": None if failed else data,
    }
    body = {
        "request_id": uuid.uuid4().hex,
        "method": request.method,
        "http_code": code,
        "response": [item],
    }
    return JSONResponse(body, status_code=code, headers=headers)


class CampaignsApi:
    """The ``/v2`` endpoints; ``services`` is the wired application (see app.py)."""

    def __init__(self, services: Services):
        self.s = services

    def routes(self) -> list[Route]:
        methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
        return [Route("/v2/{path:path}", self.dispatch, methods=methods)]

    async def dispatch(self, request: Request) -> Response:
        path = request.path_params["path"]
        method = "GET" if request.method == "HEAD" else request.method
        allowed = set()
        for route_method, pattern, handler in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            allowed.add(route_method)
            if route_method == method:
                request.scope[ROUTE_KEY] = f"campaigns:{handler}"
                return await self._handle(request, match, handler)
        if allowed:
            return envelope(
                request,
                405,
                message=f"{request.method} is not allowed here",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        return envelope(request, 404, message=f"no such resource: {request.url.path}")

    async def _handle(self, request: Request, match: re.Match[str], handler: str) -> Response:
        quota: dict[str, str] = {}
        try:
            account = await authenticate(
                self.s.accounts, self.s.failed_logins, request, match["sid"]
            )
            quota = await count_request(self.s, account)
            code, data = await getattr(self, handler)(request, account, match)
        except RingflowError as exc:
            refused = refusal(exc)
            if refused is None:
                log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
                return envelope(request, 500, message=INTERNAL, headers=quota)
            return envelope(
                request, refused.status, message=refused.message, headers=quota | refused.headers
            )
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return envelope(request, 500, message=INTERNAL, headers=quota)
        return envelope(request, code, data, headers=quota)

    # -- campaigns -----------------------------------------------------------------------------

    async def create(
        self, request: Request, account: Account, match: re.Match[str]
    ) -> tuple[int, Any]:
        body = unwrap(await _json(request))
        view = await self.s.campaigns.create(account, body, await self._app(account, body))
        return 200, self._campaign(account, view)

    async def list(
        self, request: Request, account: Account, match: re.Match[str]
    ) -> tuple[int, Any]:
        query = request.query_params
        status = query.get("status")
        if status:
            try:
                status = states.parse_status(status)
            except ValueError:
                raise InvalidRequest(
                    f"status must be one of {', '.join(states.STATUSES)}"
                ) from None
        limit, offset = _page(query)
        views, total = await self.s.campaigns.page(account, status or None, limit, offset)
        return 200, {
            "campaigns": [self._campaign(account, v) for v in views],
            "metadata": {"total": total, "limit": limit, "offset": offset},
        }

    async def get(
        self, request: Request, account: Account, match: re.Match[str]
    ) -> tuple[int, Any]:
        return 200, self._campaign(account, await self.s.campaigns.get(account, match["id"]))

    async def update(
        self, request: Request, account: Account, match: re.Match[str]
    ) -> tuple[int, Any]:
        body = unwrap(await _json(request))
        view = await self.s.campaigns.update(
            account, match["id"], body, await self._app(account, body)
        )
        return 200, self._campaign(account, view)

    async def delete(
        self, request: Request, account: Account, match: re.Match[str]
    ) -> tuple[int, Any]:
        what = await self.s.campaigns.delete(account, match["id"])
        return 200, {"id": match["id"].lower(), "status": what}

    async def call_details(
        self, request: Request, account: Account, match: re.Match[str]
    ) -> tuple[int, Any]:
        campaign_id = await self.s.campaigns.campaign_id(account, match["id"])
        limit, offset = _page(request.query_params)
        where = call_views.CallFilter(account_id=account.id, campaign_id=campaign_id)
        async with self.s.db.session() as session:
            total = await call_views.count_calls(session, where)
            calls = await call_views.campaign_calls(session, where, limit, offset)
        details = []
        for call in calls:
            fields = call_fields(call, account.sid, account.time_zone, json_uri=True)
            fields["CampaignAttempt"] = call.campaign_attempt
            details.append(fields)
        return 200, {
            "call_details": details,
            "metadata": {"total": total, "limit": limit, "offset": offset},
        }

    async def _app(self, account: Account, body: dict[str, Any]) -> int | None:
        url = body.get("url")
        if not url:
            return None
        if not isinstance(url, str):
            raise InvalidRequest("url must be a string")
        return await app_in_account(url, account, self.s, field="url")

    def _campaign(self, account: Account, view: CampaignView) -> dict[str, Any]:
        c = view.campaign
        tz = account.time_zone
        data: dict[str, Any] = {
            "id": c.sid,
            "account_sid": account.sid,
            "name": c.name,
            "type": "trans",
            "status": c.status,
            "pause_reason": c.pause_reason,
            "caller_id": display(c.caller_id),
            "url": (
                f"http://my.exotel.com/{account.sid}/exoml/start_voice/{c.app_id}"
                if c.app_id is not None
                else None
            ),
            "StreamType": c.stream_type,
            "retries": c.retries,
            "schedule": {"send_at": _time(c.send_at, tz), "end_at": _time(c.end_at, tz)},
            "calls_per_second": c.calls_per_second,
            "throttle": round(c.calls_per_second * 60, 3),
            "max_concurrent": c.max_concurrent,
            "calling_hours": c.calling_hours,
            "custom_field": c.custom_field,
            "machine_detection": c.machine_detection,
            "status_callback": c.status_callback,
            "call_status_callback": c.call_status_callback,
            "call_schedule_callback": c.call_schedule_callback,
            "date_created": _time(c.created_at, tz),
            "date_updated": _time(c.updated_at, tz),
            "start_time": _time(c.started_at, tz),
            "end_time": _time(c.ended_at, tz),
            "stats": view.stats,
            "uri": f"/v2/accounts/{account.sid}/campaigns/{c.sid}",
        }
        if view.lists:
            data["lists"] = list(view.lists)
        return data

    # -- contact lists -------------------------------------------------------------------------

    async def upload(
        self, request: Request, account: Account, match: re.Match[str]
    ) -> tuple[int, Any]:
        if not request.headers.get("content-type", "").lower().startswith("multipart/"):
            raise InvalidRequest(
                "send the CSV as multipart/form-data: list_name, and the file as file_name"
            )
        async with request.form(max_files=1, max_fields=10) as form:
            list_name, upload = form.get("list_name"), form.get("file_name")
            kind = str(form.get("type") or "static").strip().lower()
            if kind not in ("static", "dynamic"):
                raise InvalidRequest("type must be static or dynamic")
            if not isinstance(list_name, str) or not list_name.strip():
                raise InvalidRequest("list_name is required")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("file_name must be the CSV file (a multipart file field)")
            content = await upload.read()
            file_name = upload.filename or "upload.csv"
        row, contact_list = await self.s.campaigns.upload(account, list_name, file_name, content)
        return 200, _upload(account, row, contact_list)

    async def upload_status(
        self, request: Request, account: Account, match: re.Match[str]
    ) -> tuple[int, Any]:
        row, contact_list = await self.s.campaigns.upload_status(account, match["id"])
        return 200, _upload(account, row, contact_list)


def _upload(account: Account, row: ContactUpload, contact_list: ContactList) -> dict[str, Any]:
    return {
        "id": row.sid,
        "list_sid": contact_list.sid,
        "list_name": contact_list.name,
        "file_name": row.file_name,
        "status": "completed",
        "total": row.total,
        "succeeded": row.succeeded,
        "duplicates": row.duplicates,
        "failed": row.failed,
        "failures": row.failures,
        "list_size": contact_list.row_count,
        "date_created": _time(row.created_at, account.time_zone),
        "uri": f"/v2/accounts/{account.sid}/csv-status/{row.sid}",
    }


async def _json(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise InvalidRequest(f"request body too large (the limit is {MAX_JSON_BODY} bytes)")
    try:
        return json.loads(bytes(body) or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the body must be JSON: {exc}") from None


def _page(query: Any) -> tuple[int, int]:
    try:
        limit = int(query.get("limit") or DEFAULT_PAGE)
        offset = int(query.get("offset") or 0)
    except ValueError:
        raise InvalidRequest("limit and offset must be whole numbers") from None
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise InvalidRequest(f"limit must be 1 to {MAX_PAGE} and offset 0 or more")
    return limit, offset


def _time(when: Any, tz: str) -> str | None:
    return when.astimezone(ZoneInfo(tz)).isoformat() if when is not None else None
