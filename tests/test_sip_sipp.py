"""The SIP core on a real UDP socket against SIPp, the reference SIP test tool, on loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from pathlib import Path

import pytest

from ringflow.sip import (
    PCMU,
    Answered,
    Authenticator,
    Ended,
    Ending,
    Ringing,
    Status,
    Timing,
    build_sdp,
)
from ringflow.sip.registration import RegState
from ringflow.sip.transport import OutgoingCallHandle, SipTransport
from tests.sipp import listening_on_tcp

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("sipp") is None, reason="sipp not on PATH (make test installs sip-tester)"
    ),
]

SCENARIOS = Path(__file__).parent / "fixtures" / "sipp"
WAIT = 10.0  # seconds any single step may take on a slow CI machine


def free_udp_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A UDP (or, given SOCK_STREAM, TCP) port free on loopback right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_sipp(
    tmp_path: Path, *scenario: str, transport: str = "udp"
) -> tuple[asyncio.subprocess.Process, int]:
    """One SIPp peer for one call on a free loopback port; its files go to ``tmp_path``."""
    tcp = transport == "tcp"
    port = free_udp_port(socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    mode = ("-t", "t1") if tcp else ()
    proc = await asyncio.create_subprocess_exec(
        "sipp",
        *scenario,
        *mode,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "1",
        "-timeout",
        "30",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    if tcp:
        await listening_on_tcp(port, proc, WAIT)
    return proc, port


async def sipp_exit(proc: asyncio.subprocess.Process, tmp_path: Path, wait: float = WAIT) -> int:
    """SIPp's exit code (0: every call passed), with its errors shown if it failed."""
    try:
        _, err = await asyncio.wait_for(proc.communicate(), wait)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*_errors.log"))
        print(err.decode(errors="replace"), logs)
    return proc.returncode  # type: ignore[return-value]


async def event(handle: OutgoingCallHandle) -> object:
    """The call's next event, bounded."""
    return await asyncio.wait_for(handle.next_event(), WAIT)


async def place(
    tmp_path: Path, *scenario: str, timing: Timing | None = None, transport: str = "udp"
) -> tuple[SipTransport, OutgoingCallHandle, asyncio.subprocess.Process]:
    """Start a SIPp callee and dial it; no RTP yet, so the offer's port is a placeholder."""
    proc, port = await start_sipp(tmp_path, *scenario, transport=transport)
    sip = await SipTransport.open("127.0.0.1", 0, timing=timing or Timing(), transport=transport)
    offer = build_sdp("127.0.0.1", 40000, session_id=1, version=1, codecs=(PCMU,))
    param = ";transport=tcp" if transport == "tcp" else ""
    handle = await sip.dial(
        f"sip:callee@127.0.0.1:{port}{param}", "<sip:ringflow@127.0.0.1>", offer
    )
    return sip, handle, proc


async def test_sipp_uas_answers_and_we_hang_up(tmp_path: Path) -> None:
    sip, handle, proc = await place(tmp_path, "-sn", "uas")
    try:
        first = await event(handle)
        assert isinstance(first, Ringing) and first.status == 180
        answered = await event(handle)
        assert isinstance(answered, Answered) and answered.plan.remote[0] == "127.0.0.1"
        handle.hangup()
        ended = await event(handle)
        assert isinstance(ended, Ended) and ended.by_remote is False
        assert ended.outcome.status is Status.ANSWERED
        assert await sipp_exit(proc, tmp_path) == 0
    finally:
        sip.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_busy_callee_ends_the_call_busy(tmp_path: Path) -> None:
    sip, handle, proc = await place(tmp_path, "-sf", str(SCENARIOS / "uas_busy.xml"))
    try:
        ended = await event(handle)
        assert isinstance(ended, Ended), ended
        assert ended.outcome.status is Status.BUSY and ended.outcome.cause == "486 Busy Here"
        assert ended.outcome.code == 486
        assert await sipp_exit(proc, tmp_path) == 0  # it got our ACK
    finally:
        sip.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_ring_timeout_cancels_and_ends_no_answer(tmp_path: Path) -> None:
    sip, handle, proc = await place(tmp_path, "-sf", str(SCENARIOS / "uas_ring_forever.xml"))
    try:
        ringing = await event(handle)
        assert isinstance(ringing, Ringing) and ringing.status == 180
        handle.cancel(Ending.RING_TIMEOUT)  # what the API's ring timeout will do
        ended = await event(handle)  # comes with the 487 to our CANCEL
        assert isinstance(ended, Ended) and ended.by_remote is False
        assert ended.outcome.status is Status.NO_ANSWER and ended.outcome.code == 487
        assert await sipp_exit(proc, tmp_path) == 0  # it got our ACK for the 487
    finally:
        sip.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_timer_c_cancels_and_acks_the_487(tmp_path: Path) -> None:
    sip, handle, proc = await place(
        tmp_path, "-sf", str(SCENARIOS / "uas_ring_forever.xml"), timing=Timing(c=1.0)
    )  # timer C: give up ringing at 1 s
    try:
        assert isinstance(await event(handle), Ringing)
        ended = await event(handle)
        assert isinstance(ended, Ended) and ended.outcome.status is Status.NO_ANSWER
        assert ended.outcome.code == 487 and ended.by_remote is False  # the 487 came back
        assert await sipp_exit(proc, tmp_path, wait=4.0) == 0  # and SIPp got our ACK
    finally:
        sip.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- TCP ---------------------------------------------------------------------------------------


async def test_a_call_over_tcp_is_answered_and_we_hang_up(tmp_path: Path) -> None:
    sip, handle, proc = await place(tmp_path, "-sn", "uas", transport="tcp")
    try:
        assert isinstance(await event(handle), Ringing)
        assert isinstance(await event(handle), Answered)
        handle.hangup()
        ended = await event(handle)
        assert isinstance(ended, Ended) and ended.outcome.status is Status.ANSWERED
        assert await sipp_exit(proc, tmp_path) == 0  # INVITE, ACK and BYE all came over TCP
    finally:
        sip.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_bye_from_the_callee_over_tcp_is_answered_on_its_connection(tmp_path: Path) -> None:
    sip, handle, proc = await place(
        tmp_path, "-sf", str(SCENARIOS / "uas_hangs_up.xml"), transport="tcp"
    )
    try:
        assert isinstance(await event(handle), Answered)
        ended = await event(handle)
        assert isinstance(ended, Ended) and ended.by_remote is True
        assert await sipp_exit(proc, tmp_path) == 0  # it got our 200 for its BYE
    finally:
        sip.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- REGISTER ----------------------------------------------------------------------------------


async def register(tmp_path: Path, password: str):  # type: ignore[no-untyped-def]
    """Start SIPp as a digest registrar and register alice with ``password``."""
    proc, port = await start_sipp(tmp_path, "-sf", str(SCENARIOS / "registrar_digest.xml"))
    sip = await SipTransport.open("127.0.0.1", 0)
    reg = await sip.register(
        "sip:alice@sipp.example",
        f"sip:127.0.0.1:{port}",
        authenticator=Authenticator("alice", password),
        expires=3600,
    )
    return sip, reg, proc


async def test_register_answers_the_challenge_then_unregisters(tmp_path: Path) -> None:
    sip, reg, proc = await register(tmp_path, "secret")
    try:
        state = await asyncio.wait_for(reg.wait(RegState.REGISTERED, RegState.FAILED), WAIT)
        assert state is RegState.REGISTERED and reg.registered, reg.cause
        assert (reg.status, reg.cause) == (200, "200 OK")
        assert reg.registration.granted == 120  # from our Contact's expires in the 200
        assert reg.expires_at == pytest.approx(time.time() + 120, abs=5)
        assert await asyncio.wait_for(reg.unregister(), WAIT) is RegState.UNREGISTERED
        assert await sipp_exit(proc, tmp_path) == 0  # it verified both sets of credentials
    finally:
        sip.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_wrong_password_is_refused_and_the_registration_fails(tmp_path: Path) -> None:
    sip, reg, proc = await register(tmp_path, "not-the-password")
    try:
        state = await asyncio.wait_for(reg.wait(RegState.REGISTERED, RegState.FAILED), WAIT)
        assert state is RegState.FAILED and not reg.registered
        assert (reg.status, reg.cause) == (403, "403 Forbidden")
        assert reg.expires_at is None and reg.retry_at is not None  # it will try again later
        assert await sipp_exit(proc, tmp_path) == 0
    finally:
        sip.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
