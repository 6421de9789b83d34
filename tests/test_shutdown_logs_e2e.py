"""Operating a real ``ringflow serve``: JSON logs whose call lines carry the call, and a SIGTERM
that lets calls in progress finish (up to RINGFLOW_DRAIN_SECONDS) before it ends the rest, each
with its callback."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ringflow.accounts import Accounts
from ringflow.clock import make_clock
from ringflow.storage.db import Database
from tests.processes import cli, server_env
from tests.support import recorder
from tests.test_restart_e2e import (
    EXOPHONE,
    SHUTTING_DOWN,
    Client,
    accepted,
    call_row,
    eventually,
    outbox,
    server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SHORT_FLOW = {
    "name": "short greeting",
    "start": "hi",
    "nodes": {
        "hi": {"applet": "greeting", "text": "Hello there", "next": "bye"},
        "bye": {"applet": "hangup"},
    },
}
CUSTOMERS = [f"098123450{n:02d}" for n in range(10)]
AGENT = "09845067890"
SECRET = "s3cr3t-t0ken-value"


async def make_account(db: Database) -> tuple[dict[str, str], int]:
    """A fresh account with the ExoPhone and the short app; (credentials, app id)."""
    accounts = Accounts(db, make_clock())
    made = await accounts.create_account(f"Ops {uuid.uuid4().hex[:6]}")
    await accounts.add_number(made.account_sid, EXOPHONE)
    app = await accounts.save_app(made.account_sid, SHORT_FLOW)
    await accounts.close()
    return {"sid": made.account_sid, "api_key": made.api_key, "api_token": made.api_token}, app.id


def this_run(text: str) -> list[str]:
    """The server's lines (the test writes a ``===== run N =====`` marker before each run)."""
    return [line for line in text.splitlines() if line and not line.startswith("=====")]


async def test_json_logs_parse_line_by_line_and_a_calls_lines_carry_it(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path}/rf.db"
    env = server_env(url, "json-logs", RINGFLOW_LOG_FORMAT="json")
    db = Database(url)
    await cli(env, "migrate")
    creds, app_id = await make_account(db)
    async with (
        recorder() as rec,
        server(env, tmp_path / "server.log") as srv,
        httpx.AsyncClient(timeout=10) as http,
    ):
        try:
            api = Client(http, srv, creds)
            await srv.start()
            for number in (*CUSTOMERS[:3], AGENT):
                await api.script_phone(number, ring=0.1)
            flow = f"http://my.exotel.com/{api.sid}/exoml/start_voice/{app_id}"
            hook = f"{rec.url}/status?token={SECRET}"  # the token must not reach a log line
            rec.script = [500]  # the first callback fails once: its warning names its call
            sids = [
                (await api.connect(From=CUSTOMERS[0], Url=flow, StatusCallback=hook))["Sid"],
                (await api.connect(From=CUSTOMERS[1], Url=flow, StatusCallback=hook))["Sid"],
                (
                    await api.connect(
                        From=CUSTOMERS[2], To=AGENT, TimeLimit="1", StatusCallback=hook
                    )
                )["Sid"],
            ]
            await http.get(f"{srv.base}/healthz?Signature={SECRET}")  # in the access log

            async def ended() -> bool:
                statuses = [(await call_row(db, sid)).status for sid in sids]
                return statuses == ["completed"] * 3 and len(accepted(rec)) == 3

            await eventually(ended, "three completed calls and their callbacks", srv)
            await srv.terminate()
        finally:
            await db.close()

    lines = [json.loads(line) for line in this_run(srv.log.read_text())]  # each one parses
    assert all(line.keys() >= {"time", "level", "logger", "message", "instance"} for line in lines)
    assert {line["instance"] for line in lines} == {"json-logs"}
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "ringflow.app"} <= loggers  # one format for all
    assert SECRET not in srv.log.read_text()
    assert any("Signature=[redacted]" in line["message"] for line in lines)

    for sid in sids:
        own = [line for line in lines if line.get("call_sid") == sid]
        assert own and all(line["account"] == creds["sid"] for line in own)
        # Every line of ringflow's that names the call is one of its lines (the access log's
        # lines are about HTTP requests, whichever call their path names).
        naming = [
            line for line in lines if sid in line["message"] and line["logger"] != "uvicorn.access"
        ]
        assert naming and all(line.get("call_sid") == sid for line in naming), naming
    failed = [line for line in lines if "attempt 1 failed" in line["message"]]
    assert len(failed) == 1 and failed[0]["call_sid"] in sids, failed
    said = [line["message"] for line in lines if line.get("call_sid") == sids[0]]
    assert any("Hello there" in message for message in said), said


async def test_sigterm_lets_calls_finish_then_ends_the_rest_with_their_callbacks(
    tmp_path: Path,
):
    url = f"sqlite+aiosqlite:///{tmp_path}/rf.db"
    drain = 6.0
    env = server_env(
        url,
        f"drain-{uuid.uuid4().hex[:6]}",
        RINGFLOW_DRAIN_SECONDS=str(drain),
        RINGFLOW_MAX_CONCURRENT_CALLS="20",
    )
    db = Database(url)
    await cli(env, "migrate")
    creds, _ = await make_account(db)
    async with (
        recorder() as rec,
        server(env, tmp_path / "server.log") as srv,
        httpx.AsyncClient(timeout=10) as http,
    ):
        try:
            api = Client(http, srv, creds)
            await srv.start()
            for number in (*CUSTOMERS, AGENT):
                await api.script_phone(number, ring=0.1)
            hook = f"{rec.url}/status"
            events = {"StatusCallbackEvents": "terminal"}
            # Five calls that end by themselves within the drain, five that would not.
            short = [
                (await api.connect(From=n, To=AGENT, TimeLimit="3", StatusCallback=hook, **events))[
                    "Sid"
                ]
                for n in CUSTOMERS[:5]
            ]
            long = [
                (
                    await api.connect(
                        From=n, To=AGENT, TimeLimit="3600", StatusCallback=hook, **events
                    )
                )["Sid"]
                for n in CUSTOMERS[5:]
            ]

            async def all_talking() -> bool:
                statuses = {(await call_row(db, sid)).status for sid in (*short, *long)}
                return statuses == {"in-progress"}

            await eventually(all_talking, "ten calls in progress", srv)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            await asyncio.sleep(0.3)

            # Draining: no new call, but the server still answers about the calls it carries.
            refused = await http.post(
                api.url("Calls/connect.json"),
                auth=api.auth,
                data={"From": CUSTOMERS[0], "CallerId": EXOPHONE, "To": AGENT},
            )
            assert refused.status_code == 503
            assert refused.json()["RestException"]["Message"].startswith(
                "This server is shutting down and takes no new calls"
            )
            assert (await api.details(long[0]))["Status"] == "in-progress"
            ready = await http.get(f"{srv.base}/readyz")
            assert ready.status_code == 503 and "draining" in ready.text

            await asyncio.wait_for(srv.proc.wait(), drain + 30)
            took = time.monotonic() - stopped_at
            assert drain - 0.5 < took < drain + 15, took  # waited for the drain, no longer
            assert "Application shutdown complete" in srv.output()

            rows = {sid: await call_row(db, sid) for sid in (*short, *long)}
            assert {sid: row.status for sid, row in rows.items()} == dict.fromkeys(
                rows, "completed"
            )  # none left in-progress
            # The short calls finished on their own during the drain; the long ones were ended.
            assert all(rows[sid].reason != SHUTTING_DOWN for sid in short)
            assert all(rows[sid].reason == SHUTTING_DOWN for sid in long)
            terminal = {f"{sid}:terminal" for sid in rows}
            assert accepted(rec) == dict.fromkeys(terminal, 1)
            assert {key: row.state for key, row in (await outbox(db)).items()} == dict.fromkeys(
                terminal, "delivered"
            )
        finally:
            await db.close()


async def test_ctrl_c_stops_the_server_gracefully_with_no_traceback(tmp_path: Path):
    """SIGINT, as Ctrl-C in the terminal of ``make serve`` sends it: the same graceful stop as
    a SIGTERM, then exit status 130 (128 + SIGINT), and no traceback in the output."""
    url = f"sqlite+aiosqlite:///{tmp_path}/rf.db"
    env = server_env(url, f"ctrl-c-{uuid.uuid4().hex[:6]}")
    await cli(env, "migrate")
    async with server(env, tmp_path / "server.log") as srv:
        await srv.start()
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(srv.proc.wait(), 30)
        output = srv.output()
    assert code == 130, output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
