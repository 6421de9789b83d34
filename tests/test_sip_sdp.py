"""SDP parsing and the audio offer/answer choice."""

from __future__ import annotations

import pytest

from ringflow.sip.errors import NegotiationError, SdpParseError
from ringflow.sip.sdp import (
    PCMA,
    PCMU,
    Codec,
    Connection,
    Direction,
    SessionDescription,
    accept_answer,
    answer_offer,
    build_sdp,
)
from tests.test_sip_dialog import BARESIP_SDP, SIPP_SDP, golden, our_offer


def test_sdp_from_sipp_and_baresip_round_trips_byte_for_byte() -> None:
    for body in (SIPP_SDP, BARESIP_SDP, bytes(our_offer())):
        assert bytes(SessionDescription.parse(body)) == body


def test_baresip_sdp_fields() -> None:
    sdp = SessionDescription.parse(BARESIP_SDP)
    assert sdp.origin.username == "-" and sdp.origin.version == 1716902339
    assert sdp.connection == Connection("127.0.0.1") and sdp.attributes == [
        ("tool", "baresip 1.0.0")
    ]
    audio = sdp.audio()
    assert (audio.kind, audio.port, audio.proto, audio.formats) == (
        "audio",
        10000,
        "RTP/AVP",
        ["0", "96"],
    )
    assert audio.rtpmap() == {0: ("PCMU", 8000), 96: ("telephone-event", 8000)}
    assert audio.ptime == 20 and audio.bandwidths == ["TIAS:64000"]
    assert ("ssrc", "1452210553 cname:c1a4bd3e-7a5b-4d27-91f1-bb0c3c6a8fa9") in audio.attributes


def test_our_offer() -> None:
    offer = our_offer()
    assert bytes(offer) == golden("ringflow_invite.sip").split(b"\r\n\r\n", 1)[1]
    audio = offer.audio()
    assert audio.formats == ["0", "8", "101"] and ("sendrecv", None) in audio.attributes


def test_answer_from_sipp_picks_pcmu_without_dtmf() -> None:
    plan = accept_answer(our_offer(), SessionDescription.parse(SIPP_SDP))
    assert plan.remote == ("127.0.0.1", 6000) and plan.codec == PCMU
    assert plan.dtmf_pt is None and plan.dtmf_receive == frozenset({101})
    assert plan.ptime == 20 and plan.direction is Direction.SENDRECV


def test_telephone_event_payload_type_comes_from_the_answer() -> None:
    plan = accept_answer(our_offer(), SessionDescription.parse(BARESIP_SDP))
    assert plan.dtmf_pt == 96  # we send with the answer's number...
    assert plan.dtmf_receive == frozenset({96, 101})  # ...and accept ours and theirs


def _answer(media: str, extra: str = "", session_c: bool = True) -> SessionDescription:
    c = "c=IN IP4 192.0.2.5\r\n" if session_c else ""
    return SessionDescription.parse(
        f"v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\n{c}t=0 0\r\n{media}\r\n{extra}"
    )


def test_pcma_answer_ptime_direction_and_media_level_connection() -> None:
    answer = _answer(
        "m=audio 7000 RTP/AVP 8 101",
        "c=IN IP4 198.51.100.9\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 TELEPHONE-EVENT/8000\r\na=ptime:30\r\na=recvonly\r\n",
    )
    plan = accept_answer(our_offer(), answer)
    assert plan.codec == PCMA and plan.remote == ("198.51.100.9", 7000)
    assert plan.ptime == 30 and plan.dtmf_pt == 101
    assert plan.direction is Direction.SENDONLY  # they only receive: we only send


def test_telephone_event_listed_first_is_not_taken_for_the_codec() -> None:
    answer = _answer(
        "m=audio 7000 RTP/AVP 101 8",
        "a=rtpmap:101 telephone-event/8000\r\na=rtpmap:8 PCMA/8000\r\n",
    )
    plan = accept_answer(our_offer(), answer)
    assert plan.codec == PCMA and plan.dtmf_pt == 101


@pytest.mark.parametrize(
    ("media", "extra", "session_c"),
    [
        ("m=audio 0 RTP/AVP 0", "", True),  # rejected stream
        ("m=audio 7000 RTP/AVP 18", "a=rtpmap:18 G729/8000\r\n", True),  # no common codec
        ("m=audio 7000 RTP/AVP 0", "", False),  # no connection address
        ("m=video 7000 RTP/AVP 96", "", True),  # no audio at all
        ("m=audio 7000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000\r\n", True),  # wrong clock rate
    ],
)
def test_unusable_answers(media: str, extra: str, session_c: bool) -> None:
    with pytest.raises(NegotiationError):
        accept_answer(our_offer(), _answer(media, extra, session_c))


@pytest.mark.parametrize(
    "body",
    [
        "",
        "v=1\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\ns=-\r\no=- 1 1 IN IP4 a\r\nt=0 0\r\n",
        "v=0\r\no=- x 1 IN IP4 a\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\n",
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP\r\n",
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4\r\nt=0 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\nt=0 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nx=unknown\r\n",
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nbroken line\r\n",
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\na=\r\n",
    ],
)
def test_malformed_sdp(body: str) -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse(body)


def test_other_lines_keep_their_rfc4566_places() -> None:
    text = (
        "v=0\r\no=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\ns=\r\n"
        "i=A call\r\nc=IN IP4 host.atlanta.example.com\r\nb=AS:64\r\nt=0 0\r\n"
        "m=audio 49170 RTP/AVP 0 8 97\r\ni=voice\r\nb=AS:64\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:97 iLBC/8000\r\n"
        "m=video 51372 RTP/AVP 31 32\r\na=rtpmap:31 H261/90000\r\na=rtpmap:32 MPV/90000\r\n"
    )
    sdp = SessionDescription.parse(text)
    assert str(sdp) == text and sdp.name == "" and len(sdp.media) == 2


def test_answering_a_reoffer_keeps_the_version_while_nothing_changes() -> None:
    offer = build_sdp("10.0.0.1", 40000, session_id=7, version=1, codecs=(PCMU, PCMA))
    hold = SessionDescription.parse(BARESIP_SDP.replace(b"a=sendrecv", b"a=sendonly"))
    answer, plan = answer_offer(hold, offer)
    assert answer.origin.version == 2 and answer.audio().formats == ["0", "96"]
    assert plan.direction is Direction.RECVONLY and plan.remote == ("127.0.0.1", 10000)
    again, _ = answer_offer(hold, answer)
    assert bytes(again) == bytes(answer)
    resumed, plan = answer_offer(SessionDescription.parse(BARESIP_SDP), answer)
    assert resumed.origin.version == 3 and plan.direction is Direction.SENDRECV


def test_reoffer_keeps_the_codec_in_use_when_offered() -> None:
    both = _answer("m=audio 7000 RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n")
    offer = build_sdp("10.0.0.1", 40000, session_id=7, version=1, codecs=(PCMU, PCMA))
    _, plan = answer_offer(both, offer, prefer=PCMA)
    assert plan.codec == PCMA
    _, plan = answer_offer(both, offer, prefer=Codec("G722", 9))
    assert plan.codec == PCMU


def test_direction_reverse() -> None:
    assert [d.reverse() for d in Direction] == [
        Direction.SENDRECV,
        Direction.RECVONLY,
        Direction.SENDONLY,
        Direction.INACTIVE,
    ]
