"""SIP message, URI and header parsing against golden messages in SIPp's and baresip's shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringflow.sip.errors import SipParseError
from ringflow.sip.headers import CSeq, Headers, NameAddr, Via
from ringflow.sip.message import Request, Response, make_response, parse_message
from ringflow.sip.uri import SipUri

FIXTURES = Path(__file__).parent / "fixtures" / "sip"
CANONICAL = sorted(
    p.name
    for p in FIXTURES.glob("*.sip")
    if p.name not in ("invite_sipp_uac.sip", "folded_nonstandard.sip")
)


def golden(name: str) -> bytes:
    """A golden message's bytes."""
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", CANONICAL)
def test_golden_messages_round_trip_byte_for_byte(name: str) -> None:
    data = golden(name)
    assert bytes(parse_message(data)) == data


def test_sipp_padded_content_length_is_the_only_change() -> None:
    # SIPp writes "[len]" right-aligned in five columns; we write it plainly.
    data = golden("invite_sipp_uac.sip")
    assert b"Content-Length:   129\r\n" in data
    expected = data.replace(b"Content-Length:   129", b"Content-Length: 129")
    assert bytes(parse_message(data)) == expected


def test_invite_from_sipp_uac() -> None:
    msg = Request.parse(golden("invite_sipp_uac.sip"))
    assert msg.method == "INVITE"
    assert msg.uri == SipUri("127.0.0.1", "service", 5070)
    assert msg.via.branch == "z9hG4bK-4021-1-0"
    assert msg.from_.display_name == "sipp" and not msg.from_.quoted
    assert msg.from_.tag == "4021SIPpTag001"
    assert msg.to.tag is None
    assert msg.call_id == "1-4021@127.0.0.1"
    assert msg.cseq == CSeq(1, "INVITE")
    assert msg.max_forwards == 70
    assert msg.contacts[0].bracketed is False  # SIPp's bare addr-spec Contact
    assert msg.contacts[0].uri == SipUri("127.0.0.1", "sipp", 5080)
    assert msg.content_type == "application/sdp"
    assert msg.body.startswith(b"v=0\r\n") and len(msg.body) == 129


def test_200_with_record_route_lists_every_route_in_order() -> None:
    msg = Response.parse(golden("200_ok_record_route.sip"))
    assert msg.status == 200 and msg.reason == "OK" and msg.cause == "200 OK"
    hosts = [r.uri.host for r in msg.record_route]
    assert hosts == ["10.0.0.2", "10.0.0.1", "192.0.2.10"]  # two lines, one with two values
    assert all(r.uri.lr for r in msg.record_route)
    assert msg.record_route[0].uri.param("ftag") == "1928301774"
    assert msg.record_route[2].uri.transport == "udp" and msg.record_route[2].uri.port == 5060
    assert msg.contacts[0].uri.transport == "udp"  # SIPp writes transport=UDP


def test_via_with_rport_and_received() -> None:
    via = Response.parse(golden("180_ringing_sipp.sip")).via
    assert via.transport == "UDP" and via.sent_by == ("127.0.0.1", 5070)
    assert via.branch == "z9hG4bK776asdhds0a1b2c3d4e5f6"
    assert via.rport == 5070 and via.received == "127.0.0.1"
    bare = Via.parse("SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKb1c4e9a7f0d25e36;rport")
    assert bare.rport is None and bare.received is None
    assert str(bare.with_param("rport", "5080")).endswith(";rport=5080")


def test_compact_forms_are_the_same_headers() -> None:
    msg = Response.parse(golden("compact_forms.sip"))
    assert msg.call_id == "a84b4c76e66710f3b9c2d1e0@127.0.0.1"
    assert msg.via.branch == "z9hG4bK776asdhds0a1b2c3d4e5f6"
    assert msg.from_.tag == "1928301774" and msg.to.tag == "77a1"
    assert msg.contacts[0].display_name == "Far End"
    assert msg.contacts[0].params == (("expires", "3600"),)
    assert msg.headers.values("Supported") == ["100rel", "timer"]
    assert msg.headers.get("Content-Length") == "0"
    assert bytes(msg).endswith(b"\r\nl: 0\r\n\r\n")  # the compact name is kept


def test_folding_case_and_whitespace_are_understood_and_normalised() -> None:
    msg = Response.parse(golden("folded_nonstandard.sip"))
    assert [v.branch for v in msg.vias] == [
        "z9hG4bK776asdhds0a1b2c3d4e5f6",
        "z9hG4bKaaa",
        "z9hG4bKbbb",
    ]
    assert msg.vias[1].sent_by == ("10.0.0.9", 5060) and msg.vias[2].port is None
    assert msg.to.display_name == 'The "Boss"' and msg.to.tag == "x1"
    assert msg.cseq == CSeq(1, "INVITE")
    assert msg.body == b"abcd"  # Content-Length honoured, trailing bytes dropped
    again = parse_message(bytes(msg))
    assert bytes(again) == bytes(msg)
    assert b"\r\n " not in bytes(msg)  # unfolded


def test_info_with_dtmf_body_and_lf_only_input() -> None:
    head, body = golden("info_dtmf_baresip.sip").split(b"\r\n\r\n", 1)
    msg = Request.parse(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert msg.method == "INFO" and msg.cseq == CSeq(2, "INFO")
    assert msg.content_type == "application/dtmf-relay"
    assert msg.body == b"Signal=5\r\nDuration=250\r\n"
    assert bytes(msg) == golden("info_dtmf_baresip.sip")  # written back with CRLF


def test_header_lookup_is_case_insensitive_and_knows_compact_forms() -> None:
    h = Headers(
        [
            ("v", "SIP/2.0/UDP a;branch=z9hG4bK1"),
            ("VIA", "SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("call-ID", "x"),
            ("Contact", '"A, B" <sip:a@b>, <sip:c@d>'),
        ]
    )
    assert h.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert len(h.get_all("v")) == 2
    assert h.get("i") == "x" and "CALL-ID" in h
    assert h.values("m") == ['"A, B" <sip:a@b>', "<sip:c@d>"]  # commas inside quotes kept
    h.set("Call-Id", "y")
    assert h.get_all("call-id") == ["y"]
    h.remove("VIA")
    assert h.get("v") is None


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sip:alice:secretword@atlanta.com;transport=tcp",
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice;day=tuesday@atlanta.com",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:[2001:db8::10]:5070;transport=UDP;lr",
        "sip:10.0.0.1;lr;ftag=abc",
        "sip:127.0.0.1:5080;transport=UDP",
    ],
)
def test_uri_round_trip(text: str) -> None:
    assert str(SipUri.parse(text)) == text


def test_uri_fields() -> None:
    uri = SipUri.parse("sip:alice:pw@[2001:db8::10]:5070;Transport=TCP;lr?Subject=hi")
    assert (uri.user, uri.password, uri.host, uri.port) == ("alice", "pw", "[2001:db8::10]", 5070)
    assert uri.transport == "tcp" and uri.lr and uri.param("TRANSPORT") == "TCP"
    assert uri.headers == (("Subject", "hi"),)
    assert uri.address == ("2001:db8::10", 5070)
    assert SipUri.parse("sips:bob@example.com").address == ("example.com", 5061)
    assert SipUri.parse("sip:bob@example.com").transport == "udp"


@pytest.mark.parametrize(
    "text",
    [
        '"Alice Liddell" <sip:alice@atlanta.com>;tag=1928301774',
        "Bob <sip:bob@biloxi.com>;tag=a6c85cf",
        "<sip:carol@chicago.com>",
        "sip:sipp@127.0.0.1:5080",
        '<sip:callee-0x5561d2c1f8a0@127.0.0.1:5080>;+sip.instance="<urn:uuid:1f1c5d2e>"',
        "<sip:10.0.0.1;lr>",
    ],
)
def test_name_addr_round_trip(text: str) -> None:
    assert str(NameAddr.parse(text)) == text


def test_addr_spec_parameters_belong_to_the_header() -> None:
    na = NameAddr.parse("sip:alice@atlanta.com;tag=88sja8x")
    assert na.tag == "88sja8x" and na.uri.params == () and not na.bracketed
    assert str(na.without_tag()) == "sip:alice@atlanta.com"
    assert str(NameAddr.parse("<sip:a@b;lr>").with_tag("t1")) == "<sip:a@b;lr>;tag=t1"


MALFORMED = [
    (b"", "message"),
    (b"\r\n\r\n", "message"),
    (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n", "message"),
    (b"INVITE sip:a@b SIP/3.0\r\n\r\n", "start line"),
    (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", "start line"),
    (b"IN<VITE sip:a@b SIP/2.0\r\n\r\n", "start line"),
    (b"INVITE http://a SIP/2.0\r\n\r\n", "Request-URI"),
    (b"SIP/2.0 99 Odd\r\n\r\n", "start line"),
    (b"SIP/2.0 2000 OK\r\n\r\n", "start line"),
    (b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n", "headers"),
    (b"SIP/2.0 200 OK\r\n folded first\r\n\r\n", "headers"),
]


@pytest.mark.parametrize(("data", "what"), MALFORMED)
def test_malformed_start_and_framing(data: bytes, what: str) -> None:
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    assert err.value.what == what


def _with(name: str, old: bytes, new: bytes) -> bytes:
    data = golden(name)
    assert old in data
    return data.replace(old, new)


SECOND_TO = b"To: <sip:+\xc2\xb2918040000000@127.0.0.1>;tag=1928301774\r\n"


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (
            _with(
                "180_ringing_sipp.sip",
                b"Via: SIP/2.0/UDP 127.0.0.1:5070;",
                b"Via: SIP/2.0/UDP :99999;",
            ),
            "Via",
        ),
        (_with("180_ringing_sipp.sip", b"Via: SIP/2.0/UDP", b"Via: SIP/3.0/UDP"), "Via"),
        (_with("180_ringing_sipp.sip", b"CSeq: 1 INVITE", b"CSeq: one INVITE"), "CSeq"),
        (_with("180_ringing_sipp.sip", b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"), "CSeq"),
        (_with("180_ringing_sipp.sip", b"From: <sip:+91", b"From: <sop:+91"), "URI"),
        (_with("180_ringing_sipp.sip", b";tag=4021SIPpTag011", b";tag=<x>"), "To"),
        (_with("180_ringing_sipp.sip", b"Call-ID: a84b", b"X-Call-ID: a84b"), "Call-ID"),
        (_with("bye_sipp_uas.sip", b"Max-Forwards: 70", b"Max-Forwards: 700"), "Max-Forwards"),
        (_with("bye_sipp_uas.sip", b"CSeq: 2 BYE", b"CSeq: 2 INFO"), "CSeq"),
        (
            _with("info_dtmf_baresip.sip", b"Content-Length: 24", b"Content-Length: 240"),
            "Content-Length",
        ),
        (
            _with("info_dtmf_baresip.sip", b"Content-Length: 24", b"Content-Length: -1"),
            "Content-Length",
        ),
        (
            _with("bye_sipp_uas.sip", b"Contact: <sip:127", b'Contact: "unterminated <sip:127'),
            "Contact",
        ),
        (_with("bye_sipp_uas.sip", b"Subject: Performance Test", b"Subject: a\rb"), "message"),
        # A header of one value given twice: the second To was never checked, and answering
        # the BYE (which copies every To line) failed on it.
        (_with("bye_sipp_uas.sip", b"Call-ID: a84b", SECOND_TO + b"Call-ID: a84b"), "To"),
        (_with("bye_sipp_uas.sip", b"CSeq: 2 BYE", b"CSeq: 2 BYE\r\ncseq: 3 BYE"), "CSeq"),
        (_with("bye_sipp_uas.sip", b"Call-ID: a84b", b"i: other\r\nCall-ID: a84b"), "Call-ID"),
    ],
)
def test_malformed_headers_name_the_header(data: bytes, what: str) -> None:
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    assert err.value.what == what


def test_content_length_shorter_than_the_datagram_truncates_the_body() -> None:
    data = golden("info_dtmf_baresip.sip").replace(b"Content-Length: 24", b"Content-Length: 8")
    assert Request.parse(data).body == b"Signal=5"


def test_missing_content_length_means_the_rest_of_the_datagram() -> None:
    data = golden("info_dtmf_baresip.sip").replace(b"Content-Length: 24\r\n", b"")
    msg = Request.parse(data)
    assert msg.body == b"Signal=5\r\nDuration=250\r\n"
    assert bytes(msg).endswith(b"Content-Length: 24\r\n\r\nSignal=5\r\nDuration=250\r\n")


def test_request_and_response_parse_refuse_the_other_kind() -> None:
    with pytest.raises(SipParseError):
        Request.parse(golden("180_ringing_sipp.sip"))
    with pytest.raises(SipParseError):
        Response.parse(golden("bye_sipp_uas.sip"))


def test_make_response_copies_what_rfc3261_8_2_6_says() -> None:
    bye = Request.parse(golden("bye_sipp_uas.sip"))
    ok = make_response(bye, 200)
    assert bytes(ok) == (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-4021-1-8\r\n"
        b"From: <sip:+919876543210@127.0.0.1:5080>;tag=4021SIPpTag011\r\n"
        b"To: <sip:+918040000000@127.0.0.1:5070>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710f3b9c2d1e0@127.0.0.1\r\n"
        b"CSeq: 2 BYE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    options = Request.parse(golden("options_sipp.sip"))
    assert make_response(options, 200, to_tag="ab12").to.tag == "ab12"
    assert make_response(options, 100, to_tag="ab12").to.tag is None


def test_non_utf8_header_bytes_survive_a_round_trip() -> None:
    data = golden("options_sipp.sip").replace(b"From: sipp <", b'From: "s\xe9pp" <')
    msg = parse_message(data)
    assert bytes(msg) == data
    assert msg.from_.display_name == "s\udce9pp"  # undecodable bytes kept as surrogates
    with pytest.raises(SipParseError):  # but an unquoted display name must be tokens
        parse_message(golden("options_sipp.sip").replace(b"From: sipp", b"From: s\xe9pp"))


@pytest.mark.parametrize(
    "header",
    [
        b"Max-Forwards: " + b"9" * 5000,
        b"Content-Length: " + b"9" * 5000,
        b"Max-Forwards: \xc2\xb2",  # '²': str.isdigit() says yes, int() says no
    ],
)
def test_numbers_too_long_for_int_are_a_parse_error(header: bytes) -> None:
    """int() refuses strings of over 4300 digits with ValueError: a parser must not pass it on."""
    data = (
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx\r\n"
        b"From: <sip:b@c>;tag=1\r\nTo: <sip:a@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        + header
        + b"\r\n\r\n"
    )
    with pytest.raises(SipParseError):
        parse_message(data).max_forwards  # noqa: B018 (Max-Forwards is checked on first use)
