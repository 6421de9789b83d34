"""REGISTER (RFC 3261 10) through a real ``UserAgent`` in memory: no sockets, time passed in.

``Registrar`` plays the far end; what we send is compared with golden messages, and digest
answers are recomputed here from RFC 2617's formula rather than with our own digest module.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringflow.sip.digest import Authenticator, Authorization
from ringflow.sip.events import Discarded, RegistrationChanged
from ringflow.sip.message import Request, make_response, parse_message
from ringflow.sip.registration import REG_STATES, RegState, RegStep
from ringflow.sip.transaction import Datagram
from ringflow.sip.uri import SipUri
from tests.test_sip_dialog import PEER, Callee, new_ua, of
from tests.test_sip_fuzz import FUZZ

FIXTURES = Path(__file__).parent / "fixtures" / "sip"
AOR = SipUri.parse("sip:alice@sipp.example")
REGISTRAR = SipUri.parse("sip:127.0.0.1:5080")
CHALLENGE = (
    'Digest realm="sipp.example", nonce="4c5f1e6ab7d0ce38", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41", qop="auth", algorithm=MD5'
)


def md5(text: str) -> str:
    """Hex MD5, for recomputing digest answers independently."""
    return hashlib.md5(text.encode()).hexdigest()


class Registrar:
    """The registrar side of one ``Registration``: it answers the last REGISTER we sent."""

    def __init__(self, password: str | None = "secret", expires: int = 3600, **kw: object):
        self.ua = new_ua()
        auth = Authenticator("alice", password, cnonce=lambda: "0a4f113b") if password else None
        self.reg, out = self.ua.register(AOR, REGISTRAR, auth, expires, 0.0, **kw)  # type: ignore
        self.requests: list[Request] = []
        self.out = self.take(out)

    def take(self, out: list) -> list:
        """Remember the REGISTERs among ``out``."""
        self.requests += [
            parse_message(d.data)
            for d in out  # type: ignore[misc]
            if isinstance(d, Datagram)
        ]
        return out

    @property
    def last(self) -> Request:
        """The REGISTER the registrar answers next."""
        return self.requests[-1]

    def reply(self, status: int, now: float, *headers: tuple[str, str]) -> list:
        """Answer the last REGISTER."""
        response = make_response(self.last, status, to_tag="reg1", headers=headers)
        return self.take(self.ua.receive(bytes(response), PEER, now))

    def challenge(self, now: float, value: str = CHALLENGE) -> list:
        """401 with a digest challenge."""
        return self.reply(401, now, ("WWW-Authenticate", value))

    def timer(self, now: float) -> list:
        """Run the agent's timers due at ``now``."""
        return self.take(self.ua.timer(now))


def test_register_then_answer_the_challenge_matches_the_golden_files() -> None:
    r = Registrar()
    assert r.out[0].data == (FIXTURES / "ringflow_register.sip").read_bytes()
    assert r.out[0].addr == PEER and r.reg.state is RegState.REGISTERING
    r.challenge(0.1)
    assert bytes(r.last) == (FIXTURES / "ringflow_register_auth.sip").read_bytes()
    first, second = r.requests
    assert second.call_id == first.call_id and second.from_ == first.from_
    assert second.cseq.seq == 2 and second.via.branch != first.via.branch
    creds = Authorization.parse(second.headers.get("Authorization") or "")
    ha1, ha2 = md5("alice:sipp.example:secret"), md5("REGISTER:sip:127.0.0.1:5080")
    expected = md5(f"{ha1}:4c5f1e6ab7d0ce38:00000001:0a4f113b:auth:{ha2}")
    assert creds.response == expected and creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"


def test_a_200_registers_until_our_contacts_expires_and_refreshes_at_half() -> None:
    r = Registrar()
    r.challenge(0.1)
    out = r.reply(
        200,
        0.2,
        ("Contact", "<sip:bob@10.0.0.9:5060>;expires=90"),
        ("Contact", "<sip:ringflow@127.0.0.1:5070>;expires=1800"),
        ("Expires", "600"),
    )
    [changed] = of(out, RegistrationChanged)
    assert changed == RegistrationChanged(r.reg.call_id, "registered", 200, "200 OK", 1800.1)
    assert r.reg.state is RegState.REGISTERED and r.reg.granted == 1800
    assert r.reg.refresh_at == pytest.approx(900.2)  # refresh at half the granted time
    r.timer(900.2)
    refresh = r.last
    assert refresh.cseq.seq == 3 and refresh.call_id == r.requests[0].call_id
    assert refresh.from_ == r.requests[0].from_ and refresh.headers.get("Expires") == "3600"
    assert refresh.headers.get("Authorization") is None  # each attempt starts afresh
    r.challenge(900.3)
    [changed] = of(r.reply(200, 900.4, ("Expires", "120")), RegistrationChanged)
    assert changed.expires_at == pytest.approx(900.3 + 120)  # no Contact: the Expires header
    assert r.reg.refresh_at == pytest.approx(960.4)


def test_the_same_nonce_challenged_again_means_bad_credentials() -> None:
    r = Registrar(password="wrong")
    r.challenge(0.1)
    [changed] = of(r.challenge(0.2), RegistrationChanged)
    assert (changed.state, changed.status, changed.cause) == ("failed", 401, "401 Unauthorized")
    assert changed.retry_at == pytest.approx(30.2) and len(r.requests) == 2  # no third try
    r.timer(30.2)
    assert len(r.requests) == 3 and r.last.headers.get("Authorization") is None  # retried


def test_a_stale_nonce_is_answered_again() -> None:
    r = Registrar()
    r.challenge(0.1)
    r.challenge(0.2, 'Digest realm="sipp.example", nonce="fresh", qop="auth", stale=true')
    creds = Authorization.parse(r.last.headers.get("Authorization") or "")
    assert creds.nonce == "fresh" and creds.nc == 1 and r.last.cseq.seq == 3
    assert of(r.reply(200, 0.3), RegistrationChanged)[0].state == "registered"


def test_endless_stale_challenges_are_bounded() -> None:
    r = Registrar()
    for i in range(10):
        out = r.challenge(0.1 * i, f'Digest realm="r", nonce="n{i}", qop="auth", stale=true')
        if of(out, RegistrationChanged):
            break
    assert r.reg.state is RegState.FAILED and len(r.requests) == 5


def test_423_retries_with_min_expires_and_keeps_asking_for_it() -> None:
    r = Registrar(expires=60)
    r.reply(423, 0.1, ("Min-Expires", "300"))
    assert r.last.headers.get("Expires") == "300" and r.last.cseq.seq == 2
    assert r.last.headers.get("Contact") == "<sip:ringflow@127.0.0.1:5070>;expires=300"
    r.reply(200, 0.2)  # no Contact or Expires: what we asked for
    assert r.reg.expires_at == pytest.approx(300.1)
    r.timer(150.2)
    assert r.last.headers.get("Expires") == "300"
    [changed] = of(r.reply(423, 150.3, ("Min-Expires", "200")), RegistrationChanged)
    assert changed.state == "failed" and changed.status == 423  # a minimum below ours: confused


def test_no_response_fails_and_retries_with_doubling_backoff() -> None:
    r = Registrar(retry_base=10.0, retry_max=25.0)
    out = []
    while r.reg.state is RegState.REGISTERING:
        out += r.timer(r.ua.next_timer)  # type: ignore[arg-type]
    assert len(r.requests) == 11  # timer E retransmissions, then timer F at 64*T1
    [changed] = of(out, RegistrationChanged)
    assert (changed.state, changed.status, changed.cause) == ("failed", None, "no response")
    assert changed.retry_at == pytest.approx(42.0)
    r.timer(42.0)
    r.reply(503, 42.1)
    assert r.reg.retry_at == pytest.approx(62.1)  # 2 * 10
    r.timer(62.1)
    r.reply(500, 62.2)
    assert r.reg.retry_at == pytest.approx(87.2)  # capped at retry_max
    r.timer(87.2)
    r.reply(503, 87.3, ("Retry-After", "7 (maintenance)"))
    assert r.reg.retry_at == pytest.approx(94.3)  # the server said when
    r.timer(94.3)
    r.reply(200, 94.4)
    assert r.reg.state is RegState.REGISTERED and r.reg.failures == 0


def test_a_refused_refresh_fails_the_registration() -> None:
    r = Registrar(password=None)
    r.reply(200, 0.1)
    r.timer(1800.1)
    [changed] = of(r.reply(403, 1800.2), RegistrationChanged)
    assert changed.state == "failed" and changed.expires_at is None
    assert r.reg.granted is None and r.reg.expires_at is None


def test_unregister_removes_our_binding_with_expires_zero() -> None:
    r = Registrar()
    r.challenge(0.1)
    r.reply(200, 0.2)
    out = r.take(r.ua.unregister(r.reg.call_id, 10.0))
    assert out[0].data == (FIXTURES / "ringflow_unregister.sip").read_bytes()
    assert r.reg.state is RegState.UNREGISTERING
    r.challenge(10.1)  # the registrar challenges the removal too
    assert r.last.headers.get("Expires") == "0" and r.last.headers.get("Authorization")
    [changed] = of(r.reply(200, 10.2), RegistrationChanged)
    assert changed.state == "unregistered" and changed.expires_at is None
    while r.ua.next_timer is not None:  # timer K absorbs retransmitted 200s, then it is gone
        r.timer(r.ua.next_timer)
    assert not r.ua.registrations
    assert len(r.requests) == 4


def test_stop_while_registering_waits_for_the_answer_then_removes_the_binding() -> None:
    r = Registrar(password=None)
    assert r.ua.unregister(r.reg.call_id, 0.05) == []  # 10.2: one REGISTER at a time
    r.reply(200, 0.1)
    assert r.last.headers.get("Expires") == "0" and r.last.cseq.seq == 2
    assert of(r.reply(200, 0.2), RegistrationChanged)[0].state == "unregistered"

    r = Registrar()
    r.ua.unregister(r.reg.call_id, 0.05)
    [changed] = of(r.challenge(0.1), RegistrationChanged)  # never bound: nothing to remove
    assert changed.state == "unregistered" and len(r.requests) == 1


def test_stop_after_a_failure_sends_nothing() -> None:
    r = Registrar(password=None)
    r.reply(403, 0.1)
    [changed] = of(r.take(r.ua.unregister(r.reg.call_id, 1.0)), RegistrationChanged)
    assert changed.state == "unregistered" and len(r.requests) == 1
    r.timer(6.0)  # timer K of the refused REGISTER
    assert not r.ua.registrations and r.ua.next_timer is None and len(r.requests) == 1


def test_registrations_and_calls_share_the_agent_without_mixing_up_responses() -> None:
    r = Registrar(password=None)
    callee = Callee(r.ua)
    assert callee.call.call_id != r.reg.call_id
    assert of(r.reply(200, 0.1), RegistrationChanged)
    assert r.reg.state is RegState.REGISTERED and callee.call.phase == "calling"
    stray = make_response(r.last, 200, to_tag="x")
    stray.headers.set("Call-ID", "nobody")
    assert of(r.ua.receive(bytes(stray), PEER, 0.2), Discarded)


def test_every_state_can_stop() -> None:
    for state in (RegState.REGISTERING, RegState.REGISTERED, RegState.FAILED):
        assert REG_STATES[state, RegStep.STOP] is RegState.UNREGISTERING


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("reply"), st.sampled_from([100, 200, 401, 403, 423, 500, 503])),
            st.tuples(st.just("wait"), st.sampled_from([0.0, 0.5, 5.0, 40.0, 2000.0])),
            st.tuples(st.just("stop"), st.just(0)),
        ),
        max_size=20,
    )
)
def test_any_sequence_of_answers_ends_unregistered_and_forgotten(script: list) -> None:
    r = Registrar()
    now = 0.0
    for kind, value in script:
        if kind == "reply":
            extra = (
                ("WWW-Authenticate", f'Digest realm="r", nonce="n{now}", qop="auth"'),
                ("Min-Expires", "7200"),
            )
            r.reply(value, now, *extra)
        elif kind == "wait":
            now += value
            r.timer(now)
        else:
            r.take(r.ua.unregister(r.reg.call_id, now))
    r.take(r.ua.unregister(r.reg.call_id, now))
    for _ in range(1000):
        if r.ua.next_timer is None:
            break
        now = max(now, r.ua.next_timer)
        r.timer(now)
        if r.requests[-1].headers.get("Expires") == "0" and r.reg.state is RegState.UNREGISTERING:
            r.reply(200, now)  # let the removal succeed so the loop ends
    assert r.reg.state is RegState.UNREGISTERED and not r.ua.registrations
