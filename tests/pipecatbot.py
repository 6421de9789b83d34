"""The pipecat bot (tests/bots/pipecat_bot.py) as a child process from its own virtualenv."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PIPECAT_PYTHON = ROOT / ".venv-pipecat" / "bin" / "python"
BOT = ROOT / "tests" / "bots" / "pipecat_bot.py"
TONE_HZ = 660
TONE_SECONDS = 2.0  # as tests/bots/pipecat_bot.py plays it


def pipecat_python() -> Path:
    """The pipecat virtualenv's interpreter; fails (never skips) when it was not built."""
    if not PIPECAT_PYTHON.exists():
        pytest.fail(
            f"{PIPECAT_PYTHON} is missing: build the pipecat bot's virtualenv with "
            "`make pipecat-venv` (`make test` builds it before running the suite)"
        )
    return PIPECAT_PYTHON


class BotProcess:
    """The pipecat bot running as a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, report: Path):
        self.proc = proc
        self.port = port
        self.report = report
        self.output: list[str] = []

    def url(self, query: str = "") -> str:
        """The stream URL ringflow would be given."""
        return f"ws://127.0.0.1:{self.port}/" + (f"?{query}" if query else "")

    async def wait_line(self, prefix: str, timeout: float) -> str:
        """The next line of its stdout starting with ``prefix``."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while line := (await self.proc.stdout.readline()).decode(errors="replace"):
                self.output.append(line)
                if line.startswith(prefix):
                    return line.strip()
        raise AssertionError(f"the bot exited without {prefix!r}:\n{''.join(self.output)}")

    async def reports(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """The report file once it holds ``count`` streams."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.report.exists():
                done = json.loads(self.report.read_text())
                if len(done) >= count:
                    return done
            await asyncio.sleep(0.05)
        raise AssertionError(f"no report of {count} streams:\n{''.join(self.output)}")


@contextlib.asynccontextmanager
async def pipecat_bot(tmp_path: Path) -> AsyncIterator[BotProcess]:
    """The pipecat bot on a free port, ready; stopped on exit."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(pipecat_python()),
        str(BOT),
        "--port",
        str(port),
        "--report",
        str(tmp_path / "report.json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    running = BotProcess(proc, port, tmp_path / "report.json")
    try:
        await running.wait_line("READY", timeout=60)
        yield running
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
