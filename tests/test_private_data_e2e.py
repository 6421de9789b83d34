"""What a ringflow server keeps stays private: no secret in its logs, no file readable by others.

``ringflow serve`` runs as a real process under a permissive umask (022, as a shell has): the
access log must not carry a signed link's Signature, a failure message not a callback URL's
token; the data directory, the SQLite database with its WAL, the secret key and the recordings
must be owner-only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import uuid
from pathlib import Path

import httpx
import pytest

from ringflow.logs import RedactingFilter, redact
from tests.processes import Server, cli, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SIGNATURE = "5ec7e75167a7ba5e0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778"
TOKEN = "tok-9f8e7d6c5b4a"


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        (
            f'"GET /v1/Accounts/a/Recordings/r.mp3?Expires=1&Signature={SIGNATURE} HTTP/1.1" 403',
            '"GET /v1/Accounts/a/Recordings/r.mp3?Expires=1&Signature=[redacted] HTTP/1.1" 403',
        ),
        (
            f"callback to https://hooks.example.com/s?token={TOKEN}&call=1 failed",
            "callback to https://hooks.example.com/s?token=[redacted]&call=1 failed",
        ),
        (
            f"passthru https://hooks.example.com/p?api_token={TOKEN}",
            "passthru https://hooks.example.com/p?api_token=[redacted]",
        ),
        (
            f"fetch https://user:{TOKEN}@hooks.example.com/a.wav",
            "fetch https://user:[redacted]@hooks.example.com/a.wav",
        ),
        (
            f"csrf={TOKEN}&name=acme&password={TOKEN}",
            "csrf=[redacted]&name=acme&password=[redacted]",
        ),
        (f"Authorization: Basic {TOKEN}", "Authorization: Basic [redacted]"),
        (
            f"{{'cookie': 'ringflow_session={TOKEN}', 'accept': '*/*'}}",
            "{'cookie': '[redacted]', 'accept': '*/*'}",
        ),
        ("call CA123 answered after 3.2 s", "call CA123 answered after 3.2 s"),
    ],
)
def test_redact_removes_secrets_and_keeps_the_rest(line: str, logged: str) -> None:
    assert redact(line) == logged


def test_the_filter_keeps_a_format_string_and_its_arguments_apart() -> None:
    """A format string is code: 'token=%s' keeps its placeholder, the argument is redacted."""
    record = logging.LogRecord(
        "x",
        logging.INFO,
        __file__,
        1,
        "sent token=%s to %s",
        (TOKEN, f"https://h.example/cb?token={TOKEN}"),
        None,
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "sent token=[redacted] to https://h.example/cb?token=[redacted]"


def test_the_filter_redacts_arguments_and_tracebacks() -> None:
    record = logging.LogRecord(
        "x",
        logging.ERROR,
        __file__,
        1,
        "delivery to %s failed",
        (f"https://h.example/cb?token={TOKEN}",),
        None,
    )
    try:
        raise ValueError(f"bad url https://h.example/cb?secret={TOKEN}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert TOKEN not in logging.Formatter().format(record)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_the_server_logs_no_secret_and_keeps_its_files_owner_only(
    tmp_path: Path, log_format: str
):
    data = tmp_path / "data"
    env = server_env(
        f"sqlite+aiosqlite:///{data}/ringflow.db",
        f"private-{uuid.uuid4().hex[:6]}",
        RINGFLOW_DATA_DIR=str(data),
        RINGFLOW_LOG_FORMAT=log_format,
    )
    old_umask = os.umask(0o022)  # the servers below inherit a shell's permissive umask
    try:
        await cli(env, "migrate")
        creds = json.loads(await cli(env, "accounts", "create", "Private Co", "--json"))
        await cli(env, "numbers", "add", creds["sid"], "08039591234")
        srv = Server(env, tmp_path / "server.log")
        try:
            await srv.start()
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.get(
                    f"{srv.base}/v1/Accounts/{creds['sid']}/Recordings/{'0' * 32}.mp3",
                    params={"Expires": "4102444800", "Signature": SIGNATURE},
                )
                assert r.status_code == 403
                # A call whose StatusCallback carries a token and cannot be reached.
                r = await http.post(
                    f"{srv.base}/v1/Accounts/{creds['sid']}/Calls/connect.json",
                    data={
                        "From": "09812345678",
                        "To": "09812345679",
                        "CallerId": "08039591234",
                        "StatusCallback": f"http://127.0.0.1:9/cb?token={TOKEN}",
                        "Record": "true",
                        "TimeLimit": "2",
                    },
                    auth=(creds["api_key"], creds["api_token"]),
                )
                assert r.status_code == 200, r.text
                call = r.json()["Call"]["Uri"].replace(".json", "")
                for _ in range(150):  # the sandbox call rings, talks for 2 s and is recorded
                    await asyncio.sleep(0.1)
                    r = await http.get(
                        f"{srv.base}{call}.json", auth=(creds["api_key"], creds["api_token"])
                    )
                    if r.json()["Call"]["RecordingUrl"]:
                        break
                assert r.json()["Call"]["RecordingUrl"], r.text
        finally:
            await srv.close()
    finally:
        os.umask(old_umask)

    log = srv.output()
    assert SIGNATURE not in log and TOKEN not in log and creds["api_token"] not in log
    if log_format == "json":  # the same checks on the messages, once each line is parsed
        log = "\n".join(
            json.loads(line)["message"]
            for line in srv.log.read_text().splitlines()
            if line.strip() and not line.startswith("=====")
        )
    # The access log line is there, whole and redacted (a filter that broke uvicorn's access
    # formatter would leave only logging's own error report).
    assert "Logging error" not in log, log
    assert (
        f'"GET /v1/Accounts/{creds["sid"]}/Recordings/{"0" * 32}.mp3?Expires=4102444800&'
        'Signature=[redacted] HTTP/1.1" 403'
    ) in log, log
    assert SIGNATURE not in log and TOKEN not in log and creds["api_token"] not in log

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(data) == 0o700
    for path in [data / "ringflow.db", data / "secret_key", *data.glob("ringflow.db-*")]:
        assert mode(path) == 0o600, path
    assert list(data.glob("recordings/**/*.mp3"))
    for path in data.rglob("*"):
        assert mode(path) & 0o077 == 0, f"{path} is {oct(mode(path))}"
