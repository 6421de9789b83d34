"""The Campaigns pages in headless Chromium: a campaign made from a CSV in the form, its progress
bars moving to completed without a reload while the ManualClock runs the calls, and a second
campaign paused with its button."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from ringflow.dashboard.logins import set_account_password
from tests.e2e import running
from tests.test_dashboard import PASSWORD
from tests.test_dashboard_browser import browser, nav, new_page, sign_in
from tests.test_dashboard_campaigns import CSV, SHORT, account_of

__all__ = ["browser"]  # the fixture, shared with the dashboard's other browser test
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


async def test_a_campaign_from_a_csv_runs_live_on_its_page_and_another_is_paused(
    database_url, browser: Browser, tmp_path: Path
):
    async with running(database_url, data_dir=str(tmp_path)) as rig:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        app = await rig.services.accounts.save_app(rig.sid, SHORT)
        page = await new_page(browser)
        await sign_in(page, rig, rig.sid)
        base = f"{rig.base}/a/{rig.sid}"

        async def create(name: str, pace: str) -> str:
            await nav(page, "Campaigns").click()
            await page.get_by_role("link", name="New campaign").click()
            await page.get_by_label("Name").fill(name)
            await page.get_by_label("CSV file of numbers").set_input_files(
                {"name": "dues.csv", "mimeType": "text/csv", "buffer": CSV}
            )
            await page.get_by_label("App").select_option(label=f"{app.id} · {app.name}")
            await page.get_by_label("Calls per second").fill(pace)
            await page.get_by_role("button", name="Upload and start").click()
            await expect(page).to_have_url(re.compile(rf"{base}/campaigns/[0-9a-f]{{32}}\?upload="))
            return page.url.split("/")[-1].split("?")[0]

        # The form uploads the CSV: the page reports the bad row and the duplicate.
        cid = await create("December dues", "2")
        report = page.locator(".upload-report")
        await expect(report.locator("[data-upload-succeeded]")).to_have_text("3")
        await expect(report.locator("[data-upload-duplicates]")).to_have_text("1")
        await expect(report.locator(".upload-failures tbody tr")).to_have_text(re.compile("12345"))
        card = page.locator(f'.campaign-progress[data-campaign="{cid}"]')
        await expect(card.locator('progress[data-state="pending"]')).to_have_attribute("max", "3")
        await expect(card.locator("[data-campaign-status]")).to_have_text("InProgress")
        await page.evaluate("window.sameDocument = true")

        # Time runs on: every number is called; the bars move without the page reloading.
        async def over() -> bool:
            view = await rig.services.campaigns.get(await account_of(rig), cid)
            return view.campaign.status == "Completed" and view.stats["in_progress"] == 0

        await rig.clock.run_until(over, limit=600)
        await expect(card.locator('progress[data-state="completed"]')).to_have_js_property(
            "value", 3
        )
        await expect(card.locator('[data-count="completed"]')).to_have_text("3")
        await expect(card.locator('[data-count="pending"]')).to_have_text("0")
        await expect(card.locator("[data-campaign-status]")).to_have_text("Completed")
        await expect(card.get_by_role("button", name="Pause")).to_be_hidden()
        await expect(page.locator("#campaign-calls tr[data-call] .status")).to_have_text(
            ["completed"] * 3
        )
        assert await page.evaluate("window.sameDocument === true")

        # A second, slow campaign is paused from its page: Resume takes Pause's place.
        slow = await create("Slow reminders", "0.01")
        await page.get_by_role("button", name="Pause").click()
        await expect(page).to_have_url(f"{base}/campaigns/{slow}?done=pause")
        await expect(page.locator("[data-campaign-status]")).to_have_text("Paused")
        await expect(page.get_by_role("button", name="Resume")).to_be_visible()
        await expect(page.get_by_role("button", name="Pause")).to_be_hidden()
        view = await rig.services.campaigns.get(await account_of(rig), slow)
        assert (view.campaign.status, view.campaign.pause_reason) == ("Paused", "user")

        # The list shows both, newest first, with their bars.
        await nav(page, "Campaigns").click()
        rows = page.locator("table.campaigns tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_contain_text("Slow reminders")
        await expect(rows.nth(1).locator('[data-count="completed"]')).to_have_text("3")
