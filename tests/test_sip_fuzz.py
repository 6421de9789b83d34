"""Property tests: malformed datagrams never crash the SIP core, and no call or transaction leaks.

Parsers may only raise ``SipParseError``. A user agent fed any mix of well-formed, mutated and
random datagrams, API actions and time steps must never raise, must report ``Ended`` exactly
once per call, and once time runs on (and an answered call is hung up) must hold nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ringflow.sip.digest import Authenticator, Challenge
from ringflow.sip.errors import NegotiationError, SipParseError
from ringflow.sip.events import Ended
from ringflow.sip.headers import Headers, NameAddr, Via
from ringflow.sip.message import Request, make_response, parse_message
from ringflow.sip.outcome import Ending
from ringflow.sip.sdp import SessionDescription, accept_answer, answer_offer
from ringflow.sip.transaction import ClientTransaction, Datagram, ServerTransaction
from ringflow.sip.uri import SipUri
from tests.test_sip_dialog import BARESIP_SDP, PEER, SIPP_SDP, Callee, new_ua, our_offer

FIXTURES = Path(__file__).parent / "fixtures" / "sip"
GOLDEN = [p.read_bytes() for p in sorted(FIXTURES.glob("*.sip"))]
EXAMPLES = int(os.environ.get("RINGFLOW_FUZZ_EXAMPLES", "300"))  # raise it for a long hunt
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few byte-level mutations: flips, cuts, insertions, repeated lines."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(["flip", "cut", "insert", "truncate", "dup-line", "char", "digit"])
        )
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif kind == "truncate":
            del data[at:]
        elif kind == "char" and data:
            char = draw(st.sampled_from(list(':;,<>"=\r\n @/?\\\x00 0²٣')))
            data[at : at + 1] = char.encode()  # '²' and '٣' are digits to str.isdigit
        elif kind == "digit" and (digits := [i for i, b in enumerate(data) if 48 <= b <= 57]):
            i = draw(st.sampled_from(digits))  # str.isdigit() accepts these; int() does not
            data[i : i + 1] = draw(st.sampled_from(["²", "٣", "①"])).encode()
        elif kind == "dup-line":
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


datagrams = st.one_of(
    st.binary(max_size=600),
    st.sampled_from(GOLDEN).flatmap(mutated),
)


@FUZZ
@given(datagrams)
def test_parser_raises_only_sip_parse_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    again = parse_message(bytes(msg))  # whatever we accept, we write back parseably
    assert bytes(again) == bytes(msg)


@FUZZ
@given(st.sampled_from([SIPP_SDP, BARESIP_SDP, bytes(our_offer())]).flatmap(mutated))
def test_sdp_parser_and_negotiation_raise_only_their_errors(body: bytes) -> None:
    try:
        sdp = SessionDescription.parse(body)
        assert bytes(SessionDescription.parse(bytes(sdp))) == bytes(sdp)
        accept_answer(our_offer(), sdp)
        answer_offer(sdp, our_offer())
    except (SipParseError, NegotiationError):
        pass


@FUZZ
@given(st.text(max_size=120))
def test_header_value_parsers_raise_only_sip_parse_error(text: str) -> None:
    for parse in (SipUri.parse, NameAddr.parse, Via.parse, Challenge.parse):
        try:
            str(parse(text))
        except SipParseError:
            pass


def _request(method: str) -> Request:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfz;rport"),
            ("From", "<sip:a@127.0.0.1>;tag=f"),
            ("To", "<sip:b@127.0.0.1:5080>"),
            ("Call-ID", "fz"),
            ("CSeq", f"1 {method}"),
        ]
    )
    return Request(headers=h, body=b"", method=method, uri=SipUri.parse("sip:b@127.0.0.1:5080"))


transaction_steps = st.lists(
    st.one_of(
        st.tuples(st.just("response"), st.sampled_from([100, 180, 200, 404, 487, 503, 603])),
        st.tuples(st.just("wait"), st.sampled_from([0.0, 0.3, 1.0, 4.0, 31.0, 100.0])),
        st.tuples(st.just("cancel"), st.just(0)),
    ),
    max_size=15,
)


@FUZZ
@given(st.sampled_from(["INVITE", "BYE", "OPTIONS"]), transaction_steps)
def test_client_transactions_always_end(method: str, steps: list) -> None:
    tx = ClientTransaction(_request(method), PEER)
    now = 0.0
    tx.send(now)
    for kind, value in steps:
        if kind == "response":
            tx.receive(make_response(tx.request, value, to_tag="t"), now)
        elif kind == "wait":
            now += value
            tx.timer(now)
        elif method == "INVITE":
            tx.cancel_sent(now)
    for _ in range(200):
        if tx.next_timer is None:
            break
        now = max(now, tx.next_timer)
        tx.timer(now)
    assert tx.terminated


@FUZZ
@given(
    st.sampled_from(["INVITE", "BYE", "INFO"]),
    st.sampled_from([180, 200, 486]),
    st.lists(st.sampled_from(["again", "ack", "wait"]), max_size=8),
)
def test_server_transactions_always_end_once_answered(
    method: str, status: int, steps: list
) -> None:
    req = _request(method)
    tx = ServerTransaction(req, PEER)
    tx.respond(make_response(req, status, to_tag="x"), 0.0)
    if status < 200:
        tx.respond(make_response(req, 200, to_tag="x"), 0.1)
    now = 0.1
    for step in steps:
        now += 0.7
        if step == "again":
            tx.receive(req, now)
        elif step == "ack":
            tx.receive(_request("ACK"), now)
        else:
            tx.timer(now)
    for _ in range(200):
        if tx.next_timer is None:
            break
        now = max(now, tx.next_timer)
        tx.timer(now)
    assert tx.terminated


SDPS = [b"", SIPP_SDP, BARESIP_SDP, b"v=0\r\nbroken\r\n"]
DTMF = b"Signal=5\r\nDuration=100\r\n"
moves = st.one_of(
    st.tuples(
        st.just("respond"),
        st.integers(0, 50),
        st.sampled_from([100, 180, 183, 200, 401, 407, 481, 486, 487, 500]),
        st.sampled_from(SDPS),
        st.sampled_from(["4021SIPpTag011", "fork2"]),
        st.booleans(),
    ),
    st.tuples(
        st.just("request"),
        st.sampled_from(["BYE", "INFO", "INVITE", "ACK", "OPTIONS", "CANCEL", "REFER"]),
        st.one_of(st.none(), st.integers(1, 6)),
        st.sampled_from([*SDPS, DTMF]),
        st.booleans(),
        st.booleans(),
    ),
    st.tuples(st.just("answer"), st.sampled_from([180, 183, 200])),
    st.tuples(
        st.just("request"),
        st.sampled_from(["INFO", "INVITE", "INFO", "OPTIONS"]),
        st.none(),
        st.sampled_from([b"", SIPP_SDP, BARESIP_SDP, DTMF]),
        st.just(False),
        st.just(False),
    ),  # well-formed in-dialog requests, so the dialog answers them
    st.tuples(st.just("raw"), datagrams),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.2, 0.5, 2.0, 10.0, 40.0, 200.0])),
    st.tuples(st.just("cancel"), st.sampled_from(list(Ending)[1:])),
    st.tuples(st.just("hangup")),
)


@FUZZ
@given(st.booleans(), st.lists(moves, max_size=25), st.data())
def test_user_agent_survives_anything_and_leaks_nothing(
    answered: bool, script: list, data: st.DataObject
) -> None:
    ua = new_ua()
    callee = Callee(ua, authenticator=Authenticator("alice", "secret"))
    call, out = callee.call, list(callee.out)
    sent: list[Request] = [callee.invite]
    now = 0.0
    if answered:  # half the runs start in a confirmed dialog, to reach in-dialog requests
        script = [("answer", 200), *script]

    def feed(step_out: list) -> None:
        out.extend(step_out)
        for o in step_out:
            if isinstance(o, Datagram):
                msg = parse_message(o.data)  # everything we send must parse
                if isinstance(msg, Request) and msg.method != "ACK":
                    sent.append(msg)

    for move in script:
        if move[0] == "respond":
            _, pick, status, body, tag, mutate = move
            req = sent[pick % len(sent)]
            ctype = (("Content-Type", "application/sdp"),) if body else ()
            extra = (("Contact", "<sip:127.0.0.1:5080>"), *ctype)
            if status in (401, 407):
                name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
                extra += ((name, f'Digest realm="r", nonce="n{pick}", qop="auth"'),)
            raw = bytes(make_response(req, status, to_tag=tag, headers=extra, body=body))
            feed(ua.receive(data.draw(mutated(raw)) if mutate else raw, PEER, now))
        elif move[0] == "request":
            _, method, cseq, body, retransmit, mutate = move
            req = callee.request(
                method,
                cseq=cseq,
                body=body,
                branch="z9hG4bKre" if retransmit else None,
                content_type=None
                if not body
                else "application/dtmf-relay"
                if body == DTMF
                else "application/sdp",
            )
            raw = bytes(req)
            feed(ua.receive(data.draw(mutated(raw)) if mutate else raw, PEER, now))
        elif move[0] == "answer":  # the common path, well formed, so the dialog gets going
            invite = [r for r in sent if r.method == "INVITE" and r.to.tag is None][-1]
            ok = make_response(
                invite,
                move[1],
                to_tag="4021SIPpTag011",
                body=SIPP_SDP,
                headers=(("Contact", "<sip:127.0.0.1:5080>"), ("Content-Type", "application/sdp")),
            )
            feed(ua.receive(bytes(ok), PEER, now))
        elif move[0] == "raw":
            feed(ua.receive(move[1], PEER, now))
        elif move[0] == "wait":
            now += move[1]
            feed(ua.timer(now))
        elif move[0] == "cancel" and call.phase not in ("answered",):
            feed(ua.cancel(call.call_id, now, move[1]))
        elif move[0] == "hangup" and call.phase == "answered":
            feed(ua.hangup(call.call_id, now))

    event(f"phase after the script: {call.phase}")
    for _ in range(3):
        for _ in range(1000):
            if ua.next_timer is None:
                break
            now = max(now, ua.next_timer)
            feed(ua.timer(now))
        if call.phase == "answered":
            feed(ua.hangup(call.call_id, now))
    assert ua.next_timer is None and not ua.calls, call.phase
    assert len([e for e in out if isinstance(e, Ended)]) == 1
