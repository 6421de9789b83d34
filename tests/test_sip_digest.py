"""Digest authentication: the RFC worked examples, challenge parsing and the retry rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringflow.sip.digest import Authenticator, Authorization, Challenge, answer, digest_response
from ringflow.sip.errors import SipParseError
from ringflow.sip.headers import Headers
from ringflow.sip.message import Request, Response, make_response
from ringflow.sip.uri import SipUri

FIXTURES = Path(__file__).parent / "fixtures" / "sip"


def test_rfc2617_worked_example() -> None:
    # RFC 2617 3.5: GET /dir/index.html, Mufasa / "Circle Of Life".
    challenge = Challenge.parse(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    auth = answer(
        challenge, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", cnonce="0a4f113b", nc=1
    )
    assert auth.response == "6629fae49393a05397450978507c4ef1"
    assert str(auth) == (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'response="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41", qop=auth, nc=00000001'
    )
    assert Authorization.parse(str(auth)) == auth


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("sha-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_worked_examples(algorithm: str, expected: str) -> None:
    # RFC 7616 3.9.1 (password "Circle of Life", lower-case "of": erratum 4495).
    challenge = Challenge.parse(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    auth = answer(
        challenge,
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nc=1,
    )
    assert auth.response == expected
    assert auth.algorithm == algorithm  # echoed as the server spelled it


def test_rfc2069_style_challenge_without_qop() -> None:
    challenge = Challenge.parse(
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"'
    )
    auth = answer(challenge, "Mufasa", "CircleOfLife", "GET", "/dir/index.html", cnonce="x")
    assert auth.response == "1949323746fe6a43ef61f9606e7febea"
    assert auth.qop is None and auth.nc is None and auth.cnonce is None
    assert "qop" not in str(auth) and "nc=" not in str(auth)


def test_auth_int_and_sess_variants_hash_what_the_rfc_says() -> None:
    import hashlib

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ch = Challenge("r", "n", "MD5-sess", ("auth-int",))
    got = digest_response(
        ch, "u", "p", "INVITE", "sip:b@c", qop="auth-int", cnonce="c", nc=2, body=b"v=0\r\n"
    )
    ha1 = md5(f"{md5('u:r:p')}:n:c")
    ha2 = md5(f"INVITE:sip:b@c:{hashlib.md5(b'v=0' + bytes([13, 10])).hexdigest()}")
    assert got == md5(f"{ha1}:n:00000002:c:auth-int:{ha2}")


def test_challenges_from_the_golden_401_and_407() -> None:
    r401 = Response.parse((FIXTURES / "401_sipp.sip").read_bytes())
    ch = Challenge.parse(r401.headers.get("WWW-Authenticate") or "")
    assert (ch.realm, ch.nonce, ch.qop, ch.algorithm) == (
        "sipp.example",
        "4c5f1e6ab7d0ce38",
        ("auth",),
        "MD5",
    )
    assert ch.opaque == "5ccc069c403ebaf9f0171e9517f40e41" and not ch.stale
    r407 = Response.parse((FIXTURES / "407_proxy.sip").read_bytes())
    first, second = (Challenge.parse(v) for v in r407.headers.get_all("Proxy-Authenticate"))
    assert first.algorithm == "SHA-256" and first.qop == ("auth", "auth-int")
    assert second.algorithm == "MD5" and not first.stale


@pytest.mark.parametrize(
    "text",
    [
        'Basic realm="x"',
        'Digest realm="x"',
        'Digest nonce="x"',
        'Digest realm="x, nonce="y"',
        "Digest realm=x y, nonce=z",
        "",
    ],
)
def test_bad_challenges(text: str) -> None:
    with pytest.raises(SipParseError):
        Challenge.parse(text)


def _invite(headers: tuple[tuple[str, str], ...] = ()) -> Request:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport"),
            ("From", "<sip:alice@127.0.0.1>;tag=1"),
            ("To", "<sip:bob@example.net>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
            *headers,
        ]
    )
    return Request(
        headers=h, body=b"v=0\r\n", method="INVITE", uri=SipUri.parse("sip:bob@example.net")
    )


def _challenge(request: Request, status: int, *values: str) -> Response:
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return make_response(request, status, to_tag="t", headers=tuple((name, v) for v in values))


def _cnonces():
    counter = iter(range(1, 100))
    return lambda: f"cn{next(counter)}"


def test_401_is_answered_with_authorization_and_407_with_proxy_authorization() -> None:
    auth = Authenticator("alice", "secret", cnonce=_cnonces())
    invite = _invite()
    lines = auth.respond(
        invite, _challenge(invite, 401, 'Digest realm="a", nonce="n1", qop="auth", opaque="op"')
    )
    assert lines is not None and [n for n, _ in lines] == ["Authorization"]
    creds = Authorization.parse(lines[0][1])
    assert (creds.username, creds.realm, creds.uri, creds.qop, creds.nc, creds.cnonce) == (
        "alice",
        "a",
        "sip:bob@example.net",
        "auth",
        1,
        "cn1",
    )
    assert creds.opaque == "op"
    expected = digest_response(
        Challenge("a", "n1", None, ("auth",)),
        "alice",
        "secret",
        "INVITE",
        "sip:bob@example.net",
        qop="auth",
        cnonce="cn1",
        nc=1,
    )
    assert creds.response == expected
    lines = auth.respond(invite, _challenge(invite, 407, 'Digest realm="p", nonce="n2"'))
    assert lines is not None and lines[0][0] == "Proxy-Authorization"


def test_first_supported_challenge_wins_per_rfc8760() -> None:
    auth = Authenticator("alice", "secret", cnonce=_cnonces())
    invite = _invite()
    response = Response.parse((FIXTURES / "407_proxy.sip").read_bytes())
    lines = auth.respond(invite, response)
    assert lines is not None and len(lines) == 1
    assert Authorization.parse(lines[0][1]).algorithm == "SHA-256"
    unknown = _challenge(
        invite,
        401,
        'Digest realm="a", nonce="n", algorithm=SHA-999',
        'Digest realm="a", nonce="n", algorithm=md5',
    )
    lines = auth.respond(invite, unknown)
    assert lines is not None and Authorization.parse(lines[0][1]).algorithm == "md5"


def test_a_second_challenge_for_the_same_realm_means_the_password_is_wrong() -> None:
    auth = Authenticator("alice", "wrong", cnonce=_cnonces())
    first = _invite()
    lines = auth.respond(first, _challenge(first, 401, 'Digest realm="a", nonce="n1", qop="auth"'))
    assert lines is not None
    retried = _invite(tuple(lines))
    again = _challenge(retried, 401, 'Digest realm="a", nonce="n2", qop="auth"')
    assert auth.respond(retried, again) is None


def test_stale_nonce_is_retried_with_the_new_nonce() -> None:
    auth = Authenticator("alice", "secret", cnonce=_cnonces())
    first = _invite()
    lines = auth.respond(first, _challenge(first, 401, 'Digest realm="a", nonce="n1", qop="auth"'))
    assert lines is not None
    retried = _invite(tuple(lines))
    stale = _challenge(retried, 401, 'Digest realm="a", nonce="n2", qop="auth", stale=TRUE')
    lines2 = auth.respond(retried, stale)
    assert lines2 is not None
    creds = Authorization.parse(lines2[0][1])
    assert creds.nonce == "n2" and creds.nc == 1
    same_nonce = _challenge(
        _invite(tuple(lines2)), 401, 'Digest realm="a", nonce="n2", qop="auth", stale=true'
    )
    assert auth.respond(_invite(tuple(lines2)), same_nonce) is None  # no endless stale loop


def test_nonce_count_grows_when_a_nonce_is_reused() -> None:
    auth = Authenticator("alice", "secret", cnonce=_cnonces())
    challenge = 'Digest realm="a", nonce="n1", qop="auth"'
    counts = []
    for _ in range(3):
        invite = _invite()
        lines = auth.respond(invite, _challenge(invite, 407, challenge))
        assert lines is not None
        counts.append(Authorization.parse(lines[0][1]).nc)
    assert counts == [1, 2, 3]


def test_unanswerable_responses() -> None:
    auth = Authenticator("alice", "secret")
    invite = _invite()
    assert auth.respond(invite, make_response(invite, 403)) is None
    assert auth.respond(invite, _challenge(invite, 401, 'Basic realm="x"')) is None
    assert auth.respond(invite, _challenge(invite, 401)) is None


def test_userhash() -> None:
    import hashlib

    ch = Challenge.parse(
        'Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256, userhash=true'
    )
    auth = answer(ch, "Mufasa", "pw", "INVITE", "sip:x@y", cnonce="c")
    assert auth.username == hashlib.sha256(b"Mufasa:r").hexdigest() and auth.userhash
    assert "userhash=true" in str(auth)


def test_challenge_round_trip() -> None:
    text = (
        'Digest realm="sipp.example", nonce="4c5f1e6ab7d0ce38", opaque="5ccc", '
        'qop="auth,auth-int", algorithm=SHA-256, stale=true'
    )
    assert str(Challenge.parse(text)) == text
