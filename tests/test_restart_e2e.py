"""A server killed mid-call and restarted still delivers every pending callback.

The real thing, end to end: ``ringflow serve`` as a subprocess on loopback (SQLite and
PostgreSQL), set up through the ``ringflow`` CLI, a StatusCallback receiver in the test. The
server is killed with SIGKILL (nothing runs on the way down) or stopped with SIGTERM, then started
again under the same ``RINGFLOW_INSTANCE``: the calls it was carrying are finished, queued calls
run, and every callback reaches the receiver exactly once (counted by Idempotency-Key).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ringflow.accounts import Accounts
from ringflow.clock import make_clock
from ringflow.storage.db import Database
from ringflow.storage.models import Call, OutboxMessage
from tests.processes import Server, cli, server_env
from tests.support import Recorder, recorder

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

EXOPHONE = "08039591234"
ALICE, BOB, CAROL, ERIN, FRANK, GRACE = (f"0981234567{n}" for n in range(6))
SLOW = "09812345699"  # rings for ten minutes: still ringing when the server goes
FAILS = "09999900003"  # a sandbox number that fails at once
RESTARTED = "ringflow restarted while the call was in progress"
SHUTTING_DOWN = "ringflow is shutting down"

LONG_FLOW = {
    "name": "long greeting",
    "start": "talk",
    "nodes": {
        # About 450 s of speech: the call is still talking when the server dies.
        "talk": {"applet": "greeting", "text": " ".join(["la"] * 1300), "next": "bye"},
        "bye": {"applet": "hangup"},
    },
}


@contextlib.asynccontextmanager
async def server(env: dict[str, str], log: Path, *args: str) -> AsyncIterator[Server]:
    proc = Server(env, log, *args)
    try:
        yield proc
    finally:
        await proc.close()


class Client:
    """The account's view of the Exotel API on one server."""

    def __init__(self, http: httpx.AsyncClient, srv: Server, creds: dict[str, str]):
        self.http = http
        self.srv = srv
        self.sid = creds["sid"]
        self.auth = (creds["api_key"], creds["api_token"])

    def url(self, path: str) -> str:
        return f"{self.srv.base}/v1/Accounts/{self.sid}/{path}"

    async def connect(self, **params: Any) -> dict[str, Any]:
        params.setdefault("CallerId", EXOPHONE)
        r = await self.http.post(self.url("Calls/connect.json"), data=params, auth=self.auth)
        assert r.status_code == 200, r.text
        return r.json()["Call"]

    async def details(self, sid: str) -> dict[str, Any]:
        r = await self.http.get(self.url(f"Calls/{sid}.json?details=true"), auth=self.auth)
        assert r.status_code == 200, r.text
        return r.json()["Call"]

    async def script_phone(self, number: str, **script: Any) -> None:
        """Make a sandbox phone of this account behave as ``script`` says (admin API)."""
        r = await self.http.put(
            f"{self.srv.base}/admin/v1/accounts/{self.sid}/sandbox/phones/{number}",
            json=script,
            auth=self.auth,
        )
        assert r.status_code == 200, r.text

    async def reason(self, sid: str) -> str | None:
        r = await self.http.get(
            f"{self.srv.base}/admin/v1/accounts/{self.sid}/calls/{sid}/events", auth=self.auth
        )
        assert r.status_code == 200, r.text
        return r.json()["reason"]


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, srv: Server, timeout: float = 20
) -> None:
    """Poll ``check`` until it holds; fail with the server's log after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{srv.output()}")


async def outbox(db: Database) -> dict[str, OutboxMessage]:
    """Every outbox row, by idempotency key."""
    async with db.session() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
    return {row.idempotency_key: row for row in rows}


async def call_row(db: Database, sid: str) -> Call:
    async with db.session() as session:
        return (await session.execute(select(Call).where(Call.sid == sid))).scalar_one()


def accepted(rec: Recorder) -> collections.Counter[str]:
    """How many times the receiver answered 2xx, per Idempotency-Key."""
    return collections.Counter(
        s.headers["idempotency-key"] for s in rec.to("/status") if 200 <= s.status < 300
    )


def payloads(rec: Recorder) -> dict[str, dict[str, Any]]:
    """The accepted callbacks' bodies (form fields or JSON), by Idempotency-Key."""
    return {
        s.headers["idempotency-key"]: (s.json if s.json is not None else s.fields())
        for s in rec.to("/status")
        if 200 <= s.status < 300
    }


async def all_accepted_once(rec: Recorder, db: Database, expected: set[str], srv: Server) -> None:
    """Wait until every expected callback was accepted, then check none came twice."""

    async def arrived() -> bool:
        return set(accepted(rec)) >= expected

    await eventually(arrived, f"callbacks {sorted(expected)}", srv, timeout=30)
    await asyncio.sleep(0.5)  # a duplicate would show up now
    assert accepted(rec) == collections.Counter(dict.fromkeys(expected, 1))
    rows = await outbox(db)
    assert set(rows) == expected, "a callback row too many or too few"
    assert {key: row.state for key, row in rows.items()} == dict.fromkeys(expected, "delivered")


@dataclasses.dataclass
class Scenario:
    """Four calls in every state a server can leave behind, and one waiting in the queue."""

    talking: str  # two numbers bridged until a TimeLimit far away
    flow: str  # an app speaking for minutes
    ringing: str  # From has not picked up
    to_ringing: str  # From answered, To is ringing
    queued: str  # no line free (four lines); runs once the server is back

    # How each ends: (Status, Leg1Status, Leg2Status), the same for a kill and a stop. The call
    # is completed only if its conversation had begun (spec section 3: From hanging up while To
    # rings is failed, To canceled).
    @property
    def outcomes(self) -> dict[str, tuple[str, str, str]]:
        return {
            self.talking: ("completed", "completed", "completed"),
            self.flow: ("completed", "completed", ""),
            self.ringing: ("failed", "canceled", ""),
            self.to_ringing: ("failed", "completed", "canceled"),
            self.queued: ("completed", "completed", "completed"),
        }

    @property
    def interrupted(self) -> tuple[str, ...]:
        return (self.talking, self.flow, self.ringing, self.to_ringing)

    @property
    def early_callbacks(self) -> set[str]:
        """Callbacks caused before the server goes."""
        return {
            f"{self.talking}:answered:1", f"{self.talking}:answered:2",
            f"{self.flow}:answered:1", f"{self.ringing}:ringing:1",
        }  # fmt: skip

    @property
    def terminal_callbacks(self) -> set[str]:
        return {f"{sid}:terminal" for sid in (*self.interrupted, self.queued)}

    @classmethod
    async def place(cls, api: Client, hook: str, app_id: int) -> Scenario:
        # Phones that pick up at once keep the test short.
        for number in (ALICE, BOB, CAROL, ERIN, FRANK, GRACE):
            await api.script_phone(number, ring=0.1)
        await api.script_phone(SLOW, ring=600)
        answered = {"StatusCallbackEvents": "answered,terminal"}
        talking = await api.connect(
            From=ALICE, To=BOB, TimeLimit="3600", StatusCallback=hook, **answered
        )
        flow = await api.connect(
            From=CAROL,
            Url=f"http://my.exotel.com/{api.sid}/exoml/start_voice/{app_id}",
            StatusCallback=hook,
            StatusCallbackEvents=["answered", "terminal"],
            StatusCallbackContentType="application/json",
        )
        ringing = await api.connect(
            From=SLOW,
            To=BOB,
            TimeOut="60",
            StatusCallback=hook,
            StatusCallbackEvents="ringing,terminal",
        )
        to_ringing = await api.connect(From=ERIN, To=SLOW, TimeOut="60", StatusCallback=hook)
        queued = await api.connect(From=FRANK, To=GRACE, TimeLimit="2", StatusCallback=hook)
        assert queued["Status"] == "queued"
        return cls(talking["Sid"], flow["Sid"], ringing["Sid"], to_ringing["Sid"], queued["Sid"])

    async def all_up(self, api: Client) -> bool:
        """Every call in the state the scenario needs."""
        return await summary(api, self.outcomes) == {
            self.talking: ("in-progress", "in-progress", "in-progress"),
            self.flow: ("in-progress", "in-progress", ""),
            self.ringing: ("ringing", "ringing", ""),
            self.to_ringing: ("in-progress", "in-progress", "ringing"),
            self.queued: ("queued", "", ""),
        }

    def check_payloads(self, rec: Recorder) -> None:
        """What the accepted terminal callbacks said."""
        sent = payloads(rec)
        talking = sent[f"{self.talking}:terminal"]
        assert (talking["EventType"], talking["Status"]) == ("terminal", "completed")
        assert talking["Legs[0][Status]"] == talking["Legs[1][Status]"] == "completed"
        assert sent[f"{self.talking}:answered:2"]["Legs[1][Status]"] == "in-progress"
        flow = sent[f"{self.flow}:terminal"]
        assert (flow["EventType"], flow["Status"]) == ("terminal", "completed")
        assert [leg["Status"] for leg in flow["Legs"]] == ["completed"]
        ringing = sent[f"{self.ringing}:terminal"]
        assert (ringing["Status"], ringing["Legs[0][Status]"]) == ("failed", "canceled")
        # No StatusCallbackEvents: the four-field terminal POST.
        to_ringing = sent[f"{self.to_ringing}:terminal"]
        assert to_ringing.keys() == {"CallSid", "Status", "RecordingUrl", "DateUpdated"}
        assert to_ringing["Status"] == "failed"
        assert sent[f"{self.queued}:terminal"]["Status"] == "completed"


async def summary(api: Client, sids: Any) -> dict[str, tuple[str, str, str]]:
    """(Status, Leg1Status, Leg2Status) of each call, as the API reports them."""
    out = {}
    for sid in sids:
        d = await api.details(sid)
        out[sid] = (d["Status"], d["Details"]["Leg1Status"], d["Details"]["Leg2Status"])
    return out


async def test_killed_server_finishes_its_calls_and_delivers_every_callback(
    database_url: str, tmp_path: Path
) -> None:
    instance = f"restart-{uuid.uuid4().hex[:8]}"
    env = server_env(database_url, instance, RINGFLOW_MAX_CONCURRENT_CALLS="4")
    creds = json.loads(await cli(env, "accounts", "create", "Restart Test", "--json"))
    app_file = tmp_path / "long.json"
    app_file.write_text(json.dumps(LONG_FLOW))
    db = Database(database_url)
    async with (
        recorder() as rec,
        server(env, tmp_path / "server.log") as srv,
        httpx.AsyncClient(timeout=10) as http,
    ):
        try:
            api = Client(http, srv, creds)
            hook = f"{rec.url}/status"
            rec.script = [500] * 1000  # the receiver is down until the server is killed
            _, imported, _ = await asyncio.gather(
                cli(env, "numbers", "add", creds["sid"], EXOPHONE),
                cli(env, "apps", "import", creds["sid"], str(app_file)),
                srv.start(),
            )
            app_id = int(imported.split()[1])

            # over: ended before the kill, its terminal callback still pending.
            over = (await api.connect(From=FAILS, To=BOB, StatusCallback=hook))["Sid"]

            async def over_done() -> bool:
                return (await api.details(over))["Status"] == "failed"

            await eventually(over_done, "the failed call to end", srv)
            calls = await Scenario.place(api, hook, app_id)
            pending = calls.early_callbacks | {f"{over}:terminal"}

            async def ready_to_kill() -> bool:
                if not await calls.all_up(api):
                    return False
                rows = await outbox(db)
                # Each pending callback failed at least once and no send is in flight (a row
                # claimed when the process dies stays leased for minutes).
                return set(rows) == pending and all(
                    r.state == "pending" and r.attempts >= 1 and r.lease_until is None
                    for r in rows.values()
                )

            await eventually(ready_to_kill, "calls up and callbacks failing", srv)
            await srv.kill()

            rows = await outbox(db)
            assert all(r.lease_until is None for r in rows.values()), "killed mid-delivery"
            assert (await call_row(db, calls.talking)).status == "in-progress"
            rec.script.clear()  # the receiver is back: 200 from now on
            await srv.start()

            await all_accepted_once(rec, db, pending | calls.terminal_callbacks, srv)
            assert await summary(api, [over, *calls.outcomes]) == {
                over: ("failed", "failed", ""),
                **calls.outcomes,
            }
            for sid in calls.interrupted:
                assert await api.reason(sid) == RESTARTED
                assert (await api.details(sid))["EndTime"] is not None
            for sid in (over, calls.queued):
                assert await api.reason(sid) is None
            assert (await call_row(db, calls.queued)).owner == instance
            calls.check_payloads(rec)
            assert payloads(rec)[f"{over}:terminal"]["Status"] == "failed"
            await srv.terminate()
        finally:
            await db.close()


async def test_sigterm_ends_the_calls_and_their_callbacks_survive(
    database_url: str, tmp_path: Path
) -> None:
    instance = f"sigterm-{uuid.uuid4().hex[:8]}"
    env = server_env(database_url, instance, RINGFLOW_MAX_CONCURRENT_CALLS="4")
    db = Database(database_url)
    accounts = Accounts(db, make_clock())
    made = await accounts.create_account("Sigterm Test")
    await accounts.add_number(made.account_sid, EXOPHONE)
    app = await accounts.save_app(made.account_sid, LONG_FLOW)
    creds = {"sid": made.account_sid, "api_key": made.api_key, "api_token": made.api_token}
    async with (
        recorder() as rec,
        server(env, tmp_path / "server.log") as srv,
        httpx.AsyncClient(timeout=10) as http,
    ):
        try:
            api = Client(http, srv, creds)
            hook = f"{rec.url}/status"
            await srv.start()
            calls = await Scenario.place(api, hook, app.id)

            async def all_up() -> bool:
                return await calls.all_up(api) and set(accepted(rec)) == calls.early_callbacks

            await eventually(all_up, "calls up and their early callbacks", srv)
            await srv.terminate()

            # Every call the server carried ended on the way down, and its terminal callback
            # went out before the process exited (the receiver was up).
            assert await summary_from_db(db, calls.interrupted) == {
                sid: outcome for sid, outcome in calls.outcomes.items() if sid != calls.queued
            }
            for sid in calls.interrupted:
                assert (await call_row(db, sid)).reason == SHUTTING_DOWN
            sent = calls.early_callbacks | calls.terminal_callbacks - {f"{calls.queued}:terminal"}
            assert {key: row.state for key, row in (await outbox(db)).items()} == dict.fromkeys(
                sent, "delivered"
            )
            assert accepted(rec) == collections.Counter(dict.fromkeys(sent, 1))
            assert (await call_row(db, calls.queued)).status == "queued"

            await srv.start()
            await all_accepted_once(rec, db, calls.early_callbacks | calls.terminal_callbacks, srv)
            assert await summary(api, calls.outcomes) == calls.outcomes
            calls.check_payloads(rec)
            # The restart found nothing of its own to recover: the reasons are the shutdown's.
            for sid in calls.interrupted:
                assert await api.reason(sid) == SHUTTING_DOWN
            await srv.terminate()
        finally:
            await db.close()


async def summary_from_db(db: Database, sids: Any) -> dict[str, tuple[str, str, str]]:
    """(Status, Leg1Status, Leg2Status) of each call, read from the database."""
    out = {}
    for sid in sids:
        call = await call_row(db, sid)
        legs = {leg.leg_no: leg.status for leg in call.legs}
        out[sid] = (call.status, legs.get(1, ""), legs.get(2, ""))
    return out
