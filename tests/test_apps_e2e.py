"""The example apps of examples/, end to end on the sandbox: each YAML file is loaded as it is
(its https://example.com URLs pointed at the customer's test server), a call runs it with
scripted keys, and the test checks the branch taken, the digits, the exact query parameters the
customer's server received and the final StatusCallback. Then the IVR scenario of issue 3.

Most run on SQLite only; the IVR scenario and the transfer (which loads a second app from
storage mid-call) run on every backend."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import delete, update

from ringflow.flows.context import CREATED_FORMAT, EXOTEL_DATE
from ringflow.storage.models import Account, App
from tests.e2e import EXOPHONE, Rig, running

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CUSTOMER = "09812345678"
# The rig's ManualClock starts at 2026-11-26 10:00 UTC, a Thursday: the call is created, and its
# StartTime set, then (it is answered a second later).
CALL_CREATED = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def example(name: str, customer_url: str) -> dict[str, Any]:
    """An example app as written, its customer URLs pointed at the test's customer server."""
    text = (EXAMPLES / name).read_text()
    return yaml.safe_load(text.replace("https://example.com/", f"{customer_url}/"))


async def save_example(rig: Rig, name: str, **node_changes: dict[str, Any]) -> int:
    """Save an example app in the rig's account; returns its id."""
    data = example(name, rig.customer.url)
    for node, changes in node_changes.items():
        data["nodes"][node].update(changes)
    return (await rig.services.accounts.save_app(rig.sid, data)).id


async def press(rig: Rig, keys: list[str], says: list[Any] | None = None) -> None:
    """Script the customer's phone: one entry of keys per time the app waits for input, and
    what it says each time the app records."""
    r = await rig.http.put(
        f"{rig.base}/admin/v1/accounts/{rig.sid}/sandbox/phones/{CUSTOMER}",
        json={"keys": keys, "says": says or []},
        auth=rig.auth,
    )
    assert r.status_code == 200, r.text


async def call_app(
    rig: Rig, app_id: int, keys: list[str], says: list[Any] | None = None, **params: Any
) -> str:
    """Place a call from the customer that runs ``app_id``; wait until it is over."""
    await press(rig, keys, says)
    r = await rig.connect(
        From=CUSTOMER,
        Url=rig.flow_url(app_id),
        StatusCallback=f"{rig.customer.url}/status",
        **params,
    )
    assert r.status_code == 200, r.text
    sid = r.json()["Call"]["Sid"]
    await rig.finish(sid)
    return sid


class Timeline:
    """A call's timeline, with the views the tests compare."""

    def __init__(self, events: list[dict[str, Any]]):
        self.events = events

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["kind"] == kind]

    @property
    def entered(self) -> list[str]:
        return [d["node"] for d in self.of("applet.enter")]

    @property
    def said(self) -> list[str]:
        return [d["text"] for d in self.of("say")]

    @property
    def digits(self) -> list[str]:
        return [d["digits"] for d in self.of("digits")]

    def exits(self) -> dict[str, str]:
        """The last exit each node left by."""
        return {d["node"]: d["exit"] for d in self.of("applet.exit")}

    def entered_at(self, node: str) -> dt.datetime:
        """When ``node`` was last entered (an applet asks for its URL at once)."""
        [*_, at] = [
            e["at"]
            for e in self.events
            if e["kind"] == "applet.enter" and e["data"]["node"] == node
        ]
        return dt.datetime.fromisoformat(at)


async def timeline(rig: Rig, sid: str) -> Timeline:
    return Timeline(await rig.timeline(sid))


async def expected_query(
    rig: Rig,
    sid: str,
    steps: Timeline,
    node: str,
    app_id: int,
    zone: str = "Asia/Kolkata",
    **extra: str,
) -> dict[str, str]:
    """Every query parameter a Passthru-style request from ``node`` must carry, exactly."""
    tz = ZoneInfo(zone)
    call = await rig.call(sid)
    return {
        "CallSid": sid,
        "CallFrom": CUSTOMER,
        "CallTo": EXOPHONE,
        "From": CUSTOMER,
        "To": EXOPHONE,
        "Direction": "outbound-dial",
        "Created": CALL_CREATED.astimezone(tz).strftime(CREATED_FORMAT),
        "StartTime": CALL_CREATED.astimezone(tz).strftime(EXOTEL_DATE),
        "EndTime": "1970-01-01 05:30:00",
        "CurrentTime": steps.entered_at(node).astimezone(tz).strftime(EXOTEL_DATE),
        "CallType": "call-attempt",
        "flow_id": str(app_id),
        "tenant_id": str(call.account_id),
        **extra,
    }


async def check_final_callback(
    rig: Rig, sid: str, steps: Timeline, zone: str = "Asia/Kolkata"
) -> None:
    """One terminal StatusCallback, agreeing with the call and the end of its timeline."""
    [callback] = rig.customer.to("/status")
    fields = callback.fields()
    assert fields.keys() == {"CallSid", "Status", "RecordingUrl", "DateUpdated"}
    assert fields["CallSid"] == sid and fields["Status"] == "completed"
    assert callback.headers["idempotency-key"] == f"{sid}:terminal"
    assert (await rig.call(sid)).status == "completed"
    last = [e for e in steps.events if e["kind"] == "status"][-1]
    assert last["data"]["call"] == fields["Status"]
    ended = dt.datetime.fromisoformat(last["at"]).astimezone(ZoneInfo(zone))
    assert fields["DateUpdated"] == ended.strftime(EXOTEL_DATE)
    assert steps.events[-2]["kind"] == "flow.end"  # the flow ended, then the call


# IVR Menu: examples/ivr_menu.yaml

MENU_PROMPT = "For sales, press 1. For support, press 2. To hear this again, press star."


@sqlite_only
@pytest.mark.parametrize(
    ("keys", "entered", "said", "heard", "digits"),
    [
        (
            ["5", "2"],  # an invalid key, the prompt again, then support
            ["menu", "support", "log_choice", "bye"],
            [MENU_PROMPT, MENU_PROMPT, "Connecting you to support."],
            ["5", "2"],
            "2",
        ),
        (
            ["*", "1"],  # star leads back to the menu itself
            ["menu", "menu", "sales", "log_choice", "bye"],
            [MENU_PROMPT, MENU_PROMPT, "Connecting you to sales."],
            ["*", "1"],
            "1",
        ),
        (
            [],  # no key at all: the prompt and its 2 repeats, then sorry
            ["menu", "sorry", "bye"],
            [MENU_PROMPT] * 3 + ["Sorry, we did not get a valid choice. Goodbye."],
            ["", "", ""],
            None,
        ),
    ],
)
async def test_ivr_menu_example(database_url, keys, entered, said, heard, digits):
    async with running(database_url) as rig:
        app_id = await save_example(rig, "ivr_menu.yaml")
        sid = await call_app(rig, app_id, keys)
        steps = await timeline(rig, sid)
        assert steps.entered == entered
        assert steps.said == said
        assert steps.digits == heard
        choices = rig.customer.to("/ivr/menu-choice")
        if digits is None:
            assert choices == [] and steps.exits()["menu"] == "on_no_input"
        else:
            [choice] = choices
            assert choice.query == await expected_query(
                rig, sid, steps, "log_choice", app_id, digits=f'"{digits}"'
            )
        await check_final_callback(rig, sid, steps)


# Gather, static: examples/gather.yaml


@sqlite_only
async def test_gather_example_sends_the_digits_to_the_passthru(database_url):
    async with running(database_url) as rig:
        app_id = await save_example(rig, "gather.yaml")
        sid = await call_app(rig, app_id, ["1234#"], CustomField="order-line")
        steps = await timeline(rig, sid)
        assert steps.entered == ["order_number", "lookup", "found", "bye"]
        assert steps.said == [
            "Please enter your order number, then press hash.",
            "Your order is on its way.",
        ]
        assert steps.digits == ["1234"]  # the finish key is not part of the digits
        [lookup] = rig.customer.to("/ivr/order")
        assert lookup.query == await expected_query(
            rig, sid, steps, "lookup", app_id, digits='"1234"', CustomField="order-line"
        )
        await check_final_callback(rig, sid, steps)


@sqlite_only
async def test_gather_example_without_digits_repeats_then_takes_no_input(database_url):
    async with running(database_url) as rig:
        app_id = await save_example(rig, "gather.yaml")
        sid = await call_app(rig, app_id, ["#"])  # only the finish key: no digits
        steps = await timeline(rig, sid)
        assert steps.entered == ["order_number", "no_number", "bye"]
        assert steps.said == [
            "Please enter your order number, then press hash.",
            "We did not get that. Please enter your order number, then press hash.",
            "We did not get an order number. Goodbye.",
        ]
        assert steps.digits == ["", ""]
        assert rig.customer.to("/ivr/order") == []
        await check_final_callback(rig, sid, steps)


# Gather, dynamic: examples/gather_dynamic.yaml

GATHER_SETTINGS = {
    "gather_prompt": {"text": "Enter your 6 digit PIN"},
    "max_input_digits": 6,
    "finish_on_key": "#",
    "input_timeout": 4,
    "repeat_menu": 1,
    "repeat_gather_prompt": {"text": "Please enter your PIN again"},
}


@sqlite_only
async def test_gather_dynamic_example_takes_its_settings_from_the_url(database_url):
    async with running(database_url) as rig:
        app_id = await save_example(rig, "gather_dynamic.yaml")
        rig.customer.script = [(200, "application/json", json.dumps(GATHER_SETTINGS))]
        # Nothing on the first try; on the repeat, six keys end the input (max_input_digits).
        sid = await call_app(rig, app_id, ["", "98765432"])
        steps = await timeline(rig, sid)
        assert steps.entered == ["pin", "verify", "welcome", "bye"]
        assert steps.said == [
            "Enter your 6 digit PIN",
            "Please enter your PIN again",
            "Thank you. Your PIN is correct.",
        ]
        assert steps.digits == ["", "987654"]
        [settings] = rig.customer.to("/ivr/gather-settings")
        assert settings.headers["exotel-version"] == "1.0"
        assert settings.query == await expected_query(rig, sid, steps, "pin", app_id)
        [verify] = rig.customer.to("/ivr/verify-pin")
        assert verify.query == await expected_query(
            rig, sid, steps, "verify", app_id, digits='"987654"'
        )
        await check_final_callback(rig, sid, steps)


@sqlite_only
@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (500, "answered 500"),
        (
            (200, "application/json", '{"gather_prompt": "not an object"}'),
            'gather_prompt: must be {"text": ...} or {"audio_url": ...}',
        ),
        ((200, "text/plain", "ok"), "the answer is not JSON"),
    ],
)
async def test_gather_dynamic_example_bad_answer_takes_on_error(database_url, answer, reason):
    async with running(database_url) as rig:
        app_id = await save_example(rig, "gather_dynamic.yaml")
        rig.customer.script = [answer]
        sid = await call_app(rig, app_id, ["1234#"])
        steps = await timeline(rig, sid)
        assert steps.entered == ["pin", "sorry", "bye"]
        [pin_exit] = [d for d in steps.of("applet.exit") if d["node"] == "pin"]
        assert pin_exit == {
            "node": "pin",
            "exit": "on_error",
            "next": "sorry",
            "error": f"GET {rig.customer.url}/ivr/gather-settings: {reason}",
        }
        assert steps.said == ["Sorry, we cannot check your PIN right now."]  # no prompt played
        assert steps.digits == []
        [http] = steps.of("http")
        assert http["status"] == (answer if isinstance(answer, int) else 200)
        assert rig.customer.to("/ivr/verify-pin") == []
        await check_final_callback(rig, sid, steps)


# Switch Case: examples/switch_case.yaml (needs the model change proposed in issue 3)


@sqlite_only
@pytest.mark.parametrize(
    ("answer", "entered", "exit_name"),
    [
        (
            (200, "text/plain", '{"select": "gold"}'),
            ["tier", "route", "priority", "bye"],
            "cases.gold",
        ),
        (
            (200, "text/plain", '{"select": "silver"}'),
            ["tier", "route", "regular", "bye"],
            "cases.silver",
        ),
        (
            (200, "text/plain", '{"select": "bronze"}'),
            ["tier", "route", "regular", "bye"],
            "default",
        ),
        (302, ["tier", "regular", "bye"], None),
    ],
)
async def test_switch_case_example_branches_on_select(database_url, answer, entered, exit_name):
    async with running(database_url) as rig:
        app_id = await save_example(rig, "switch_case.yaml")
        rig.customer.script = [answer]
        sid = await call_app(rig, app_id, [])
        steps = await timeline(rig, sid)
        assert steps.entered == entered
        assert steps.exits().get("route") == exit_name
        greeting = (
            "Welcome back. You are on our priority line."
            if "priority" in entered
            else ("Thank you for calling. An agent will be with you shortly.")
        )
        assert steps.said == [greeting]
        [tier] = rig.customer.to("/ivr/customer-tier")
        assert tier.query == await expected_query(rig, sid, steps, "tier", app_id)
        await check_final_callback(rig, sid, steps)


# Timing: examples/timing.yaml

CLOSED_TEXT = (
    "We are closed. Our hours are nine to six, Monday to Friday, and ten to two on Saturday."
)


@sqlite_only
@pytest.mark.parametrize(
    ("zone", "entered", "said"),
    [
        # 10:00 UTC on Thursday: 15:30 in Kolkata, open.
        (
            "Asia/Kolkata",
            ["hours", "open", "bye"],
            ["Thank you for calling. All our agents are busy; please stay on the line."],
        ),
        # The same instant is 05:00 in New York: closed, and the customer hears of the call.
        (
            "America/New_York",
            ["hours", "missed", "closed", "bye"],
            [CLOSED_TEXT],
        ),
    ],
)
async def test_timing_example_in_the_accounts_time_zone(database_url, zone, entered, said):
    async with running(database_url) as rig:
        async with rig.services.db.session() as session:
            await session.execute(
                update(Account).where(Account.sid == rig.sid).values(time_zone=zone)
            )
        app_id = await save_example(rig, "timing.yaml")
        sid = await call_app(rig, app_id, [])
        steps = await timeline(rig, sid)
        assert steps.entered == entered and steps.said == said
        missed = rig.customer.to("/ivr/after-hours")
        if "missed" in entered:
            [request] = missed
            assert request.query == await expected_query(rig, sid, steps, "missed", app_id, zone)
        else:
            assert missed == []
        await check_final_callback(rig, sid, steps, zone)


# Transfer: examples/transfer.yaml


async def test_transfer_example_continues_in_the_other_app(database_url):
    async with running(database_url) as rig:
        menu_id = await save_example(rig, "ivr_menu.yaml")
        main_id = await save_example(rig, "transfer.yaml", to_menu={"app_id": menu_id})
        sid = await call_app(rig, main_id, ["1"])
        steps = await timeline(rig, sid)
        assert steps.of("flow.start")[0]["app"] == main_id
        assert steps.entered == ["welcome", "to_menu", "menu", "sales", "log_choice", "bye"]
        assert {"node": "to_menu", "exit": "transfer", "app": menu_id} in steps.of("applet.exit")
        assert steps.said == [
            "Welcome to Acme. Transferring you to our department menu.",
            MENU_PROMPT,
            "Connecting you to sales.",
        ]
        assert steps.digits == ["1"]
        [choice] = rig.customer.to("/ivr/menu-choice")
        # Requests after the transfer name the app the call is in now.
        assert choice.query == await expected_query(
            rig, sid, steps, "log_choice", menu_id, digits='"1"'
        )
        await check_final_callback(rig, sid, steps)


@sqlite_only
async def test_transfer_to_a_missing_app_ends_the_call_with_the_reason(database_url):
    async with running(database_url) as rig:
        gone = await rig.services.accounts.save_app(
            rig.sid, {"name": "gone", "start": "h", "nodes": {"h": {"applet": "hangup"}}}
        )
        main_id = await save_example(rig, "transfer.yaml", to_menu={"app_id": gone.id})
        async with rig.services.db.session() as session:  # the target is deleted after saving
            await session.execute(delete(App).where(App.id == gone.id))
        sid = await call_app(rig, main_id, [])
        steps = await timeline(rig, sid)
        assert steps.entered == ["welcome", "to_menu"]
        assert steps.of("flow.aborted") == [
            {"node": "to_menu", "reason": f"app {gone.id} does not exist in this account"}
        ]
        assert steps.of("flow.end") == [{"reason": "transfer failed"}]
        await check_final_callback(rig, sid, steps)


# The IVR scenario of issue 3: greeting, menu, key 2, gather 4 digits ending in #, passthru with
# those digits answering 302, a voicemail, hangup. Every backend.


async def test_ivr_scenario(database_url):
    async with running(database_url) as rig:
        app_id = await save_example(rig, "ivr_scenario.yaml")
        rig.customer.script = [302]
        message = {"text": "My parcel arrived damaged, please call me back.", "then": "#"}
        sid = await call_app(rig, app_id, ["2", "1234#"], says=[message])
        steps = await timeline(rig, sid)

        assert steps.entered == [
            "welcome",
            "menu",
            "order_number",
            "lookup",
            "message",
            "bye",
            "end",
        ]
        assert steps.exits() == {
            "welcome": "next",
            "menu": "on_2",
            "order_number": "on_input",
            "lookup": "on_302",
            "message": "next",
            "bye": "next",
            "end": "hangup",
        }
        assert steps.said == [
            "Welcome to Acme.",
            "For the status of an order, press 1. To tell us about an order, press 2.",
            "Please enter your order number, then press hash.",
            "Please leave a message about your order after the beep. Press hash when done.",
            "Goodbye.",
        ]
        assert steps.digits == ["2", "1234"]
        [recording] = steps.of("recording")

        [lookup] = rig.customer.to("/ivr/order")
        assert lookup.status == 302
        assert lookup.query == await expected_query(
            rig, sid, steps, "lookup", app_id, digits='"1234"'
        )
        assert lookup.query["digits"] == '"1234"'  # with the quotes, as Exotel sends it
        [http] = steps.of("http")
        assert http["status"] == 302 and http["params"] == lookup.query

        assert steps.of("flow.end") == [{"reason": "hangup applet"}]
        await check_final_callback(rig, sid, steps)
        details = await rig.details(sid)
        assert details["Status"] == "completed"
        assert details["Details"]["Leg1Status"] == "completed"
        # The voicemail's recording is the call's: in the details and the final callback.
        assert details["RecordingUrl"] and details["RecordingUrl"] == recording["url"]
        [callback] = rig.customer.to("/status")
        assert callback.fields()["RecordingUrl"] == details["RecordingUrl"]


# Voicemail: examples/voicemail.yaml


async def test_voicemail_example(database_url):
    async with running(database_url) as rig:
        app_id = await save_example(rig, "voicemail.yaml")
        message = {"text": "This is Asha, please call me on nine eight one two.", "then": "#"}
        sid = await call_app(rig, app_id, [], says=[message])
        steps = await timeline(rig, sid)
        assert steps.entered == ["message", "notify", "thanks", "bye"]
        [recording] = steps.of("recording")
        [notify] = rig.customer.to("/ivr/voicemail")
        assert notify.query["RecordingUrl"] == recording["url"]
        assert notify.query["CallType"] == "voicemail"
        details = await rig.details(sid)
        assert details["RecordingUrl"] == recording["url"]
        [callback] = rig.customer.to("/status")
        assert callback.fields()["RecordingUrl"] == recording["url"]
        path = recording["url"].removeprefix(rig.services.settings.base_url)
        audio = await rig.http.get(rig.base + path, auth=rig.auth)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
