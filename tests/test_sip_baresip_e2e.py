"""A real softphone as the callee: baresip hears the greeting and its key picks the branch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ringflow.clock import RealClock
from ringflow.media.audio import RATE
from tests.baresip import baresip, needs_baresip
from tests.e2e import Rig, running
from tests.test_sip_carrier_e2e import app, call_to_end, correlation

pytestmark = [pytest.mark.e2e, needs_baresip]

GREETING = "Welcome to ringflow. Press two for sales."


def menu_app(hook: str) -> dict:
    """Greeting, then a one-key menu whose branches tell the customer's server."""
    return {
        "ask": {
            "applet": "gather",
            "text": GREETING,
            "max_digits": 1,
            "input_timeout": 10,
            "repeats": 0,
            "on_input": "tell",
            "on_no_input": "bye",
        },
        "tell": {
            "applet": "switch_case",
            "variable": "digits",
            "cases": {"2": "sales"},
            "default": "bye",
        },
        "sales": {"applet": "passthru", "url": f"{hook}/sales", "on_200": "bye", "on_302": "bye"},
        "bye": {"applet": "hangup"},
    }


async def wait_answered(rig: Rig, sid: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await rig.call(sid)).status != "in-progress":
        assert loop.time() < deadline, "baresip did not answer"
        await asyncio.sleep(0.05)


async def test_baresip_hears_the_greeting_and_its_key_picks_the_branch(
    tmp_path: Path, sqlite_template: Path
) -> None:
    (tmp_path / "ringflow.db").write_bytes(sqlite_template.read_bytes())
    silence = np.zeros(RATE * 10, dtype=np.int16)
    async with baresip(tmp_path / "baresip", silence) as phone:
        trunks = tmp_path / "trunks.yaml"
        trunks.write_text(
            f"trunks:\n  - name: softphone\n    host: 127.0.0.1\n    port: {phone.sip_port}\n"
        )
        async with running(
            f"sqlite+aiosqlite:///{tmp_path / 'ringflow.db'}",
            clock=RealClock(),
            carrier="sip",
            sip_trunks=str(trunks),
            sip_port=0,
        ) as rig:
            saved_id = await app(rig, menu_app(rig.customer.url), "ask")
            r = await rig.connect(From=phone.uri, Url=rig.flow_url(saved_id))
            assert r.status_code == 200, r.text
            sid = r.json()["Call"]["Sid"]
            await wait_answered(rig, sid)
            # Pressed while the greeting plays: the greeting still plays out (no barge-in), and
            # the key waits for the menu (type-ahead).
            await phone.press("2")
            call = await call_to_end(rig, sid)
            assert call.status == "completed", call.reason
            hits = [s for s in rig.customer.seen if s.path == "/sales"]
            assert len(hits) == 1 and hits[0].query["digits"].strip('"') == "2"
            prompt = await rig.services.tts.speak(GREETING)
    assert correlation(phone.heard().tobytes(), prompt.pcm) > 0.6
