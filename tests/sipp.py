"""SIPp as the phone in end-to-end tests: one call per process, its exit code required to be 0."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).parent / "fixtures" / "sipp"
SIPP_SHARE = Path("/usr/share/sip-tester")
WAIT = 20.0  # seconds SIPp may take to finish after the call ends, on a slow machine

needs_sipp = pytest.mark.skipif(
    shutil.which("sipp") is None, reason="sipp not on PATH (make test installs sip-tester)"
)


def free_udp_port() -> int:
    """A UDP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_media_port() -> int:
    """An even UDP port free on loopback, with the port above it free too (RTP and RTCP)."""
    for _ in range(50):
        port = free_udp_port()
        if port % 2 == 0 and port < 65000:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of UDP ports")


def tcp_listening(port: int) -> bool:
    """Whether some socket listens on TCP ``port`` of loopback (read from /proc, no probe
    connection that the phone would count as a caller)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(
            fields[1] == wanted and fields[3] == "0A"  # 0A: LISTEN
            for fields in (line.split() for line in table)
            if len(fields) > 3
        )


async def listening_on_tcp(port: int, proc: asyncio.subprocess.Process, wait: float = WAIT) -> None:
    """Wait until SIPp listens on its TCP port: a call placed before that is refused."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not tcp_listening(port):
        if proc.returncode is not None or loop.time() > deadline:
            raise RuntimeError(f"SIPp never listened on TCP port {port}")
        await asyncio.sleep(0.02)


class Sipp:
    """One running SIPp: ``port`` is its SIP port; ``exit_code()`` waits for it to finish."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, workdir: Path):
        self.proc = proc
        self.port = port
        self.workdir = workdir

    @property
    def uri(self) -> str:
        """A SIP URI that reaches this SIPp."""
        return f"sip:callee@127.0.0.1:{self.port}"

    async def exit_code(self, wait: float = WAIT) -> int:
        """SIPp's exit code (0: the call passed), printing its errors if it failed."""
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), wait)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
            raise
        if self.proc.returncode != 0:
            logs = "".join(p.read_text(errors="replace") for p in self.workdir.glob("*_errors.log"))
            print(err.decode(errors="replace"), logs)
        return self.proc.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        """Stop it (a test that failed early)."""
        if self.proc.returncode is None:
            self.proc.kill()


async def start_sipp(
    workdir: Path,
    scenario: str,
    *args: str,
    port: int,
    media: int,
    calls: int = 1,
    timeout: int = 60,
    variables: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """SIPp on loopback ``port`` (RTP on ``media``) running ``scenario`` (a file in
    fixtures/sipp, or a ``-sn`` name) for ``calls`` calls, failing after ``timeout`` seconds;
    ``args`` are more options (``-d``, ``-trace_msg``, ...). Its stderr is piped."""
    scenario_args = (
        ["-sf", str(SCENARIOS / scenario)] if scenario.endswith(".xml") else ["-sn", scenario]
    )
    for name, value in (variables or {}).items():
        scenario_args += ["-set", name, value]
    return await asyncio.create_subprocess_exec(
        "sipp", *scenario_args, *args,
        "-i", "127.0.0.1", "-p", str(port), "-mi", "127.0.0.1", "-mp", str(media),
        "-m", str(calls), "-timeout", str(timeout), "-timeout_error", "-nostdin",
        cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def sipp(
    workdir: Path,
    scenario: str,
    *args: str,
    variables: dict[str, str] | None = None,
    talk_ms: int = 1000,
    transport: str = "u1",
) -> AsyncIterator[Sipp]:
    """Run SIPp with ``scenario`` (a file in fixtures/sipp, or ``-sn`` name) for one call."""
    port, media = free_udp_port(), free_media_port()
    proc = await start_sipp(
        workdir,
        scenario,
        *args,
        "-t",
        transport,
        "-d",
        str(talk_ms),
        "-trace_err",
        port=port,
        media=media,
        variables=variables,
    )
    phone = Sipp(proc, port, workdir)
    try:
        if transport.startswith("t"):
            await listening_on_tcp(port, proc)
        yield phone
    finally:
        phone.kill()
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
