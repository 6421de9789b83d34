"""The dashboard's Streams page over real HTTP: a real server on the sandbox with a real
WebSocket bot on loopback; the streams open now, the account's limit, the Hang up control, no
credentials of a bot URL, one account's streams only."""

from __future__ import annotations

import pytest

from ringflow.dashboard.logins import set_account_password, set_operator_password
from tests.e2e import Rig, running
from tests.test_dashboard import PASSWORD, browser_like, csrf_of, sign_in
from tests.wsbot import WsBot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def stream_call(
    rig: Rig, bot: WsBot, number: str, url: str, **params: str
) -> tuple[str, str]:
    """Place a StreamUrl call and run the clock until its bot has media; (call SID, stream SID)."""
    r = await rig.connect(From=number, StreamUrl=url, **params)
    assert r.status_code == 200, r.text
    call_sid = r.json()["Call"]["Sid"]
    count = len(bot.connections) + 1
    await rig.clock.run_until(
        lambda: len(bot.connections) == count and "media" in bot.connections[-1].events()
    )
    return call_sid, bot.connections[-1].of("start")[0]["stream_sid"]


async def test_the_streams_page_shows_the_accounts_open_streams_and_only_them(database_url):
    async with WsBot() as bot, running(database_url) as rig:
        other = await rig.services.accounts.create_account("Other Co")
        await rig.services.accounts.set_limits(other.account_sid, {"max_concurrent_streams": 3})
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        await set_account_password(rig.services.accounts, other.account_sid, "other password 1")
        await set_operator_password(rig.services.accounts, "admin", PASSWORD)
        first, first_stream = await stream_call(
            rig, bot, "09812345678", bot.url_with(auth=("user", "secret"))
        )
        query_url = bot.url_with(params={"lang": "en", "voice": "<asha>"})
        second, second_stream = await stream_call(
            rig, bot, "09812345679", query_url, StreamType="unidirectional"
        )
        ours, theirs = f"/a/{rig.sid}/streams", f"/a/{other.account_sid}/streams"

        async with browser_like(rig) as owner:
            assert (await sign_in(owner, rig.sid)).status_code == 303
            r = await owner.get(ours)
            assert r.status_code == 200, r.text
            html = r.text
            assert f'href="{ours}" aria-current="page">Streams</a>' in html
            assert "2 of 100 streams open" in html
            rows = html.split('<tr data-stream="')[1:]
            assert [row.split('"', 1)[0] for row in rows] == [first_stream, second_stream]
            for row, call in zip(rows, (first, second), strict=True):
                assert f'href="/a/{rig.sid}/calls/{call}"' in row
                assert f'action="/a/{rig.sid}/calls/{call}/hangup"' in row
            assert f'<code class="wrap">{bot.url}</code>' in rows[0]
            escaped = query_url.replace("&", "&amp;")
            assert "&amp;voice=%3Casha%3E" in escaped  # the URL as stored, escaped once
            assert f'<code class="wrap">{escaped}</code>' in rows[1]
            assert "bidirectional" in rows[0] and "unidirectional" not in rows[0]
            assert 'unidirectional <span class="meta">(inbound track)</span>' in rows[1]
            assert "secret" not in html and "user:" not in html
            fragment = await owner.get(f"{ours}?fragment=1")
            assert fragment.status_code == 200 and "<nav" not in fragment.text
            assert fragment.text.lstrip().startswith('<section class="card" id="streams"')
            assert first_stream in fragment.text and "secret" not in fragment.text

            # The row's Hang up is the call's own: the call ends, and its stream with it.
            r = await owner.post(f"/a/{rig.sid}/calls/{first}/hangup", data={"csrf": csrf_of(html)})
            assert r.status_code == 303 and r.headers["location"].endswith("?done=hungup")
            assert (await rig.finish(first)).status == "completed"
            html = (await owner.get(ours)).text
            assert "1 of 100 streams open" in html
            assert first_stream not in html and second_stream in html

        async with browser_like(rig) as intruder:
            assert (
                await sign_in(intruder, other.account_sid, "other password 1")
            ).status_code == 303
            for url in (ours, f"{ours}?fragment=1"):
                r = await intruder.get(url)
                assert r.status_code == 404 and second_stream not in r.text, url
            r = await intruder.get(theirs)
            assert r.status_code == 200
            assert "0 of 3 streams open" in r.text and "No streams open." in r.text
            assert second_stream not in r.text and second not in r.text

        async with browser_like(rig) as operator:
            assert (await sign_in(operator, "admin", operator=True)).status_code == 303
            assert second_stream in (await operator.get(ours)).text
            r = await operator.get(theirs)
            assert r.status_code == 200 and second_stream not in r.text

        await rig.http.post(
            rig.url(f"Calls/{second}.json"), data={"Status": "completed"}, auth=rig.auth
        )
        assert (await rig.finish(second)).status == "completed"
        async with browser_like(rig) as owner:
            await sign_in(owner, rig.sid)
            html = (await owner.get(ours)).text
            assert "0 of 100 streams open" in html and "No streams open." in html
            assert "<tr data-stream=" not in html
