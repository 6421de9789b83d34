"""Only trunks talk to ringflow's SIP port; inside a call, only the call's peer.

The rules in the core first (no sockets, time passed in), then over real UDP on loopback, where
a stranger sends from 127.0.0.2 (all of 127/8 is loopback on Linux) while the trunk and the
callee are on 127.0.0.1: its BYE, INFO and re-INVITE with the live dialog's identifiers change
nothing, and its INVITE gets no answer at all, let alone eleven retransmitted ones.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from ringflow.clock import ManualClock
from ringflow.sip.events import Answered, Discarded, Dtmf, Ended, MediaChanged, Ringing
from ringflow.sip.headers import Headers, NameAddr
from ringflow.sip.message import Request, Response, make_response, parse_message
from ringflow.sip.resolver import resolve
from ringflow.sip.sdp import PCMU, build_sdp
from ringflow.sip.sources import Sources
from ringflow.sip.transaction import Datagram
from ringflow.sip.transport import OutgoingCallHandle, SipTransport
from ringflow.sip.uri import SipUri
from ringflow.telephony.sip.peers import RESOLVE_EVERY, TrunkPeers
from ringflow.telephony.sip.trunks import Trunk
from tests.test_sip_dialog import SIPP_SDP, Callee, new_ua, of, our_offer, sent
from tests.test_sip_transport import FAST, TIMER_H, collect, stray_invite

STRANGER = ("127.0.0.2", 5080)
DTMF = b"Signal=5\r\nDuration=160\r\n"


def test_sources_compare_addresses_and_networks() -> None:
    sources = Sources(["10.0.0.5", "192.0.2.0/28", "2001:db8::1", "::ffff:198.51.100.7"])
    assert sources.allows("10.0.0.5") and sources.allows("192.0.2.14")
    assert not sources.allows("192.0.2.16") and not sources.allows("10.0.0.6")
    assert sources.allows("2001:db8:0::1") and sources.allows("[2001:db8::1]")
    assert sources.allows("::ffff:10.0.0.5")  # a dual-stack socket's view of an IPv4 peer
    assert sources.allows("198.51.100.7")
    assert not sources.allows("pbx.example") and not sources.allows("")
    assert Sources(["10.0.0.5"]) | Sources(["10.0.0.0/8"]) == Sources(["10.0.0.0/8", "10.0.0.5"])


def test_requests_outside_a_dialog_are_answered_only_for_a_trunk() -> None:
    ua = new_ua()
    ua.sources = Sources(["127.0.0.1"])
    answers = {"INVITE": 480, "OPTIONS": 200, "REGISTER": 405, "BYE": 481}
    for method in answers:
        out = ua.receive(bytes(stray_request(method)), STRANGER, 0.0)
        assert not of(out, Datagram) and of(out, Discarded), method
    assert ua.next_timer is None  # nothing was kept for the strangers: nothing to retransmit
    for method, status in answers.items():
        out = ua.receive(bytes(stray_request(method)), ("127.0.0.1", 5080), 0.0)
        assert [r.status for r in sent(out)] == [status]


def test_in_dialog_requests_only_from_the_dialogs_peer() -> None:
    ua = new_ua()
    ua.sources = Sources(["203.0.113.5"])  # the trunk; the call went elsewhere, through a proxy
    callee = Callee(ua)
    out = callee.send(callee.fixture("200_ok_record_route.sip"), 0.3)
    assert of(out, Answered)
    for request in (
        callee.request("BYE"),
        callee.request("INFO", body=DTMF, content_type="application/dtmf-relay"),
        callee.request("INVITE", body=SIPP_SDP, content_type="application/sdp"),
    ):
        out = ua.receive(bytes(request), STRANGER, 1.0)
        assert not of(out, Datagram) and not of(out, Ended | Dtmf | MediaChanged)
        assert of(out, Discarded)
    assert callee.call.phase == "answered"
    # The first Record-Route hop (192.0.2.10) and the trunk may speak for the dialog.
    info = callee.request("INFO", body=DTMF, content_type="application/dtmf-relay")
    assert of(ua.receive(bytes(info), ("192.0.2.10", 5060), 2.0), Dtmf)
    bye = callee.request("BYE")
    assert of(ua.receive(bytes(bye), ("203.0.113.5", 5060), 3.0), Ended)


def test_a_response_from_a_stranger_is_not_taken() -> None:
    ua = new_ua()
    ua.sources = Sources(["127.0.0.1"])
    callee = Callee(ua)
    ok = bytes(callee.response(200, body=SIPP_SDP))
    out = ua.receive(ok, STRANGER, 0.1)  # guessed branch and Call-ID, from elsewhere
    assert not of(out, Answered) and of(out, Discarded) and callee.call.phase == "calling"
    assert of(ua.receive(ok, ("127.0.0.1", 5080), 0.2), Answered)


def test_a_strangers_datagram_is_dropped_before_it_is_parsed() -> None:
    ua = new_ua()
    ua.sources = Sources(["127.0.0.1"])
    [dropped] = ua.receive(b"\x00garbage", STRANGER, 0.0)
    [malformed] = ua.receive(b"\x00garbage", ("127.0.0.1", 5080), 0.0)
    assert "neither a trunk" in dropped.reason and "malformed" in malformed.reason


def test_a_call_placed_past_the_trunks_hears_its_own_callee() -> None:
    ua = new_ua()
    ua.sources = Sources(["203.0.113.5"])  # the trunk; this call dials a sip: URI elsewhere
    callee = Callee(ua)  # it dials 127.0.0.1:5080
    ok = bytes(callee.response(200, body=SIPP_SDP))
    assert of(ua.receive(ok, ("127.0.0.1", 5080), 0.1), Answered)
    assert of(ua.receive(bytes(callee.request("BYE")), ("127.0.0.1", 5080), 1.0), Ended)
    for _ in range(100):  # once the call is gone, so is its callee's licence to talk
        if ua.next_timer is None:
            break
        ua.timer(ua.next_timer)
    assert not ua.calls
    assert "neither a trunk" in ua.receive(ok, ("127.0.0.1", 5080), 99.0)[0].reason


def in_dialog(method: str, invite: Request, tag: str, via: str) -> bytes:
    """A request of the callee's in the dialog ``invite`` set up, sent by ``via``."""
    h = Headers(
        [
            ("Via", f"SIP/2.0/UDP {via};branch=z9hG4bK-{method}"),
            ("From", f"{invite.headers.get('To')};tag={tag}"),
            ("To", invite.headers.get("From") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"9 {method}"),
            ("Max-Forwards", "70"),
        ]
    )
    return bytes(Request(headers=h, body=b"", method=method, uri=invite.contacts[0].uri))


def test_a_peer_named_by_a_host_name_speaks_from_the_addresses_it_was_resolved_to() -> None:
    ua = new_ua()
    ua.sources = Sources(["203.0.113.5"])  # the trunk's own lookup at start found another one
    _, out = ua.dial(
        SipUri.parse("sip:100@PBX.example:5080"),
        NameAddr.parse("<sip:ringflow@127.0.0.1>"),
        our_offer(),
        0.0,
    )
    invite = Request.parse(out[0].data)
    assert out[0].addr == ("PBX.example", 5080) and ua.unresolved == {"pbx.example"}
    ringing = bytes(make_response(invite, 180, to_tag="t1"))
    assert "neither a trunk" in ua.receive(ringing, ("192.0.2.7", 5080), 0.1)[0].reason
    ua.resolved("pbx.example", ["192.0.2.7"])  # where the adapter sent the INVITE
    assert of(ua.receive(ringing, ("192.0.2.7", 5080), 0.2), Ringing) and not ua.unresolved
    assert not ua.admits("192.0.2.8")  # only what it resolved to
    # The 200's Contact names another host: the ACK and BYE go there, and its BYE is heard.
    ok = make_response(
        invite,
        200,
        to_tag="t1",
        body=SIPP_SDP,
        headers=(("Contact", "<sip:callee@gw.example:5090>"), ("Content-Type", "application/sdp")),
    )
    out = ua.receive(bytes(ok), ("192.0.2.7", 5080), 0.3)
    assert of(out, Answered) and [d.addr for d in of(out, Datagram)] == [("gw.example", 5090)]
    assert ua.unresolved == {"gw.example"}
    bye = in_dialog("BYE", invite, "t1", "198.51.100.9:5090")
    assert of(ua.receive(bye, ("198.51.100.9", 5090), 1.0), Discarded)
    ua.resolved("gw.example", ["198.51.100.9", "2001:db8::9"])
    assert of(ua.receive(bye, ("198.51.100.9", 5090), 1.1), Ended)
    for _ in range(100):  # once the call is gone, so are the addresses learnt for its names
        if ua.next_timer is None:
            break
        ua.timer(ua.next_timer)
    assert not ua.calls and not ua.admits("198.51.100.9") and not ua.admits("192.0.2.7")
    ua.resolved("gw.example", ["198.51.100.9"])  # a late lookup for a name nobody uses
    assert not ua.admits("198.51.100.9")


def stray_request(method: str, host: str = "127.0.0.2", port: int = 5080) -> Request:
    h = Headers(
        [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKstray-{method};rport"),
            ("From", f"<sip:scanner@{host}>;tag=s1"),
            ("To", "<sip:100@127.0.0.1>"),
            ("Call-ID", f"stray-{method}"),
            ("CSeq", f"1 {method}"),
            ("Max-Forwards", "70"),
        ]
    )
    return Request(headers=h, body=b"", method=method, uri=SipUri.parse("sip:100@127.0.0.1"))


async def test_trunk_peers_resolve_names_and_add_configured_sources() -> None:
    seen: list[Sources] = []
    trunks = (
        Trunk("a", "localhost", 5060),
        Trunk("b", "192.0.2.9", outbound_proxy=("198.51.100.1", 5060), sources=("203.0.113.0/24",)),
    )
    peers = TrunkPeers(trunks, ManualClock(), seen.append)
    sources = await peers.start()
    try:
        assert sources.allows("127.0.0.1")  # localhost, looked up
        assert all(sources.allows(a) for a in ("192.0.2.9", "198.51.100.1", "203.0.113.77"))
        assert not sources.allows("127.0.0.2") and seen == [sources]
        assert await peers.refresh() == sources and len(seen) == 1  # unchanged: nobody told
    finally:
        await peers.close()


async def test_a_failing_refresh_does_not_stop_the_later_ones(caplog) -> None:
    clock = ManualClock()
    told: list[Sources] = []

    def on_change(sources: Sources) -> None:
        told.append(sources)
        if len(told) == 2:
            raise RuntimeError("the transport could not take the new addresses")

    peers = TrunkPeers((Trunk("a", "192.0.2.1"),), clock, on_change)
    await peers.start()

    async def told_times(count: int) -> None:
        """Run the clock through at most one more round of lookups until ``told`` has ``count``."""
        await clock.run_until(lambda: len(told) >= count, limit=1.5 * RESOLVE_EVERY, real_timeout=5)

    try:
        peers.trunks = (Trunk("a", "192.0.2.2"),)  # the provider moved its SBC
        await told_times(2)
        assert "refreshing the trunks' addresses failed" in caplog.text
        await told_times(3)  # the lookups go on, and the news that failed is told again
        assert told[2].allows("192.0.2.2") and peers.sources == told[2]
        peers.trunks = (Trunk("a", "192.0.2.3"),)
        await told_times(4)
        assert told[3].allows("192.0.2.3") and clock.now() == 3 * RESOLVE_EVERY
    finally:
        await peers.close()


class ScriptedCallee(asyncio.DatagramProtocol):
    """The trunk on 127.0.0.1: answers an INVITE 200 with SDP, answers BYE, and can speak in
    the dialog (its requests may be sent from any socket, as a stranger would)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.contact_host = "127.0.0.1"  # what its Contact names
        self.invite: Request | None = None
        self.received: list[Request | Response] = []
        self.cseq = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        self.received.append(message)
        assert self.transport is not None
        if isinstance(message, Request) and message.method == "INVITE" and self.invite is None:
            self.invite = message
            sdp = build_sdp("127.0.0.1", 40000, session_id=1, version=1, codecs=(PCMU,))
            ok = make_response(
                message,
                200,
                to_tag="callee",
                body=bytes(sdp),
                headers=(
                    ("Contact", f"<sip:callee@{self.contact_host}:{self.address[1]}>"),
                    ("Content-Type", "application/sdp"),
                ),
            )
            self.transport.sendto(bytes(ok), addr)
        elif isinstance(message, Request) and message.method == "BYE":
            self.transport.sendto(bytes(make_response(message, 200)), addr)

    def request(
        self, method: str, via: tuple[str, int], body: bytes = b"", content_type: str | None = None
    ) -> bytes:
        """A request of the callee's inside the dialog, its Via naming ``via``."""
        assert self.invite is not None
        self.cseq += 1
        h = Headers(
            [
                ("Via", f"SIP/2.0/UDP {via[0]}:{via[1]};branch=z9hG4bK-c{self.cseq}"),
                ("From", f"{self.invite.headers.get('To')};tag=callee"),
                ("To", self.invite.headers.get("From") or ""),
                ("Call-ID", self.invite.call_id),
                ("CSeq", f"{self.cseq} {method}"),
                ("Contact", f"<sip:callee@{via[0]}:{via[1]}>"),
                ("Max-Forwards", "70"),
            ]
        )
        if content_type:
            h.add("Content-Type", content_type)
        return bytes(
            Request(
                headers=h,
                body=body,
                method=method,
                uri=SipUri.parse(str(self.invite.contacts[0].uri)),
            )
        )


@pytest.fixture
async def callee() -> AsyncIterator[ScriptedCallee]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        ScriptedCallee, local_addr=("127.0.0.1", 0)
    )
    try:
        yield protocol
    finally:
        transport.close()


@pytest.fixture
async def sip() -> AsyncIterator[SipTransport]:
    """Our SIP socket, answering only the trunk at 127.0.0.1, with short timers."""
    transport = await SipTransport.open("127.0.0.1", 0, timing=FAST, sources=Sources(["127.0.0.1"]))
    try:
        yield transport
    finally:
        transport.close()


def stranger_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    return sock


async def answered_call(sip: SipTransport, callee: ScriptedCallee) -> OutgoingCallHandle:
    host, port = callee.address
    handle = await sip.dial(f"sip:100@{host}:{port}", "<sip:ringflow@127.0.0.1>", our_offer())
    event = await asyncio.wait_for(handle.next_event(), 2)
    assert isinstance(event, Answered), event
    return handle


async def test_a_strangers_bye_info_and_reinvite_leave_the_live_call_alone(
    sip: SipTransport, callee: ScriptedCallee
) -> None:
    handle = await answered_call(sip, callee)
    sdp = bytes(build_sdp("127.0.0.2", 41000, session_id=2, version=2, codecs=(PCMU,)))
    with stranger_socket() as stranger:
        me = stranger.getsockname()
        for method, body, ctype in (
            ("INFO", DTMF, "application/dtmf-relay"),
            ("INVITE", sdp, "application/sdp"),
            ("BYE", b"", None),
        ):
            stranger.sendto(callee.request(method, me, body, ctype), sip.local)
        answers = await collect(stranger, 4 * FAST.t1 + 0.3)
    assert answers == []  # no 200, no 481, nothing
    assert handle.events.empty() and handle.ended is None  # no Dtmf, no MediaChanged, no Ended
    # The callee itself is heard, from its own address, through the very same dialog.
    assert callee.transport is not None
    callee.transport.sendto(
        callee.request("INFO", callee.address, DTMF, "application/dtmf-relay"), sip.local
    )
    assert isinstance(await asyncio.wait_for(handle.next_event(), 2), Dtmf)
    handle.hangup()
    assert isinstance(await asyncio.wait_for(handle.next_event(), 2), Ended)


@pytest.mark.parametrize("trusted", [False, True])
async def test_a_stray_invite_from_a_stranger_gets_no_answer_at_all(
    sip: SipTransport, trusted: bool
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind(("127.0.0.1" if trusted else "127.0.0.2", 0))
        sock.setblocking(False)
        sock.sendto(stray_invite(sock.getsockname()[1]), sip.local)
        answers = await collect(sock, TIMER_H + 0.3)  # the whole time a 480 could be resent
    if trusted:  # the trunk gets its 480, retransmitted until it ACKs, as RFC 3261 says
        assert len(answers) > 2 and all(parse_message(a).status == 480 for a in answers)
    else:
        assert answers == []


async def test_a_trunk_and_a_contact_named_localhost_are_heard_from_where_we_sent(
    callee: ScriptedCallee,
) -> None:
    # The trunks' own lookup found nothing for the callee's host (a failed lookup at start, or
    # another round-robin answer): the address each request went to is heard all the same.
    sip = await SipTransport.open("127.0.0.1", 0, sources=Sources(["127.0.0.9"]))
    try:
        callee.contact_host = "localhost"
        handle = await sip.dial(
            f"sip:100@localhost:{callee.address[1]}", "<sip:ringflow@127.0.0.1>", our_offer()
        )
        event = await asyncio.wait_for(handle.next_event(), 5)
        assert isinstance(event, Answered), event
        async with asyncio.timeout(5):  # our ACK went to the Contact's localhost
            while not any(isinstance(m, Request) and m.method == "ACK" for m in callee.received):
                await asyncio.sleep(0.01)
        with stranger_socket() as stranger:  # still nobody else
            stranger.sendto(callee.request("BYE", stranger.getsockname()), sip.local)
            assert await collect(stranger, 0.3) == []
        assert handle.events.empty()
        assert callee.transport is not None
        callee.transport.sendto(callee.request("BYE", callee.address), sip.local)
        ended = await asyncio.wait_for(handle.next_event(), 5)
        assert isinstance(ended, Ended) and ended.by_remote
    finally:
        sip.close()


async def test_a_call_to_a_name_that_cannot_be_looked_up_fails_at_once_with_503() -> None:
    # Standard timers: timer B (32 s) must not end the call first, however slow the lookup.
    sip = await SipTransport.open("127.0.0.1", 0, sources=Sources(["127.0.0.1"]))
    try:
        handle = await sip.dial(
            "sip:100@no-such-host.invalid:5060", "<sip:ringflow@127.0.0.1>", our_offer()
        )
        ended = await asyncio.wait_for(handle.next_event(), 15)  # a lookup gives up within 5 s
        assert isinstance(ended, Ended) and ended.outcome.code == 503
        assert "cannot look up no-such-host.invalid" in ended.outcome.cause
    finally:
        sip.close()


@pytest.mark.parametrize("name", ["no-such-host.invalid", "a..b", "x" * 64 + ".example"])
async def test_every_failed_lookup_is_an_oserror(name: str) -> None:
    with pytest.raises(OSError):
        await asyncio.wait_for(resolve(name), 15)
