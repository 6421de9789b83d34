"""Apps: the list, the editor (YAML or JSON, validated as the API validates, each problem shown
beside its line), the drawn graph, and a sandbox call to try an app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from ringflow.dashboard import editor
from ringflow.dashboard.graph import render_svg
from ringflow.dashboard.sandbox import DEFAULT_TEST_NUMBER, place_test_call
from ringflow.errors import AppInvalid
from ringflow.flows.applets import REGISTRY
from ringflow.flows.model import parse_app
from ringflow.storage.models import App

if TYPE_CHECKING:
    from ringflow.dashboard.site import Dashboard, Page

STARTER = """\
name: My first app
start: welcome
nodes:
  welcome:
    applet: greeting
    text: Hello, thanks for calling.
    next: bye
  bye:
    applet: hangup
"""
NOTICES = {"saved": "Saved. Calls placed from now on run this version."}


async def app_list(site: Dashboard, page: Page) -> Response:
    """The account's apps."""
    apps = await site.s.accounts.apps(page.account.sid)
    return site.page_response(page, "apps.html", apps=apps)


async def new_app(site: Dashboard, page: Page) -> Response:
    """An empty editor; a POST validates and saves the new app."""
    if page.form is None:
        return _editor(site, page, None, STARTER, "yaml")
    return await _save(site, page, None)


async def edit_app(site: Dashboard, page: Page) -> Response:
    """An app's graph and its editor; a POST saves a new version."""
    app = await _app(site, page)
    if page.form is None:
        fmt = "json" if page.request.query_params.get("format") == "json" else "yaml"
        return _editor(site, page, app, editor.dump(app.graph, fmt), fmt)
    return await _save(site, page, app)


async def try_app(site: Dashboard, page: Page) -> Response:
    """Call a sandbox phone with this app, as Calls/connect would, and watch the call."""
    app = await _app(site, page)
    sid = await place_test_call(site, page, page.field("number") or DEFAULT_TEST_NUMBER, app.id)
    return site.redirect(f"{page.base}/calls/{sid}")


async def _app(site: Dashboard, page: Page) -> App:
    async with site.s.db.session() as db:
        return await site.s.accounts.app(db, page.account.id, page.request.path_params["app_id"])


async def _save(site: Dashboard, page: Page, app: App | None) -> Response:
    text = page.field("source", strip=False).replace("\r\n", "\n")
    fmt = "json" if page.field("format") == "json" else "yaml"
    try:
        data = editor.load(text)
    except editor.SourceError as exc:
        return _editor(site, page, app, text, fmt, [str(exc)], exc.line)
    try:
        saved = await site.s.accounts.save_app(page.account.sid, data, app.id if app else None)
    except AppInvalid as exc:
        return _editor(site, page, app, text, fmt, exc.problems)
    return site.redirect(
        f"{page.base}/apps/{saved.id}?done=saved" + ("&format=json" if fmt == "json" else "")
    )


def _editor(
    site: Dashboard,
    page: Page,
    app: App | None,
    text: str,
    fmt: str,
    problems: list[str] | None = None,
    syntax_line: int | None = None,
) -> Response:
    lines, loose = editor.annotate(text, problems or [], syntax_line)
    graph_svg = None
    if app is not None:
        try:
            graph_svg = render_svg(parse_app(app.graph, REGISTRY))
        except AppInvalid:  # saved under older rules: still editable, not drawable
            graph_svg = None
    context: dict[str, Any] = {
        "app": app,
        "source": text,
        "fmt": fmt,
        "problems": problems or [],
        "lines": lines,
        "loose": loose,
        "graph_svg": graph_svg,
        "flow_url": f"http://my.exotel.com/{page.account.sid}/exoml/start_voice/{app.id}"
        if app
        else "",
        "test_number": DEFAULT_TEST_NUMBER,
        "notice": NOTICES.get(page.request.query_params.get("done", "")),
        "sandbox": site.on_sandbox(page.account.sid),
    }
    return site.page_response(page, "app.html", status_code=400 if problems else 200, **context)
