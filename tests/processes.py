"""``ringflow`` as real processes for end-to-end tests: the server and the admin commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.e2e import TEST_DATA_DIR

CALLBACK_TIMEOUT = "2"


def server_env(database_url: str, instance: str, **extra: str) -> dict[str, str]:
    """The environment of every ringflow process of one test (server and CLI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFLOW_")}
    env.update(
        RINGFLOW_DATABASE_URL=database_url,
        RINGFLOW_INSTANCE=instance,
        RINGFLOW_ALLOW_PRIVATE_URLS="1",
        RINGFLOW_DATA_DIR=TEST_DATA_DIR,
        RINGFLOW_CALLBACK_TIMEOUT=CALLBACK_TIMEOUT,
        RINGFLOW_LOG_LEVEL="info",
        # A SIGTERM ends the calls at once unless a test asks for a drain (it waits otherwise).
        RINGFLOW_DRAIN_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


async def cli(env: dict[str, str], *args: str) -> str:
    """Run one ``ringflow`` admin command; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ringflow.cli", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"ringflow {' '.join(args)} failed: {err.decode()}"
    return out.decode()


class Server:
    """``ringflow serve`` in a subprocess; its output goes to a log file shown on failure."""

    def __init__(self, env: dict[str, str], log: Path, *args: str):
        self.env = env
        self.args = args  # more ``serve`` options, such as ``--workers 2``
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    async def start(self) -> None:
        self.runs += 1
        with self.log.open("a") as out:
            out.write(f"\n===== run {self.runs} =====\n")
            out.flush()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ringflow.cli", "serve",
                "--host", "127.0.0.1", "--port", str(self.port), *self.args,
                env=self.env, stdout=out, stderr=out,
            )  # fmt: skip
        async with httpx.AsyncClient(timeout=2) as http:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise AssertionError(f"ringflow serve exited at start-up\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if (
                        await http.get(f"{self.base}/healthz")
                    ).status_code == 200 and self._all_workers_up():
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"ringflow serve did not come up within 30 s\n{self.output()}")

    def _all_workers_up(self) -> bool:
        """Every worker of this run serves (with ``--workers N``, the first one up answers
        /healthz while the others still start: calls placed then would all go to it)."""
        args = list(self.args)
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        this_run = self.log.read_text().rsplit(f"===== run {self.runs} =====", 1)[-1]
        return this_run.count("Application startup complete.") >= workers

    async def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)

    async def terminate(self, timeout: float = 30) -> None:
        """SIGTERM, as a process manager stops a service; fails unless the stop was graceful."""
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        # uvicorn shuts down, then raises the captured SIGTERM again for the process manager.
        this_run = self.output().rsplit(f"===== run {self.runs} =====", 1)[-1]
        assert code in (0, -signal.SIGTERM), f"exit status {code}\n{self.output()}"
        assert "Application shutdown complete" in this_run, f"not a graceful stop\n{self.output()}"

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text()[-8000:] if self.log.exists() else ""


async def account_with_app(
    env: dict[str, str], tmp_path: Path, flow: dict[str, Any], exophone: str
) -> tuple[dict[str, str], int]:
    """An account made with the real CLI, with ``exophone`` and ``flow`` imported:
    (its credentials, the app's id). Its SID is new: rate limits in a shared Redis are
    counted by SID, across tests."""
    name = f"Test {uuid.uuid4().hex[:10]}"
    creds = json.loads(await cli(env, "accounts", "create", name, "--json"))
    await cli(env, "numbers", "add", creds["sid"], exophone)
    app_file = tmp_path / f"{flow.get('name', 'app')}.json"
    app_file.write_text(json.dumps(flow))
    app_id = int((await cli(env, "apps", "import", creds["sid"], str(app_file))).split()[1])
    return creds, app_id
