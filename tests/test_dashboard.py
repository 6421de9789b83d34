"""The dashboard over real HTTP: sign-in and sessions, CSRF on every form, one account's data
only, the operator, the editor, API keys, sandbox calls, and the CLI and demo that set
dashboard passwords."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ringflow.dashboard.auth import SESSION_TTL
from ringflow.dashboard.logins import set_account_password, set_operator_password
from ringflow.storage.models import ApiKey, App, Call, Recording, SandboxPhone
from tests.e2e import Rig, running

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery"
CUSTOMER = "09812345678"
MESSAGE = "Hello, this is Asha. Please call me back."


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match[1]


@contextlib.asynccontextmanager
async def browser_like(rig: Rig) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that keeps cookies and does not follow redirects (to check them)."""
    async with httpx.AsyncClient(base_url=rig.base, timeout=30) as client:
        yield client


async def sign_in(
    client: httpx.AsyncClient, name: str, password: str = PASSWORD, *, operator: bool = False
) -> httpx.Response:
    path = "/operator/login" if operator else "/login"
    form = await client.get(path)
    return await client.post(
        path, data={"csrf": csrf_of(form.text), "name": name, "password": password}
    )


async def form_post(
    client: httpx.AsyncClient, page: str, action: str, **fields: Any
) -> httpx.Response:
    """Submit a form as a browser would: the page's CSRF token with the fields."""
    html = (await client.get(page)).text
    return await client.post(action, data={"csrf": csrf_of(html), **fields})


def voicemail_app() -> dict[str, Any]:
    return {
        "name": "Leave a message",
        "start": "vm",
        "nodes": {
            "vm": {
                "applet": "voicemail",
                "prompt": "Please leave a message.",
                "silence_timeout": 2,
                "next": "bye",
                "on_no_message": "bye",
            },
            "bye": {"applet": "hangup"},
        },
    }


async def call_with_recording(rig: Rig) -> tuple[str, Recording, int]:
    """A finished call of the rig's account with a voicemail; (call SID, recording, app id)."""
    await rig.services.accounts.script_phone(rig.sid, CUSTOMER, {"says": [MESSAGE]})
    app = await rig.services.accounts.save_app(rig.sid, voicemail_app())
    r = await rig.connect(From=CUSTOMER, Url=rig.flow_url(app.id))
    assert r.status_code == 200, r.text
    sid = r.json()["Call"]["Sid"]
    await rig.finish(sid)
    async with rig.services.db.session() as db:
        [recording] = (await db.execute(select(Recording))).scalars().all()
    return sid, recording, app.id


async def test_pages_need_a_sign_in_and_the_session_cookie_is_guarded(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        r = await client.get(f"/a/{rig.sid}/calls")
        assert r.status_code == 303 and r.headers["location"] == f"/login?next=/a/{rig.sid}/calls"

        refused = await sign_in(client, rig.sid, "wrong password")
        assert refused.status_code == 401
        assert "Wrong account SID or password" in refused.text
        assert "ringflow accounts password" in refused.text
        unknown = await sign_in(client, "nosuchaccount", PASSWORD)
        assert unknown.status_code == 401 and "Wrong account SID or password" in unknown.text

        form = await client.get(f"/login?next=/a/{rig.sid}/calls")
        r = await client.post(
            "/login",
            data={
                "csrf": csrf_of(form.text),
                "name": rig.sid.upper(),
                "password": PASSWORD,
                "next": f"/a/{rig.sid}/calls",
            },
        )
        assert r.status_code == 303 and r.headers["location"] == f"/a/{rig.sid}/calls"
        cookie = r.headers["set-cookie"]
        assert (
            "HttpOnly" in cookie and "SameSite=lax" in cookie and f"Max-Age={SESSION_TTL}" in cookie
        )
        page = await client.get(f"/a/{rig.sid}/calls")
        assert page.status_code == 200 and "Calls" in page.text
        for header in ("content-security-policy", "x-frame-options"):
            assert header in page.headers
        assert page.headers["cache-control"] == "no-store"
        assert (await client.get("/")).headers["location"] == f"/a/{rig.sid}/"

        assert (await client.post("/logout", data={"csrf": "forged"})).status_code == 403
        r = await form_post(client, f"/a/{rig.sid}/", "/logout")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert (await client.get(f"/a/{rig.sid}/calls")).status_code == 303
        fragment = await client.get(f"/a/{rig.sid}/calls?fragment=1")
        assert fragment.status_code == 401  # the live refresh learns it must sign in again


async def test_sessions_end_after_their_time_and_when_the_password_changes(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        assert (await sign_in(client, rig.sid)).status_code == 303
        assert (await client.get(f"/a/{rig.sid}/")).status_code == 200
        await rig.clock.advance(SESSION_TTL - 5)
        assert (await client.get(f"/a/{rig.sid}/")).status_code == 200
        await rig.clock.advance(10)
        assert (await client.get(f"/a/{rig.sid}/")).status_code == 303

        assert (await sign_in(client, rig.sid)).status_code == 303
        await set_account_password(rig.services.accounts, rig.sid, "a brand new password")
        assert (await client.get(f"/a/{rig.sid}/")).status_code == 303
        assert (await sign_in(client, rig.sid)).status_code == 401
        assert (await sign_in(client, rig.sid, "a brand new password")).status_code == 303


async def test_sign_in_attempts_are_rate_limited(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        for _ in range(10):
            assert (await sign_in(client, rig.sid, "guess")).status_code == 401
        blocked = await sign_in(client, rig.sid, PASSWORD)
        assert blocked.status_code == 429 and "Too many sign-in attempts" in blocked.text
        await rig.clock.advance(301)
        assert (await sign_in(client, rig.sid, PASSWORD)).status_code == 303


async def test_every_form_refuses_a_missing_or_foreign_csrf_token(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        assert (await sign_in(client, rig.sid)).status_code == 303
        async with rig.services.db.session() as db:
            key_id = (await db.execute(select(ApiKey.id))).scalar_one()
        base = f"/a/{rig.sid}"
        forms = {
            f"{base}/keys": {},
            f"{base}/keys/{key_id}/revoke": {},
            f"{base}/apps/new": {"source": "name: x"},
            f"{base}/apps/{rig.app_id}": {"source": "name: x"},
            f"{base}/apps/{rig.app_id}/try": {"number": CUSTOMER},
            f"{base}/sandbox/phones": {"number": CUSTOMER, "outcome": "busy"},
            f"{base}/sandbox/phones/{CUSTOMER}/clear": {},
            f"{base}/sandbox/call": {"number": CUSTOMER, "app_id": str(rig.app_id)},
            "/logout": {},
        }
        other_session_token = csrf_of(
            (await httpx.AsyncClient(base_url=rig.base).get("/login")).text
        )
        for action, fields in forms.items():
            for token in (None, "", other_session_token):
                data = dict(fields) if token is None else {"csrf": token, **fields}
                r = await client.post(action, data=data)
                assert r.status_code == 403, (action, token, r.status_code)
        async with rig.services.db.session() as db:
            assert len((await db.execute(select(ApiKey))).scalars().all()) == 1
            assert (await db.execute(select(ApiKey.revoked_at))).scalar_one() is None
            assert (await db.execute(select(Call))).scalars().all() == []
            assert (await db.execute(select(SandboxPhone))).scalars().all() == []
            assert (await db.execute(select(App.version))).scalar_one() == 1
        r = await client.post("/login", data={"name": rig.sid, "password": PASSWORD})
        assert r.status_code == 403
        assert (await client.get(f"{base}/")).status_code == 200  # still signed in


async def test_an_account_reaches_only_its_own_calls_apps_recordings_and_keys(database_url):
    async with running(database_url) as rig:
        sid, recording, app_id = await call_with_recording(rig)
        other = await rig.services.accounts.create_account("Other Co")
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await set_account_password(rig.services.accounts, other.account_sid, "other password 1")
        async with rig.services.db.session() as db:
            key_id = (await db.execute(select(ApiKey.id).where(ApiKey.key == rig.key))).scalar_one()
        ours, theirs = f"/a/{rig.sid}", f"/a/{other.account_sid}"
        rec = f"recordings/{recording.sid}.mp3"

        async with browser_like(rig) as owner:
            assert (await sign_in(owner, rig.sid)).status_code == 303
            for page in ("/", "/calls", f"/calls/{sid}", f"/apps/{app_id}", "/keys", "/sandbox"):
                assert (await owner.get(ours + page)).status_code == 200, page
            audio = await owner.get(f"{ours}/{rec}")
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
            assert audio.content == rig.services.recordings.file(recording).read_bytes()
            assert (
                (await owner.get(f"{ours}/{rec}?download=1"))
                .headers["content-disposition"]
                .startswith("attachment")
            )
            call_page = (await owner.get(f"{ours}/calls/{sid}")).text
            assert f'src="{ours}/{rec}"' in call_page and MESSAGE not in call_page

        async with browser_like(rig) as intruder:
            assert (
                await sign_in(intruder, other.account_sid, "other password 1")
            ).status_code == 303
            # The other account's pages by their own URLs, and its objects under our URLs.
            for page in (
                "/",
                "/calls",
                f"/calls/{sid}",
                f"/apps/{app_id}",
                "/keys",
                "/sandbox",
                f"/{rec}",
                "/trunks",
            ):
                r = await intruder.get(ours + page)
                assert r.status_code == 404 and recording.sid not in r.text, page
            for page in (f"/calls/{sid}", f"/apps/{app_id}", f"/{rec}", f"/calls/{sid}?fragment=1"):
                assert (await intruder.get(theirs + page)).status_code == 404, page
            listing = (await intruder.get(f"{theirs}/calls")).text
            assert sid not in listing
            for action, fields in {
                f"/apps/{app_id}/try": {"number": CUSTOMER},
                f"/keys/{key_id}/revoke": {},
                "/sandbox/call": {"number": CUSTOMER, "app_id": str(app_id)},
                f"/apps/{app_id}": {"source": "name: stolen"},
            }.items():
                r = await form_post(intruder, f"{theirs}/", theirs + action, **fields)
                assert r.status_code == 404, action
            assert (await intruder.get("/operator")).status_code == 404
        ok = await rig.http.get(rig.url("IncomingPhoneNumbers.json"), auth=rig.auth)
        assert ok.status_code == 200  # the key survived the attempt to revoke it
        async with rig.services.db.session() as db:
            assert len((await db.execute(select(Call))).scalars().all()) == 1
            assert (await db.execute(select(App.version).where(App.id == app_id))).scalar_one() == 1


async def test_the_operator_sees_every_account(database_url):
    async with running(database_url) as rig:
        sid, _, _ = await call_with_recording(rig)
        other = await rig.services.accounts.create_account("Other Co")
        await set_operator_password(rig.services.accounts, "Admin", PASSWORD)
        async with browser_like(rig) as client:
            assert (await sign_in(client, "admin", "wrong", operator=True)).status_code == 401
            assert (
                await sign_in(client, rig.sid, PASSWORD)
            ).status_code == 401  # not an account sign-in
            r = await sign_in(client, "admin", operator=True)
            assert r.status_code == 303 and r.headers["location"] == "/operator"
            listing = await client.get("/operator")
            assert listing.status_code == 200
            assert f'data-account="{rig.sid}"' in listing.text
            assert f'data-account="{other.account_sid}"' in listing.text
            assert (await client.get(f"/a/{rig.sid}/calls/{sid}")).status_code == 200
            assert (await client.get(f"/a/{other.account_sid}/calls/{sid}")).status_code == 404
            assert (await client.get("/a/nosuchaccount/")).status_code == 404
            await set_operator_password(rig.services.accounts, "admin", "another password")
            assert (await client.get("/operator")).status_code == 303


EDITED = """\
name: Greeter
start: hi
nodes:
  hi:
    applet: greeting
    text: Hello there
    next: byebye
  bye:
    applet: hangup
"""


async def test_the_editor_shows_problems_by_line_then_saves_and_draws_the_app(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await sign_in(client, rig.sid)
        base = f"/a/{rig.sid}"
        r = await form_post(
            client, f"{base}/apps/new", f"{base}/apps/new", source=EDITED, format="yaml"
        )
        assert r.status_code == 400
        assert (
            "line 7: node &#39;hi&#39;: exit &#39;next&#39;: unknown node &#39;byebye&#39;"
            in r.text
        )
        assert "The app was not saved: 1 problem." in r.text
        assert "Greeter" in r.text  # the text is kept for fixing
        padded = await form_post(
            client, f"{base}/apps/new", f"{base}/apps/new", source="\n\n" + EDITED
        )
        assert padded.status_code == 400
        assert "line 9: node &#39;hi&#39;: exit &#39;next&#39;" in padded.text
        r = await form_post(
            client, f"{base}/apps/new", f"{base}/apps/new", source="name: [x\n", format="yaml"
        )
        assert r.status_code == 400 and "not valid YAML or JSON" in r.text

        r = await form_post(
            client, f"{base}/apps/new", f"{base}/apps/new", source=EDITED.replace("byebye", "bye")
        )
        assert r.status_code == 303
        app_id = int(re.search(r"/apps/(\d+)\?done=saved", r.headers["location"])[1])
        page = await client.get(r.headers["location"])
        assert 'data-node="hi"' in page.text and 'data-node="bye"' in page.text
        assert 'data-exit="hi.next"' in page.text and "Saved." in page.text

        json_page = await client.get(f"{base}/apps/{app_id}?format=json")
        assert "&#34;applet&#34;: &#34;greeting&#34;" in json_page.text
        bad_json = '{"name": "Greeter", "start": "hi", "nodes": {"hi": {"applet": "greting"}}}'
        r = await form_post(
            client, f"{base}/apps/{app_id}", f"{base}/apps/{app_id}", source=bad_json, format="json"
        )
        assert (
            r.status_code == 400 and "line 1: node &#39;hi&#39;: field &#39;applet&#39;" in r.text
        )
        async with rig.services.db.session() as db:
            assert (await db.execute(select(App.version).where(App.id == app_id))).scalar_one() == 1


async def test_a_key_token_is_shown_once_and_a_revoked_key_is_refused(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await sign_in(client, rig.sid)
        base = f"/a/{rig.sid}"
        created = await form_post(client, f"{base}/keys", f"{base}/keys")
        assert created.status_code == 201
        key = re.search(r'class="new-key">([^<]+)<', created.text)[1]
        token = re.search(r'class="new-token">([^<]+)<', created.text)[1]
        api = rig.url("IncomingPhoneNumbers.json")
        assert (await rig.http.get(api, auth=(key, token))).status_code == 200
        again = await client.get(f"{base}/keys")
        assert key in again.text and token not in again.text

        async with rig.services.db.session() as db:
            key_id = (await db.execute(select(ApiKey.id).where(ApiKey.key == key))).scalar_one()
        r = await form_post(client, f"{base}/keys", f"{base}/keys/{key_id}/revoke")
        assert r.status_code == 303 and r.headers["location"] == f"{base}/keys?done=revoked"
        assert (await rig.http.get(api, auth=(key, token))).status_code == 401
        assert (await rig.http.get(api, auth=rig.auth)).status_code == 200


async def test_trying_an_app_places_a_sandbox_call_through_connect(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await sign_in(client, rig.sid)
        base = f"/a/{rig.sid}"
        r = await form_post(
            client,
            f"{base}/apps/{rig.app_id}",
            f"{base}/apps/{rig.app_id}/try",
            number="09812345670",
        )
        assert r.status_code == 303
        sid = r.headers["location"].rsplit("/", 1)[1]
        live = await client.get(f"{base}/calls/{sid}")
        assert live.status_code == 200 and "data-refresh" in live.text
        call = await rig.finish(sid)
        assert (call.status, call.app_id, call.from_number) == (
            "completed",
            rig.app_id,
            "+919812345670",
        )
        assert [s.path for s in rig.customer.seen] == ["/passthru"]  # the app really ran
        done = await client.get(f"{base}/calls/{sid}")
        assert 'data-status="completed"' in done.text and "data-refresh" not in done.text

        r = await form_post(
            client,
            f"{base}/sandbox",
            f"{base}/sandbox/call",
            number="0981234",
            app_id=str(rig.app_id),
        )
        assert r.status_code == 400 and "number" in r.text


async def test_no_call_is_started_from_the_page_once_the_server_drains(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await sign_in(client, rig.sid)
        base = f"/a/{rig.sid}"
        rig.services.stop_admitting()  # what the first SIGTERM does
        r = await form_post(
            client,
            f"{base}/sandbox",
            f"{base}/sandbox/call",
            number=CUSTOMER,
            app_id=str(rig.app_id),
        )
        assert r.status_code == 503 and "shutting down" in r.text
        async with rig.services.db.session() as session:
            assert not (await session.execute(select(Call))).first()


async def test_sandbox_phones_are_scripted_and_cleared_from_the_page(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await sign_in(client, rig.sid)
        base = f"/a/{rig.sid}"
        r = await form_post(
            client, f"{base}/sandbox", f"{base}/sandbox/phones",
            number=CUSTOMER, ring="2.5", outcome="answer", keys="2, 1234#", hangup_after="30", says="Hi there\nCall me",
        )  # fmt: skip
        assert r.status_code == 303
        async with rig.services.db.session() as db:
            row = (await db.execute(select(SandboxPhone))).scalar_one()
        assert (row.scope, row.number) == (rig.sid, "+919812345678")
        assert row.script["ring"] == 2.5 and row.script["keys"] == ["2", "1234#"]
        assert row.script["hangup_after"] == 30 and row.script["says"] == ["Hi there", "Call me"]
        page = await client.get(f"{base}/sandbox")
        assert 'data-phone="+919812345678"' in page.text
        bad = await form_post(
            client, f"{base}/sandbox", f"{base}/sandbox/phones", number=CUSTOMER, outcome="explode"
        )
        assert bad.status_code == 400 and "outcome must be one of" in bad.text
        r = await form_post(client, f"{base}/sandbox", f"{base}/sandbox/phones/{CUSTOMER}/clear")
        assert r.status_code == 303
        async with rig.services.db.session() as db:
            assert (await db.execute(select(SandboxPhone))).scalars().all() == []


async def test_the_calls_page_filters_and_pages_like_the_bulk_api(database_url):
    async with running(database_url) as rig, browser_like(rig) as client:
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await sign_in(client, rig.sid)
        sids = []
        for number in ("09999900001", CUSTOMER, "09812345679"):
            r = await rig.connect(From=number, Url=rig.flow_url())
            sids.append(r.json()["Call"]["Sid"])
            await rig.finish(sids[-1])
        base = f"/a/{rig.sid}/calls"
        busy = await client.get(base, params={"Status": "busy"})
        assert sids[0] in busy.text and sids[1] not in busy.text
        first = await client.get(base, params={"PageSize": "2"})
        assert sids[2] in first.text and sids[1] in first.text and sids[0] not in first.text
        older = re.search(r'href="([^"]+)" rel="next"', first.text)[1].replace("&amp;", "&")
        second = await client.get(older)
        assert sids[0] in second.text and sids[2] not in second.text
        day = rig.clock.wall().strftime("%Y-%m-%d")
        assert sids[0] in (await client.get(base, params={"since": day, "until": day})).text
        bad = await client.get(base, params={"Status": "lost"})
        assert bad.status_code == 400 and "Status must be a comma-separated list" in bad.text


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: str, *args: str
) -> tuple[int, str, str]:
    from ringflow.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_sets_account_and_operator_passwords(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RINGFLOW_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("RINGFLOW_DATA_DIR", str(tmp_path / "data"))
    assert run_cli(monkeypatch, capsys, "", "migrate")[0] == 0
    assert run_cli(monkeypatch, capsys, "", "accounts", "create", "Acme")[0] == 0
    code, out, _ = run_cli(
        monkeypatch, capsys, "correct horse\n", "accounts", "password", "acme", "--password-stdin"
    )
    assert code == 0 and "dashboard password set for acme" in out
    code, _, err = run_cli(
        monkeypatch, capsys, "short\n", "accounts", "password", "acme", "--password-stdin"
    )
    assert (
        code == 1 and err == "ringflow: error: a dashboard password needs at least 8 characters\n"
    )
    code, _, err = run_cli(
        monkeypatch, capsys, "correct horse\n", "accounts", "password", "nobody", "--password-stdin"
    )
    assert code == 1 and "no account 'nobody'" in err
    code, out, _ = run_cli(
        monkeypatch, capsys, "operator pass\n", "operator", "password", "--password-stdin"
    )
    assert code == 0 and "operator admin" in out
    code, _, err = run_cli(monkeypatch, capsys, "", "operator", "remove", "nobody")
    assert code == 1 and "no operator" in err
    assert run_cli(monkeypatch, capsys, "", "operator", "remove", "admin")[0] == 0


def printed_sign_in(banner: str) -> tuple[str, str, str]:
    """(dashboard URL, account SID, password) as the demo banner prints them."""
    url = re.search(r"Dashboard\s+: (\S+)", banner)[1]
    sid, password = re.search(r"Sign in\s+: account SID (\S+), password (\S+)", banner).groups()
    return url, sid, password


@pytest.mark.e2e
async def test_the_demo_prints_a_dashboard_sign_in_that_works(tmp_path: Path):
    from tests.processes import Server, cli, server_env

    env = server_env(f"sqlite+aiosqlite:///{tmp_path}/ringflow.db", "demo-dashboard")
    server = Server(env, tmp_path / "server.log")
    creds = tmp_path / "demo-credentials.json"
    demo = ("demo", "--port", str(server.port), "--credentials-file", str(creds))
    url, sid, password = printed_sign_in(await cli(env, *demo))
    assert url == f"{server.base}/"
    assert printed_sign_in(await cli(env, *demo)) == (url, sid, password)  # kept across runs

    # A credentials file from before the dashboard gets a sign-in on the next run.
    saved = json.loads(creds.read_text())
    del saved["dashboard_password"]
    creds.write_text(json.dumps(saved))
    _, _, renewed = printed_sign_in(await cli(env, *demo))
    assert renewed != password and json.loads(creds.read_text())["dashboard_password"] == renewed
    assert creds.stat().st_mode & 0o777 == 0o600

    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
            assert (await sign_in(client, sid, password)).status_code == 401
            r = await sign_in(client, sid, renewed)
            assert r.status_code == 303 and r.headers["location"] == f"/a/{sid}/"
            overview = await client.get(f"/a/{sid}/")
            assert overview.status_code == 200 and "Live calls" in overview.text
            apps = await client.get(f"/a/{sid}/apps")
            assert "Demo: greeting and passthru" in apps.text
    finally:
        await server.close()


async def test_the_trunks_page_shows_the_sandbox_or_the_accounts_own_trunk(database_url, tmp_path):
    trunks = tmp_path / "trunks.yaml"
    trunks.write_text(
        "trunks:\n  - name: office-pbx\n    host: 127.0.0.1\n    port: 5099\n"
        "    max_channels: 7\n    password: s3cret\n    username: acme\n"
        "    accounts: [otherco]\n    sources: [192.0.2.0/28]\n"
        "    symmetric_rtp: true\n"
    )
    async with running(database_url, sip_trunks=str(trunks), sip_port=0) as rig:
        other = await rig.services.accounts.create_account("Other Co")
        assert other.account_sid == "otherco"
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await set_account_password(rig.services.accounts, "otherco", PASSWORD)
        async with browser_like(rig) as ours, browser_like(rig) as theirs:
            await sign_in(ours, rig.sid)
            await sign_in(theirs, "otherco")
            page = (await ours.get(f"/a/{rig.sid}/trunks")).text
            assert "<strong>sandbox</strong>" in page and "office-pbx" not in page
            sandbox = (await ours.get(f"/a/{rig.sid}/sandbox")).text
            assert "data-no-sandbox" not in sandbox

            page = (await theirs.get("/a/otherco/trunks")).text
            assert "<strong>office-pbx</strong>" in page and "0 of 7 channels" in page
            assert 'data-registration="none"' in page and "s3cret" not in page
            assert "data-sources>127.0.0.1, 192.0.2.0/28<" in page
            assert "symmetric RTP" in page
            sandbox = (await theirs.get("/a/otherco/sandbox")).text
            assert "data-no-sandbox" in sandbox
            app = await rig.services.accounts.save_app("otherco", voicemail_app())
            refused = await form_post(
                theirs,
                "/a/otherco/sandbox",
                "/a/otherco/sandbox/call",
                number=CUSTOMER,
                app_id=str(app.id),
            )
            assert "test calls from the dashboard need the sandbox carrier" in refused.text
