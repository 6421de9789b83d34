"""Calls: the list (the bulk API's filters, sort and cursors), one call's page with a Hang up
button while it is live, and its recordings streamed to the signed-in account only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import FileResponse, Response

from ringflow.api import call_list as bulk
from ringflow.api.params import Params
from ringflow.dashboard import queries
from ringflow.errors import CallOver, InvalidRequest, NotFound
from ringflow.recordings import CONTENT_TYPES, extension

if TYPE_CHECKING:
    from ringflow.dashboard.site import Dashboard, Page

# The form's fields that are the bulk API's own parameters, passed through as they are.
PASSED = (
    "Status",
    "Direction",
    "From",
    "To",
    "PhoneNumber",
    "Sid",
    "Duration",
    "PageSize",
    "SortBy",
    "Before",
    "After",
    "DateCreated",
)


def list_params(page: Page) -> tuple[Params, dict[str, str]]:
    """The bulk list's parameters from the page's query, and the form's values to show again.

    The form's ``since``/``until`` dates become one DateCreated range, read in the account's
    time zone as the API reads it.
    """
    query = page.request.query_params
    pairs = [
        (name, value) for name, value in query.multi_items() if name in PASSED and value.strip()
    ]
    since, until = query.get("since", "").strip(), query.get("until", "").strip()
    dates = []
    if since:
        dates.append(f"gte:{since} 00:00:00")
    if until:
        dates.append(f"lte:{until} 23:59:59")
    if dates and not query.get("DateCreated"):
        pairs.append(("DateCreated", ";".join(dates)))
    shown = {name: query.get(name, "") for name in (*PASSED, "since", "until")}
    return Params(pairs), shown


async def call_list(site: Dashboard, page: Page) -> Response:
    """A page of the account's calls; live rows refresh while the first page is shown."""
    params, shown = list_params(page)
    error = None
    try:
        async with site.s.db.session() as db:
            result = await bulk.list_calls(db, page.account, params, base_path=f"{page.base}/calls")
        calls, meta = result.calls, result.metadata
    except InvalidRequest as exc:
        calls, meta, error = [], {"Total": 0, "PrevPageUri": None, "NextPageUri": None}, str(exc)
    first_page = not (shown["Before"] or shown["After"])
    refresh = page.request.url.path + "?" + _with_fragment(page.request.url.query)
    return site.page_response(
        page,
        "_calls_table.html" if page.fragment else "calls.html",
        status_code=400 if error else 200,
        calls=calls,
        meta=meta,
        error=error,
        form=shown,
        statuses=bulk.STATUSES,
        directions=bulk.DIRECTIONS,
        live=first_page and not error,
        refresh=refresh,
    )


def _with_fragment(query: str) -> str:
    parts = [p for p in query.split("&") if p and not p.startswith("fragment=")]
    return "&".join([*parts, "fragment=1"])


async def call_page(site: Dashboard, page: Page) -> Response:
    """One call: legs, timeline, callbacks with every attempt, recordings."""
    async with site.s.db.session() as db:
        view = await queries.call_view(db, page.account.id, page.request.path_params["call_sid"])
        app = None
        if view.call.app_id is not None:
            try:
                app = await site.s.accounts.app(db, page.account.id, view.call.app_id)
            except NotFound:
                app = None
    return site.page_response(
        page,
        "_call_body.html" if page.fragment else "call.html",
        view=view,
        call=view.call,
        app=app,
        start=view.events[0].at if view.events else view.call.created_at,
        refresh=f"{page.request.url.path}?fragment=1",
        done=page.request.query_params.get("done", ""),
    )


async def hang_up(site: Dashboard, page: Page) -> Response:
    """End one of the account's live calls (calls/control.py reaches the process carrying it)."""
    sid = page.request.path_params["call_sid"]
    try:
        call = await site.s.control.hang_up(sid, "dashboard", account_id=page.account.id)
    except CallOver:
        return site.redirect(f"{page.base}/calls/{sid}?done=over")
    return site.redirect(f"{page.base}/calls/{call.sid}?done=hungup")


async def recording(site: Dashboard, page: Page) -> Response:
    """A recording of the account, inline for the player or as a download (``?download=1``)."""
    name = page.request.path_params["recording"]
    sid, _, ext = name.partition(".")
    row = await site.s.recordings.find(page.account.id, sid)
    if row is None or (ext and ext.lower() != extension(row.format)):
        raise NotFound(f"Recording {name} not found")
    path = site.s.recordings.file(row)
    if not path.is_file():
        raise NotFound(f"Recording {name} not found")
    ext = extension(row.format)
    disposition = "attachment" if page.request.query_params.get("download") == "1" else "inline"
    headers = {
        "Cache-Control": "private, no-store",
        "Content-Disposition": f'{disposition}; filename="{row.sid}.{ext}"',
        "X-Content-Type-Options": "nosniff",
    }
    return FileResponse(path, media_type=CONTENT_TYPES[ext], headers=headers)
