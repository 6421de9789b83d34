"""``ringflow dial``: an operator's test call through the configured SIP trunk, printed live."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from ringflow.cli import main
from tests.sipp import needs_sipp, sipp

pytestmark = [pytest.mark.e2e, needs_sipp]

RINGFLOW = Path(sys.executable).parent / "ringflow"
APP = """
name: Trunk check
start: hi
nodes:
  hi: {applet: greeting, text: "This is a test call from ringflow", next: bye}
  bye: {applet: hangup}
"""


@pytest.fixture
def account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """An account with an ExoPhone and app 1, in a fresh SQLite file; returns its SID."""
    monkeypatch.setenv("RINGFLOW_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/dial.db")
    monkeypatch.setenv("RINGFLOW_DATA_DIR", str(tmp_path / "data"))
    assert main(["migrate"]) == 0
    capsys.readouterr()
    assert main(["accounts", "create", "Acme", "--json"]) == 0
    sid = json.loads(capsys.readouterr().out)["sid"]
    assert main(["numbers", "add", sid, "080 3959 1234"]) == 0
    (tmp_path / "app.yaml").write_text(APP)
    assert main(["apps", "import", sid, str(tmp_path / "app.yaml")]) == 0
    return sid


async def dial(tmp_path: Path, sipp_port: int, *args: str) -> tuple[int, str, str]:
    """Run ``ringflow dial`` with the SIP carrier and a trunk at SIPp: exit code, out, err."""
    trunks = tmp_path / "trunks.yaml"
    trunks.write_text(f"trunks:\n  - name: sipp\n    host: 127.0.0.1\n    port: {sipp_port}\n")
    proc = await asyncio.create_subprocess_exec(
        str(RINGFLOW),
        "dial",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "RINGFLOW_CARRIER": "sip",
            "RINGFLOW_SIP_TRUNKS": str(trunks),
            "RINGFLOW_SIP_PORT": "0",
        },
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()  # type: ignore[return-value]


async def test_dial_places_the_call_and_prints_its_progress(tmp_path: Path, account: str) -> None:
    async with sipp(tmp_path, "callee_answer.xml") as phone:
        code, out, _ = await dial(tmp_path, phone.port, account, "+919812345678", "--app", "1")
        assert await phone.exit_code() == 0
    lines = out.splitlines()
    assert code == 0, out
    assert lines[0].startswith("call ") and lines[0].endswith("+919812345678 via sip")
    assert any("call in-progress · leg 1: in-progress" in line for line in lines), out
    assert any("applet=greeting" in line for line in lines)
    assert lines[-1].endswith(": completed")


async def test_a_refused_call_exits_non_zero_with_the_sip_cause(
    tmp_path: Path, account: str
) -> None:
    async with sipp(tmp_path, "uas_busy.xml") as phone:
        code, out, _ = await dial(tmp_path, phone.port, account, "+919812345678", "--app", "1")
        assert await phone.exit_code() == 0
    assert code == 1
    assert out.splitlines()[-1].endswith(": busy (leg 1: sip: 486 Busy Here)"), out


async def test_an_unknown_app_is_a_clear_error(tmp_path: Path, account: str) -> None:
    code, out, err = await dial(tmp_path, 9, account, "+919812345678", "--app", "7")
    assert code != 0 and out == ""
    assert err.strip() == f"ringflow: error: account {account} has no app 7"
