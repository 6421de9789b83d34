"""The admin JSON API (``/admin/v1``): apps, uploaded audio, sandbox phones, call timelines,
signed links to recordings and the limits of one account.

Authenticated like the Exotel edge (Basic, API key and token of the account in the path),
except changing an account's limits: that takes an operator's name and password (the
dashboard's operator sign-in), since limits protect the server from the account.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ringflow.accounts import LIMITS, parse_limit
from ringflow.api.auth import authenticate, basic_credentials
from ringflow.api.errors import admin_error, refusal
from ringflow.audio_files import MAX_AUDIO_BYTES, AudioUnavailable
from ringflow.errors import (
    AuthError,
    InvalidRequest,
    NotFound,
    RingflowError,
    Unavailable,
)
from ringflow.media.audio import wav_bytes
from ringflow.numeric import whole_number
from ringflow.phone import normalize
from ringflow.recordings import MAX_LINK_TTL
from ringflow.storage import call_views, timeline
from ringflow.storage.models import Account, App

if TYPE_CHECKING:
    from ringflow.app import Services

MAX_BODY = 256 * 1024
MAX_JSON_DEPTH = 32  # an app nests about six levels deep
TOO_DEEP = f"body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
UPLOADS_AT_ONCE = 4  # audio uploads read and decoded at once: each holds up to MAX_AUDIO_BYTES
UPLOAD_SLOT_WAIT = 2  # body timeouts an upload may wait for one of those
DEFAULT_LINK_TTL = 3600
PREFIX = "/admin/v1/accounts/{sid}"

Handler = Callable[[Request, Account], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def app_json(app: App) -> dict[str, Any]:
    """An app as the admin API shows it."""
    return {"id": app.id, "name": app.name, "version": app.version, "graph": app.graph}


class AdminApi:
    """Routes under /admin/v1."""

    def __init__(self, services: Services):
        self.s = services
        # Waiting uploads hold only what flow control buffers, not their whole body.
        self._uploads = asyncio.Semaphore(UPLOADS_AT_ONCE)

    def routes(self) -> list[Route]:
        return [
            Route(PREFIX, self._wrap(self.get_account), methods=["GET"]),
            Route(PREFIX, self._wrap(self.patch_account, operator=True), methods=["PATCH"]),
            Route(PREFIX + "/apps", self._wrap(self.list_apps), methods=["GET"]),
            Route(PREFIX + "/apps", self._wrap(self.create_app), methods=["POST"]),
            Route(PREFIX + "/apps/{app_id:int}", self._wrap(self.get_app), methods=["GET"]),
            Route(PREFIX + "/apps/{app_id:int}", self._wrap(self.update_app), methods=["PUT"]),
            Route(PREFIX + "/sandbox/phones/{number}", self._wrap(self.get_phone), methods=["GET"]),
            Route(PREFIX + "/sandbox/phones/{number}", self._wrap(self.put_phone), methods=["PUT"]),
            Route(
                PREFIX + "/sandbox/phones/{number}",
                self._wrap(self.delete_phone),
                methods=["DELETE"],
            ),
            Route(
                PREFIX + "/calls/{call_sid}/events", self._wrap(self.call_events), methods=["GET"]
            ),
            Route(PREFIX + "/audio", self._wrap(self.upload_audio), methods=["POST"]),
            Route(PREFIX + "/audio/{audio_id}", self._wrap(self.get_audio), methods=["GET"]),
            Route(
                PREFIX + "/recordings/{recording_sid}/link",
                self._wrap(self.recording_link),
                methods=["GET"],
            ),
        ]

    def _wrap(self, handler: Handler, operator: bool = False) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                if operator:
                    account = await self._as_operator(request, request.path_params["sid"])
                else:
                    account = await authenticate(
                        self.s.accounts, self.s.failed_logins, request, request.path_params["sid"]
                    )
                return await handler(request, account)
            except RingflowError as exc:
                if (refused := refusal(exc)) is None:
                    raise
                return admin_error(refused)

        return endpoint

    async def _as_operator(self, request: Request, sid: str) -> Account:
        """The account ``sid`` names, once Basic credentials of an operator are checked."""
        from ringflow.dashboard.logins import check_operator

        name, password = basic_credentials(request)
        async with self.s.failed_logins.attempt(request, name):
            if await check_operator(self.s.accounts, name, password) is None:
                await self.s.failed_logins.failed(request, name)
                raise AuthError(
                    "Authentication failed: changing an account's limits takes "
                    "an operator's name and password"
                )
        async with self.s.db.session() as session:
            return await self.s.accounts.get(session, sid)

    async def get_account(self, request: Request, account: Account) -> Response:
        """The account and its limits: its own (null: none set) and those that apply."""
        return JSONResponse(self._account_json(account))

    async def patch_account(self, request: Request, account: Account) -> Response:
        """Set some of the account's limits; null, "default" or "none" clears one."""
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidRequest("body must be a JSON object of limits")
        by_name = {limit.name: limit for limit in LIMITS}
        unknown = sorted(set(body) - set(by_name))
        if unknown:
            raise InvalidRequest(
                f"{unknown[0]} is not an account limit: the limits are " + ", ".join(by_name)
            )
        values = {
            by_name[name].column: parse_limit(value, name, by_name[name].low)
            for name, value in body.items()
        }
        return JSONResponse(
            self._account_json(await self.s.accounts.set_limits(account.sid, values))
        )

    def _account_json(self, account: Account) -> dict[str, Any]:
        own = {limit.name: getattr(account, limit.column) for limit in LIMITS}
        applied = {
            limit.name: getattr(self.s.settings, limit.setting)
            if own[limit.name] is None
            else own[limit.name]
            for limit in LIMITS
        }
        return {
            "sid": account.sid,
            "name": account.name,
            "time_zone": account.time_zone,
            "limits": own,
            "effective_limits": applied,
        }

    async def list_apps(self, request: Request, account: Account) -> Response:
        return JSONResponse(
            {"apps": [app_json(a) for a in await self.s.accounts.apps(account.sid)]}
        )

    async def create_app(self, request: Request, account: Account) -> Response:
        app = await self.s.accounts.save_app(account.sid, await _json_body(request))
        return JSONResponse(app_json(app), status_code=201)

    async def get_app(self, request: Request, account: Account) -> Response:
        async with self.s.db.session() as session:
            app = await self.s.accounts.app(session, account.id, request.path_params["app_id"])
        return JSONResponse(app_json(app))

    async def update_app(self, request: Request, account: Account) -> Response:
        app = await self.s.accounts.save_app(
            account.sid, await _json_body(request), app_id=request.path_params["app_id"]
        )
        return JSONResponse(app_json(app))

    async def get_phone(self, request: Request, account: Account) -> Response:
        number = normalize(request.path_params["number"], field="number")
        async with self.s.db.session() as session:
            row = await self.s.accounts.phone(session, account.sid, number)
        if row is None:
            raise NotFound(f"no script for {number} in this account")
        return JSONResponse({"number": number, "script": row.script})

    async def put_phone(self, request: Request, account: Account) -> Response:
        number, script = await self.s.accounts.script_phone(
            account.sid, request.path_params["number"], await _json_body(request)
        )
        return JSONResponse({"number": number, "script": script})

    async def delete_phone(self, request: Request, account: Account) -> Response:
        await self.s.accounts.clear_phone(account.sid, request.path_params["number"])
        return Response(status_code=204)

    async def call_events(self, request: Request, account: Account) -> Response:
        async with self.s.db.session() as session:
            call = await call_views.call_in_account(
                session, account.id, request.path_params["call_sid"]
            )
            if call is None:
                raise NotFound(f"Call {request.path_params['call_sid']} not found")
            rows = await timeline.steps(session, call.id)
            events = [{"at": e.at.isoformat(), "kind": e.kind, "data": e.data} for e in rows]
        return JSONResponse(
            {"call_sid": call.sid, "status": call.status, "reason": call.reason, "events": events}
        )

    async def upload_audio(self, request: Request, account: Account) -> Response:
        """Store a WAV or MP3 (any rate, any channels) as 8 kHz mono, for greetings' ``audio``."""
        async with self._upload_slot():
            with self.s.audio.spool() as spool:
                async for chunk in _body_chunks(request, MAX_AUDIO_BYTES):
                    spool.write(chunk)  # into the page cache: microseconds a chunk
                spool.flush()
                audio_id, prompt = await self.s.audio.save(account.sid, Path(spool.name))
        return JSONResponse(
            {
                "id": audio_id,
                "duration": round(prompt.duration, 3),
                "url": self._audio_url(account, audio_id),
            },
            status_code=201,
        )

    @contextlib.asynccontextmanager
    async def _upload_slot(self) -> AsyncIterator[None]:
        """One of ``UPLOADS_AT_ONCE`` slots, waited for at most ``UPLOAD_SLOT_WAIT`` body
        timeouts (503 after): an upload holds its slot for at most one body timeout of reading,
        and its decoding.

        The wait is not charged to the client's body deadline (the server stops reading a body
        its app holds back: ``http_connections``), so it is bounded here: a waiting upload holds
        a connection that the connection cap may not displace."""
        try:
            async with asyncio.timeout(UPLOAD_SLOT_WAIT * self.s.settings.http_body_timeout):
                await self._uploads.acquire()
        except TimeoutError:
            raise Unavailable("too many audio uploads at once: try again shortly") from None
        try:
            yield
        finally:
            self._uploads.release()

    async def get_audio(self, request: Request, account: Account) -> Response:
        """An uploaded audio as stored: an 8 kHz mono 16-bit WAV."""
        audio_id = request.path_params["audio_id"]
        try:
            prompt = await self.s.audio.stored(account.sid, audio_id)
        except AudioUnavailable as exc:
            raise NotFound(str(exc)) from None
        return Response(wav_bytes(prompt), media_type="audio/wav")

    def _audio_url(self, account: Account, audio_id: str) -> str:
        return f"{self.s.settings.base_url}/admin/v1/accounts/{account.sid}/audio/{audio_id}"

    async def recording_link(self, request: Request, account: Account) -> Response:
        """A signed URL that opens the recording without credentials for ``ttl`` seconds."""
        ttl = whole_number(
            request.query_params.get("ttl", str(DEFAULT_LINK_TTL)), "ttl", low=1, high=MAX_LINK_TTL
        )
        sid = request.path_params["recording_sid"]
        row = await self.s.recordings.find(account.id, sid)
        if row is None:
            raise NotFound(f"Recording {sid} not found")
        url, expires = self.s.recordings.signed_url(account.sid, row, ttl)
        expires_at = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat()
        return JSONResponse({"url": url, "expires": expires, "expires_at": expires_at})


async def _body_chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, refused once it grows past ``limit`` bytes.

    ``BodyLimits`` already refused a declared or streamed body past the route's cap before the
    handler ran; this keeps the handler's own limit true wherever it is mounted.
    """
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"request body too large: at most {limit} bytes")
        yield chunk


async def _capped_body(request: Request, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes."""
    return b"".join([chunk async for chunk in _body_chunks(request, limit)])


async def _json_body(request: Request) -> Any:
    body = await _capped_body(request, MAX_BODY)
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # the C scanner takes one stack frame per [ or {
        raise InvalidRequest(TOO_DEEP) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidRequest(TOO_DEEP)
    return value


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (walked without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_JSON_DEPTH:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest
