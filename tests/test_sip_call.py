"""Outgoing call edge cases: early media, odd answers, routes, proxies, late answers."""

from __future__ import annotations

from ringflow.sip.digest import Authenticator, Authorization
from ringflow.sip.events import Answered, Ended, Ringing
from ringflow.sip.headers import NameAddr
from ringflow.sip.message import Response, make_response
from ringflow.sip.outcome import Outcome, Status
from ringflow.sip.sdp import PCMU
from ringflow.sip.transaction import Datagram
from tests.test_sip_dialog import BARESIP_SDP, SIPP_SDP, Callee, new_ua, of, sent


def drain(ua, now: float = 0.0) -> list:
    """Run every timer until none is left."""
    out: list = []
    while ua.next_timer is not None:
        now = max(now, ua.next_timer)
        out += ua.timer(now)
    return out


def test_183_with_sdp_is_early_media_and_serves_a_200_without_sdp() -> None:
    ua = new_ua()
    callee = Callee(ua)
    [ringing] = of(callee.send(callee.response(183, body=BARESIP_SDP), 0.1), Ringing)
    assert ringing.status == 183 and ringing.plan and ringing.plan.remote == ("127.0.0.1", 10000)
    [answered] = of(callee.send(callee.response(200), 0.5), Answered)
    assert answered.plan == ringing.plan


def test_a_200_without_any_sdp_answer_is_acked_hung_up_and_failed() -> None:
    ua = new_ua()
    callee = Callee(ua)
    out = callee.send(callee.response(200), 0.2)
    assert [m.method for m in sent(out)] == ["ACK", "BYE"]  # type: ignore[union-attr]
    [ended] = of(out, Ended)
    assert ended.outcome.status is Status.FAILED and "unusable SDP" in ended.outcome.cause
    assert not of(out, Answered)


def test_a_200_without_a_to_tag_cannot_make_a_dialog() -> None:
    ua = new_ua()
    callee = Callee(ua)
    ok = make_response(callee.invite, 200, headers=(("Contact", "<sip:127.0.0.1:5080>"),))
    [ended] = of(callee.send(ok, 0.2), Ended)
    assert ended.outcome.status is Status.FAILED and "no tag" in ended.outcome.cause


def test_an_answer_crossing_the_timer_c_cancel_is_acked_and_hung_up() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.send(callee.response(180), 1.0)
    assert not of(ua.timer(181.0), Ended)  # timer C: we CANCEL and wait for the outcome
    out = callee.send(callee.response(200, body=SIPP_SDP), 181.05)  # picked up just then
    assert [m.method for m in sent(out)] == ["ACK", "BYE"]  # type: ignore[union-attr]
    assert not of(out, Answered)
    [ended] = of(out, Ended)
    assert ended.outcome.status is Status.NO_ANSWER and not ended.by_remote
    assert ended.outcome.cause == "200 OK (crossed our CANCEL)"


def test_ringing_for_minutes_is_canceled_by_timer_c_and_the_487_is_acked() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.send(callee.response(180), 1.0)
    out = ua.timer(181.0)
    [cancel] = sent(out)
    assert cancel.method == "CANCEL"
    assert cancel.via.branch == callee.invite.via.branch  # type: ignore[union-attr]
    assert not of(out, Ended)  # the INVITE transaction waits for the callee's 487
    assert ua.next_timer == 181.0 + 0.5  # the CANCEL's own retransmission (timer E)
    assert not sent(callee.send(callee.response(200, to=cancel), 181.1))  # type: ignore[arg-type]
    out = callee.send(callee.response(487), 181.2)
    [ack] = sent(out)
    assert ack.method == "ACK" and ack.via.branch == callee.invite.via.branch  # type: ignore
    assert ack.to.tag == callee.tag
    [ended] = of(out, Ended)
    assert ended.outcome == Outcome(Status.NO_ANSWER, "487 Request Terminated", 487)
    assert ended.by_remote is False  # we ended it
    again = callee.send(callee.response(487), 181.7)  # a retransmitted 487: the same ACK
    assert [d.data for d in again] == [o.data for o in out if isinstance(o, Datagram)]
    drain(ua, 181.7)
    assert not ua.calls and ua.next_timer is None


def test_timer_c_then_silence_ends_no_answer_after_64_t1() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.send(callee.response(180), 1.0)
    ua.timer(181.0)
    late = [o for o in drain(ua, 181.0) if isinstance(o, Ended)]
    [ended] = late
    assert ended.outcome == Outcome(Status.NO_ANSWER, "ring timeout; no final response")
    assert ended.by_remote is False
    assert not ua.calls


def test_preloaded_route_and_cancel_follow_it() -> None:
    ua = new_ua()
    proxy = NameAddr.parse("<sip:192.0.2.1:5060;lr>")
    callee = Callee(ua, routes=(proxy,))
    assert callee.invite.headers.get("Route") == "<sip:192.0.2.1:5060;lr>"
    assert callee.out[0].addr == ("192.0.2.1", 5060)
    callee.send(callee.response(180), 0.1)
    [cancel] = ua.cancel(callee.call.call_id, 0.2)
    assert cancel.addr == ("192.0.2.1", 5060)
    assert sent([cancel])[0].headers.get("Route") == "<sip:192.0.2.1:5060;lr>"


def test_outbound_proxy_carries_every_request() -> None:
    ua = new_ua()
    callee = Callee(ua, outbound=("198.51.100.1", 5060))
    assert callee.out[0].addr == ("198.51.100.1", 5060)
    out = callee.answer()
    assert {d.addr for d in out if hasattr(d, "addr")} == {("198.51.100.1", 5060)}
    assert ua.hangup(callee.call.call_id, 1.0)[0].addr == ("198.51.100.1", 5060)


def test_a_challenged_bye_is_retried_with_credentials() -> None:
    ua = new_ua()
    callee = Callee(ua, authenticator=Authenticator("alice", "secret"))
    callee.answer()
    [bye] = sent(ua.hangup(callee.call.call_id, 1.0))
    challenge = make_response(
        bye,
        407,
        headers=(  # type: ignore[arg-type]
            ("Proxy-Authenticate", 'Digest realm="p", nonce="x", qop="auth"'),
        ),
    )
    [retry] = sent(callee.send(challenge, 1.1))
    assert retry.method == "BYE" and retry.cseq.seq == bye.cseq.seq + 1  # type: ignore
    assert Authorization.parse(retry.headers.get("Proxy-Authorization") or "").realm == "p"
    callee.send(make_response(retry, 200), 1.2)  # type: ignore[arg-type]
    drain(ua, 1.2)
    assert not ua.calls


def test_a_bye_that_gets_no_answer_still_ends_the_call() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    ua.hangup(callee.call.call_id, 1.0)
    out = drain(ua, 1.0)
    assert len([m for m in sent(out) if m.method == "BYE"]) == 10  # type: ignore[union-attr]
    assert not ua.calls


def test_both_sides_hang_up_at_once() -> None:
    ua = new_ua()
    callee = Callee(ua)
    callee.answer()
    first = ua.hangup(callee.call.call_id, 1.0)
    out = callee.send(callee.request("BYE"), 1.01)
    assert [m.status for m in sent(out)] == [200]  # type: ignore[union-attr]
    assert len(of(first + out, Ended)) == 1


def test_responses_that_are_not_ours_are_discarded() -> None:
    from ringflow.sip.events import Discarded

    ua = new_ua()
    callee = Callee(ua)
    foreign = callee.response(180)
    foreign.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx")
    assert of(callee.send(foreign, 0.1), Discarded)
    stray = callee.response(180)
    stray.headers.set("Call-ID", "nobody")
    assert of(callee.send(stray, 0.1), Discarded)
    assert of(ua.receive(b"\r\n\r\n", ("127.0.0.1", 5080), 0.1), Discarded)  # keep-alive


def test_answered_plan_uses_the_answer() -> None:
    ua = new_ua()
    callee = Callee(ua)
    [answered] = of(callee.answer(body=BARESIP_SDP), Answered)
    assert answered.plan.codec == PCMU and answered.plan.dtmf_pt == 96
    assert isinstance(Response.parse(bytes(callee.response(200))), Response)
