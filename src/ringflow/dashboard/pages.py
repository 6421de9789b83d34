"""The account's small pages: overview, streams, ExoPhones, API credentials, trunks; and the
operator's list of accounts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ringflow.dashboard import queries
from ringflow.dashboard.auth import Session

if TYPE_CHECKING:
    from ringflow.dashboard.site import Dashboard, Page, Viewer

NOTICES = {
    "revoked": "The API key is revoked: requests using it are refused from now on.",
}


async def overview(site: Dashboard, page: Page) -> Response:
    """Live calls, today's calls by status, callbacks waiting or failing."""
    now = site.s.clock.wall()
    async with site.s.db.session() as db:
        live = await queries.live_calls(db, page.account.id)
        today = await queries.calls_by_status(
            db, page.account, queries.start_of_day(page.account, now)
        )
        health = await queries.callback_health(db, page.account.id)
        sids = await queries.call_sids(
            db, {m.call_id for m in [*health.failing, *health.failed] if m.call_id is not None}
        )
    template = "_overview_live.html" if page.fragment else "overview.html"
    return site.page_response(
        page,
        template,
        live=live,
        today=today,
        today_total=sum(today.values()),
        health=health,
        sids=sids,
        api_base=f"{site.s.settings.base_url}/v1/Accounts/{page.account.sid}",
    )


async def streams(site: Dashboard, page: Page) -> Response:
    """The account's streams to bots open now, on every process, against its limit."""
    async with site.s.db.session() as db:
        rows = await queries.open_streams(db, page.account)
    return site.page_response(
        page,
        "_streams_table.html" if page.fragment else "streams.html",
        streams=rows,
        limit=site.s.streams.limit(page.account.max_concurrent_streams),
        now=site.s.clock.wall(),
    )


async def numbers(site: Dashboard, page: Page) -> Response:
    """The account's ExoPhones."""
    async with site.s.db.session() as db:
        rows = await site.s.accounts.numbers(db, page.account.id)
    return site.page_response(page, "numbers.html", numbers=rows)


async def keys(site: Dashboard, page: Page) -> Response:
    """API credentials: list keys; a POST makes a new one and shows its token this once."""
    created = None
    if page.form is not None:
        created = await site.s.accounts.create_key(page.account.sid)
    async with site.s.db.session() as db:
        rows = await queries.api_keys(db, page.account.id)
    return site.page_response(
        page,
        "keys.html",
        status_code=201 if created else 200,
        keys=rows,
        created=created,
        notice=NOTICES.get(page.request.query_params.get("done", "")),
        api_base=f"{site.s.settings.base_url}/v1/Accounts/{page.account.sid}",
    )


async def revoke_key(site: Dashboard, page: Page) -> Response:
    """Revoke one of the account's keys (another account's key id is not found)."""
    async with site.s.db.session() as db:
        row = await queries.find_key(db, page.account.id, page.request.path_params["key_id"])
        key = row.key
    await site.s.accounts.revoke_key(page.account.sid, key)
    return site.redirect(f"{page.base}/keys?done=revoked")


async def trunks(site: Dashboard, page: Page) -> Response:
    """The trunk this account's calls go through: its load and registration, or the sandbox."""
    status = await site.s.carrier.trunk_status(page.account.sid)
    now = time.time()  # registration times are wall-clock seconds
    return site.page_response(
        page,
        "trunks.html",
        carrier=site.s.carrier.name,
        status=status,
        on_sandbox=site.on_sandbox(page.account.sid),
        registered_for=_seconds_until(status.registered_until, now) if status else None,
        retry_in=_seconds_until(status.retry_at, now) if status else None,
    )


def _seconds_until(at: float | None, now: float) -> int | None:
    return None if at is None else max(0, round(at - now))


async def operator_accounts(
    site: Dashboard, request: Request, session: Session, viewer: Viewer
) -> Response:
    """Every account, with today's and live calls, for the operator to open."""
    now = site.s.clock.wall()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    async with site.s.db.session() as db:
        rows = await queries.accounts_overview(db, start)
    return site.render(
        "operator.html", viewer=viewer, csrf=session.csrf, rows=rows, account=None, path="/operator"
    )
