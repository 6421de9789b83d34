"""Transactions and the INVITE/CANCEL rules, with time passed in: no sockets, no sleeps."""

from __future__ import annotations

import pytest

from ringflow.sip.errors import SipStateError
from ringflow.sip.events import Answered, Ended, Ringing
from ringflow.sip.headers import Headers
from ringflow.sip.message import Request, Response, make_response
from ringflow.sip.outcome import Ending, Status
from ringflow.sip.transaction import (
    LIVE_TIMERS,
    TRANSITIONS,
    AckReceived,
    CancelDue,
    ClientTransaction,
    Datagram,
    ResponseReceived,
    ServerTransaction,
    State,
    Timeout,
    Timing,
)
from ringflow.sip.uri import SipUri
from tests.test_sip_dialog import SIPP_SDP, Callee, golden, new_ua, of, sent

DEST = ("127.0.0.1", 5080)


def request(method: str, branch: str = "z9hG4bKtx1", routes: tuple[str, ...] = ()) -> Request:
    """A minimal request as ringflow sends it."""
    h = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport"),
            ("Max-Forwards", "70"),
            *[("Route", r) for r in routes],
            ("From", "<sip:a@127.0.0.1>;tag=f1"),
            ("To", "<sip:b@127.0.0.1:5080>"),
            ("Call-ID", "cid1"),
            ("CSeq", f"1 {method}"),
        ]
    )
    return Request(headers=h, body=b"", method=method, uri=SipUri.parse("sip:b@127.0.0.1:5080"))


def reply(req: Request, status: int, tag: str = "t9") -> Response:
    """The far end's response."""
    return make_response(req, status, to_tag=tag)


def run_until(tx, end: float) -> list[tuple[float, object]]:
    """Fire the transaction's timers up to ``end``; (time, output) pairs."""
    seen = []
    while tx.next_timer is not None and tx.next_timer <= end:
        now = tx.next_timer
        seen += [(now, o) for o in tx.timer(now)]
    return seen


def test_invite_retransmits_with_doubling_intervals_then_times_out() -> None:
    tx = ClientTransaction(request("INVITE"), DEST)
    first = tx.send(0.0)
    assert first == [Datagram(first[0].data, DEST)] and tx.state is State.CALLING
    seen = run_until(tx, 100.0)
    times = [t for t, o in seen if isinstance(o, Datagram)]
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # timer A: T1, 2T1, 4T1, ...
    assert all(o.data == first[0].data for _, o in seen if isinstance(o, Datagram))
    assert [(t, type(o)) for t, o in seen if not isinstance(o, Datagram)] == [(32.0, Timeout)]
    assert tx.terminated and tx.next_timer is None  # timer B = 64*T1


def test_a_provisional_stops_retransmission_and_starts_timer_c() -> None:
    tx = ClientTransaction(request("INVITE"), DEST)
    tx.send(0.0)
    run_until(tx, 0.6)
    out = tx.receive(reply(tx.request, 180), 0.7)
    assert [type(o) for o in out] == [ResponseReceived] and tx.state is State.PROCEEDING
    assert tx.next_timer == pytest.approx(180.7)
    assert tx.receive(reply(tx.request, 183), 60.0) and tx.next_timer == pytest.approx(240.0)
    tx.cancel_sent(61.0)
    assert tx.next_timer == pytest.approx(93.0)  # RFC 3261 9.1: 64*T1 after our CANCEL
    tx.receive(reply(tx.request, 180), 62.0)  # more ringing does not extend that
    assert tx.next_timer == pytest.approx(93.0)
    assert [type(o) for o in tx.timer(93.0)] == [Timeout] and tx.terminated


def test_timer_c_asks_for_a_cancel_and_keeps_the_transaction_for_the_487() -> None:
    tx = ClientTransaction(request("INVITE"), DEST, Timing(c=10.0))
    tx.send(0.0)
    tx.receive(reply(tx.request, 180), 0.2)
    assert tx.timer(10.2) == [CancelDue()]
    assert tx.state is State.CANCELING and not tx.terminated
    assert tx.next_timer == pytest.approx(42.2)  # a fresh 64*T1 guard, not another C
    assert tx.cancel_sent(10.21) == [] and tx.next_timer == pytest.approx(42.2)
    assert [type(o) for o in tx.receive(reply(tx.request, 180), 11.0)] == [ResponseReceived]
    assert tx.next_timer == pytest.approx(42.2)  # ringing does not restart timer C now
    out = tx.receive(reply(tx.request, 487), 11.5)
    assert [type(o) for o in out] == [Datagram, ResponseReceived]
    ack = Request.parse(out[0].data)
    assert ack.method == "ACK" and ack.via.branch == "z9hG4bKtx1" and ack.to.tag == "t9"
    assert tx.state is State.COMPLETED and tx.next_timer == pytest.approx(43.5)  # timer D


def test_timer_c_guard_ends_the_transaction_when_no_final_response_comes() -> None:
    tx = ClientTransaction(request("INVITE"), DEST, Timing(c=10.0))
    tx.send(0.0)
    tx.receive(reply(tx.request, 183), 0.2)
    seen = run_until(tx, 100.0)
    assert [(t, type(o)) for t, o in seen] == [(10.2, CancelDue), (pytest.approx(42.2), Timeout)]
    assert tx.terminated


def test_a_2xx_after_timer_c_still_reaches_the_owner() -> None:
    tx = ClientTransaction(request("INVITE"), DEST, Timing(c=10.0))
    tx.send(0.0)
    tx.receive(reply(tx.request, 180), 0.2)
    tx.timer(10.2)
    assert [type(o) for o in tx.receive(reply(tx.request, 200), 10.3)] == [ResponseReceived]
    assert tx.state is State.ACCEPTED


def test_ack_for_a_non_2xx_reuses_the_branch_and_takes_the_to_tag() -> None:
    invite = request("INVITE", routes=("<sip:proxy.example;lr>",))
    tx = ClientTransaction(invite, DEST)
    tx.send(0.0)
    busy = reply(invite, 486, tag="callee-tag")
    out = tx.receive(busy, 0.3)
    assert [type(o) for o in out] == [Datagram, ResponseReceived]
    ack = Request.parse(out[0].data)
    assert bytes(ack) == (
        b"ACK sip:b@127.0.0.1:5080 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtx1;rport\r\n"
        b"Route: <sip:proxy.example;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:a@127.0.0.1>;tag=f1\r\n"
        b"To: <sip:b@127.0.0.1:5080>;tag=callee-tag\r\n"
        b"Call-ID: cid1\r\n"
        b"CSeq: 1 ACK\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    again = tx.receive(busy, 0.8)  # a retransmitted 486: the same ACK, not passed up again
    assert again == [out[0]]
    assert tx.state is State.COMPLETED and tx.next_timer == pytest.approx(32.3)  # timer D
    tx.timer(32.3)
    assert tx.terminated


def test_2xx_moves_to_accepted_and_every_copy_reaches_the_owner() -> None:
    tx = ClientTransaction(request("INVITE"), DEST)
    tx.send(0.0)
    ok = reply(tx.request, 200)
    assert [type(o) for o in tx.receive(ok, 0.2)] == [ResponseReceived]  # no ACK here
    assert tx.state is State.ACCEPTED
    assert [type(o) for o in tx.receive(ok, 0.7)] == [ResponseReceived]
    assert tx.receive(reply(tx.request, 486), 0.8) == []
    tx.timer(32.2)  # timer M
    assert tx.terminated


def test_non_invite_retransmission_caps_at_t2_and_uses_t2_in_proceeding() -> None:
    tx = ClientTransaction(request("BYE"), DEST)
    tx.send(0.0)
    times = [t for t, o in run_until(tx, 40.0) if isinstance(o, Datagram)]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.terminated  # timer F at 32 s

    tx = ClientTransaction(request("BYE"), DEST)
    tx.send(0.0)
    tx.receive(reply(tx.request, 100), 0.2)
    assert tx.state is State.PROCEEDING
    times = [t for t, o in run_until(tx, 12.0) if isinstance(o, Datagram)]
    assert times == [0.5, 4.5, 8.5]  # 17.1.2.2: every T2 once proceeding
    out = tx.receive(reply(tx.request, 200), 12.0)
    assert [type(o) for o in out] == [ResponseReceived] and tx.state is State.COMPLETED
    assert tx.receive(reply(tx.request, 200), 12.5) == []  # absorbed
    assert tx.next_timer == pytest.approx(17.0)  # timer K = T4
    tx.timer(17.0)
    assert tx.terminated


def test_reliable_transport_does_not_retransmit_and_ends_at_once() -> None:
    tx = ClientTransaction(request("INVITE"), DEST, Timing(reliable=True))
    tx.send(0.0)
    assert tx.next_timer == 32.0  # only timer B
    tx.receive(reply(tx.request, 404), 1.0)
    assert tx.next_timer == 1.0  # timer D is zero
    tx.timer(1.0)
    assert tx.terminated


def test_non_invite_server_absorbs_retransmissions() -> None:
    bye = request("BYE", branch="z9hG4bKsrv")
    tx = ServerTransaction(bye, DEST)
    assert tx.receive(bye, 0.0) == []  # nothing to repeat yet
    ok = make_response(bye, 200)
    [sent_ok] = tx.respond(ok, 0.1)
    assert tx.receive(bye, 0.6) == [sent_ok]
    with pytest.raises(SipStateError):
        tx.respond(ok, 0.7)
    assert tx.next_timer == pytest.approx(32.1)  # timer J
    tx.timer(32.1)
    assert tx.terminated and tx.receive(bye, 33.0) == []


def test_invite_server_retransmits_a_failure_until_ack() -> None:
    invite = request("INVITE", branch="z9hG4bKsrv")
    tx = ServerTransaction(invite, DEST)
    assert len(tx.respond(make_response(invite, 486, to_tag="x"), 0.0)) == 1
    times = [t for t, o in run_until(tx, 8.0) if isinstance(o, Datagram)]
    assert times == [0.5, 1.5, 3.5, 7.5]  # timer G, capped at T2 later
    ack = request("ACK", branch="z9hG4bKsrv")
    assert tx.receive(ack, 8.1) == [] and tx.state is State.CONFIRMED
    assert tx.receive(invite, 8.2) == []  # absorbed while confirmed
    tx.timer(13.1)  # timer I
    assert tx.terminated

    tx = ServerTransaction(invite, DEST)
    tx.respond(make_response(invite, 486, to_tag="x"), 0.0)
    assert isinstance(run_until(tx, 40.0)[-1][1], Timeout)  # timer H: the ACK never came


def test_invite_server_2xx_waits_for_the_ack() -> None:
    invite = request("INVITE", branch="z9hG4bKsrv")
    tx = ServerTransaction(invite, DEST)
    tx.respond(make_response(invite, 200, to_tag="x"), 0.0)
    assert tx.state is State.ACCEPTED and tx.receive(invite, 0.1) == []
    assert [t for t, o in run_until(tx, 2.0) if isinstance(o, Datagram)] == [0.5, 1.5]
    ack = request("ACK", branch="z9hG4bKother")
    assert [type(o) for o in tx.receive(ack, 2.0)] == [AckReceived]
    assert not [o for _, o in run_until(tx, 6.9) if isinstance(o, Datagram)]
    tx.timer(7.0)
    assert tx.terminated


def test_every_live_timer_has_a_transition() -> None:
    for (kind, state), timers in LIVE_TIMERS.items():
        for timer in timers:
            assert (kind, state, timer) in TRANSITIONS, (kind, state, timer)


# -- the INVITE rules at the call level -------------------------------------------------------


def test_our_invite_cancel_and_ack_match_the_golden_files() -> None:
    ua = new_ua()
    callee = Callee(ua)
    assert callee.out[0].data == golden("ringflow_invite.sip")
    callee.send(callee.response(180), 0.1)
    [cancel] = ua.cancel(callee.call.call_id, 0.2)
    assert cancel.data == golden("ringflow_cancel.sip")
    out = callee.send(callee.response(487), 0.3)
    assert out[0].data == golden("ringflow_ack_487.sip")


def test_cancel_waits_for_a_provisional_response() -> None:
    ua = new_ua()
    callee = Callee(ua)
    assert ua.cancel(callee.call.call_id, 0.1) == []  # nothing heard yet: no CANCEL
    assert sent(ua.timer(0.5))[0].method == "INVITE"  # type: ignore[union-attr]
    out = callee.send(callee.response(100), 0.6)
    [cancel] = sent(out)
    assert cancel.method == "CANCEL" and cancel.via.branch == callee.invite.via.branch  # type: ignore
    assert cancel.cseq.seq == callee.invite.cseq.seq and cancel.to.tag is None
    assert out[0].addr == DEST
    callee.send(callee.response(200, to=cancel), 0.7)  # type: ignore[arg-type]
    out = callee.send(callee.response(487), 0.8)
    assert [m.method for m in sent(out)] == ["ACK"]  # type: ignore[union-attr]
    [ended] = of(out, Ended)
    assert ended.outcome.status is Status.CANCELED
    assert ended.outcome.cause == "487 Request Terminated"
    assert ended.by_remote is False  # the 487 answers our CANCEL: we ended the call


def test_ring_timeout_cancel_is_no_answer() -> None:
    ua = new_ua()
    callee = Callee(ua)
    assert of(callee.send(callee.response(180), 0.1), Ringing)
    ua.cancel(callee.call.call_id, 30.0, Ending.RING_TIMEOUT)
    [ended] = of(callee.send(callee.response(487), 30.1), Ended)
    assert ended.outcome.status is Status.NO_ANSWER and ended.outcome.code == 487
    assert ended.by_remote is False


def test_a_200_crossing_our_cancel_gets_ack_then_bye() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.send(callee.response(180), 0.1)
    ua.cancel(callee.call.call_id, 5.0)
    out = callee.send(callee.response(200, body=SIPP_SDP), 5.01)
    ack, bye = sent(out)
    assert ack.method == "ACK" and bye.method == "BYE"  # type: ignore[union-attr]
    assert ack.via.branch != callee.invite.via.branch and str(ack.uri).startswith("sip:127.0.0.1")
    assert not of(out, Answered)
    [ended] = of(out, Ended)
    assert ended.outcome.status is Status.CANCELED
    assert ended.outcome.cause == "200 OK (crossed our CANCEL)"
    callee.send(callee.response(487), 5.02)  # too late: the INVITE is answered; ignored
    assert of(callee.send(make_response(bye, 200), 5.1), Datagram) == []  # type: ignore
    ua.timer(100.0)
    assert not ua.calls and ua.next_timer is None


def test_cancel_before_any_response_then_a_200_is_still_acked_and_ended() -> None:
    ua = new_ua()
    callee = Callee(ua)
    ua.cancel(callee.call.call_id, 0.1)
    out = callee.send(callee.response(200, body=SIPP_SDP), 0.2)
    assert [m.method for m in sent(out)] == ["ACK", "BYE"]  # type: ignore[union-attr]
    assert of(out, Ended)[0].outcome.status is Status.CANCELED


def test_silence_after_cancel_gives_up_after_64_t1() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.send(callee.response(180), 0.1)
    ua.cancel(callee.call.call_id, 10.0)
    ended = []
    while ua.next_timer is not None:
        ended += of(ua.timer(ua.next_timer), Ended)
    assert [e.outcome.status for e in ended] == [Status.CANCELED]
    assert ended[0].outcome.cause == "canceled; no final response"
    assert not ua.calls


def test_no_response_at_all_is_a_failed_call() -> None:
    ua = new_ua()
    callee = Callee(ua)
    events = []
    while ua.next_timer is not None:
        now = ua.next_timer
        events += ua.timer(now)
    invites = [m for m in sent(events) if m.method == "INVITE"]  # type: ignore[union-attr]
    assert len(invites) == 6
    [ended] = of(events, Ended)
    assert (ended.outcome.status, ended.outcome.cause) == (Status.FAILED, "no final response")
    assert callee.call.call_id not in ua.calls


def test_cancel_and_hangup_are_checked_against_the_phase() -> None:
    ua = new_ua()
    callee = Callee(ua)
    with pytest.raises(SipStateError):
        callee.call.hangup(0.1)
    callee.answer()
    with pytest.raises(SipStateError):
        callee.call.cancel(0.3)
    assert of(ua.hangup(callee.call.call_id, 1.0), Ended)
    assert ua.hangup(callee.call.call_id, 1.1) == []  # already ending: nothing more


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (486, Status.BUSY),
        (600, Status.BUSY),
        (603, Status.BUSY),
        (408, Status.NO_ANSWER),
        (480, Status.NO_ANSWER),
        (404, Status.FAILED),
        (503, Status.FAILED),
        (302, Status.FAILED),
        (487, Status.FAILED),
    ],
)
def test_final_responses_end_the_call_with_their_outcome(status: int, expected: Status) -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.send(callee.response(180), 0.1)
    response = callee.response(status)
    out = callee.send(response, 0.2)
    assert [m.method for m in sent(out)] == ["ACK"]  # type: ignore[union-attr]
    [ended] = of(out, Ended)
    assert ended.outcome.status is expected and ended.outcome.cause == response.cause
    assert ended.by_remote


def test_401_retries_the_invite_with_credentials() -> None:
    from ringflow.sip.digest import Authenticator, Authorization

    ua = new_ua()
    callee = Callee(ua, authenticator=Authenticator("alice", "secret", cnonce=lambda: "cn"))
    challenge = Response.parse(golden("401_sipp.sip"))
    challenge = callee.response(
        401, headers=(("WWW-Authenticate", challenge.headers.get("WWW-Authenticate") or ""),)
    )
    out = callee.send(challenge, 0.1)
    ack, invite = sent(out)
    assert ack.method == "ACK" and ack.via.branch == callee.invite.via.branch  # type: ignore
    assert invite.method == "INVITE" and invite.cseq.seq == 2  # type: ignore[union-attr]
    assert invite.via.branch != callee.invite.via.branch
    assert invite.call_id == callee.invite.call_id and invite.from_ == callee.invite.from_
    creds = Authorization.parse(invite.headers.get("Authorization") or "")
    assert creds.realm == "sipp.example" and creds.qop == "auth" and creds.nc == 1
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    callee.invite = invite  # type: ignore[assignment]
    out = callee.send(callee.response(200, body=SIPP_SDP), 0.3)
    [ack2] = sent(out)
    assert ack2.cseq.seq == 2 and ack2.headers.get("Authorization")  # 22.1: same credentials
    assert of(out, Answered)


def test_a_refused_password_fails_the_call_with_the_sip_cause() -> None:
    from ringflow.sip.digest import Authenticator

    ua = new_ua()
    callee = Callee(ua, authenticator=Authenticator("alice", "wrong"))
    www = (("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth"'),)
    [_, retry] = sent(callee.send(callee.response(401, headers=www), 0.1))
    callee.invite = retry  # type: ignore[assignment]
    www2 = (("WWW-Authenticate", 'Digest realm="r", nonce="n2", qop="auth"'),)
    out = callee.send(callee.response(401, headers=www2), 0.2)
    assert [m.method for m in sent(out)] == ["ACK"]  # type: ignore[union-attr]
    [ended] = of(out, Ended)
    assert (ended.outcome.status, ended.outcome.cause) == (Status.FAILED, "401 Unauthorized")


def test_407_is_answered_with_proxy_authorization() -> None:
    from ringflow.sip.digest import Authenticator

    ua = new_ua()
    callee = Callee(ua, authenticator=Authenticator("alice", "secret"))
    proxy = Response.parse(golden("407_proxy.sip"))
    values = tuple(("Proxy-Authenticate", v) for v in proxy.headers.get_all("Proxy-Authenticate"))
    [_, retry] = sent(callee.send(callee.response(407, headers=values), 0.1))
    assert "algorithm=SHA-256" in (retry.headers.get("Proxy-Authorization") or "")
    assert retry.headers.get("Authorization") is None
