"""The end-to-end rig: a real ringflow server on loopback with a ManualClock, a customer's
server recording what it receives, and an account ready to place calls."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import select

from ringflow.app import Services, create_app
from ringflow.calls.status import is_terminal
from ringflow.clock import Clock, ManualClock
from ringflow.config import Settings
from ringflow.storage.models import Call, OutboxMessage
from tests.support import Recorder, recorder, serve

EXOPHONE = "08039591234"
# Rendered prompts are content-addressed, so every test may share one cache outside the tree.
TEST_DATA_DIR = os.path.join(tempfile.gettempdir(), "ringflow-test-data")


def demo_graph(hook: str) -> dict[str, Any]:
    """Greeting, Passthru to ``hook``, a greeting on each branch, hangup."""
    return {
        "name": "e2e",
        "start": "welcome",
        "nodes": {
            "welcome": {"applet": "greeting", "text": "Hello from ringflow", "next": "notify"},
            "notify": {"applet": "passthru", "url": hook, "on_200": "yes", "on_302": "no"},
            "yes": {"applet": "greeting", "text": "Your server said yes", "next": "bye"},
            "no": {"applet": "greeting", "text": "Your server said no", "next": "bye"},
            "bye": {"applet": "hangup"},
        },
    }


@dataclasses.dataclass
class Rig:
    """A running server and everything a test needs to drive it."""

    base: str
    clock: Clock  # a ManualClock unless the test chose a real one (SIP media runs in real time)
    services: Services
    customer: Recorder
    http: httpx.AsyncClient
    sid: str
    key: str
    token: str
    app_id: int

    @property
    def auth(self) -> tuple[str, str]:
        return (self.key, self.token)

    def url(self, path: str) -> str:
        return f"{self.base}/v1/Accounts/{self.sid}/{path}"

    def flow_url(self, app_id: int | None = None) -> str:
        return f"http://my.exotel.com/{self.sid}/exoml/start_voice/{app_id or self.app_id}"

    async def connect(self, fmt: str = ".json", **params: Any) -> httpx.Response:
        """POST Calls/connect with these parameters (form-encoded)."""
        params.setdefault("CallerId", EXOPHONE)
        return await self.http.post(self.url(f"Calls/connect{fmt}"), data=params, auth=self.auth)

    async def call(self, sid: str) -> Call:
        async with self.services.db.session() as session:
            return (await session.execute(select(Call).where(Call.sid == sid))).scalar_one()

    async def details(self, sid: str) -> dict[str, Any]:
        r = await self.http.get(self.url(f"Calls/{sid}.json?details=true"), auth=self.auth)
        assert r.status_code == 200, r.text
        return r.json()["Call"]

    async def finish(self, sid: str, limit: float = 20000) -> Call:
        """Run the clock until the call is over and its callbacks are settled."""

        async def done() -> bool:
            call = await self.call(sid)
            return is_terminal(call.status) and await self.outbox_settled()

        await self.clock.run_until(done, limit=limit)
        return await self.call(sid)

    async def outbox_settled(self) -> bool:
        async with self.services.db.session() as session:
            pending = (
                (
                    await session.execute(
                        select(OutboxMessage).where(OutboxMessage.state == "pending")
                    )
                )
                .scalars()
                .all()
            )
        return not pending

    async def script_phone(self, number: str, **behaviour: Any) -> None:
        """Make a sandbox phone of this account behave as told (the admin API)."""
        r = await self.http.put(
            f"{self.base}/admin/v1/accounts/{self.sid}/sandbox/phones/{number}",
            json=behaviour,
            auth=self.auth,
        )
        assert r.status_code == 200, r.text

    async def timeline(self, sid: str) -> list[dict[str, Any]]:
        r = await self.http.get(
            f"{self.base}/admin/v1/accounts/{self.sid}/calls/{sid}/events", auth=self.auth
        )
        assert r.status_code == 200, r.text
        return r.json()["events"]


@contextlib.asynccontextmanager
async def running(
    database_url: str, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[Rig]:
    """Start ringflow (a ManualClock unless ``clock`` is given; settings as overridden) and a
    customer's server; make an account."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "allow_private_urls": True,
        "instance": f"test-{uuid.uuid4().hex[:6]}",
        "callback_timeout": 5.0,
        "data_dir": TEST_DATA_DIR,
    }
    values.update(overrides)
    settings = Settings(**values)
    clock = clock or ManualClock()
    app = create_app(settings, clock=clock)
    services: Services = app.state.services
    async with recorder() as customer, serve(app) as base:
        creds = await services.accounts.create_account(f"acme {uuid.uuid4().hex[:8]}")
        await services.accounts.add_number(creds.account_sid, EXOPHONE)
        saved = await services.accounts.save_app(
            creds.account_sid, demo_graph(f"{customer.url}/passthru")
        )
        async with httpx.AsyncClient(timeout=30) as http:
            yield Rig(
                base=base,
                clock=clock,
                services=services,
                customer=customer,
                http=http,
                sid=creds.account_sid,
                key=creds.api_key,
                token=creds.api_token,
                app_id=saved.id,
            )
