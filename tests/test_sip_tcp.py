"""SIP over TCP: stream framing, timers on a reliable transport, and the TCP link on loopback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringflow.sip.agent import UserAgent
from ringflow.sip.dialog import Endpoint
from ringflow.sip.errors import SipParseError
from ringflow.sip.events import Ended, RegistrationChanged
from ringflow.sip.framing import StreamFramer
from ringflow.sip.headers import NameAddr
from ringflow.sip.ids import IdSource
from ringflow.sip.message import make_response, parse_message
from ringflow.sip.outcome import Status
from ringflow.sip.sdp import PCMU, build_sdp
from ringflow.sip.sources import Sources
from ringflow.sip.transaction import Datagram, Timing
from ringflow.sip.transport import SipTransport
from ringflow.sip.uri import SipUri
from tests.test_sip_dialog import SIPP_SDP, our_offer
from tests.test_sip_fuzz import FUZZ

FIXTURES = Path(__file__).parent / "fixtures" / "sip"
GOLDEN = [
    data
    for p in sorted(FIXTURES.glob("*.sip"))
    if bytes(parse_message(data := p.read_bytes())) == data
]  # exact Content-Length
PEER = ("127.0.0.1", 5080)
OPTIONS = (
    b"OPTIONS sip:ringflow@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5080;branch=z9hG4bKopt1\r\n"
    b"From: <sip:peer@127.0.0.1>;tag=p1\r\nTo: <sip:ringflow@127.0.0.1>\r\n"
    b"Call-ID: opt1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


# -- framing ----------------------------------------------------------------------------------


def test_a_message_cut_anywhere_is_held_until_complete() -> None:
    message = GOLDEN[0]
    for cut in range(1, len(message)):
        framer = StreamFramer()
        assert framer.feed(message[:cut]) == [] and framer.pending == cut
        assert framer.feed(message[cut:]) == [message] and framer.pending == 0


def test_coalesced_messages_and_keepalives_come_out_one_by_one() -> None:
    framer = StreamFramer()
    invite = (FIXTURES / "invite_sipp_uac.sip").read_bytes()  # padded "Content-Length:   129"
    assert framer.feed(b"\r\n\r\n" + OPTIONS + b"\r\n" + invite + OPTIONS[:20]) == [OPTIONS, invite]
    assert framer.feed(OPTIONS[20:]) == [OPTIONS]
    assert framer.feed(b"\r\n\r\n") == [] and framer.pending == 0  # a keep-alive ping


def test_compact_content_length_frames_the_body() -> None:
    message = OPTIONS.replace(b"Content-Length: 0", b"l:  4").replace(b"\r\n\r\n", b"\r\n\r\nBODY")
    assert StreamFramer().feed(message + message) == [message, message]


@pytest.mark.parametrize(
    "bad",
    [
        OPTIONS.replace(b"Content-Length: 0\r\n", b""),  # mandatory on a stream
        OPTIONS.replace(b"Content-Length: 0", b"Content-Length: x"),
        OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 0\r\nContent-Length: 3"),
        OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 99999999"),
        b"OPTIONS " + b"x" * 70000,  # no end of headers in sight
    ],
)
def test_a_stream_that_cannot_be_framed_is_an_error(bad: bytes) -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(bad)


@FUZZ
@given(st.lists(st.sampled_from(GOLDEN), min_size=1, max_size=5), st.data())
def test_any_split_of_a_stream_gives_back_the_same_messages(
    messages: list, data: st.DataObject
) -> None:
    stream = b"".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer, out, start = StreamFramer(), [], 0
    for cut in [*cuts, len(stream)]:
        out += framer.feed(stream[start:cut])
        start = cut
    assert out == messages and framer.pending == 0


# -- timers on a reliable transport -----------------------------------------------------------


def tcp_ua() -> UserAgent:
    """A user agent advertising TCP, with reliable-transport timers."""
    return UserAgent(
        Endpoint("127.0.0.1", 5070, transport="TCP"), ids=IdSource(7), timing=Timing(reliable=True)
    )


def run_all(ua: UserAgent, now: float = 0.0, until: float = 1000.0) -> list[tuple[float, object]]:
    """Every timer until none is left (or ``until``), with the time each output came."""
    seen = []
    while ua.next_timer is not None and ua.next_timer <= until:
        now = max(now, ua.next_timer)
        seen += [(now, o) for o in ua.timer(now)]
    return seen


def test_an_unanswered_invite_over_tcp_is_sent_once_and_fails_at_timer_b() -> None:
    ua = tcp_ua()
    _call, out = ua.dial(
        SipUri.parse("sip:callee@127.0.0.1:5080;transport=tcp"),
        NameAddr.parse("<sip:ringflow@127.0.0.1>"),
        our_offer(),
        0.0,
    )
    invite = parse_message(out[0].data)
    assert (invite.headers.get("Via") or "").startswith("SIP/2.0/TCP 127.0.0.1:5070;")
    assert invite.headers.get("Contact") == "<sip:ringflow@127.0.0.1:5070;transport=tcp>"
    seen = run_all(ua)
    assert not [o for _, o in seen if isinstance(o, Datagram)]  # no timer A on TCP
    [(when, ended)] = [(t, o) for t, o in seen if isinstance(o, Ended)]
    assert when == 32.0 and ended.outcome.status is Status.FAILED


def test_bye_and_register_over_tcp_are_never_retransmitted_and_end_at_once() -> None:
    ua = tcp_ua()
    call, out = ua.dial(
        SipUri.parse("sip:callee@127.0.0.1:5080;transport=tcp"),
        NameAddr.parse("<sip:ringflow@127.0.0.1>"),
        our_offer(),
        0.0,
    )
    invite = parse_message(out[0].data)
    ok = make_response(
        invite,
        200,
        to_tag="t",
        body=SIPP_SDP,
        headers=(  # type: ignore[arg-type]
            ("Contact", "<sip:127.0.0.1:5080;transport=tcp>"),
            ("Content-Type", "application/sdp"),
        ),
    )
    ua.receive(bytes(ok), PEER, 0.1)
    [bye] = [parse_message(o.data) for o in ua.hangup(call.call_id, 1.0) if isinstance(o, Datagram)]
    assert ua.next_timer == pytest.approx(0.1 + 32.0)  # timer M of the INVITE: no timer E
    ua.receive(bytes(make_response(bye, 200)), PEER, 1.1)  # type: ignore[arg-type]
    ua.timer(1.1)  # timer K is zero on TCP
    assert [tx.request.method for tx in call.transactions] == ["INVITE"]  # the BYE is over

    _reg, out = ua.register(
        SipUri.parse("sip:alice@example.net"),
        SipUri.parse("sip:127.0.0.1:5080;transport=tcp"),
        None,
        600,
        2.0,
    )
    seen = run_all(ua, 2.0, until=40.0)  # a failed registration retries for ever
    assert not [o for _, o in seen if isinstance(o, Datagram)]  # no timer E on TCP
    [(when, failed)] = [(t, o) for t, o in seen if isinstance(o, RegistrationChanged)]
    assert when == 34.0 and failed.state == "failed" and failed.cause == "no response"


# -- the TCP link on loopback -----------------------------------------------------------------


async def test_requests_split_and_glued_on_one_connection_are_answered_on_it() -> None:
    sip = await SipTransport.open("127.0.0.1", 0, transport="tcp")
    try:
        reader, writer = await asyncio.open_connection(*sip.local)
        second = OPTIONS.replace(b"opt1", b"opt2")
        writer.write(OPTIONS[:30])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(OPTIONS[30:] + second)  # the rest of one, and all of the next
        framer, got = StreamFramer(), []
        while len(got) < 2:
            got += framer.feed(await asyncio.wait_for(reader.read(4096), 5.0))
        responses = [parse_message(m) for m in got]
        assert [(r.status, r.call_id) for r in responses] == [(200, "opt1"), (200, "opt2")]
        writer.close()
    finally:
        sip.close()


async def test_a_message_without_content_length_closes_the_connection() -> None:
    sip = await SipTransport.open("127.0.0.1", 0, transport="tcp")
    try:
        reader, writer = await asyncio.open_connection(*sip.local)
        writer.write(OPTIONS.replace(b"Content-Length: 0\r\n", b""))
        assert await asyncio.wait_for(reader.read(4096), 5.0) == b""  # closed, nothing answered
        writer.close()
    finally:
        sip.close()


async def test_a_trunk_refusing_tcp_fails_the_call_at_once_with_503() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sip = await SipTransport.open("127.0.0.1", 0, transport="tcp")
    try:
        offer = build_sdp("127.0.0.1", 40000, session_id=1, version=1, codecs=(PCMU,))
        handle = await sip.dial(
            f"sip:callee@127.0.0.1:{port};transport=tcp", "<sip:ringflow@127.0.0.1>", offer
        )
        ended = await asyncio.wait_for(handle.next_event(), 5.0)  # not after timer B's 32 s
        assert isinstance(ended, Ended) and ended.outcome.status is Status.FAILED
        assert ended.outcome.code == 503 and "no TCP connection" in ended.outcome.cause
    finally:
        sip.close()


async def closed_by_us(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """Whether the other end closes the connection within ``within`` seconds, answering nothing."""
    try:
        return await asyncio.wait_for(reader.read(4096), within) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def options_answered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call_id: str
) -> bool:
    """Send an OPTIONS on the connection; whether its 200 comes back on it."""
    writer.write(OPTIONS.replace(b"opt1", call_id.encode()))
    framer, got = StreamFramer(), []
    async with asyncio.timeout(5):
        while not got:
            data = await reader.read(4096)
            if not data:
                return False
            got += framer.feed(data)
    return parse_message(got[0]).status == 200


async def test_a_strangers_tcp_connection_is_closed_at_once_and_the_trunks_works() -> None:
    sip = await SipTransport.open("127.0.0.1", 0, transport="tcp", sources=Sources(["127.0.0.1"]))
    try:
        reader, writer = await asyncio.open_connection(*sip.local, local_addr=("127.0.0.2", 0))
        writer.write(OPTIONS)
        assert await closed_by_us(reader)  # no 200, no framing: gone before its first byte
        writer.close()
        reader, writer = await asyncio.open_connection(*sip.local)  # the trunk, from 127.0.0.1
        assert await options_answered(reader, writer, "trunk1")
        assert sip._link.inbound == 1  # type: ignore[union-attr]
        writer.close()
    finally:
        sip.close()


async def test_an_idle_inbound_tcp_connection_is_closed() -> None:
    sip = await SipTransport.open(
        "127.0.0.1", 0, transport="tcp", sources=Sources(["127.0.0.1"]), tcp={"idle_timeout": 0.3}
    )
    try:
        reader, writer = await asyncio.open_connection(*sip.local)
        assert await options_answered(reader, writer, "busy")
        started = asyncio.get_running_loop().time()
        assert await closed_by_us(reader, within=10.0)
        assert asyncio.get_running_loop().time() - started >= 0.25  # idle, not refused
        writer.close()
        await asyncio.sleep(0.05)
        assert sip._link.inbound == 0  # type: ignore[union-attr]
    finally:
        sip.close()


async def test_inbound_tcp_connections_are_capped() -> None:
    sip = await SipTransport.open(
        "127.0.0.1", 0, transport="tcp", sources=Sources(["127.0.0.1"]), tcp={"max_inbound": 2}
    )
    try:
        first, second = [await asyncio.open_connection(*sip.local) for _ in range(2)]
        assert await options_answered(*first, "c1") and await options_answered(*second, "c2")
        reader, writer = await asyncio.open_connection(*sip.local)
        assert await closed_by_us(reader)  # a third, while two are open
        writer.close()
        first[1].close()
        async with asyncio.timeout(5):
            while sip._link.inbound > 1:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
        again = await asyncio.open_connection(*sip.local)
        assert await options_answered(*again, "c3")  # room again once one closed
        for _, w in (second, again):
            w.close()
    finally:
        sip.close()


async def test_the_transport_name_is_checked() -> None:
    with pytest.raises(ValueError):
        await SipTransport.open("127.0.0.1", 0, transport="sctp")
