"""End to end over real HTTP on loopback: the Exotel edge's authentication, rate limits, lenient
input, call list, ExoPhones and lookups, and a published Exotel client library (PyPI ``exotel``
0.1.5) driving ringflow unchanged but for its host and credentials."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode, urljoin

import exotel
import httpx
import pytest
import redis.asyncio
from sqlalchemy import func, select, text, update

from ringflow.accounts import Credentials
from ringflow.calls.status import is_terminal
from ringflow.ratelimit.redis import PREFIX as REDIS_PREFIX
from ringflow.storage.models import Account, Call
from tests.conftest import REDIS_URL, free_port
from tests.e2e import EXOPHONE, Rig, demo_graph, running

pytestmark = pytest.mark.e2e

# Parsing, validation and routing do not touch the database in any backend-specific way: one
# backend is enough for those tests and keeps the suite quick.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

OTHER_EXOPHONE = "08039591235"
CUSTOMER = "09812345678"
CALL_FIELDS = [
    "Sid", "ParentCallSid", "DateCreated", "DateUpdated", "AccountSid", "To", "From",
    "PhoneNumberSid", "Status", "StartTime", "EndTime", "Duration", "Price", "Direction",
    "AnsweredBy", "ForwardedFrom", "CallerName", "Uri", "RecordingUrl",
]  # fmt: skip
METADATA_FIELDS = ["Total", "PageSize", "FirstPageUri", "PrevPageUri", "NextPageUri"]


# --- helpers -------------------------------------------------------------------------------


def json_error(r: httpx.Response, status: int) -> str:
    """Assert ``r`` is a JSON RestException with ``status``; return its Message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()["RestException"]
    assert body["Status"] == status
    assert body["Message"]
    return body["Message"]


def xml_error(r: httpx.Response, status: int) -> str:
    """Assert ``r`` is an XML RestException with ``status``; return its Message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/xml"), r.headers
    root = ET.fromstring(r.content)
    assert root.tag == "TwilioResponse"
    assert root.findtext("RestException/Status") == str(status)
    message = root.findtext("RestException/Message")
    assert message
    return message


def flow_params(rig: Rig, **extra: Any) -> dict[str, Any]:
    """The three parameters of the flow shape, plus ``extra``."""
    return {"From": CUSTOMER, "CallerId": EXOPHONE, "Url": rig.flow_url(), **extra}


def created_sid(r: httpx.Response) -> str:
    """The SID of the call a successful JSON Calls/connect created."""
    assert r.status_code == 200, r.text
    call = r.json()["Call"]
    assert list(call) == CALL_FIELDS
    return call["Sid"]


async def call_count(rig: Rig) -> int:
    async with rig.services.db.session() as session:
        return (await session.execute(select(func.count()).select_from(Call))).scalar_one()


async def finish_all(rig: Rig) -> None:
    """Run the clock until every call in the database is over and its callbacks are sent."""

    async def done() -> bool:
        async with rig.services.db.session() as session:
            statuses = (await session.execute(select(Call.status))).scalars().all()
        return all(is_terminal(s) for s in statuses) and await rig.outbox_settled()

    await rig.clock.run_until(done, limit=20000)


async def other_account(rig: Rig) -> tuple[Credentials, int]:
    """A second account with its own ExoPhone and app; its credentials and app id."""
    # A unique name, so its SID (and its rate-limit key in a shared Redis) is new every run.
    creds = await rig.services.accounts.create_account(f"other {uuid.uuid4().hex[:8]}")
    await rig.services.accounts.add_number(creds.account_sid, OTHER_EXOPHONE)
    app = await rig.services.accounts.save_app(
        creds.account_sid, demo_graph(f"{rig.customer.url}/passthru")
    )
    return creds, app.id


def other_url(rig: Rig, creds: Credentials, path: str) -> str:
    return f"{rig.base}/v1/Accounts/{creds.account_sid}/{path}"


# --- 1. authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parse"),
    [("Calls/connect", xml_error), ("Calls/connect.json", json_error)],
    ids=["xml", "json"],
)
async def test_no_credentials_is_401_with_a_challenge(database_url, path, parse):
    async with running(database_url) as rig:
        r = await rig.http.post(rig.url(path), data=flow_params(rig))
        assert "Authentication required" in parse(r, 401)
        assert r.headers["www-authenticate"].lower().startswith("basic")
        assert await call_count(rig) == 0


@SQLITE_ONLY
async def test_wrong_token_is_401(database_url):
    async with running(database_url) as rig:
        r = await rig.http.get(rig.url("Calls.json"), auth=(rig.key, rig.token + "x"))
        assert "wrong API key or token" in json_error(r, 401)
        assert "www-authenticate" in r.headers
        r = await rig.http.get(rig.url("Calls.json"), auth=("nosuchkey", rig.token))
        json_error(r, 401)


async def test_revoked_key_is_401_while_another_key_still_works(database_url):
    async with running(database_url) as rig:
        second = await rig.services.accounts.create_key(rig.sid)
        assert (await rig.http.get(rig.url("Calls.json"), auth=rig.auth)).status_code == 200
        await rig.services.accounts.revoke_key(rig.sid, rig.key)
        json_error(await rig.http.get(rig.url("Calls.json"), auth=rig.auth), 401)
        # Nor does the revoked key's token open the account the legacy way.
        r = await rig.http.get(rig.url("Calls.json"), auth=(rig.sid, rig.token))
        json_error(r, 401)
        r = await rig.http.get(rig.url("Calls.json"), auth=(second.api_key, second.api_token))
        assert r.status_code == 200, r.text


async def test_legacy_auth_with_account_sid_and_token(database_url):
    async with running(database_url) as rig:
        r = await rig.http.post(
            rig.url("Calls/connect.json"), data=flow_params(rig), auth=(rig.sid, rig.token)
        )
        created_sid(r)
        r = await rig.http.get(rig.url("Calls.json"), auth=(rig.sid.upper(), rig.token))
        assert r.status_code == 200, r.text
        json_error(await rig.http.get(rig.url("Calls.json"), auth=(rig.sid, "wrong")), 401)


async def test_credentials_of_one_account_on_another_accounts_path_are_403(database_url):
    async with running(database_url) as rig:
        other, _ = await other_account(rig)
        r = await rig.http.get(other_url(rig, other, "Calls.json"), auth=rig.auth)
        assert other.account_sid in json_error(r, 403)
        r = await rig.http.post(
            other_url(rig, other, "Calls/connect"), data=flow_params(rig), auth=rig.auth
        )
        xml_error(r, 403)
        # Legacy credentials too: the SID in the username does not unlock another path.
        r = await rig.http.get(other_url(rig, other, "Calls.json"), auth=(rig.sid, rig.token))
        json_error(r, 403)
        assert await call_count(rig) == 0


async def test_another_accounts_call_is_404_on_its_own_path(database_url):
    async with running(database_url) as rig:
        sid = created_sid(await rig.connect(**flow_params(rig)))
        other, _ = await other_account(rig)
        auth = (other.api_key, other.api_token)
        r = await rig.http.get(other_url(rig, other, f"Calls/{sid}.json"), auth=auth)
        assert sid in json_error(r, 404)
        r = await rig.http.get(other_url(rig, other, f"Calls/{sid}"), auth=auth)
        xml_error(r, 404)
        # The owner still reads it.
        assert (await rig.http.get(rig.url(f"Calls/{sid}.json"), auth=rig.auth)).status_code == 200


# --- 2. rate limits --------------------------------------------------------------------------

LIMITERS = [
    pytest.param("sqlite", None, id="sqlite-memory"),
    pytest.param("sqlite", REDIS_URL, id="sqlite-redis"),
    pytest.param("postgresql", None, id="postgresql-memory"),
]


@contextlib.asynccontextmanager
async def limiter_rig(database_url: str, redis_url: str | None) -> AsyncIterator[Rig]:
    """A rig whose account starts with an empty rate-limit log, in whichever backend."""
    async with running(database_url, redis_url=redis_url) as rig:
        if redis_url is None:
            yield rig
            return
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            # Account SIDs are unique per rig; make sure no earlier run left this one's log.
            assert not await client.exists(f"{REDIS_PREFIX}api:{rig.sid}")
            yield rig
        finally:
            async with rig.services.db.session() as session:
                sids = (await session.execute(select(Account.sid))).scalars().all()
            await client.delete(*(f"{REDIS_PREFIX}api:{sid}" for sid in sids))
            await client.aclose()


def limit_headers(r: httpx.Response) -> tuple[int, int, int]:
    return (
        int(r.headers["x-ratelimit-limit"]),
        int(r.headers["x-ratelimit-remaining"]),
        int(r.headers["x-ratelimit-reset"]),
    )


@pytest.mark.parametrize(("database_url", "redis_url"), LIMITERS, indirect=["database_url"])
async def test_200_requests_a_minute_then_429_until_the_window_moves(database_url, redis_url):
    async with limiter_rig(database_url, redis_url) as rig:
        numbers_json = rig.url("IncomingPhoneNumbers.json")
        numbers_xml = rig.url("IncomingPhoneNumbers")
        for i in range(200):
            r = await rig.http.get(numbers_json, auth=rig.auth)
            assert r.status_code == 200, (i, r.text)
            assert limit_headers(r) == (200, 199 - i, 60)

        r = await rig.http.get(numbers_json, auth=rig.auth)
        assert json_error(r, 429) == "Too many requests: the limit is 200 requests per minute"
        assert r.headers["retry-after"] == "60"
        assert limit_headers(r) == (200, 0, 60)
        r = await rig.http.get(numbers_xml, auth=rig.auth)
        xml_error(r, 429)
        assert r.headers["retry-after"] == "60"
        r = await rig.http.post(rig.url("Calls/connect.json"), data=flow_params(rig), auth=rig.auth)
        json_error(r, 429)
        assert await call_count(rig) == 0

        # A sliding window: one second short of the minute, still refused.
        await rig.clock.advance(59)
        r = await rig.http.get(numbers_json, auth=rig.auth)
        json_error(r, 429)
        assert r.headers["retry-after"] == "1"
        await rig.clock.advance(1)
        r = await rig.http.get(numbers_json, auth=rig.auth)
        assert r.status_code == 200, r.text
        assert limit_headers(r) == (200, 199, 60)
        assert "retry-after" not in r.headers


@pytest.mark.parametrize(("database_url", "redis_url"), LIMITERS, indirect=["database_url"])
async def test_per_account_rate_limit_is_honoured(database_url, redis_url):
    async with limiter_rig(database_url, redis_url) as rig:
        async with rig.services.db.session() as session:
            await session.execute(
                update(Account).where(Account.sid == rig.sid).values(rate_limit_per_minute=3)
            )
        other, _ = await other_account(rig)
        for remaining in (2, 1, 0):
            r = await rig.http.get(rig.url("Calls.json"), auth=rig.auth)
            assert r.status_code == 200, r.text
            assert limit_headers(r) == (3, remaining, 60)
        r = await rig.http.get(rig.url("Calls"), auth=rig.auth)
        assert "the limit is 3 requests per minute" in xml_error(r, 429)
        # Another account keeps the default and its own count.
        r = await rig.http.get(
            other_url(rig, other, "Calls.json"), auth=(other.api_key, other.api_token)
        )
        assert r.status_code == 200, r.text
        assert limit_headers(r) == (200, 199, 60)


# --- 3. a published client library ----------------------------------------------------------


async def test_exotel_library_places_a_flow_call_and_reads_it_back(database_url):
    async with running(database_url) as rig:
        client = exotel.Exotel(rig.sid, rig.token, baseurl=rig.base + "/")
        r = await asyncio.to_thread(
            client.call_flow,
            CUSTOMER,
            EXOPHONE,
            rig.app_id,
            status_callback=f"{rig.customer.url}/status",
            custom_data="order-7",
        )
        assert r.status_code == 200, r.text
        call = r.json()["Call"]
        assert list(call) == CALL_FIELDS
        assert call["Status"] == "in-progress"
        assert (call["From"], call["To"], call["PhoneNumberSid"]) == (CUSTOMER, EXOPHONE, EXOPHONE)
        assert call["AccountSid"] == rig.sid and call["Direction"] == "outbound-api"
        assert call["Uri"] == f"/v1/Accounts/{rig.sid}/Calls/{call['Sid']}.json"

        await rig.finish(call["Sid"])
        r = await asyncio.to_thread(client.call_details, call["Sid"])
        assert r.status_code == 200, r.text
        final = r.json()["Call"]
        assert final["Sid"] == call["Sid"] and final["Status"] == "completed"
        assert final["EndTime"] and final["Duration"] >= 3
        [hook] = rig.customer.to("/passthru")
        assert hook.query["CustomField"] == "order-7" and hook.query["flow_id"] == str(rig.app_id)
        [status] = rig.customer.to("/status")
        assert status.fields()["Status"] == "completed"


async def test_exotel_library_connects_two_numbers(database_url):
    async with running(database_url) as rig:
        client = exotel.Exotel(rig.sid, rig.token, baseurl=rig.base + "/")
        # 09999900004 answers after a second and hangs up five seconds later.
        r = await asyncio.to_thread(client.call_number, CUSTOMER, EXOPHONE, "09999900004")
        assert r.status_code == 200, r.text
        call = r.json()["Call"]
        assert call["Status"] == "in-progress"
        assert (call["From"], call["To"]) == (CUSTOMER, "09999900004")
        assert call["PhoneNumberSid"] == EXOPHONE

        await rig.finish(call["Sid"])
        r = await asyncio.to_thread(client.call_details, call["Sid"])
        assert r.status_code == 200, r.text
        final = r.json()["Call"]
        assert final["Status"] == "completed" and final["To"] == "09999900004"
        assert final["EndTime"] and final["Duration"] >= 5


# --- 4. lenient input ------------------------------------------------------------------------


def multipart(params: dict[str, Any]) -> dict[str, Any]:
    return {"files": [(name, (None, str(value))) for name, value in params.items()]}


def query_only(params: dict[str, Any]) -> dict[str, Any]:
    return {"params": params}


ENCODINGS = {
    "json": lambda p: {"json": p},
    "json-declared-as-form": lambda p: {
        "content": json.dumps(p),
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    },
    "multipart": multipart,
    "query-string-no-body": query_only,
    "leading-ampersand": lambda p: {
        "content": "&" + urlencode(p),
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    },
}


@SQLITE_ONLY
@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_parameters_in_any_encoding(database_url, encoding):
    async with running(database_url) as rig:
        params = flow_params(rig, TimeOut="25", CustomField="enc-check")
        r = await rig.http.post(
            rig.url("Calls/connect.json"), auth=rig.auth, **ENCODINGS[encoding](params)
        )
        call = await rig.call(created_sid(r))
        assert (call.from_number, call.caller_id) == ("+919812345678", "+918039591234")
        assert (call.app_id, call.time_out, call.custom_field) == (rig.app_id, 25, "enc-check")


@SQLITE_ONLY
async def test_parameter_names_and_path_segments_in_any_case(database_url):
    async with running(database_url) as rig:
        params = {"FROM": CUSTOMER, "callerid": EXOPHONE, "url": rig.flow_url(), "Timelimit": "90"}
        r = await rig.http.post(
            f"{rig.base}/v1/accounts/{rig.sid}/calls/connect.json", data=params, auth=rig.auth
        )
        call = await rig.call(created_sid(r))
        assert (call.from_number, call.app_id, call.time_limit) == ("+919812345678", rig.app_id, 90)


@SQLITE_ONLY
async def test_details_true_on_the_post_is_accepted(database_url):
    async with running(database_url) as rig:
        r = await rig.http.post(
            rig.url("Calls/connect.json?details=true"), data=flow_params(rig), auth=rig.auth
        )
        assert await rig.call(created_sid(r))


EVENT_FORMS = [
    (
        [("StatusCallbackEvents[0]", "answered"), ("StatusCallbackEvents[1]", "terminal")],
        ["answered", "terminal"],
    ),
    ([("StatusCallbackEvents[]", "terminal")], ["terminal"]),
    ([("StatusCallbackEvents", "answered,terminal")], ["answered", "terminal"]),
    (
        [("StatusCallbackEvents", "answered"), ("StatusCallbackEvents", "terminal")],
        ["answered", "terminal"],
    ),
]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("events", "expected"), EVENT_FORMS, ids=["indexed", "brackets", "comma", "repeated"]
)
async def test_status_callback_events_in_every_list_encoding(database_url, events, expected):
    async with running(database_url) as rig:
        pairs = [*flow_params(rig, StatusCallback=f"{rig.customer.url}/status").items(), *events]
        r = await rig.http.post(
            rig.url("Calls/connect.json"),
            content=urlencode(pairs),
            headers={"content-type": "application/x-www-form-urlencoded"},
            auth=rig.auth,
        )
        sid = created_sid(r)
        await rig.finish(sid)
        callbacks = [s.fields() for s in rig.customer.to("/status")]
        assert [c["EventType"] for c in callbacks] == expected
        assert callbacks[-1]["Status"] == "completed" and callbacks[-1]["CallSid"] == sid


INVALID = {
    "no-from": ({"From": None}, "From is a mandatory parameter"),
    "callerid": (
        {"CallerId": "08039591299"},
        "CallerId 08039591299 is not an ExoPhone of this account",
    ),
    "unknown-app": (
        {"Url": "http://my.exotel.com/x/exoml/start_voice/987654"},
        "Url: there is no app 987654 in this account",
    ),
    "promo": ({"CallType": "promo"}, "CallType promo is no longer supported"),
    "url-and-to": (
        {"To": "09845067890"},
        (
            "Url and To cannot be used together: Url runs an app on the call, To connects From "
            "to that number; give one of them"
        ),
    ),
    "timeout": ({"TimeOut": "61"}, "TimeOut must be a whole number from 1 to 60, got '61'"),
    "timelimit": (
        {"TimeLimit": "14401"},
        "TimeLimit must be a whole number from 1 to 14400, got '14401'",
    ),
    "customfield": ({"CustomField": "x" * 129}, "CustomField must be at most 128 characters"),
    "callback-scheme": (
        {"StatusCallback": "ftp://example.com/cb"},
        "StatusCallback must be an http or https URL",
    ),
}


@SQLITE_ONLY
@pytest.mark.parametrize(("change", "message"), list(INVALID.values()), ids=list(INVALID))
async def test_invalid_parameter_is_400_naming_it(database_url, change, message):
    async with running(database_url) as rig:
        params = {k: v for k, v in {**flow_params(rig), **change}.items() if v is not None}
        r = await rig.http.post(rig.url("Calls/connect.json"), data=params, auth=rig.auth)
        assert json_error(r, 400) == message
        assert await call_count(rig) == 0


@SQLITE_ONLY
async def test_invalid_parameter_on_the_xml_endpoint_is_an_xml_400(database_url):
    async with running(database_url) as rig:
        r = await rig.connect("", CallerId=EXOPHONE, Url=rig.flow_url())
        assert xml_error(r, 400) == "From is a mandatory parameter"


async def test_app_id_beyond_any_database_id_is_400_not_500(database_url):
    async with running(database_url) as rig:
        huge = "9" * 20
        r = await rig.connect(
            **flow_params(rig, Url=f"http://my.exotel.com/{rig.sid}/exoml/start_voice/{huge}")
        )
        assert json_error(r, 400) == f"Url: there is no app {huge} in this account"


@SQLITE_ONLY
async def test_another_accounts_app_in_url_is_400(database_url):
    async with running(database_url) as rig:
        _, their_app = await other_account(rig)
        r = await rig.connect(**flow_params(rig, Url=rig.flow_url(their_app)))
        assert json_error(r, 400) == f"Url: there is no app {their_app} in this account"
        assert await call_count(rig) == 0


@SQLITE_ONLY
async def test_private_status_callback_is_400_unless_allowed(database_url):
    async with running(database_url, allow_private_urls=False) as rig:
        for url, shown in [
            ("http://127.0.0.1:9/cb", "127.0.0.1"),
            ("http://10.1.2.3/cb", "10.1.2.3"),
            ("http://localhost/cb", "localhost"),
        ]:
            r = await rig.connect(**flow_params(rig, StatusCallback=url))
            assert json_error(r, 400).startswith(
                f"StatusCallback points to a private address ({shown})"
            )
        assert await call_count(rig) == 0


# --- 5. the bulk call list -------------------------------------------------------------------


async def place_calls(rig: Rig, count: int) -> list[str]:
    """``count`` flow calls, one clock second apart, oldest first."""
    sids = []
    for i in range(count):
        sids.append(created_sid(await rig.connect(**flow_params(rig, From=f"0981234560{i}"))))
        await rig.clock.advance(1)
    return sids


async def test_call_list_pages_through_next_page_uri(database_url):
    async with running(database_url) as rig:
        sids = await place_calls(rig, 5)
        other, their_app = await other_account(rig)
        r = await rig.http.post(
            other_url(rig, other, "Calls/connect.json"),
            data={"From": CUSTOMER, "CallerId": OTHER_EXOPHONE, "Url": rig.flow_url(their_app)},
            auth=(other.api_key, other.api_token),
        )
        their_sid = created_sid(r)

        pages: list[list[str]] = []
        url = rig.url("Calls.json?PageSize=2")
        while url:
            r = await rig.http.get(url, auth=rig.auth)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["Metadata"]["Total"] == 5 and body["Metadata"]["PageSize"] == 2
            assert all(list(c) == CALL_FIELDS for c in body["Calls"])
            pages.append([c["Sid"] for c in body["Calls"]])
            next_uri = body["Metadata"]["NextPageUri"]
            url = urljoin(rig.base, next_uri) if next_uri else None
            assert len(pages) <= 3
        assert [len(p) for p in pages] == [2, 2, 1]
        # Newest first by default; nothing repeated, nothing skipped, nothing of the other account.
        assert [sid for page in pages for sid in page] == sids[::-1]

        r = await rig.http.get(
            other_url(rig, other, "Calls.json"), auth=(other.api_key, other.api_token)
        )
        assert [c["Sid"] for c in r.json()["Calls"]] == [their_sid]
        await finish_all(rig)


async def test_call_list_in_xml(database_url):
    async with running(database_url) as rig:
        sids = await place_calls(rig, 3)
        r = await rig.http.get(rig.url("Calls?PageSize=2"), auth=rig.auth)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/xml")
        root = ET.fromstring(r.content)
        assert [child.tag for child in root] == ["Metadata", "Calls"]
        meta = root.find("Metadata")
        assert [m.tag for m in meta] == METADATA_FIELDS
        values = {name: meta.findtext(name) for name in METADATA_FIELDS}
        assert (values["Total"], values["PageSize"], values["PrevPageUri"]) == ("3", "2", "")
        calls = root.find("Calls")
        assert [c.tag for c in calls] == ["Call", "Call"]
        assert all([field.tag for field in c] == CALL_FIELDS for c in calls)
        assert [c.findtext("Sid") for c in calls] == sids[:0:-1]
        assert calls[0].findtext("Uri") == f"/v1/Accounts/{rig.sid}/Calls/{sids[2]}"

        r = await rig.http.get(urljoin(rig.base, meta.findtext("NextPageUri")), auth=rig.auth)
        root = ET.fromstring(r.content)
        assert [c.findtext("Sid") for c in root.find("Calls")] == [sids[0]]
        assert root.findtext("Metadata/NextPageUri") == ""
        await finish_all(rig)


# --- 6. ExoPhones ------------------------------------------------------------------------------


async def test_incoming_phone_numbers_in_json_and_xml(database_url):
    async with running(database_url) as rig:
        await rig.services.accounts.add_number(rig.sid, "+91 98123 45600", friendly_name="support")
        await other_account(rig)
        r = await rig.http.get(rig.url("IncomingPhoneNumbers.json"), auth=rig.auth)
        assert r.status_code == 200, r.text
        items = [item["IncomingPhoneNumber"] for item in r.json()["IncomingPhoneNumbers"]]
        assert [n["PhoneNumber"] for n in items] == [EXOPHONE, "09812345600"]
        assert items[1]["FriendlyName"] == "support" and items[0]["AccountSid"] == rig.sid
        assert items[0]["Capabilities"] == {"Voice": True, "Sms": False}

        r = await rig.http.get(rig.url("IncomingPhoneNumbers"), auth=rig.auth)
        assert r.headers["content-type"].startswith("application/xml")
        root = ET.fromstring(r.content)
        numbers = root.findall("IncomingPhoneNumbers/IncomingPhoneNumber")
        assert [n.findtext("PhoneNumber") for n in numbers] == [EXOPHONE, "09812345600"]
        assert numbers[0].findtext("Capabilities/Voice") == "true"


# --- 7. lookups and routing -----------------------------------------------------------------


async def test_call_sid_lookup_ignores_case(database_url):
    async with running(database_url) as rig:
        sid = created_sid(await rig.connect(**flow_params(rig)))
        r = await rig.http.get(rig.url(f"Calls/{sid.upper()}.json"), auth=rig.auth)
        assert r.status_code == 200, r.text
        assert r.json()["Call"]["Sid"] == sid
        r = await rig.http.get(rig.url(f"Calls/{sid.upper()}"), auth=rig.auth)
        assert ET.fromstring(r.content).findtext("Call/Sid") == sid


@SQLITE_ONLY
async def test_unknown_call_sid_is_404(database_url):
    async with running(database_url) as rig:
        missing = "0" * 31 + "k"
        r = await rig.http.get(rig.url(f"Calls/{missing}.json"), auth=rig.auth)
        assert missing in json_error(r, 404)
        xml_error(await rig.http.get(rig.url(f"Calls/{missing}"), auth=rig.auth), 404)


@SQLITE_ONLY
async def test_unknown_path_is_404_in_the_endpoint_format(database_url):
    async with running(database_url) as rig:
        json_error(await rig.http.post(rig.url("Sms/send.json"), auth=rig.auth), 404)
        xml_error(await rig.http.get(rig.url("Recordings"), auth=rig.auth), 404)
        json_error(await rig.http.get(f"{rig.base}/v1/nothing.json"), 404)


@SQLITE_ONLY
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
async def test_wrong_method_on_connect_is_405(database_url, method):
    async with running(database_url) as rig:
        r = await rig.http.request(method, rig.url("Calls/connect.json"), auth=rig.auth)
        json_error(r, 405)
        assert r.headers["allow"] == "POST"
        r = await rig.http.request(method, rig.url("Calls/connect"), auth=rig.auth)
        xml_error(r, 405)


@SQLITE_ONLY
async def test_server_fault_is_500_in_the_endpoint_format(database_url):
    async with running(database_url) as rig:
        # A real fault rather than a mock: the table the endpoint reads is gone.
        async with rig.services.db.session() as session:
            await session.execute(text("DROP TABLE phone_numbers"))
        r = await rig.http.get(rig.url("IncomingPhoneNumbers.json"), auth=rig.auth)
        assert json_error(r, 500) == "Internal server error"
        assert r.headers["x-ratelimit-limit"] == "200"
        xml_error(await rig.http.get(rig.url("IncomingPhoneNumbers"), auth=rig.auth), 500)


async def test_redis_down_refuses_with_503_never_unlimited(tmp_path, sqlite_template):
    import shutil

    path = tmp_path / "r.db"
    shutil.copy(sqlite_template, path)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with running(f"sqlite+aiosqlite:///{path}", redis_url=dead) as rig:
        r = await rig.http.get(rig.url("IncomingPhoneNumbers.json"), auth=rig.auth)
        assert r.status_code == 503
        assert r.json()["RestException"]["Message"] == "rate limiter unavailable; try again shortly"
        assert r.headers["Retry-After"] == "5"
