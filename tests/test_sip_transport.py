"""The SIP adapter's loops on a real UDP socket: one stray request, or one bug, stops nothing.

Timers run on the event loop's clock with a shortened ``Timing`` (T1 = 10 ms, so timer H, the
wait for the ACK of a final response to an INVITE, is 0.64 s instead of 32 s). A small
registrar on loopback grants one-second bindings, so a working timer shows as a REGISTER
refresh every half second.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import pytest

from ringflow.sip.headers import Headers
from ringflow.sip.message import Request, Response, make_response, parse_message
from ringflow.sip.registration import RegState
from ringflow.sip.transaction import Timing
from ringflow.sip.transport import SipTransport
from ringflow.sip.uri import SipUri

FAST = Timing(t1=0.01, t2=0.04, t4=0.05)
TIMER_H = 64 * FAST.t1
GRANTED = 1  # seconds the registrar grants: a refresh every half second


class Registrar(asyncio.DatagramProtocol):
    """A registrar on loopback: answers every REGISTER 200 with a short binding."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.registers: list[float] = []  # loop times REGISTERs arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        assert isinstance(request, Request) and request.method == "REGISTER"
        self.registers.append(asyncio.get_running_loop().time())
        contact = f"{request.headers.get('Contact')};expires={GRANTED}"
        ok = make_response(request, 200, to_tag="reg", headers=(("Contact", contact),))
        assert self.transport is not None
        self.transport.sendto(bytes(ok), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def since(self, at: float) -> int:
        """REGISTERs that arrived after loop time ``at``."""
        return sum(1 for t in self.registers if t > at)


@pytest.fixture
async def registrar() -> AsyncIterator[Registrar]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Registrar, local_addr=("127.0.0.1", 0)
    )
    try:
        yield protocol
    finally:
        transport.close()


@pytest.fixture
async def sip(registrar: Registrar) -> AsyncIterator[SipTransport]:
    """A SIP socket kept registered at ``registrar``, with the short timers."""
    transport = await SipTransport.open("127.0.0.1", 0, timing=FAST)
    handle = await transport.register(f"sip:alice@127.0.0.1:{registrar.port}", expires=GRANTED)
    assert await asyncio.wait_for(handle.wait(RegState.REGISTERED), 2) == RegState.REGISTERED
    try:
        yield transport
    finally:
        transport.close()


def stray_invite(port: int) -> bytes:
    """An INVITE for no call of ours, as a scanner or a misrouted peer sends it."""
    h = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKstray1;rport"),
            ("Max-Forwards", "70"),
            ("From", "<sip:scanner@127.0.0.1>;tag=s1"),
            ("To", "<sip:100@127.0.0.1>"),
            ("Call-ID", "stray-invite-1"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:scanner@127.0.0.1:{port}>"),
        ]
    )
    return bytes(
        Request(headers=h, body=b"", method="INVITE", uri=SipUri.parse("sip:100@127.0.0.1"))
    )


async def collect(sock: socket.socket, seconds: float) -> list[bytes]:
    """Every datagram ``sock`` receives within ``seconds``."""
    loop, got = asyncio.get_running_loop(), []
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            got.append(await asyncio.wait_for(loop.sock_recv(sock, 65536), left))
        except TimeoutError:
            break
    return got


async def test_a_stray_invite_never_acked_leaves_every_timer_running(
    sip: SipTransport, registrar: Registrar, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as scanner:
        scanner.bind(("127.0.0.1", 0))
        scanner.setblocking(False)
        scanner.sendto(stray_invite(scanner.getsockname()[1]), sip.local)
        # Our 480 and its retransmissions until timer H gives up on the ACK that never comes.
        answers = await collect(scanner, TIMER_H + 0.3)
    assert answers and all(
        isinstance(r := parse_message(a), Response) and r.status == 480 for a in answers
    )
    after_h = loop.time()
    await asyncio.sleep(3 * GRANTED / 2 + 0.2)
    assert registrar.since(after_h) >= 2, "the registration stopped being refreshed"
    assert sip.ua is not None and not sip.ua._server  # the transaction is gone
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class FaultyOwner:
    """Something in the agent's timer heap whose ``timer`` raises: a bug, as one may be."""

    call_id = "faulty"
    finished = False
    peer_hosts = ()

    def __init__(self, due: float) -> None:
        self.next_timer: float | None = due
        self.fired = 0

    def timer(self, now: float) -> list:
        self.fired += 1
        raise RuntimeError("a bug in one owner's timer")


async def test_an_exception_in_one_timer_does_not_stop_the_others(
    sip: SipTransport, registrar: Registrar, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    assert sip.ua is not None
    faulty = FaultyOwner(loop.time() + 0.05)
    sip.ua.registrations[faulty.call_id] = faulty  # type: ignore[assignment]
    sip.ua._after(faulty.call_id)  # it joins the timer heap like any registration
    sip._rearm()
    start = loop.time()
    await asyncio.sleep(3 * GRANTED / 2 + 0.2)
    assert faulty.fired >= 1
    assert registrar.since(start + 0.1) >= 2, "one failing timer stopped the refreshes"
    failures = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
    assert failures, "the failure was not logged with its exception"


async def test_a_failing_step_on_the_receive_path_is_logged_and_the_loop_goes_on(
    sip: SipTransport, registrar: Registrar, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()

    def broken(now: float) -> list:
        raise RuntimeError("a bug while handling one datagram")

    sip._run(broken, contained=True)  # what _deliver does with each datagram's step
    start = loop.time()
    await asyncio.sleep(3 * GRANTED / 2 + 0.2)
    assert registrar.since(start) >= 2
    assert any(r.exc_info and "a bug while" in str(r.exc_info[1]) for r in caplog.records)
    with pytest.raises(RuntimeError):  # an API call still hears about its own failure
        sip._run(broken)
    await asyncio.sleep(GRANTED)
    assert registrar.since(start + 3 * GRANTED / 2 + 0.2) >= 1
