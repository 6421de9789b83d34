"""Campaigns: the account's list with each campaign's progress, a form that creates one from a
CSV upload, a campaign's page (its settings, progress, Pause / Resume / Stop, its calls), and
the small JSON both pages poll to move their progress bars without a reload.

Everything goes through ``services.campaigns``, as the v2 API does, so a campaign made here is
checked, paced and driven exactly as one made by the API. The CSV becomes a contact list of its
own (``Campaigns.upload``), named after the campaign with a random suffix: an upload never adds
rows to an older list that another campaign calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, Response

from ringflow.campaigns import states
from ringflow.campaigns.service import CampaignView, new_sid
from ringflow.campaigns.spec import parse_create
from ringflow.dashboard.campaign_form import DAY_CHOICES, DETECTION_CHOICES, read_form
from ringflow.errors import Conflict, InvalidRequest, NotFound
from ringflow.numeric import as_whole
from ringflow.storage import call_views
from ringflow.storage.models import Account, App, Call, ContactUpload

if TYPE_CHECKING:
    from ringflow.dashboard.site import Dashboard, Page

PAGE_SIZE = 20  # campaigns a page
CALLS_PAGE = 50  # calls a page on a campaign's page
REFRESH_MS = 1500
MAX_OFFSET = 10**9
# The bars in the order people read them: outcomes first, then what is still to come.
BARS = (
    (states.ANSWERED, "completed"),
    (states.BUSY, "busy"),
    (states.NO_ANSWER, "no-answer"),
    (states.FAILED, "failed"),
    (states.CALLING, "in progress"),
    (states.RETRYING, "retrying"),
    (states.PENDING, "pending"),
)
TONES = {
    states.CREATED: "wait",
    states.SCHEDULED: "wait",
    states.IN_PROGRESS: "live",
    states.PAUSED: "warn",
    states.COMPLETED: "ok",
    states.ARCHIVED: "muted",
}
REASONS = {states.BY_USER: "by request", states.BY_HOURS: "outside its calling hours"}
ACTIONS = {"pause": "pause", "resume": "resume", "stop": "complete"}
NOTICES = {
    "pause": "Paused: no new calls start; calls already up go on to their end.",
    "resume": "Resumed.",
    "stop": "Stopped: numbers not called yet are settled as failed; calls up go on.",
}
# Stands in for the uploaded list while the form is checked before anything is stored.
_PLACEHOLDER_LIST = "0" * 32
JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def actions(campaign: Any) -> list[str]:
    """The buttons a campaign in its state offers (the service refuses the others)."""
    status, found = campaign.status, []
    if status in (*states.NOT_STARTED, states.IN_PROGRESS) or (
        status == states.PAUSED and campaign.pause_reason != states.BY_USER
    ):
        found.append("pause")
    if status == states.PAUSED:
        found.append("resume")
    if status not in (states.COMPLETED, states.ARCHIVED):
        found.append("stop")
    return found


def live(view: CampaignView) -> bool:
    """Whether the campaign's progress can still change (so its page keeps polling)."""
    stats = view.stats
    return view.campaign.status in states.LIVE or bool(stats[states.CALLING])


def progress_of(view: CampaignView) -> dict[str, Any]:
    """A campaign's status and counts per state, as the pages' script reads them."""
    stats = view.stats
    return {
        "id": view.campaign.sid,
        "status": view.campaign.status,
        "pause_reason": view.campaign.pause_reason,
        "reason": _reason(view.campaign),
        "tone": TONES.get(view.campaign.status, "muted"),
        "total": stats["total"],
        "attempts": stats["attempts"],
        "counts": {state: stats[state] for state, _ in BARS},
        "actions": actions(view.campaign),
        "live": live(view),
    }


def _reason(campaign: Any) -> str:
    if campaign.status != states.PAUSED:
        return ""
    return REASONS.get(campaign.pause_reason or "", "")


def _context() -> dict[str, Any]:
    return {
        "bars": BARS,
        "tones": TONES,
        "reasons": REASONS,
        "actions_of": actions,
        "refresh_ms": REFRESH_MS,
    }


def _offset(page: Page) -> int:
    return as_whole(page.request.query_params.get("offset", "0"), 0, MAX_OFFSET) or 0


# -- the list -------------------------------------------------------------------------------


async def campaign_list(site: Dashboard, page: Page) -> Response:
    """The account's campaigns, newest first, a page at a time, with their progress."""
    offset = _offset(page)
    views, total = await site.s.campaigns.page(page.account, None, PAGE_SIZE, offset)
    return site.page_response(
        page,
        "campaigns.html",
        views=views,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        live=any(live(v) for v in views),
        progress_url=f"{page.base}/campaigns/progress?offset={offset}",
        **_context(),
    )


async def list_progress(site: Dashboard, page: Page) -> Response:
    """The progress of the campaigns on one page of the list, as JSON."""
    views, _ = await site.s.campaigns.page(page.account, None, PAGE_SIZE, _offset(page))
    return JSONResponse({"campaigns": [progress_of(v) for v in views]}, headers=JSON_HEADERS)


# -- creating one ---------------------------------------------------------------------------


async def new_campaign(site: Dashboard, page: Page) -> Response:
    """The create form; a POST uploads the CSV as a list and starts the campaign on it."""
    if page.form is None:
        return await _form(site, page)
    on_status = [str(v) for v in page.form.getlist("on_status")]
    fields = {k: v for k, v in page.form.items() if isinstance(v, str)}
    upload: ContactUpload | None = None
    try:
        asked = read_form(fields, on_status, page.account.sid)
        async with site.s.db.session() as db:
            try:
                await site.s.accounts.app(db, page.account.id, asked.app_id)
            except NotFound:
                raise InvalidRequest("App: choose one of this account's apps") from None
        # Everything the form says is checked before the CSV is stored as a list.
        parse_create(
            {**asked.body, "lists": [_PLACEHOLDER_LIST]},
            allow_private=site.s.settings.allow_private_urls,
        )
        name, content = await _csv(page)
        list_name = f"{asked.body.get('name') or 'campaign'} {new_sid()[:8]}"
        upload, contact_list = await site.s.campaigns.upload(page.account, list_name, name, content)
        view = await site.s.campaigns.create(
            page.account, {**asked.body, "lists": [contact_list.sid]}, asked.app_id
        )
    except InvalidRequest as exc:
        return await _form(site, page, str(exc), upload)
    finally:
        await page.form.close()  # the spooled CSV, whether or not it was read
    return site.redirect(f"{page.base}/campaigns/{view.campaign.sid}?upload={upload.sid}")


async def _csv(page: Page) -> tuple[str, bytes]:
    """The uploaded CSV's file name and bytes (the body is capped by body_limits)."""
    file = page.form.get("csv") if page.form is not None else None
    if not isinstance(file, UploadFile) or not file.filename:
        raise InvalidRequest("CSV file: choose the file of numbers to call")
    content = await file.read()
    if not content.strip():
        raise InvalidRequest(f"CSV file: {file.filename} is empty")
    return file.filename, content


async def _form(
    site: Dashboard, page: Page, error: str | None = None, upload: ContactUpload | None = None
) -> Response:
    apps = await site.s.accounts.apps(page.account.sid)
    async with site.s.db.session() as db:
        exophones = await site.s.accounts.numbers(db, page.account.id)
    form: dict[str, Any] = {"calls_per_second": "1", "retries": "0", "interval_mins": "30"}
    if page.form is not None:
        form = {k: v for k, v in page.form.items() if isinstance(v, str)}
        form["on_status"] = [str(v) for v in page.form.getlist("on_status")]
    return site.page_response(
        page,
        "campaign_new.html",
        status_code=400 if error else 200,
        apps=apps,
        exophones=exophones,
        form=form,
        error=error,
        upload=upload,
        day_choices=DAY_CHOICES,
        detection_choices=DETECTION_CHOICES,
        default_on_status=("busy", "no-answer"),
    )


# -- one campaign ---------------------------------------------------------------------------


async def campaign_page(site: Dashboard, page: Page) -> Response:
    """A campaign: settings, progress (live), its actions, and a page of its calls."""
    view = await site.s.campaigns.get(page.account, page.request.path_params["campaign"])
    return await _campaign(site, page, view, _offset(page))


async def progress(site: Dashboard, page: Page) -> Response:
    """One campaign's progress as JSON, for its page to poll."""
    view = await site.s.campaigns.get(page.account, page.request.path_params["campaign"])
    return JSONResponse({"campaigns": [progress_of(view)]}, headers=JSON_HEADERS)


async def act(site: Dashboard, page: Page) -> Response:
    """Pause, resume or stop a campaign, as a PUT with ``action`` would."""
    sid, action = page.request.path_params["campaign"], page.request.path_params["action"]
    if action not in ACTIONS:
        raise NotFound("no such page")
    try:
        view = await site.s.campaigns.update(page.account, sid, {"action": ACTIONS[action]}, None)
    except Conflict as exc:  # e.g. resuming a campaign that has completed meanwhile
        view = await site.s.campaigns.get(page.account, sid)
        return await _campaign(site, page, view, 0, error=str(exc))
    return site.redirect(f"{page.base}/campaigns/{view.campaign.sid}?done={action}")


async def _campaign(
    site: Dashboard, page: Page, view: CampaignView, offset: int, *, error: str | None = None
) -> Response:
    """The campaign's page (or, for the live refresh, its calls), with an action's refusal."""
    calls, calls_total = await _calls(site, page.account, view.campaign.id, offset)
    base = f"{page.base}/campaigns/{view.campaign.sid}"
    context: dict[str, Any] = {
        "view": view,
        "campaign": view.campaign,
        "calls": calls,
        "calls_total": calls_total,
        "offset": offset,
        "calls_page": CALLS_PAGE,
        "live": live(view),
        "campaign_base": base,
        "refresh": f"{base}?fragment=1&offset={offset}",
        **_context(),
    }
    if page.fragment:
        return site.page_response(page, "_campaign_calls.html", **context)
    return site.page_response(
        page,
        "campaign.html",
        status_code=409 if error else 200,
        app=await _app(site, page.account, view.campaign.app_id),
        upload=None if error else await _upload(site, page),
        progress_url=f"{base}/progress",
        notice=None if error else NOTICES.get(page.request.query_params.get("done", "")),
        error=error,
        **context,
    )


async def _calls(
    site: Dashboard, account: Account, campaign_id: int, offset: int
) -> tuple[list[Call], int]:
    """A page of the campaign's calls in the order they were placed, and how many there are."""
    where = call_views.CallFilter(account_id=account.id, campaign_id=campaign_id)
    async with site.s.db.session() as db:
        total = await call_views.count_calls(db, where)
        calls = await call_views.campaign_calls(db, where, CALLS_PAGE, offset)
    return calls, total


async def _app(site: Dashboard, account: Account, app_id: int | None) -> App | None:
    if app_id is None:
        return None
    async with site.s.db.session() as db:
        try:
            return await site.s.accounts.app(db, account.id, app_id)
        except NotFound:  # deleted since
            return None


async def _upload(site: Dashboard, page: Page) -> ContactUpload | None:
    """The upload the campaign was just made from (``?upload=``), to report its rows."""
    sid = page.request.query_params.get("upload", "")
    if not sid.isalnum() or len(sid) > 64:
        return None
    try:
        row, _ = await site.s.campaigns.upload_status(page.account, sid)
    except NotFound:
        return None
    return row
