"""The bulk call list (spec section 4): filters, time zones, keyset pages, limits and errors."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import event, update

from ringflow.api.call_list import CallPage, list_calls
from ringflow.api.params import Params
from ringflow.errors import InvalidRequest
from ringflow.storage.models import Account, Call, Leg

UTC = dt.UTC
BASE = "/v1/Accounts/acme/Calls.json"
T0 = dt.datetime(2026, 1, 10, 6, 0, 0, tzinfo=UTC)
EXOPHONE = "+918047112233"
OTHER_EXOPHONE = "+918047112244"
ALICE = "+919845012345"
BOB = "+919845067890"
CAROL = "+14155550100"


def cursor(data: Any) -> str:
    """A hand-made Before/After value, as a client tampering with one would send."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def call(account: Account, n: int, at: dt.datetime, **fields: Any) -> Call:
    values: dict[str, Any] = {
        "shape": "flow",
        "from_number": ALICE,
        "to_number": "",
        "caller_id": EXOPHONE,
        "status": "completed",
        "direction": "outbound-api",
        "duration": 30,
        "price": "1.000",
    }
    values.update(fields)
    sid = f"{account.sid}{n:04d}".ljust(32, "x")
    return Call(
        sid=sid,
        account_id=account.id,
        time_limit=14400,
        time_out=30,
        created_at=at,
        updated_at=at,
        legs=[Leg(leg_no=1, number=values["from_number"], status=values["status"])],
        **values,
    )


async def setup(db, calls: list[dict[str, Any]]) -> tuple[Account, list[Call]]:
    """Account ``acme`` (Asia/Kolkata) with ``calls``; account ``other`` with look-alikes."""
    async with db.session() as s:
        acme = Account(sid="acme", name="Acme", time_zone="Asia/Kolkata", created_at=T0)
        other = Account(sid="other", name="Other", time_zone="UTC", created_at=T0)
        s.add_all([acme, other])
        await s.flush()
        rows = []
        for n, spec in enumerate(calls):
            fields = dict(spec)
            at = fields.pop("at", T0 + dt.timedelta(minutes=n))
            rows.append(call(acme, n, at, **fields))
            # The other account's twin matches every filter the acme call matches.
            s.add(call(other, n, at, **fields))
        s.add_all(rows)
    return acme, rows


async def page(db, account: Account, params: Params | dict[str, str]) -> CallPage:
    if isinstance(params, dict):
        params = Params(params.items())
    async with db.session() as s:
        return await list_calls(s, account, params, base_path=BASE)


def follow(uri: str) -> Params:
    """A Metadata URI fed back as the next request's parameters."""
    parts = urlsplit(uri)
    assert parts.path == BASE
    return Params(parse_qsl(parts.query, keep_blank_values=True))


def sids(result: CallPage) -> list[str]:
    return [c.sid for c in result.calls]


async def test_lists_only_this_account_newest_first(db):
    acme, rows = await setup(db, [{} for _ in range(4)])
    result = await page(db, acme, {})
    assert sids(result) == [r.sid for r in reversed(rows)]
    assert all(c.account_id == acme.id for c in result.calls)
    assert [leg.leg_no for leg in result.calls[0].legs] == [1]
    assert result.metadata == {
        "Total": 4,
        "PageSize": 50,
        "FirstPageUri": f"{BASE}?PageSize=50",
        "PrevPageUri": None,
        "NextPageUri": None,
    }
    assert list(result.metadata) == [
        "Total",
        "PageSize",
        "FirstPageUri",
        "PrevPageUri",
        "NextPageUri",
    ]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("size", [1, 3, 4, 11, 12])
async def test_pages_forward_and_back_see_every_call_once(db, order, size):
    # Ties on created_at (calls 3-6 share a second, 7-8 a microsecond) need the id tiebreak.
    times = [T0 + dt.timedelta(seconds=n) for n in range(3)]
    times += [T0 + dt.timedelta(seconds=10)] * 4
    times += [T0 + dt.timedelta(seconds=20, microseconds=5)] * 2
    times += [T0 + dt.timedelta(seconds=30, microseconds=n) for n in range(2)]
    # Inserted out of order, so ids and times disagree.
    acme, rows = await setup(db, [{"at": at} for at in reversed(times)])
    expected = sorted(rows, key=lambda r: (r.created_at, r.id), reverse=order == "desc")
    expected_sids = [r.sid for r in expected]

    params = Params([("SortBy", f"DateCreated:{order}"), ("PageSize", str(size))])
    pages: list[CallPage] = []
    while True:
        result = await page(db, acme, params)
        pages.append(result)
        assert result.metadata["Total"] == 11
        assert len(result.calls) <= size
        if result.metadata["NextPageUri"] is None:
            break
        params = follow(result.metadata["NextPageUri"])
        assert len(pages) <= 11
    assert [sid for p in pages for sid in sids(p)] == expected_sids
    assert len(pages) == -(-11 // size)
    assert pages[0].metadata["PrevPageUri"] is None
    assert all(p.metadata["PrevPageUri"] for p in pages[1:])

    back = [pages[-1]]
    while back[-1].metadata["PrevPageUri"] is not None:
        back.append(await page(db, acme, follow(back[-1].metadata["PrevPageUri"])))
        assert len(back) <= 11
    assert [sids(p) for p in reversed(back)] == [sids(p) for p in pages]
    # A page reached backwards still links forward to the page it came from.
    if len(back) > 1:
        again = await page(db, acme, follow(back[1].metadata["NextPageUri"]))
        assert sids(again) == sids(pages[-1])


async def test_links_keep_filters_page_size_and_sort(db):
    acme, _ = await setup(db, [{"status": "busy"}] * 3 + [{"status": "completed"}])
    params = {
        "status": "busy",
        "To": "08047112233",
        "DateCreated": "gte:2026-01-10 11:30:00",
        "sortby": "datecreated:ASC",
        "PageSize": "2",
        "details": "true",
    }
    result = await page(db, acme, params)
    first = urlsplit(result.metadata["FirstPageUri"])
    assert first.path == BASE
    assert parse_qsl(first.query) == [
        ("DateCreated", "gte:2026-01-10 11:30:00"),
        ("To", "08047112233"),
        ("Status", "busy"),
        ("SortBy", "DateCreated:asc"),
        ("PageSize", "2"),
    ]
    nxt = await page(db, acme, follow(result.metadata["NextPageUri"]))
    assert nxt.metadata["Total"] == 3
    assert len(nxt.calls) == 1 and nxt.metadata["NextPageUri"] is None
    first_again = await page(db, acme, follow(nxt.metadata["FirstPageUri"]))
    assert sids(first_again) == sids(result)


async def test_plus_in_numbers_survives_the_links(db):
    acme, rows = await setup(db, [{"from_number": CAROL}, {"from_number": CAROL}, {}])
    result = await page(db, acme, {"From": CAROL, "PageSize": "1"})
    assert "From=%2B14155550100" in result.metadata["NextPageUri"]
    nxt = await page(db, acme, follow(result.metadata["NextPageUri"]))
    assert sids(nxt) == [rows[0].sid]


async def test_sid_filter(db):
    acme, rows = await setup(db, [{} for _ in range(4)])
    wanted = f"{rows[1].sid.upper()}, {rows[3].sid},nosuchsid"
    result = await page(db, acme, {"Sid": wanted})
    assert sids(result) == [rows[3].sid, rows[1].sid]
    assert result.metadata["Total"] == 2
    # Repeated parameters read as one comma list.
    repeated = Params([("Sid", rows[0].sid), ("Sid", rows[2].sid)])
    assert sids(await page(db, acme, repeated)) == [rows[2].sid, rows[0].sid]


async def test_to_means_the_exophone_for_flow_calls_and_the_party_for_two_number_calls(db):
    acme, rows = await setup(
        db,
        [
            {"shape": "flow", "caller_id": EXOPHONE, "to_number": ""},
            {"shape": "numbers", "to_number": BOB, "caller_id": EXOPHONE},
            {"shape": "numbers", "to_number": EXOPHONE, "caller_id": OTHER_EXOPHONE},
            {"shape": "flow", "caller_id": OTHER_EXOPHONE, "to_number": BOB},
        ],
    )
    by_exophone = await page(db, acme, {"To": "080 4711 2233"})
    assert sids(by_exophone) == [rows[2].sid, rows[0].sid]
    by_party = await page(db, acme, {"To": "09845067890"})
    assert sids(by_party) == [rows[1].sid]
    both = await page(db, acme, {"To": f"{BOB},{OTHER_EXOPHONE}"})
    assert sids(both) == [rows[3].sid, rows[1].sid]


async def test_from_and_phone_number_filters(db):
    acme, rows = await setup(
        db,
        [
            {"from_number": ALICE, "caller_id": EXOPHONE},
            {"from_number": BOB, "caller_id": EXOPHONE},
            {"from_number": CAROL, "caller_id": OTHER_EXOPHONE},
        ],
    )
    assert sids(await page(db, acme, {"From": "+91 98450-67890"})) == [rows[1].sid]
    assert sids(await page(db, acme, {"From": f"{CAROL},09845012345"})) == [
        rows[2].sid,
        rows[0].sid,
    ]
    assert sids(await page(db, acme, {"PhoneNumber": "08047112244"})) == [rows[2].sid]
    result = await page(db, acme, {"PhoneNumber": EXOPHONE, "From": BOB})
    assert sids(result) == [rows[1].sid] and result.metadata["Total"] == 1


async def test_status_and_direction_filters(db):
    acme, rows = await setup(
        db,
        [
            {"status": "completed", "direction": "outbound-api"},
            {"status": "busy", "direction": "outbound-api"},
            {"status": "no-answer", "direction": "outbound-dial"},
            {"status": "in-progress", "direction": "inbound"},
        ],
    )
    assert sids(await page(db, acme, {"Status": "Busy , no-answer"})) == [
        rows[2].sid,
        rows[1].sid,
    ]
    assert sids(await page(db, acme, {"Direction": "inbound"})) == [rows[3].sid]
    result = await page(db, acme, {"Direction": "outbound-api,outbound-dial", "Status": "busy"})
    assert sids(result) == [rows[1].sid]


async def test_duration_filter(db):
    acme, rows = await setup(
        db, [{"duration": d} for d in (0, 10, 30, 45, 46)] + [{"duration": None}]
    )
    assert sids(await page(db, acme, {"Duration": "gte:10s;lte:45s"})) == [
        rows[3].sid,
        rows[2].sid,
        rows[1].sid,
    ]
    assert sids(await page(db, acme, {"Duration": "eq:30s"})) == [rows[2].sid]
    assert sids(await page(db, acme, {"Duration": "gt:10;lt:46S"})) == [rows[3].sid, rows[2].sid]
    assert (await page(db, acme, {"Duration": "gte:0s"})).metadata["Total"] == 5


async def test_price_filter_compares_numbers_not_text(db):
    prices = ["0.4", "0.500", "1.5", "2", "10.000", None, "0"]
    acme, rows = await setup(db, [{"price": p} for p in prices])
    # As text "10.000" would sort between "1.5" and "2".
    assert sids(await page(db, acme, {"Price": "gte:0.5;lte:2"})) == [
        rows[3].sid,
        rows[2].sid,
        rows[1].sid,
    ]
    assert sids(await page(db, acme, {"Price": "gt:2"})) == [rows[4].sid]
    assert sids(await page(db, acme, {"Price": "eq:0.5"})) == [rows[1].sid]
    assert sids(await page(db, acme, {"Price": "lt:0.5"})) == [rows[6].sid, rows[0].sid]


async def test_date_created_is_read_in_the_account_time_zone(db):
    # Midnight on 2 January in Kolkata (UTC+05:30) is 18:30 UTC on 1 January.
    at = [
        dt.datetime(2026, 1, 1, 18, 29, 58, tzinfo=UTC),
        dt.datetime(2026, 1, 1, 18, 29, 59, 700000, tzinfo=UTC),  # shown as 23:59:59
        dt.datetime(2026, 1, 1, 18, 30, 0, tzinfo=UTC),  # shown as 2 Jan 00:00:00
        dt.datetime(2026, 1, 31, 18, 29, 59, tzinfo=UTC),
        dt.datetime(2026, 1, 31, 18, 30, 0, tzinfo=UTC),
    ]
    acme, rows = await setup(db, [{"at": t} for t in at])
    january_2_on = await page(db, acme, {"DateCreated": "gte:2026-01-02 00:00:00"})
    assert sids(january_2_on) == [rows[4].sid, rows[3].sid, rows[2].sid]
    month = await page(db, acme, {"DateCreated": "gte:2026-01-02 00:00:00;lte:2026-01-31 23:59:59"})
    assert sids(month) == [rows[3].sid, rows[2].sid]
    # Whole seconds, as DateCreated is echoed: lte:...:59 takes the call at :59.7.
    to_jan_1 = await page(db, acme, {"DateCreated": "lte:2026-01-01 23:59:59"})
    assert sids(to_jan_1) == [rows[1].sid, rows[0].sid]
    assert sids(await page(db, acme, {"DateCreated": "eq:2026-01-01 23:59:59"})) == [rows[1].sid]
    assert sids(
        await page(db, acme, {"DateCreated": "gt:2026-01-01 23:59:59;lt:2026-02-01 00:00:00"})
    ) == [
        rows[3].sid,
        rows[2].sid,
    ]
    both = Params(
        [("DateCreated", "gte:2026-01-01 23:59:59"), ("DateCreated", "lt:2026-01-02 00:00:01")]
    )
    assert sids(await page(db, acme, both)) == [rows[2].sid, rows[1].sid]


async def test_a_page_emptied_under_the_cursor_still_leads_back(db):
    acme, rows = await setup(db, [{} for _ in range(4)])
    first = await page(
        db, acme, {"Status": "completed", "PageSize": "2", "SortBy": "DateCreated:asc"}
    )
    assert sids(first) == [rows[0].sid, rows[1].sid]
    async with db.session() as s:
        await s.execute(
            update(Call).where(Call.sid.in_([rows[2].sid, rows[3].sid])).values(status="failed")
        )
    empty = await page(db, acme, follow(first.metadata["NextPageUri"]))
    assert empty.calls == [] and empty.metadata["Total"] == 2
    assert empty.metadata["NextPageUri"] is None
    back = await page(db, acme, follow(empty.metadata["PrevPageUri"]))
    assert sids(back) == sids(first)
    assert back.metadata["PrevPageUri"] is None


async def test_one_count_query_and_one_page_query(db):
    acme, _ = await setup(db, [{} for _ in range(5)])
    statements: list[str] = []

    def record(conn, cursor_, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await page(db, acme, {"PageSize": "2", "Status": "completed"})
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # count, page, and the legs of the page (the selectin relationship)
    assert len(selects) == 3
    assert "count(" in selects[0].lower()
    assert "FROM legs" in selects[2]


async def test_limits(db):
    acme, rows = await setup(db, [{}])
    hundred = ",".join(f"sid{n}" for n in range(99)) + "," + rows[0].sid
    assert sids(await page(db, acme, {"Sid": hundred})) == [rows[0].sid]
    assert (await page(db, acme, {"PageSize": "100"})).metadata["PageSize"] == 100
    five = ",".join(f"+9198450{n:05d}" for n in range(5))
    assert (await page(db, acme, {"To": five, "From": five, "PhoneNumber": five})).calls == []
    cases = {
        "Sid": (hundred + ",extra", "Sid takes at most 100 comma-separated values, got 101"),
        "To": (five + ",+919845099999", "To takes at most 5 comma-separated values, got 6"),
        "From": (five + ",+919845099999", "From takes at most 5"),
        "PhoneNumber": (five + ",+919845099999", "PhoneNumber takes at most 5"),
        "PageSize": ("101", "PageSize must be a whole number from 1 to 100, got '101'"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(InvalidRequest, match="^" + message.replace("+", r"\+")):
            await page(db, acme, {name: value})
    with pytest.raises(InvalidRequest, match="PageSize must be a whole number from 1 to 100"):
        await page(db, acme, {"PageSize": "0"})


DATE_FORM = "DateCreated must look like gte:2026-01-01 00:00:00;lte:2026-01-31 23:59:59"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"DateCreated": "2026-01-01 00:00:00"}, DATE_FORM),
        ({"DateCreated": "gte:2026-01-01"}, DATE_FORM),
        ({"DateCreated": "gte:2026-13-01 00:00:00"}, DATE_FORM),
        ({"DateCreated": "after:2026-01-01 00:00:00"}, DATE_FORM),
        ({"DateCreated": ";"}, DATE_FORM),
        ({"Duration": "gte:ten"}, "Duration must look like gte:10s;lte:45s"),
        ({"Duration": "gte:10m"}, "Duration must look like gte:10s;lte:45s"),
        ({"Price": "gte:-1"}, "Price must look like gte:0.5;lte:2"),
        ({"Price": "lte:NaN"}, "Price must look like gte:0.5;lte:2"),
        ({"Status": "completed,done"}, "Status must be a comma-separated list of queued, ringing"),
        (
            {"Status": "queued,ringing,in-progress,completed,failed,busy,no-answer,canceled,x"},
            "Status must be a comma-separated list of queued, ringing",
        ),
        ({"Direction": "sideways"}, "Direction must be a comma-separated list of inbound"),
        ({"Sid": "abc;def"}, "Sid must be comma-separated call SIDs"),
        ({"Sid": ",,"}, "Sid must be a comma-separated list"),
        ({"To": "hello"}, "To 'hello' is not a valid phone number"),
        ({"From": "12345"}, "From '12345' is not a valid phone number"),
        ({"PhoneNumber": "0000"}, "PhoneNumber '0000' is not a valid phone number"),
        ({"SortBy": "Duration:asc"}, "SortBy must be DateCreated:asc or DateCreated:desc"),
        ({"SortBy": "DateCreated:up"}, "SortBy must be DateCreated:asc or DateCreated:desc"),
        ({"PageSize": "ten"}, "PageSize must be a whole number from 1 to 100"),
        (
            {"After": "not a cursor!"},
            "After must be a cursor copied from PrevPageUri or NextPageUri",
        ),
        ({"Before": cursor(b"\xff\xfe")}, "Before must be a cursor copied from PrevPageUri"),
        ({"Before": cursor([1, 2])}, "Before must be a cursor copied"),
        ({"After": cursor({"t": "yesterday", "i": 1})}, "After must be a cursor copied"),
        ({"After": cursor({"t": "2026-01-01T00:00:00", "i": 1})}, "After must be a cursor copied"),
        ({"After": cursor({"t": "0001-01-01T00:00:00+05:00", "i": 1})}, "After must be a cursor"),
        (
            {"After": cursor({"t": "2026-01-01T00:00:00+00:00", "i": 2**70})},
            "After must be a cursor",
        ),
        (
            {"After": cursor({"t": "2026-01-01T00:00:00+00:00", "i": True})},
            "After must be a cursor",
        ),
        ({"After": cursor({"t": "2026-01-01T00:00:00+00:00"})}, "After must be a cursor"),
        ({"After": "A" * 400}, "After must be a cursor"),
        (
            {
                "After": cursor({"t": "2026-01-01T00:00:00+00:00", "i": 1}),
                "Before": cursor({"t": "2026-01-01T00:00:00+00:00", "i": 1}),
            },
            "give Before or After, not both",
        ),
    ],
)
async def test_malformed_input_is_a_400_that_names_the_parameter(db, params, message):
    acme, _ = await setup(db, [{}])
    with pytest.raises(InvalidRequest) as caught:
        await page(db, acme, params)
    assert str(caught.value).startswith(message), str(caught.value)


async def test_a_forged_but_well_formed_cursor_is_just_a_position(db):
    acme, rows = await setup(db, [{} for _ in range(3)])
    after = cursor({"t": rows[1].created_at.isoformat(), "i": rows[1].id})
    result = await page(db, acme, {"After": after})
    assert sids(result) == [rows[0].sid]
