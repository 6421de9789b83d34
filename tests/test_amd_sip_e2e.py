"""Answering machine detection over SIP: SIPp answers and streams what the callee says (a person's
"Hello?" then silence, or a voicemail greeting ending in a beep; tests/fixtures/amd, made by
``python -m tests.amd_audio``) as PCMU; ringflow decides from that RTP, in real time, before the
app runs, and the app branches on the verdict.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.amd_audio import FIXTURES
from tests.sipp import needs_sipp, sipp
from tests.test_amd_e2e import BRANCHING, said, verdict
from tests.test_sip_carrier_e2e import app, call_to_end, place, sip_server, sqlite_db, story

pytestmark = [pytest.mark.e2e, needs_sipp]
__all__ = ["sqlite_db"]  # the fixture, used by name

HUMAN_DEADLINE_MS = 3500


async def detected_call(tmp_path: Path, callee: str, mode: str) -> tuple[dict, list[dict], dict]:
    """One call to SIPp speaking ``callee``: the amd step, the timeline and the details."""
    shutil.copy(FIXTURES / callee, tmp_path / "voice.ulaw")
    async with sipp(tmp_path, "callee_inband.xml") as phone, sip_server(tmp_path, phone) as rig:
        sid = await place(
            rig, phone, await app(rig, BRANCHING["nodes"], "who"), MachineDetection=mode
        )
        call = await call_to_end(rig, sid)
        assert call.status == "completed", await story(rig, sid)
        assert await phone.exit_code() == 0  # answered, streamed, and got our BYE
        events = await rig.timeline(sid)
        return verdict(events), events, await rig.details(sid)


@pytest.mark.usefixtures("sqlite_db")
async def test_a_person_saying_hello_over_sip_is_human(tmp_path: Path) -> None:
    step, events, details = await detected_call(tmp_path, "human_hello.ulaw", "Enable")
    assert step["result"] == "human", step
    assert 0 < step["ms"] <= HUMAN_DEADLINE_MS
    assert details["AnsweredBy"] == "human"
    assert details["Details"]["MachineDetectionDuration"] == step["ms"]
    assert said(events) == ["Hello, this is your reminder."]


@pytest.mark.usefixtures("sqlite_db")
async def test_a_voicemail_over_sip_is_a_machine_and_the_message_follows_its_beep(
    tmp_path: Path,
) -> None:
    step, events, details = await detected_call(tmp_path, "machine_beep.ulaw", "DetectMessageEnd")
    assert step["result"] == "machine_end_beep", step
    # The beep ends 5.7 s into the stream (0.3 s, a 4.5 s greeting, 0.6 s, 0.3 s of tone).
    assert 5300 <= step["ms"] <= 6500
    assert details["AnsweredBy"] == "machine_end_beep"
    assert details["Details"]["MachineDetectionDuration"] == step["ms"]
    assert said(events) == ["Please call us back."]
