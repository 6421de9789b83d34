"""Sandbox phones: script how a virtual phone answers this account's calls, and place a test
call to one through the same path as ``Calls/connect`` (parse, admit, dial, run the app)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from ringflow.api.connect import parse_connect
from ringflow.api.params import Params
from ringflow.errors import InvalidRequest
from ringflow.numeric import decimal, whole_number
from ringflow.phone import display
from ringflow.telephony.sandbox.phones import MAGIC_NUMBERS, OUTCOMES

if TYPE_CHECKING:
    from ringflow.dashboard.site import Dashboard, Page

DEFAULT_TEST_NUMBER = "09812345678"
MAX_SCRIPT_SECONDS = 86400.0  # the phone script checks its own, narrower ranges
NOTICES = {
    "scripted": "Saved: the virtual phone behaves this way for this account's calls.",
    "cleared": "Cleared: the virtual phone is back to its default behaviour.",
}


async def place_test_call(site: Dashboard, page: Page, number: str, app_id: int) -> str:
    """Call ``number`` on the sandbox with the app, from the account's first ExoPhone."""
    if not site.on_sandbox(page.account.sid):
        raise InvalidRequest("test calls from the dashboard need the sandbox carrier")
    async with site.s.db.session() as db:
        exophones = await site.s.accounts.numbers(db, page.account.id)
    if not exophones:
        raise InvalidRequest("this account has no ExoPhone to call from: ask the operator for one")
    params = Params(
        [
            ("From", number),
            ("CallerId", exophones[0].number),
            ("Url", f"http://my.exotel.com/{page.account.sid}/exoml/start_voice/{app_id}"),
        ]
    )
    request = await parse_connect(params, page.account, site.s)
    call, _ = await site.s.dispatcher.submit(request)
    return call.sid


async def phones(
    site: Dashboard, page: Page, error: str | None = None, status: int = 200
) -> Response:
    """Scripted phones, the magic numbers, and forms to script a phone or place a test call."""
    async with site.s.db.session() as db:
        rows = await site.s.accounts.phones(db, page.account.sid)
    apps = await site.s.accounts.apps(page.account.sid)
    return site.page_response(
        page,
        "sandbox.html",
        status_code=status,
        phones=rows,
        magic=[(display(n), s) for n, s in MAGIC_NUMBERS.items()],
        outcomes=OUTCOMES,
        apps=apps,
        error=error,
        test_number=DEFAULT_TEST_NUMBER,
        form=page.form or {},
        notice=NOTICES.get(page.request.query_params.get("done", "")),
        sandbox=site.on_sandbox(page.account.sid),
    )


def script_from_form(page: Page) -> dict[str, Any]:
    """A phone script (as the admin API takes it) from the form's fields."""
    script: dict[str, Any] = {"outcome": page.field("outcome") or "answer"}
    for name in ("ring", "hangup_after"):
        raw = page.field(name)
        if raw:
            script[name] = decimal(raw, f"{name} (seconds)", low=0, high=MAX_SCRIPT_SECONDS)
    keys = [k.strip() for k in page.field("keys").split(",") if k.strip()]
    if keys:
        script["keys"] = keys
    says = [line.strip() for line in page.field("says").splitlines() if line.strip()]
    if says:
        script["says"] = says
    return script


async def script_phone(site: Dashboard, page: Page) -> Response:
    try:
        await site.s.accounts.script_phone(
            page.account.sid, page.field("number"), script_from_form(page)
        )
    except InvalidRequest as exc:
        return await phones(site, page, str(exc), 400)
    return site.redirect(f"{page.base}/sandbox?done=scripted")


async def clear_phone(site: Dashboard, page: Page) -> Response:
    await site.s.accounts.clear_phone(page.account.sid, page.request.path_params["number"])
    return site.redirect(f"{page.base}/sandbox?done=cleared")


async def test_call(site: Dashboard, page: Page) -> Response:
    """Place a test call with the chosen app, then show it live."""
    try:
        app_id = whole_number(page.field("app_id"), "app_id", low=1, high=2**62)
    except InvalidRequest:
        return await phones(site, page, "choose an app for the test call", 400)
    async with site.s.db.session() as db:
        await site.s.accounts.app(db, page.account.id, app_id)  # NotFound for another's app
    try:
        sid = await place_test_call(site, page, page.field("number") or DEFAULT_TEST_NUMBER, app_id)
    except InvalidRequest as exc:
        return await phones(site, page, str(exc), 400)
    return site.redirect(f"{page.base}/calls/{sid}")
