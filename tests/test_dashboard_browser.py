"""The dashboard in headless Chromium (Debian's ``chromium``), driven by Playwright.

The server runs in this event loop on a ManualClock (tests/e2e.py), so a sandbox call stays
ringing until the test moves time on; the page's live refresh is what shows it completing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import select

from ringflow.dashboard.logins import set_account_password
from ringflow.storage.models import Recording
from tests.e2e import Rig, running
from tests.test_dashboard import CUSTOMER, PASSWORD, call_with_recording
from tests.wsbot import WsBot

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

MESSAGE = "Hello, this is Asha from Pune. Please call me back."
APP_WITH_A_MISTAKE = """\
name: Leave a message
start: hello
nodes:
  hello:
    applet: greeting
    text: Thanks for calling Acme.
    next: vm
  vm:
    applet: voicemail
    prompt: Please leave a message after the beep.
    silence_timeout: 2
    next: byebye
    on_no_message: bye
  bye:
    applet: hangup
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def new_page(browser: Browser) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    return page


def nav(page: Page, name: str):
    """A tab of the account's navigation bar."""
    return page.get_by_role("navigation", name="Account pages").get_by_role(
        "link", name=name, exact=True
    )


async def sign_in(page: Page, rig: Rig, sid: str, password: str = PASSWORD) -> None:
    await page.goto(f"{rig.base}/login")
    await page.get_by_label("Account SID").fill(sid)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{rig.base}/a/{sid}/")


async def test_a_day_in_the_dashboard(database_url, browser: Browser, tmp_path: Path):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        page = await new_page(browser)
        base = f"{rig.base}/a/{rig.sid}"

        # Wrong password, then the right one.
        await page.goto(f"{rig.base}/a/{rig.sid}/calls")
        await expect(page).to_have_url(re.compile(r"/login\?next="))
        await page.get_by_label("Account SID").fill(rig.sid)
        await page.get_by_label("Password").fill("not my password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_contain_text("Wrong account SID or password")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{base}/calls")

        # The virtual phone that will be called speaks into the voicemail.
        await nav(page, "Sandbox phones").click()
        await page.get_by_label("Number").fill(CUSTOMER)
        await page.get_by_label("Says when recorded").fill(MESSAGE)
        await page.get_by_role("button", name="Save script").click()
        await expect(page.locator(".notice")).to_contain_text("Saved")
        await expect(page.locator('tr[data-phone="+919812345678"]')).to_contain_text("says 1 thing")

        # Write an app with a mistake; the problem shows beside its line; fix it and save.
        await nav(page, "Apps").click()
        await page.get_by_role("link", name="New app").click()
        await page.locator("textarea[name=source]").fill(APP_WITH_A_MISTAKE)
        await page.get_by_role("button", name="Save").click()
        problem = page.locator("li.bad .problem")
        await expect(problem).to_have_count(1)
        await expect(problem).to_have_text("line 12: node 'vm': exit 'next': unknown node 'byebye'")
        await expect(page.locator("li.bad code")).to_have_text("    next: byebye")
        await problem.click()  # puts the cursor on that line
        selected = await page.locator("textarea[name=source]").evaluate(
            "t => t.value.slice(t.selectionStart, t.selectionEnd)"
        )
        assert selected == "    next: byebye"
        fixed = (await page.locator("textarea[name=source]").input_value()).replace("byebye", "bye")
        await page.locator("textarea[name=source]").fill(fixed)
        await page.get_by_role("button", name="Save").click()
        await expect(page).to_have_url(re.compile(r"/apps/\d+\?done=saved$"))
        await expect(page.locator(".notice")).to_contain_text("Saved.")
        for node in ("hello", "vm", "bye"):
            await expect(page.locator(f'svg.app-graph g[data-node="{node}"]')).to_be_visible()
        await expect(
            page.locator('svg.app-graph g[data-exit="vm.next, on_no_message"]')
        ).to_have_count(1)

        # One click places a sandbox call with it; the calls page shows it ringing, then done.
        await page.get_by_role("button", name="Try it on the sandbox").click()
        await expect(page).to_have_url(re.compile(rf"{base}/calls/[0-9a-z]+$"))
        sid = page.url.rsplit("/", 1)[1]
        await nav(page, "Calls").click()
        status = page.locator(f'tr[data-call="{sid}"] .status')
        await expect(status).to_have_text("ringing")
        await rig.finish(sid)  # time moves on: answered, greeting, voicemail, hang-up
        await expect(status).to_have_text("completed")

        # The call: legs, timeline, callbacks, and its recording plays.
        await page.locator(f'tr[data-call="{sid}"] a').click()
        await expect(page.locator(".call-status")).to_contain_text("completed")
        await expect(page.locator("table.legs tbody tr")).to_have_count(1)
        await expect(page.locator(".timeline")).to_contain_text(
            "Please leave a message after the beep."
        )
        await expect(page.locator(".timeline .kind-recording")).to_have_count(1)
        async with rig.services.db.session() as db:
            recording = (await db.execute(select(Recording))).scalar_one()
        audio = page.locator(".recording audio")
        await audio.evaluate("a => a.play()")
        await page.wait_for_function(
            "() => document.querySelector('.recording audio').currentTime > 0.3", timeout=10_000
        )
        duration = await audio.evaluate("a => a.duration")
        assert duration == pytest.approx(recording.duration, abs=0.3)
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="Download").click()
        download = await download_info.value
        assert download.suggested_filename == f"{recording.sid}.mp3"
        saved = Path(await download.path()).read_bytes()
        assert saved == rig.services.recordings.file(recording).read_bytes()

        # A new API key works until it is revoked here; its token is shown only once.
        await nav(page, "API credentials").click()
        await page.get_by_role("button", name="Create an API key").click()
        key = await page.locator(".new-key").inner_text()
        token = await page.locator(".new-token").inner_text()
        api = rig.url("IncomingPhoneNumbers.json")
        assert (await rig.http.get(api, auth=(key, token))).status_code == 200
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.locator(f'tr[data-key="{key}"]').get_by_role("button", name="Revoke").click()
        await expect(page.locator(".notice")).to_contain_text("revoked")
        await expect(page.locator(f'tr[data-key="{key}"]')).to_contain_text("revoked")
        assert token not in await page.content()
        refused = await rig.http.get(api, auth=(key, token))
        assert refused.status_code == 401

        # Sign out: the pages are closed again.
        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(f"{rig.base}/login")
        await page.goto(f"{base}/calls/{sid}")
        await expect(page).to_have_url(re.compile(r"/login\?next="))


async def test_an_account_cannot_open_another_accounts_pages_by_url(
    database_url, browser: Browser, tmp_path: Path
):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        sid, recording, app_id = await call_with_recording(rig)
        other = await rig.services.accounts.create_account("Other Co")
        await set_account_password(rig.services.accounts, other.account_sid, "other password 1")
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        ours, theirs = f"{rig.base}/a/{rig.sid}", f"{rig.base}/a/{other.account_sid}"
        targets = {
            "call": f"/calls/{sid}",
            "app": f"/apps/{app_id}",
            "recording": f"/recordings/{recording.sid}.mp3",
        }

        owner = await new_page(browser)
        await sign_in(owner, rig, rig.sid)
        for name, path in targets.items():
            response = await owner.request.get(ours + path)
            assert response.status == 200, name  # the owner does reach each of them

        intruder = await new_page(browser)
        await sign_in(intruder, rig, other.account_sid, "other password 1")
        for name, path in targets.items():
            for url in (ours + path, theirs + path):
                response = await intruder.goto(url)
                assert response is not None and response.status == 404, (name, url)
                await expect(intruder.locator("h1")).to_have_text("Not found")
                assert recording.sid not in await intruder.content()
        await intruder.goto(f"{theirs}/calls")
        await expect(intruder.locator("#calls-table")).to_contain_text("0 calls")
        response = await intruder.goto(f"{rig.base}/operator")
        assert response is not None and response.status == 404


async def test_the_streams_page_empties_itself_when_the_stream_ends(
    database_url, browser: Browser, tmp_path: Path
):
    async with WsBot() as bot, running(database_url, data_dir=str(tmp_path)) as rig:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        r = await rig.connect(From=CUSTOMER, StreamUrl=bot.url_with(auth=("user", "secret")))
        sid = r.json()["Call"]["Sid"]
        await rig.clock.run_until(lambda: "media" in bot.events())
        stream_sid = bot.last.of("start")[0]["stream_sid"]

        page = await new_page(browser)
        await sign_in(page, rig, rig.sid)
        await nav(page, "Streams").click()
        await expect(page.locator(".streams-open")).to_have_text("1 of 100 streams open")
        row = page.locator(f'tr[data-stream="{stream_sid}"]')
        await expect(row).to_contain_text(bot.url)
        await expect(row.get_by_role("button", name="Hang up")).to_be_visible()
        assert "secret" not in await page.content()

        # Hung up elsewhere: the page's live refresh shows it gone, without a reload.
        await rig.http.post(
            rig.url(f"Calls/{sid}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        await rig.finish(sid)
        await expect(page.locator("#streams .empty")).to_have_text("No streams open.")
        await expect(page.locator(".streams-open")).to_have_text("0 of 100 streams open")
