"""The quick start, as a user meets it: ``ringflow demo`` prints credentials and a curl line;
with ``ringflow serve`` running, that very line (run by real curl) places a sandbox call whose
greeting and Passthru run."""

from __future__ import annotations

import asyncio
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from tests.processes import Server, cli, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CALL_FIELDS = [
    "Sid", "ParentCallSid", "DateCreated", "DateUpdated", "AccountSid", "To", "From",
    "PhoneNumberSid", "Status", "StartTime", "EndTime", "Duration", "Price", "Direction",
    "AnsweredBy", "ForwardedFrom", "CallerName", "Uri", "RecordingUrl",
]  # fmt: skip


def printed_curl(banner: str) -> list[str]:
    """The first curl command of the banner, joined across its backslash line break."""
    lines = banner.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("curl -u"))
    command = lines[start].rstrip("\\") + " " + lines[start + 1]
    return shlex.split(command)


async def test_the_printed_curl_line_places_a_call_that_runs_the_demo_app(tmp_path: Path):
    env = server_env(f"sqlite+aiosqlite:///{tmp_path}/ringflow.db", "demo-test")
    server = Server(env, tmp_path / "server.log")
    creds = tmp_path / "demo-credentials.json"
    banner = await cli(env, "demo", "--port", str(server.port), "--credentials-file", str(creds))
    key = re.search(r"API key\s+: (\S+)", banner)[1]
    token = re.search(r"API token\s+: (\S+)", banner)[1]
    assert creds.stat().st_mode & 0o777 == 0o600
    # A second run prints the same working credentials.
    assert key in await cli(
        env, "demo", "--port", str(server.port), "--credentials-file", str(creds)
    )

    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *printed_curl(banner), "-s", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        call = ET.fromstring(out).find("Call")
        assert [child.tag for child in call] == CALL_FIELDS
        assert call.findtext("Status") == "in-progress"
        sid = call.findtext("Sid")

        async with httpx.AsyncClient(base_url=server.base, auth=(key, token), timeout=10) as http:
            for _ in range(300):  # the demo call lasts a few seconds of real time
                details = (
                    await http.get(f"/v1/Accounts/demo/Calls/{sid}.json?details=true")
                ).json()
                if details["Call"]["Status"] == "completed":
                    break
                await asyncio.sleep(0.1)
            assert details["Call"]["Status"] == "completed"
            assert details["Call"]["Details"]["Leg1Status"] == "completed"
            events = (await http.get(f"/admin/v1/accounts/demo/calls/{sid}/events")).json()[
                "events"
            ]
        said = [e["data"]["text"] for e in events if e["kind"] == "say"]
        assert said == [
            "Hello from ringflow. This is the demo app.",
            "Your server said yes. Goodbye.",
        ]
        [passthru] = [e["data"] for e in events if e["kind"] == "http"]
        assert passthru["status"] == 200 and passthru["params"]["CallSid"] == sid
        shown = await cli(env, "calls", "show", sid)
        assert shown.startswith(f"call {sid} (demo, flow): completed")
        assert "leg 1 +919812345678: completed" in shown
        assert "applet.enter   welcome (applet=greeting)" in shown
        assert "/demo/passthru → 200" in shown
        log = server.log.read_text()  # all of it: the access log lines come last
        assert f"call {sid}: say 'Hello from ringflow. This is the demo app.'" in log
        assert "demo passthru received" in log and f"call {sid}: GET " in log
    finally:
        await server.close()
