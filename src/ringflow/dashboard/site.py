"""The dashboard's frame: routes, who is signed in, CSRF, rendering, sign-in and sign-out.

Every page of an account lives under ``/a/{sid}/``. A signed-in account sees only its own SID
there (any other answers 404, as an unknown one does); an operator may open every account. A
page handler gets a ``Page``: the request, the session, who is viewing, the account (already
checked) and, for a POST, the form (its CSRF token already checked).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ringflow.api.errors import NO_SUCH_PAGE, refusal
from ringflow.dashboard import filters, logins
from ringflow.dashboard.auth import COOKIE, Session, SessionCodec, csrf_ok
from ringflow.errors import NotFound, RingflowError, Unavailable
from ringflow.recordings import load_secret
from ringflow.storage.models import Account

if TYPE_CHECKING:
    from ringflow.app import Services

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOGIN_LIMIT = 10  # failed or not, sign-ins per name per LOGIN_WINDOW
LOGIN_LIMIT_PER_CLIENT = 30
LOGIN_WINDOW = 300.0
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "media-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'"
    ),
}


@dataclasses.dataclass(frozen=True)
class Viewer:
    """Who is signed in: an account (``account`` set) or an operator."""

    kind: str
    name: str
    account: Account | None = None

    @property
    def operator(self) -> bool:
        return self.kind == "operator"


@dataclasses.dataclass
class Page:
    """One request to a dashboard page, its signed-in viewer and its account."""

    request: Request
    session: Session
    viewer: Viewer
    account: Account
    form: FormData | None = None

    @property
    def base(self) -> str:
        """The URL prefix of this account's pages."""
        return f"/a/{self.account.sid}"

    @property
    def fragment(self) -> bool:
        """A live-refresh request, answered with the refreshed part of the page only."""
        return self.request.query_params.get("fragment") == "1"

    def field(self, name: str, default: str = "", *, strip: bool = True) -> str:
        """A text field of the POSTed form (stripped unless told otherwise)."""
        value = self.form.get(name) if self.form is not None else None
        if not isinstance(value, str):
            return default
        return value.strip() if strip else value


Handler = Callable[["Dashboard", Page], Awaitable[Response]]


class Dashboard:
    """The web console, served by ``ringflow serve`` at ``/``."""

    def __init__(self, services: Services):
        self.s = services
        self.codec = SessionCodec(load_secret(services.settings))
        self.env = Environment(
            loader=PackageLoader("ringflow.dashboard", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        filters.install(self.env)
        self.secure_cookie = services.settings.base_url.startswith("https://")

    def routes(self) -> list[BaseRoute]:
        from ringflow.dashboard import apps, calls, campaigns, pages, sandbox

        a = "/a/{sid}"
        get, post = ["GET"], ["POST"]
        return [
            Route("/", self.home, methods=get),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/operator/login", self.operator_login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=post),
            Route("/operator", self.operator_page(pages.operator_accounts), methods=get),
            Route(a, self.page(pages.overview), methods=get),
            Route(a + "/", self.page(pages.overview), methods=get),
            Route(a + "/calls", self.page(calls.call_list), methods=get),
            Route(a + "/calls/{call_sid}", self.page(calls.call_page), methods=get),
            Route(a + "/calls/{call_sid}/hangup", self.page(calls.hang_up), methods=post),
            Route(a + "/streams", self.page(pages.streams), methods=get),
            Route(a + "/recordings/{recording}", self.page(calls.recording), methods=get),
            Route(a + "/apps", self.page(apps.app_list), methods=get),
            Route(a + "/apps/new", self.page(apps.new_app), methods=["GET", "POST"]),
            Route(a + "/apps/{app_id:int}", self.page(apps.edit_app), methods=["GET", "POST"]),
            Route(a + "/apps/{app_id:int}/try", self.page(apps.try_app), methods=post),
            Route(a + "/numbers", self.page(pages.numbers), methods=get),
            Route(a + "/keys", self.page(pages.keys), methods=["GET", "POST"]),
            Route(a + "/keys/{key_id:int}/revoke", self.page(pages.revoke_key), methods=post),
            Route(a + "/sandbox", self.page(sandbox.phones), methods=get),
            Route(a + "/sandbox/phones", self.page(sandbox.script_phone), methods=post),
            Route(
                a + "/sandbox/phones/{number}/clear", self.page(sandbox.clear_phone), methods=post
            ),
            Route(a + "/sandbox/call", self.page(sandbox.test_call), methods=post),
            Route(a + "/trunks", self.page(pages.trunks), methods=get),
            Route(a + "/campaigns", self.page(campaigns.campaign_list), methods=get),
            Route(
                a + "/campaigns/new",
                self.page(campaigns.new_campaign, files=1),
                methods=["GET", "POST"],
            ),
            Route(a + "/campaigns/progress", self.page(campaigns.list_progress), methods=get),
            Route(a + "/campaigns/{campaign}", self.page(campaigns.campaign_page), methods=get),
            Route(a + "/campaigns/{campaign}/progress", self.page(campaigns.progress), methods=get),
            Route(a + "/campaigns/{campaign}/{action}", self.page(campaigns.act), methods=post),
            Mount("/static", StaticFiles(directory=STATIC), name="dashboard-static"),
        ]

    # -- rendering ---------------------------------------------------------------------------

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """A template as an HTML response with the dashboard's security headers."""
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    def page_response(
        self, page: Page, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """A page of the account, with the frame's context (navigation, CSRF token, viewer)."""
        return self.render(
            template,
            status_code,
            account=page.account,
            viewer=page.viewer,
            csrf=page.session.csrf,
            base=page.base,
            path=page.request.url.path,
            **context,
        )

    def on_sandbox(self, account_sid: str) -> bool:
        """Whether the account's calls go to the sandbox (so the dashboard may place test
        calls): the sandbox carrier, or the sandbox beside SIP for accounts no trunk names."""
        return not self.s.carrier.over_sip(account_sid)

    def redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)

    def error(self, status: int, message: str, session: Session | None = None) -> HTMLResponse:
        return self.render(
            "error.html",
            status,
            status=status,
            message=message,
            csrf=session.csrf if session else "",
        )

    def _set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.codec.dump(session),
            max_age=self.codec.ttl,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure_cookie,
        )

    # -- who is signed in --------------------------------------------------------------------

    def _now(self) -> float:
        return self.s.clock.wall().timestamp()

    def _session(self, request: Request) -> tuple[Session, bool]:
        """The request's session, or a fresh signed-out one (True: it must be set)."""
        session = self.codec.load(request.cookies.get(COOKIE), self._now())
        return (session, False) if session is not None else (self.codec.new(self._now()), True)

    async def _viewer(self, session: Session) -> Viewer | None:
        """Who the session signs in, if its password is still the one set."""
        if session.kind == "account":
            found = await logins.account_hash(self.s.accounts, session.name)
            account = found[0] if found else None
            if account is not None and self.codec.current(session, account.dashboard_password_hash):
                return Viewer("account", account.sid, account)
        elif session.kind == "operator":
            stored = await logins.operator_hash(self.s.accounts, session.name)
            if self.codec.current(session, stored):
                return Viewer("operator", session.name)
        return None

    async def _account(self, viewer: Viewer, sid: str) -> Account:
        """The account a page names, if the viewer may see it; NotFound otherwise."""
        if viewer.account is not None:
            if viewer.account.sid != sid.lower():
                raise NotFound("no such page")
            return viewer.account
        async with self.s.db.session() as db:
            return await self.s.accounts.get(db, sid)

    def _signed_out(self, request: Request, session: Session, fresh: bool) -> Response:
        if request.method != "GET" or request.query_params.get("fragment") == "1":
            response: Response = self.error(401, "Your session has ended: sign in again.", session)
        else:
            response = self.redirect("/login?next=" + quote(request.url.path))
        if fresh:
            self._set_cookie(response, session)
        return response

    async def _checked_form(
        self, request: Request, session: Session, files: int = 0
    ) -> FormData | None:
        """The POSTed form if its CSRF token is this session's; None otherwise."""
        # The body is already capped (body_limits); only a page that takes an upload (the
        # campaign form's CSV) is given ``files`` and a multipart body.
        form = await request.form(max_fields=200, max_files=files, max_part_size=512 * 1024)
        return form if csrf_ok(session, form.get("csrf")) else None

    def page(self, handler: Handler, files: int = 0) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a page of an account: sign-in, account scoping, CSRF, errors (``files``: how
        many uploaded files its form may carry)."""

        async def endpoint(request: Request) -> Response:
            session, fresh = self._session(request)
            viewer = await self._viewer(session)
            if viewer is None:
                return self._signed_out(request, session, fresh)
            try:
                account = await self._account(viewer, request.path_params["sid"])
                form = None
                if request.method == "POST":
                    form = await self._checked_form(request, session, files)
                    if form is None:
                        return self.error(
                            403, "This form has expired: reload the page and try again.", session
                        )
                return await handler(self, Page(request, session, viewer, account, form))
            except RingflowError as exc:
                if (refused := refusal(exc)) is None:
                    raise
                return self.error(refused.status, refused.page_message, session)

        return endpoint

    def operator_page(
        self, handler: Callable[[Dashboard, Request, Session, Viewer], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap an operator's page: sign-in, and a 404 for anyone but an operator."""

        async def endpoint(request: Request) -> Response:
            session, fresh = self._session(request)
            viewer = await self._viewer(session)
            if viewer is None:
                return self._signed_out(request, session, fresh)
            if not viewer.operator:
                return self.error(404, NO_SUCH_PAGE, session)
            return await handler(self, request, session, viewer)

        return endpoint

    # -- sign-in and sign-out ----------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session, fresh = self._session(request)
        viewer = await self._viewer(session)
        if viewer is None:
            return self._signed_out(request, session, fresh)
        return self.redirect("/operator" if viewer.operator else f"/a/{viewer.name}/")

    async def login(self, request: Request) -> Response:
        return await self._sign_in(request, operator=False)

    async def operator_login(self, request: Request) -> Response:
        return await self._sign_in(request, operator=True)

    async def _sign_in(self, request: Request, *, operator: bool) -> Response:
        session, fresh = self._session(request)
        template = "login.html"
        context: dict[str, Any] = {
            "operator": operator,
            "next": request.query_params.get("next", ""),
        }
        if request.method == "GET":
            response: Response = self.render(template, csrf=session.csrf, **context)
            if fresh:
                self._set_cookie(response, session)
            return response
        form = await self._checked_form(request, session)
        if form is None:
            message = "This sign-in form had expired; it is fresh now, try again."
            response = self.render(template, 403, csrf=session.csrf, error=message, **context)
            if fresh:
                self._set_cookie(response, session)
            return response
        name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
        context.update(name=name, next=str(form.get("next", "")))
        refused = await self._limited(request, name, operator)
        if refused:
            return self.render(template, 429, csrf=session.csrf, error=refused, **context)
        if operator:
            stored = await logins.check_operator(self.s.accounts, name, password)
            signed = (logins.operator_name(name), stored) if stored else None
            home = "/operator"
        else:
            found = await logins.check_account(self.s.accounts, name, password)
            signed = (found[0].sid, found[1]) if found else None
            home = f"/a/{found[0].sid}/" if found else ""
        if signed is None:
            hint = (
                "Wrong operator name or password."
                if operator
                else "Wrong account SID or password. (An account's dashboard password is set "
                "with `ringflow accounts password SID`.)"
            )
            log.info("dashboard sign-in refused for %r", name[:64])
            return self.render(template, 401, csrf=session.csrf, error=hint, **context)
        fresh_session = self.codec.new(
            self._now(), "operator" if operator else "account", signed[0], signed[1]
        )
        log.info("dashboard sign-in: %s %s", fresh_session.kind, signed[0])
        response = self.redirect(_safe_next(context["next"], "/a/" if operator else home, home))
        self._set_cookie(response, fresh_session)
        return response

    async def _limited(self, request: Request, name: str, operator: bool) -> str | None:
        """Why this sign-in attempt is refused by the rate limit, or None."""
        client = request.client.host if request.client else "?"
        keys = [
            (
                f"dashboard-login:{'operator' if operator else 'account'}:{name.lower()[:64]}",
                LOGIN_LIMIT,
            ),
            (f"dashboard-login-client:{client}", LOGIN_LIMIT_PER_CLIENT),
        ]
        try:
            for key, limit in keys:
                decision = await self.s.rate_limiter.hit(key, limit, LOGIN_WINDOW)
                if not decision.allowed:
                    return f"Too many sign-in attempts: try again in {decision.retry_after} s."
        except Unavailable:
            return (
                "Sign-in is unavailable for a moment (the rate limiter is down); try again shortly."
            )
        return None

    async def logout(self, request: Request) -> Response:
        session, _ = self._session(request)
        if await self._checked_form(request, session) is None:
            return self.error(403, "This form has expired: reload the page and try again.", session)
        response = self.redirect("/login")
        self._set_cookie(response, self.codec.new(self._now()))
        return response


def _safe_next(target: str, allowed: str, home: str) -> str:
    """Where to go after signing in: a page under ``allowed`` on this server, else home."""
    if target.startswith(allowed) and "//" not in target and "\\" not in target:
        return target
    return home
