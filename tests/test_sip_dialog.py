"""Dialogs: route sets, ACK for 2xx, BYE both ways, 481, re-INVITE, INFO DTMF.

``Callee`` (used by the other SIP tests too) plays the far end with SIPp's and baresip's
message shapes, wired to a real ``UserAgent`` in memory: no sockets, time passed in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ringflow.sip.agent import UserAgent
from ringflow.sip.dialog import Endpoint, parse_dtmf
from ringflow.sip.errors import SipParseError
from ringflow.sip.events import Answered, Dtmf, Ended, MediaChanged
from ringflow.sip.headers import Headers, NameAddr
from ringflow.sip.ids import IdSource
from ringflow.sip.message import Request, Response, make_response, parse_message
from ringflow.sip.outcome import Status
from ringflow.sip.sdp import PCMA, PCMU, Direction, SessionDescription, build_sdp
from ringflow.sip.transaction import Datagram, Timing
from ringflow.sip.uri import SipUri

FIXTURES = Path(__file__).parent / "fixtures" / "sip"
LOCAL = Endpoint("127.0.0.1", 5070)
PEER = ("127.0.0.1", 5080)
SIPP_SDP = (FIXTURES / "200_ok_record_route.sip").read_bytes().split(b"\r\n\r\n", 1)[1]
BARESIP_SDP = (FIXTURES / "200_ok_baresip.sip").read_bytes().split(b"\r\n\r\n", 1)[1]


def golden(name: str) -> bytes:
    """A golden message's bytes."""
    return (FIXTURES / name).read_bytes()


def new_ua(seed: int = 7, timing: Timing | None = None) -> UserAgent:
    """A user agent at 127.0.0.1:5070 with deterministic identifiers."""
    return UserAgent(LOCAL, ids=IdSource(seed), timing=timing or Timing())


def our_offer() -> SessionDescription:
    """The SDP ringflow offers in these tests."""
    return build_sdp("127.0.0.1", 40000, session_id=4242, version=1, codecs=(PCMU, PCMA))


def sent(out: list) -> list[Request | Response]:
    """The messages among a step's outputs."""
    return [parse_message(o.data) for o in out if isinstance(o, Datagram)]


def of(out: list, kind: type) -> list:
    """The outputs of one type."""
    return [o for o in out if isinstance(o, kind)]


class Callee:
    """The far end of one call placed by ``ua``."""

    def __init__(self, ua: UserAgent, now: float = 0.0, **dial: object):
        self.ua = ua
        self.call, self.out = ua.dial(
            SipUri.parse("sip:+919876543210@127.0.0.1:5080"),
            NameAddr.parse("<sip:+918040000000@127.0.0.1>"),
            our_offer(),
            now,
            **dial,
        )  # type: ignore[arg-type]
        self.invite = Request.parse(self.out[0].data)
        self.tag = "4021SIPpTag011"
        self.cseq = 1

    def response(
        self,
        status: int,
        *,
        to: Request | None = None,
        body: bytes = b"",
        tag: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        """A response to the INVITE (or ``to``) as SIPp's uas writes it."""
        extra = (("Contact", "<sip:127.0.0.1:5080;transport=UDP>"),) if status < 300 else ()
        if body:
            extra += (("Content-Type", "application/sdp"),)
        return make_response(
            to or self.invite, status, to_tag=tag or self.tag, headers=extra + headers, body=body
        )

    def fixture(self, name: str) -> Response:
        """A golden response re-addressed to our INVITE (its Via, From and Call-ID)."""
        msg = Response.parse(golden(name))
        for header in ("Via", "From", "Call-ID"):
            msg.headers.set(header, self.invite.headers.get(header) or "")
        return msg

    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        branch: str | None = None,
        cseq: int | None = None,
        contact: str = "<sip:127.0.0.1:5080;transport=UDP>",
    ) -> Request:
        """A request from the callee inside the dialog (as SIPp's uas sends its BYE)."""
        if cseq is None:
            self.cseq += 1
        seq = cseq if cseq is not None else self.cseq
        h = Headers(
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:5080;branch={branch or f'z9hG4bK-4021-1-{seq}'}"),
                ("From", f"{self.invite.headers.get('To')};tag={self.tag}"),
                ("To", self.invite.headers.get("From") or ""),
                ("Call-ID", self.invite.call_id),
                ("CSeq", f"{seq} {method}"),
                ("Contact", contact),
                ("Max-Forwards", "70"),
            ]
        )
        if content_type:
            h.add("Content-Type", content_type)
        return Request(
            headers=h, body=body, method=method, uri=SipUri.parse("sip:ringflow@127.0.0.1:5070")
        )

    def send(self, message: Request | Response, now: float) -> list:
        """Deliver a message to the user agent."""
        return self.ua.receive(bytes(message), PEER, now)

    def answer(self, now: float = 0.2, body: bytes = SIPP_SDP) -> list:
        """180 then 200 with SDP."""
        self.send(self.response(180), now - 0.1)
        return self.send(self.response(200, body=body), now)


def test_dialog_from_200_with_record_route_routes_ack_and_bye_through_it() -> None:
    ua = new_ua()
    callee = Callee(ua)
    out = callee.send(callee.fixture("200_ok_record_route.sip"), 0.3)
    [ack] = sent(out)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert str(ack.uri) == "sip:127.0.0.1:5080;transport=UDP"  # the remote target (Contact)
    assert ack.headers.get("Route") == (
        "<sip:192.0.2.10:5060;transport=udp;lr>, <sip:10.0.0.1;lr>, "
        "<sip:10.0.0.2;lr;ftag=1928301774;did=7a1.b2c3>"
    )  # Record-Route reversed
    assert out[0].addr == ("192.0.2.10", 5060)  # the first route is the next hop
    assert ack.cseq.seq == 1 and ack.via.branch != callee.invite.via.branch
    assert ack.to.tag == "4021SIPpTag011" and ack.body == b""
    [answered] = of(out, Answered)
    assert answered.plan.remote == ("127.0.0.1", 6000) and answered.plan.codec == PCMU
    out = ua.hangup(callee.call.call_id, 5.0)
    [bye] = sent(out)
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.cseq.seq == 2
    assert bye.headers.get("Route") == ack.headers.get("Route") and bye.uri == ack.uri
    assert out[0].addr == ("192.0.2.10", 5060)
    [ended] = of(out, Ended)
    assert ended.outcome.status is Status.ANSWERED and not ended.by_remote


def test_strict_route_becomes_the_request_uri() -> None:
    ua = new_ua()
    callee = Callee(ua)
    ok = callee.response(200, body=SIPP_SDP, headers=(("Record-Route", "<sip:10.9.9.9:5062>"),))
    [ack] = sent(callee.send(ok, 0.2))
    assert str(ack.uri) == "sip:10.9.9.9:5062"
    assert ack.headers.get("Route") == "<sip:127.0.0.1:5080;transport=UDP>"


def test_each_retransmitted_200_gets_the_same_ack_even_after_the_transaction() -> None:
    ua = new_ua()
    callee = Callee(ua)
    first = callee.answer()
    acks = [d.data for d in of(first, Datagram)]
    for now in (0.7, 1.7, 3.7, 40.0):  # 40 s: the INVITE transaction is gone by then
        again = callee.send(callee.response(200, body=SIPP_SDP), now)
        assert [d.data for d in of(again, Datagram)] == acks
        assert not of(again, Answered)
        if now == 3.7:
            ua.timer(33.0)  # timer M: the INVITE transaction ends
            assert all(tx.request.method != "INVITE" for tx in callee.call.transactions)


def test_a_200_from_a_second_fork_is_acked_and_sent_bye() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    out = callee.send(callee.response(200, body=SIPP_SDP, tag="other-fork"), 0.5)
    ack, bye = sent(out)
    assert ack.method == "ACK" and bye.method == "BYE"  # type: ignore[union-attr]
    assert ack.to.tag == bye.to.tag == "other-fork"
    assert not of(out, Answered) and not of(out, Ended)
    assert callee.call.dialog is not None and callee.call.dialog.remote_tag == callee.tag


def test_bye_from_the_callee_is_answered_and_retransmissions_absorbed() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    bye = callee.request("BYE")
    out = callee.send(bye, 10.0)
    [ok] = sent(out)
    assert isinstance(ok, Response) and ok.status == 200 and ok.cseq.method == "BYE"
    assert out[0].addr == PEER
    [ended] = of(out, Ended)
    assert ended.by_remote and ended.outcome.status is Status.ANSWERED
    again = callee.send(bye, 10.5)
    assert [d.data for d in of(again, Datagram)] == [out[0].data] and not of(again, Ended)
    ua.timer(50.0)
    assert callee.call.call_id not in ua.calls  # every transaction is over: forgotten
    late = sent(callee.send(callee.request("BYE"), 51.0))
    assert [m.status for m in late] == [481]  # type: ignore[union-attr]


def test_requests_outside_any_dialog() -> None:
    ua = new_ua()
    options = Request.parse(golden("options_sipp.sip"))
    [ok] = sent(ua.receive(bytes(options), PEER, 0.0))
    assert isinstance(ok, Response) and ok.status == 200
    assert "INFO" in (ok.headers.get("Allow") or "") and ok.to.tag
    bye = Request.parse(golden("bye_sipp_uas.sip"))
    assert [m.status for m in sent(ua.receive(bytes(bye), PEER, 0.0))] == [481]  # type: ignore
    info = Request.parse(golden("info_dtmf_baresip.sip"))
    assert [m.status for m in sent(ua.receive(bytes(info), PEER, 0.0))] == [481]  # type: ignore
    again = sent(ua.receive(bytes(info), PEER, 0.2))  # retransmission: the same 481
    assert [m.status for m in again] == [481]  # type: ignore[union-attr]
    ack = golden("ack_2xx_sipp.sip")
    assert sent(ua.receive(ack, PEER, 0.0)) == []  # never answer an ACK


def test_an_incoming_invite_is_refused_with_480_until_acked() -> None:
    ua = new_ua()
    invite = Request.parse(golden("invite_sipp_uac.sip"))
    out = ua.receive(bytes(invite), PEER, 0.0)
    [refusal] = sent(out)
    assert refusal.status == 480  # type: ignore[union-attr]
    assert out[0].addr == ("127.0.0.1", 5080)
    assert ua.next_timer == 0.5  # timer G: retransmit until the ACK
    assert sent(ua.timer(0.5))[0].status == 480  # type: ignore[union-attr]
    ack = make_ack_for(invite, refusal)  # type: ignore[arg-type]
    assert sent(ua.receive(bytes(ack), PEER, 0.6)) == []
    assert ua.next_timer == pytest.approx(5.6)  # timer I, then forgotten
    ua.timer(5.6)
    assert ua.next_timer is None


def make_ack_for(invite: Request, response: Response) -> Request:
    """The ACK a UAC sends for a non-2xx (same branch)."""
    h = Headers(
        [
            ("Via", invite.headers.get("Via") or ""),
            ("From", invite.headers.get("From") or ""),
            ("To", response.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} ACK"),
        ]
    )
    return Request(headers=h, body=b"", method="ACK", uri=invite.uri)


def test_rport_and_received_are_stamped_on_requests_we_answer() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    info = callee.request("INFO", body=b"Signal=1\r\n", content_type="application/dtmf-relay")
    info.headers.set("Via", "SIP/2.0/UDP 10.1.1.1:5999;branch=z9hG4bKnat;rport")
    out = ua.receive(bytes(info), ("203.0.113.7", 40123), 1.0)
    [ok] = sent(out)
    assert out[0].addr == ("203.0.113.7", 40123)  # RFC 3581: back where it came from
    assert ok.via.rport == 40123 and ok.via.received == "203.0.113.7"


@pytest.mark.parametrize(
    ("body", "ctype", "status", "digit"),
    [
        (b"Signal=5\r\nDuration=250\r\n", "application/dtmf-relay", 200, ("5", 250)),
        (b"Signal= 11\r\nDuration= 160\r\n", "application/dtmf-relay", 200, ("#", 160)),
        (b"*", "application/dtmf", 200, ("*", None)),
        (b"Signal=Z\r\n", "application/dtmf-relay", 400, None),
        (b"hello", "text/plain", 415, None),
        (b"", None, 200, None),
    ],
)
def test_info_carries_dtmf(
    body: bytes, ctype: str | None, status: int, digit: tuple | None
) -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    out = callee.send(callee.request("INFO", body=body, content_type=ctype), 2.0)
    assert [m.status for m in sent(out)] == [status]  # type: ignore[union-attr]
    dtmf = of(out, Dtmf)
    assert [(d.digit, d.duration_ms) for d in dtmf] == ([digit] if digit else [])


def test_baresip_info_fixture_gives_a_digit() -> None:
    info = Request.parse(golden("info_dtmf_baresip.sip"))
    assert parse_dtmf(info.content_type, info.body) == ("5", 250)
    with pytest.raises(SipParseError):
        parse_dtmf("application/dtmf-relay", b"Duration=100")


def _reinvite(callee: Callee, sdp: bytes | None, branch: str | None = None) -> Request:
    return callee.request(
        "INVITE",
        body=sdp or b"",
        branch=branch,
        content_type="application/sdp" if sdp else None,
        contact="<sip:callee-0x5561d2c1f8a0@127.0.0.1:5080>",
    )


def test_reinvite_is_answered_with_the_current_sdp() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer(body=BARESIP_SDP)
    hold = Request.parse(golden("reinvite_hold_baresip.sip")).body
    out = callee.send(_reinvite(callee, hold), 5.0)
    [ok] = sent(out)
    assert ok.status == 200 and ok.contacts  # type: ignore[union-attr]
    answer = SessionDescription.parse(ok.body)
    audio = answer.audio()
    assert audio.formats == ["0", "96"] and ("recvonly", None) in audio.attributes
    assert answer.origin.version == 2 and audio.port == 40000
    [changed] = of(out, MediaChanged)
    assert changed.plan.direction is Direction.RECVONLY and changed.plan.dtmf_pt == 96
    # A refresh with the same offer is answered with exactly the same SDP (same version).
    again = sent(callee.send(_reinvite(callee, hold), 8.0))[0]
    assert again.body == ok.body
    # Off hold: the body changes, so the version moves on.
    resume = sent(callee.send(_reinvite(callee, BARESIP_SDP), 9.0))[0]
    assert SessionDescription.parse(resume.body).origin.version == 3
    # The re-INVITE refreshed the remote target: our BYE goes to the new Contact.
    [bye] = sent(ua.hangup(callee.call.call_id, 10.0))
    assert str(bye.uri) == "sip:callee-0x5561d2c1f8a0@127.0.0.1:5080"  # type: ignore[union-attr]


def test_reinvite_200_is_retransmitted_until_the_ack() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    reinvite = _reinvite(callee, SIPP_SDP)
    [ok] = sent(callee.send(reinvite, 5.0))
    assert ok.status == 200  # type: ignore[union-attr]
    assert callee.send(reinvite, 5.1) == []  # the retransmitted INVITE is absorbed
    assert [m.status for m in sent(ua.timer(5.5))] == [200]  # type: ignore[union-attr]
    ack = callee.request("ACK", cseq=reinvite.cseq.seq, branch="z9hG4bKack2")
    assert sent(callee.send(ack, 5.6)) == []
    assert sent(ua.timer(6.5)) == []  # no more 200s


def test_offerless_reinvite_gets_our_sdp_and_the_ack_brings_the_answer() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    reinvite = _reinvite(callee, None)
    [ok] = sent(callee.send(reinvite, 5.0))
    assert ok.body == bytes(our_offer())
    ack = callee.request(
        "ACK",
        cseq=reinvite.cseq.seq,
        body=BARESIP_SDP,
        content_type="application/sdp",
        branch="z9hG4bKack3",
    )
    [changed] = of(callee.send(ack, 5.1), MediaChanged)
    assert changed.plan.remote == ("127.0.0.1", 10000) and changed.plan.dtmf_pt == 96


def test_reinvite_without_a_common_codec_gets_488() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    g729 = SIPP_SDP.replace(b"RTP/AVP 0", b"RTP/AVP 18").replace(b"0 PCMU/8000", b"18 G729/8000")
    [refusal] = sent(callee.send(_reinvite(callee, g729), 5.0))
    assert refusal.status == 488 and "codec" in (refusal.headers.get("Warning") or "")


def test_options_inside_the_dialog_gets_200() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    options = callee.request("OPTIONS")
    out = callee.send(options, 3.0)
    [ok] = sent(out)
    assert ok.status == 200 and "application/sdp" in (ok.headers.get("Accept") or "")
    assert callee.send(options, 3.4) == [out[0]]  # a retransmission: the same 200 again


def test_out_of_order_cseq_gets_500_and_unknown_methods_405() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    callee.send(callee.request("INFO", cseq=5), 1.0)
    [old] = sent(callee.send(callee.request("INFO", cseq=4), 1.1))
    assert old.status == 500  # type: ignore[union-attr]
    [refer] = sent(callee.send(callee.request("REFER", cseq=6), 1.2))
    assert refer.status == 405 and refer.headers.get("Allow")  # type: ignore[union-attr]


def test_requests_on_a_call_that_is_not_answered_get_481() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.send(callee.response(180), 0.1)
    [reply] = sent(callee.send(callee.request("BYE"), 0.2))
    assert reply.status == 481  # type: ignore[union-attr]
    assert callee.call.phase == "early"
