"""The README's examples run as written against a live server, so the README stays true.

The server is started as ``make serve`` starts it (``ringflow demo --before-serve``, then
``ringflow serve``), and every ``curl`` line and Python example of the README is run against
it, with only what a reader fills in themselves filled in:

- the address (``127.0.0.1:8080``), the demo account's SID (``demo``), its key and token
  (``KEY:TOKEN``, ``YOUR_API_KEY`` ...), its apps (``start_voice/1``, ``start_voice/2``);
- a call's or a recording's SID, from a call placed first;
- the receivers and bots the examples name (``https://example.com/...``, ``bot.example.com``):
  a receiver and the example echo bot on loopback here, so nothing leaves the machine.

A curl line must succeed (HTTP 2xx, ``--fail-with-body``); a Python example must run without
an error. Examples that need what this machine cannot give (a file of the reader's, a PBX)
are listed in ``NOT_RUN`` with the reason; a new example is run unless it is listed there.
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import os
import re
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import lameenc
import pytest

from tests.processes import Server, cli, server_env
from tests.support import recorder

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

README = Path(__file__).resolve().parent.parent / "README.md"
ECHO_BOT = Path(__file__).resolve().parent.parent / "examples" / "bots" / "echo_bot.py"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Examples not run here, by a line they hold, and why.
NOT_RUN = {
    "make serve": "starts what this test starts",
    "ringflow ": "admin commands (tested in tests/test_cli*.py)",
    "sipp ": "a SIP peer of the reader's",
    "docker": "a container of the reader's",
}


def blocks() -> list[tuple[int, str, str]]:
    """Every shell and Python block of the README: (line, language, text)."""
    text = README.read_text()
    found = []
    for match in BLOCK.finditer(text):
        language = match.group(1)
        if language in ("sh", "bash", "python"):
            line = text.count("\n", 0, match.start()) + 1
            found.append((line, language, match.group(2)))
    return found


def commands(shell: str) -> list[str]:
    """The curl commands of a shell block: continuation lines and quoted line breaks joined,
    trailing comments dropped."""
    found, current = [], ""
    for line in shell.splitlines():
        if current.endswith("\\"):
            current = f"{current[:-1]} {line.strip()}"
        else:
            current = f"{current}\n{line}" if current else line
        if current.endswith("\\") or current.count("'") % 2:  # it goes on on the next line
            continue
        command = re.sub(r"\s+#[^'\"]*$", "", current).strip()
        current = ""
        if command.startswith("curl "):
            found.append(command)
    return found


class Reader:
    """What a reader fills in, and the shell and Python that run the examples."""

    def __init__(
        self,
        base: str,
        creds: dict[str, object],
        second_app: int,
        long_app: int,
        hooks: str,
        bot: str,
        workdir: Path,
    ):
        self.base = base
        self.creds = creds
        self.second_app = second_app
        self.long_app = long_app
        self.hooks = hooks
        self.bot = bot
        self.workdir = workdir
        self.call_sid = ""
        self.recording_url = ""
        self.recording_id = ""

    def fill(self, text: str) -> str:
        sid, key, token = (str(self.creds[k]) for k in ("sid", "api_key", "api_token"))
        text = text.replace("http://127.0.0.1:8080", self.base)
        text = re.sub(r"(?i)(/accounts/)demo\b", rf"\g<1>{sid}", text)
        text = text.replace("my.exotel.com/demo/", f"my.exotel.com/{sid}/")
        text = text.replace('Exotel("demo"', f'Exotel("{sid}"')
        text = text.replace("start_voice/1", f"start_voice/{self.creds['app_id']}")
        text = text.replace("start_voice/2", f"start_voice/{self.second_app}")
        text = text.replace("KEY:TOKEN", f"{key}:{token}")
        text = text.replace("YOUR_API_KEY", key).replace("YOUR_API_TOKEN", token)
        text = re.sub(r"https://example\.com/", f"{self.hooks}/", text)
        text = re.sub(r"wss?://(?:KEY:SECRET@)?bot\.example\.com/agent", self.bot, text)
        text = text.replace("ws://127.0.0.1:8765/", f"{self.bot}/")
        text = text.replace("/Calls/SID.json", f"/Calls/{self.call_sid}.json")
        text = text.replace("/calls/SID/", f"/calls/{self.call_sid}/")
        text = text.replace("/recordings/ID/", f"/recordings/{self.recording_id}/")
        return text

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "KEY": str(self.creds["api_key"]),
            "TOKEN": str(self.creds["api_token"]),
            "CALL_SID": self.call_sid,
            "RECORDING_URL": self.recording_url,
        }

    async def shell(self, command: str) -> str:
        command = command.replace("curl ", "curl --fail-with-body -sS --max-time 20 ", 1)
        proc = await asyncio.create_subprocess_shell(
            command,
            cwd=self.workdir,
            env=self.environment(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"{command}\n{out.decode(errors='replace')}"
        return out.decode(errors="replace")

    async def python(self, code: str) -> str:
        script = self.workdir / f"example-{uuid.uuid4().hex[:6]}.py"
        script.write_text(code)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=self.workdir,
            env=self.environment(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"{code}\n{out.decode(errors='replace')}"
        return out.decode(errors="replace")


async def test_every_curl_line_and_python_example_of_the_readme_runs(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'rf.db'}"
    env = server_env(
        url,
        f"readme-{uuid.uuid4().hex[:6]}",
        RINGFLOW_DATA_DIR=str(tmp_path / "data"),
        RINGFLOW_RATE_LIMIT_PER_MINUTE="6000",
    )
    srv = Server(env, tmp_path / "server.log")
    env["RINGFLOW_PORT"] = str(srv.port)
    env["RINGFLOW_HOST"] = "127.0.0.1"
    await cli(env, "demo", "--before-serve", "--host", "127.0.0.1", "--port", str(srv.port))
    creds = json.loads((tmp_path / "data" / "demo-credentials.json").read_text())
    second = tmp_path / "second.json"
    second.write_text(
        json.dumps({"name": "second", "start": "bye", "nodes": {"bye": {"applet": "hangup"}}})
    )
    second_app = int((await cli(env, "apps", "import", creds["sid"], str(second))).split()[1])
    long = tmp_path / "long.json"
    long.write_text(
        json.dumps(
            {
                "name": "long",
                "start": "talk",
                "nodes": {
                    "talk": {"applet": "greeting", "text": " ".join(["la"] * 300), "next": "bye"},
                    "bye": {"applet": "hangup"},
                },
            }
        )
    )
    long_app = int((await cli(env, "apps", "import", creds["sid"], str(long))).split()[1])
    (tmp_path / "dues.csv").write_text("name,number\nAsha,09812345678\nRavi,09812345679\n")
    (tmp_path / "welcome.mp3").write_bytes(tone_mp3())
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ECHO_BOT),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert bot.stdout is not None
        listening = (await asyncio.wait_for(bot.stdout.readline(), 20)).decode()
        bot_port = int(re.search(r"ws://[^:]+:(\d+)/", listening).group(1))  # type: ignore[union-attr]
        async with recorder() as hooks:
            await srv.start()
            reader = Reader(
                srv.base,
                creds,
                second_app,
                long_app,
                hooks.url,
                f"ws://127.0.0.1:{bot_port}",
                tmp_path,
            )
            await first_call(reader)
            ran, context = 0, ""
            for _line, language, text in blocks():
                if language == "python":
                    if any(mark in text for mark in NOT_RUN):
                        continue
                    # A block that imports nothing goes on from the last one with requests
                    # (the README is read in order): it runs after that one.
                    standalone = re.match(r"(?:import|from) ", text) is not None
                    await reader.python(reader.fill(text if standalone else f"{context}\n{text}"))
                    if "import requests" in text:
                        context = text
                    ran += 1
                    continue
                for command in commands(text):
                    if any(mark in command for mark in NOT_RUN):
                        continue
                    if "$CALL_SID" in command:  # live call control: a call in progress
                        await live_call(reader)
                    await reader.shell(reader.fill(command))
                    ran += 1
            assert ran >= 15, ran  # the README's API examples, not a handful of them
            assert srv.proc is not None and srv.proc.returncode is None
    finally:
        await srv.close()
        if bot.returncode is None:
            bot.kill()
            await bot.wait()


def tone_mp3() -> bytes:
    """A second of a 440 Hz tone as MP3, the reader's greeting audio."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(32)
    encoder.set_in_sample_rate(8000)
    encoder.set_channels(1)
    encoder.set_quality(7)
    pcm = array.array(
        "h", (int(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(8000))
    )
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


async def place(
    reader: Reader, app: object, until: Callable[[dict[str, Any]], bool], **more: str
) -> dict[str, Any]:
    """Place a call of ``app`` and wait until its Call object satisfies ``until``; the call."""
    sid = str(reader.creds["sid"])
    auth = (str(reader.creds["api_key"]), str(reader.creds["api_token"]))
    calls = f"{reader.base}/v1/Accounts/{sid}/Calls"
    async with httpx.AsyncClient(timeout=10) as http:
        flow = f"http://my.exotel.com/{sid}/exoml/start_voice/{app}"
        data = {"From": "09812345678", "CallerId": "08039591234", "Url": flow, **more}
        r = await http.post(f"{calls}/connect.json", auth=auth, data=data)
        assert r.status_code == 200, r.text
        call = r.json()["Call"]
        for _ in range(300):
            call = (await http.get(f"{calls}/{call['Sid']}.json", auth=auth)).json()["Call"]
            if until(call):
                return call
            await asyncio.sleep(0.1)
    raise AssertionError(f"the call never got there: {call}")


async def live_call(reader: Reader) -> None:
    """A call talking now (a long greeting), as ``$CALL_SID``."""
    call = await place(reader, reader.long_app, lambda c: c["Status"] == "in-progress")
    reader.call_sid = call["Sid"]


async def first_call(reader: Reader) -> None:
    """A recorded call of the demo app, over, so the examples that read one have one."""
    call = await place(
        reader,
        reader.creds["app_id"],
        lambda c: c["Status"] == "completed" and bool(c.get("RecordingUrl")),
        Record="true",
    )
    reader.call_sid = call["Sid"]
    reader.recording_url = call["RecordingUrl"]
    reader.recording_id = reader.recording_url.rsplit("/", 1)[1].split(".")[0]
