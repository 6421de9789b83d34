"""The dashboard's Campaigns pages over real HTTP: a campaign made from a CSV upload runs to the
end on a ManualClock, its progress JSON adds up, Pause / Resume / Stop move it, bad input is
answered on the form, and another account sees none of it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ringflow.body_limits import DASHBOARD_MAX_BODY, BodyLimits
from ringflow.campaigns.service import CampaignView
from ringflow.dashboard.campaign_form import read_form
from ringflow.dashboard.logins import set_account_password, set_operator_password
from ringflow.errors import InvalidRequest
from ringflow.storage.models import Campaign, ContactList
from tests.e2e import EXOPHONE, Rig, running
from tests.test_dashboard import PASSWORD, browser_like, csrf_of, sign_in

pytestmark = pytest.mark.timeout(120)
# The dashboard's own tests cover both databases; these pages only read what the service does.
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SHORT = {
    "name": "Reminder",
    "start": "hello",
    "nodes": {
        "hello": {"applet": "greeting", "text": "Your payment is due.", "next": "bye"},
        "bye": {"applet": "hangup"},
    },
}
# Three numbers to call, one row that is no number, one duplicate.
CSV = (
    b"name,number,amount\n"
    b"Asha,09810000001,250\n"
    b"Ravi,09810000002,300\n"
    b"Bad,12345,0\n"
    b"Asha again,09810000001,100\n"
    b"Meena,09810000003,75\n"
)
STATES = ("pending", "in_progress", "retrying", "completed", "busy", "no_answer", "failed")


def fields(rig: Rig, app: int, **changes: str) -> dict[str, str]:
    """The create form as a person fills it in: one call a second, no retries."""
    form = {
        "name": "December dues",
        "app_id": str(app),
        "caller_id": "+918039591234",
        "calls_per_second": "1",
        "retries": "0",
    }
    form.update(changes)
    return form


async def post_campaign(
    client: httpx.AsyncClient,
    rig: Rig,
    form: dict[str, str],
    csv: bytes | None = CSV,
    on_status: tuple[str, ...] = (),
) -> httpx.Response:
    """Submit the create form (multipart, with the CSV) as a browser would."""
    new = f"/a/{rig.sid}/campaigns/new"
    page = await client.get(new)
    assert page.status_code == 200, page.text
    data: dict[str, Any] = {"csrf": csrf_of(page.text), **form}
    if on_status:
        data["on_status"] = list(on_status)
    files = {"csv": ("dues.csv", csv, "text/csv")} if csv is not None else None
    if files is None:  # a file field left empty still makes the body multipart
        files = {"csv": ("", b"", "application/octet-stream")}
    return await client.post(new, data=data, files=files)


async def signed_in(rig: Rig, client: httpx.AsyncClient) -> int:
    """Sign the client in as the rig's account; the id of an app for campaigns."""
    await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
    assert (await sign_in(client, rig.sid)).status_code == 303
    return (await rig.services.accounts.save_app(rig.sid, SHORT)).id


async def created(client: httpx.AsyncClient, rig: Rig, **changes: str) -> str:
    """A campaign made from the form; its id."""
    app_id = (await rig.services.accounts.save_app(rig.sid, SHORT)).id
    r = await post_campaign(client, rig, fields(rig, app_id, **changes))
    assert r.status_code == 303, r.text
    match = re.fullmatch(
        rf"/a/{rig.sid}/campaigns/([0-9a-f]{{32}})\?upload=[0-9a-f]{{32}}", r.headers["location"]
    )
    assert match, r.headers["location"]
    return match[1]


async def view(rig: Rig, cid: str) -> CampaignView:
    account = await account_of(rig)
    return await rig.services.campaigns.get(account, cid)


async def account_of(rig: Rig) -> Any:
    async with rig.services.db.session() as db:
        return await rig.services.accounts.get(db, rig.sid)


async def progress(client: httpx.AsyncClient, rig: Rig, cid: str) -> dict[str, Any]:
    r = await client.get(f"/a/{rig.sid}/campaigns/{cid}/progress")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    assert r.headers["cache-control"] == "no-store"
    [campaign] = r.json()["campaigns"]
    assert campaign["id"] == cid
    assert sum(campaign["counts"].values()) == campaign["total"]  # every number in one state
    return campaign


@on_sqlite
async def test_a_campaign_made_from_a_csv_upload_runs_to_the_end_on_its_page(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        app_id = await signed_in(rig, client)
        listing = await client.get(f"/a/{rig.sid}/campaigns")
        assert listing.status_code == 200 and "No campaigns yet" in listing.text
        assert f'href="/a/{rig.sid}/campaigns" aria-current="page"' in listing.text
        form = await client.get(f"/a/{rig.sid}/campaigns/new")
        assert 'enctype="multipart/form-data"' in form.text
        assert f'<option value="{app_id}"' in form.text and 'value="+918039591234"' in form.text

        r = await post_campaign(
            client,
            rig,
            fields(
                rig,
                app_id,
                retries="1",
                interval_mins="5",
                hours_days="daily",
                hours_from="00:00",
                hours_until="23:59",
            ),
            on_status=("busy", "failed"),
        )
        assert r.status_code == 303, r.text
        page = await client.get(r.headers["location"])
        assert page.status_code == 200
        cid = r.headers["location"].split("/")[-1].split("?")[0]
        # The upload's report: the duplicate left out and the bad row with why.
        report = page.text[page.text.index("upload-report") :]
        assert "<strong data-upload-succeeded>3</strong>" in report
        assert "<span data-upload-duplicates>1</span> duplicate left out" in report
        assert "<span data-upload-failed>1</span> failed" in report
        assert re.search(r"<td>4</td><td class=\"mono\">12345</td>", report)
        assert "1 on busy, failed, 5 min apart (Linear)" in page.text
        assert "daily 00:00-23:59" in page.text or "mon 00:00-23:59" in page.text
        assert f'data-progress="/a/{rig.sid}/campaigns/{cid}/progress"' in page.text
        for action in ("pause", "stop"):
            assert re.search(
                rf'action="[^"]+/{action}" data-action="{action}"(?! hidden)[^>]*>', page.text
            ), action
        assert re.search(r'data-action="resume" hidden', page.text)

        first = await progress(client, rig, cid)
        assert first["status"] == "InProgress" and first["total"] == 3 and first["live"]
        assert first["actions"] == ["pause", "stop"]

        async def over() -> bool:
            v = await view(rig, cid)
            return v.campaign.status == "Completed" and v.stats["in_progress"] == 0

        await rig.clock.run_until(over, limit=600)
        done = await progress(client, rig, cid)
        assert done["counts"]["completed"] == 3 and done["status"] == "Completed"
        assert not done["live"] and done["actions"] == [] and done["tone"] == "ok"

        page = await client.get(f"/a/{rig.sid}/campaigns/{cid}")
        sids = re.findall(r'<tr data-call="([0-9a-z]+)">', page.text)
        assert len(sids) == 3
        assert "data-progress" not in page.text and "data-refresh" not in page.text  # settled
        for sid in sids:
            assert f'href="/a/{rig.sid}/calls/{sid}"' in page.text
            assert (await client.get(f"/a/{rig.sid}/calls/{sid}")).status_code == 200
        calls = (await client.get(f"/a/{rig.sid}/campaigns/{cid}?fragment=1")).text
        assert calls.lstrip().startswith('<section id="campaign-calls"')
        assert calls.count("<tr data-call") == 3

        listing = await client.get(f"/a/{rig.sid}/campaigns")
        row = listing.text[listing.text.index(f'data-campaign="{cid}"') :]
        assert "December dues" in row and "Completed" in row
        assert re.search(r'data-state="completed" value="3" max="3"', row)
        [summary] = (await client.get(f"/a/{rig.sid}/campaigns/progress")).json()["campaigns"]
        assert summary == done


@on_sqlite
async def test_pause_resume_and_stop_change_the_campaigns_status(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await signed_in(rig, client)
        cid = await created(client, rig, calls_per_second="0.01")
        base = f"/a/{rig.sid}/campaigns/{cid}"

        async def press(action: str) -> httpx.Response:
            token = csrf_of((await client.get(base)).text)
            return await client.post(f"{base}/{action}", data={"csrf": token})

        r = await press("pause")
        assert r.status_code == 303 and r.headers["location"] == f"{base}?done=pause"
        assert (await view(rig, cid)).campaign.status == "Paused"
        paused = await progress(client, rig, cid)
        assert paused["reason"] == "by request" and paused["actions"] == ["resume", "stop"]
        assert "Paused: no new calls start" in (await client.get(r.headers["location"])).text

        assert (await press("resume")).status_code == 303
        assert (await view(rig, cid)).campaign.status == "InProgress"
        assert (await client.post(f"{base}/pause", data={"csrf": "forged"})).status_code == 403
        assert (await view(rig, cid)).campaign.status == "InProgress"

        assert (await press("stop")).status_code == 303
        stopped = await view(rig, cid)
        assert stopped.campaign.status == "Completed"
        assert stopped.stats["pending"] == 0  # numbers not called are settled
        refused = await press("resume")
        assert refused.status_code == 409 and "only a paused campaign resumes" in refused.text
        assert (await press("explode")).status_code == 404


@on_sqlite
async def test_another_account_finds_none_of_its_campaigns_and_the_operator_all(database_url):
    async with running(database_url) as rig:
        async with browser_like(rig) as owner:
            await signed_in(rig, owner)
            cid = await created(owner, rig, calls_per_second="0.01")
        other = await rig.services.accounts.create_account("Other Co")
        await set_account_password(rig.services.accounts, other.account_sid, "other password 1")
        ours, theirs = f"/a/{rig.sid}", f"/a/{other.account_sid}"
        async with browser_like(rig) as intruder:
            signed = await sign_in(intruder, other.account_sid, "other password 1")
            assert signed.status_code == 303
            for path in (
                f"/campaigns/{cid}",
                f"/campaigns/{cid}/progress",
                f"/campaigns/{cid}?fragment=1",
                "/campaigns",
                "/campaigns/progress",
                "/campaigns/new",
            ):
                for base in (ours, theirs):
                    r = await intruder.get(base + path)
                    expected = 200 if base == theirs and cid not in path else 404
                    assert r.status_code == expected and cid not in r.text, (base, path)
            token = csrf_of((await intruder.get(f"{theirs}/campaigns")).text)
            for base in (ours, theirs):
                for action in ("pause", "stop"):
                    r = await intruder.post(
                        f"{base}/campaigns/{cid}/{action}", data={"csrf": token}
                    )
                    assert r.status_code == 404, (base, action)
            assert (await rig.services.campaigns.page(await account_of(rig), None, 10, 0))[0][
                0
            ].campaign.status == "InProgress"
        await set_operator_password(rig.services.accounts, "admin", PASSWORD)
        async with browser_like(rig) as operator:
            assert (await sign_in(operator, "admin", operator=True)).status_code == 303
            assert (await operator.get(f"{ours}/campaigns/{cid}")).status_code == 200
            assert (await operator.get(f"{ours}/campaigns/{cid}/progress")).json()["campaigns"][0][
                "id"
            ] == cid
            assert (await operator.get(f"{theirs}/campaigns/{cid}")).status_code == 404


@on_sqlite
async def test_bad_input_is_answered_on_the_form_and_stores_nothing(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        app_id = await signed_in(rig, client)
        other = await rig.services.accounts.create_account("Other Co")
        foreign_app = (await rig.services.accounts.save_app(other.account_sid, SHORT)).id
        cases: list[tuple[dict[str, str], bytes | None, str]] = [
            ({"calls_per_second": "fast"}, CSV, "Calls per second must be a number"),
            ({"calls_per_second": "0"}, CSV, "Calls per second must be more than 0"),
            ({"calls_per_second": "500"}, CSV, "Calls per second must be a number from 0 to 200"),
            ({"max_concurrent": "-1"}, CSV, "Max concurrent calls must be a whole number"),
            ({"retries": "4"}, CSV, "Retries must be a whole number from 0 to 3"),
            ({"retries": "2"}, CSV, "Retry on: tick busy, no-answer or failed"),
            ({"app_id": str(foreign_app)}, CSV, "choose one of this account&#39;s apps"),
            ({"caller_id": "+919999999999"}, CSV, "is not an ExoPhone of this account"),
            ({"name": "x"}, CSV, "name must be 3 to 200 characters"),
            ({"hours_json": "{nope"}, CSV, "Calling hours (JSON) is not JSON"),
            ({"hours_json": '{"someday": "09:00-18:00"}'}, CSV, "is not a day"),
            (
                {"hours_days": "mon-fri", "hours_from": "18:00", "hours_until": "09:00"},
                CSV,
                "must end after it starts",
            ),
            ({}, None, "CSV file: choose the file of numbers to call"),
            ({}, b"\xff\xfe\x00bad", "the CSV file must be UTF-8 text"),
            ({}, b"who,what\nasha,hello\n", "the CSV file needs a header with a number column"),
            ({}, b"number\n12345\n", "the campaign has no numbers to call"),
        ]
        for changes, csv, message in cases:
            r = await post_campaign(client, rig, fields(rig, app_id, **changes), csv)
            assert r.status_code == 400, (changes, r.status_code, r.text[:300])
            assert 'role="alert"' in r.text and message in r.text, (changes, message)
            assert 'enctype="multipart/form-data"' in r.text  # the form, with what was typed
            if changes.get("name") == "x":
                assert 'name="name" value="x"' in r.text
        # The last one stored its list (every row failed) and shows why; no campaign was made.
        assert "<span data-upload-failed>1</span> failed" in r.text
        async with rig.services.db.session() as db:
            assert (await db.execute(select(func.count()).select_from(Campaign))).scalar() == 0
            lists = (await db.execute(select(func.count()).select_from(ContactList))).scalar()
        assert lists == 2  # only the CSVs that got past every other check became lists
        # Multipart stays refused on every other dashboard form.
        r = await client.post(f"/a/{rig.sid}/keys", files={"csv": ("a.csv", b"x", "text/csv")})
        assert r.status_code == 415


@on_sqlite
async def test_the_form_takes_a_csv_larger_than_other_forms_and_signed_out_gets_no_json(
    database_url,
):
    async with running(database_url) as rig, browser_like(rig) as client:
        app_id = await signed_in(rig, client)
        padded = CSV + b" ,\n" * 200_000  # blank rows: skipped, but 600 KB on the wire
        assert len(padded) > DASHBOARD_MAX_BODY
        r = await post_campaign(client, rig, fields(rig, app_id), padded)
        assert r.status_code == 303, r.text
        cid = r.headers["location"].split("/")[-1].split("?")[0]
        assert (await progress(client, rig, cid))["total"] == 3
        async with browser_like(rig) as anonymous:
            for path in (f"/campaigns/{cid}/progress", "/campaigns/progress"):
                r = await anonymous.get(f"/a/{rig.sid}{path}")
                assert r.status_code == 303 and r.headers["location"].startswith("/login")
                assert cid not in r.text


def test_only_the_campaign_form_takes_a_large_multipart_body():
    limits = BodyLimits(lambda *a: None)  # type: ignore[arg-type, return-value]
    upload = limits.rule("/a/abc/campaigns/new")
    assert upload.multipart and upload.max_bytes == 16 * 1024 * 1024 and not upload.json_errors
    for path in ("/a/abc/campaigns", "/a/abc/campaigns/new/x", "/a/abc/apps/new", "/login"):
        assert not limits.rule(path).multipart, path


def test_the_form_reads_into_a_v2_body():
    form = read_form(
        {
            "app_id": "7",
            "caller_id": "+918039591234",
            "calls_per_second": "0.5",
            "max_concurrent": "4",
            "retries": "2",
            "interval_mins": "10",
            "mechanism": "Exponential",
            "hours_days": "mon-fri",
            "hours_from": "09:00",
            "hours_until": "18:00",
            "machine_detection": "Enable",
            "name": " Dues ",
        },
        ["busy", "no-answer"],
        "acme",
    )
    assert form.app_id == 7
    assert form.body == {
        "caller_id": "+918039591234",
        "url": "http://my.exotel.com/acme/exoml/start_voice/7",
        "calls_per_second": 0.5,
        "max_concurrent": 4,
        "name": "Dues",
        "retries": {
            "number_of_retries": 2,
            "interval_mins": 10,
            "mechanism": "Exponential",
            "on_status": ["busy", "no-answer"],
        },
        "calling_hours": {"mon-fri": "09:00-18:00"},
        "machine_detection": "Enable",
    }
    with pytest.raises(InvalidRequest, match="App: choose"):
        read_form({"caller_id": EXOPHONE, "calls_per_second": "1"}, [], "acme")
    with pytest.raises(InvalidRequest, match="Calling hours: give the window"):
        read_form(
            {"app_id": "1", "caller_id": EXOPHONE, "calls_per_second": "1", "hours_days": "daily"},
            [],
            "acme",
        )
