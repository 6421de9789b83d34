"""ExoML without a call: the parser and validator on golden and hostile documents, and the
``exoml`` applet's generator driven by hand."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ringflow.errors import AppInvalid, InvalidRequest
from ringflow.flows import exoml
from ringflow.flows.actions import (
    HANGUP,
    CollectDigits,
    Dial,
    DialResult,
    HttpGet,
    HttpResult,
    Play,
    Record,
    RecordResult,
    Say,
)
from ringflow.flows.applets import REGISTRY
from ringflow.flows.applets import exoml as applet
from ringflow.flows.context import FlowContext
from ringflow.flows.model import Node, parse_app
from tests.flowkit import ctx

BASE = "https://cust.example/ivr/start"
UTC = dt.UTC


def parse(body: str, url: str = BASE) -> exoml.Document:
    return exoml.parse(body, url)


def response(*verbs: str) -> str:
    return "<Response>" + "".join(verbs) + "</Response>"


def problems(body: str | bytes) -> list[str]:
    with pytest.raises(exoml.ExomlInvalid) as info:
        exoml.parse(body, BASE)
    assert isinstance(info.value, InvalidRequest)
    return [str(p) for p in info.value.problems]


# --- golden documents, one verb at a time ---------------------------------------------------


def test_a_document_of_every_verb_parses_with_lines_and_absolute_urls():
    body = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Say voice="woman" language="hi" loop="2">
      Namaste,   welcome
  </Say>
  <Play>audio/hello.wav</Play>
  <Gather action="/menu" method="GET" numDigits="4" finishOnKey="*" timeout="6">
    <Say>Enter your PIN</Say>
    <Play loop="3">https://cdn.example/beep.wav</Play>
  </Gather>
  <Dial callerId="08039591234" timeout="20" timeLimit="600" record="true" action="dialed">
    <Number>09812345678</Number>
    <Number>sip:agent@pbx.example</Number>
  </Dial>
  <Record action="https://cust.example/vm" maxLength="60" timeout="3" finishOnKey="#*"
          playBeep="false" method="get"/>
  <Redirect method="GET">../again?step=2</Redirect>
  <Hangup/>
</Response>
"""
    doc = parse(body)
    assert doc.url == BASE
    assert doc.verbs == (
        exoml.Say("Namaste, welcome", voice="woman", language="hi", loop=2, line=3),
        exoml.Play("https://cust.example/ivr/audio/hello.wav", loop=1, line=6),
        exoml.Gather(
            action="https://cust.example/menu",
            prompts=(
                exoml.Say("Enter your PIN", line=8),
                exoml.Play("https://cdn.example/beep.wav", loop=3, line=9),
            ),
            method="GET",
            num_digits=4,
            finish_on_key="*",
            timeout=6,
            line=7,
        ),
        exoml.Dial(
            numbers=("+919812345678", "sip:agent@pbx.example"),
            action="https://cust.example/ivr/dialed",
            method="POST",
            caller_id="+918039591234",
            timeout=20,
            time_limit=600,
            record=True,
            line=11,
        ),
        exoml.Record(
            action="https://cust.example/vm",
            method="GET",
            max_length=60,
            timeout=3,
            finish_on_key="#*",
            play_beep=False,
            line=15,
        ),
        exoml.Redirect("https://cust.example/again?step=2", method="GET", line=17),
        exoml.Hangup(line=18),
    )


def test_defaults_follow_exotel():
    doc = parse(
        response("<Gather/>", "<Dial>09812345678</Dial>", "<Record/>", "<Redirect>x</Redirect>")
    )
    gather, dial, record, redirect = doc.verbs
    # Gather and Record without an action go back to the document's own URL.
    assert gather == exoml.Gather(action=BASE, num_digits=exoml.MAX_DIGITS, line=1)
    assert (gather.method, gather.finish_on_key, gather.timeout) == ("POST", "#", 5)
    assert dial == exoml.Dial(numbers=("+919812345678",), line=1)
    assert (dial.action, dial.timeout, dial.time_limit, dial.record) == (None, 30, 14400, False)
    assert record == exoml.Record(action=BASE, line=1)
    assert (record.max_length, record.finish_on_key, record.play_beep) == (
        3600,
        "1234567890*#",
        True,
    )
    assert redirect.url == "https://cust.example/ivr/x" and redirect.method == "POST"


def test_an_empty_response_is_a_document_with_no_verbs():
    assert parse("<Response/>").verbs == ()
    assert parse("<Response>\n  <!-- nothing to do -->\n</Response>").verbs == ()


def test_gather_takes_max_digits_as_an_alias_and_an_empty_finish_key():
    [gather] = parse(response('<Gather maxDigits="3" finishOnKey=""/>')).verbs
    assert (gather.num_digits, gather.finish_on_key) == (3, "")


def test_say_text_may_use_entities_and_cdata():
    [say] = parse(response("<Say>Tom &amp; Jerry <![CDATA[<3]]></Say>")).verbs
    assert say.text == "Tom & Jerry <3"


def test_bytes_are_read_in_their_declared_encoding():
    body = '<?xml version="1.0" encoding="ISO-8859-1"?><Response><Say>caf\xe9</Say></Response>'
    [say] = exoml.parse(body.encode("latin-1"), BASE).verbs
    assert say.text == "caf\xe9"


def test_dial_text_number_or_sip_uri():
    [a, b] = parse(
        response("<Dial>+1 415 555 0100</Dial>", "<Dial> sip:x@pbx.example </Dial>")
    ).verbs
    assert a.numbers == ("+14155550100",) and b.numbers == ("sip:x@pbx.example",)


# --- every invalid case, with its message ---------------------------------------------------

INVALID = [
    ("<Say>hi</Say>", "line 1 <Say>: the root element must be <Response>"),
    ('<Response lang="en"/>', "line 1 <Response> attribute 'lang': not an attribute of Response (takes no attributes)"),
    (response("text"), "line 1 <Response>: unexpected text 'text'"),
    (response("<Pause/>"), "line 1 <Pause>: not an ExoML verb (Say, Play, Gather, Dial, Record, Redirect, Hangup)"),
    (response("<say>hi</say>"), "line 1 <say>: not an ExoML verb (Say, Play, Gather, Dial, Record, Redirect, Hangup)"),
    (response("<Say/>"), "line 1 <Say>: needs the text to speak"),
    (response("<Say>  </Say>"), "line 1 <Say>: needs the text to speak"),
    (response(f"<Say>{'a' * 4001}</Say>"), "line 1 <Say>: text longer than 4000 characters"),
    (response('<Say colour="red">hi</Say>'), "line 1 <Say> attribute 'colour': not an attribute of Say (takes voice, language, loop)"),
    (response('<Say loop="two">hi</Say>'), "line 1 <Say> attribute 'loop': 'two' is not a whole number from 1 to 10"),
    (response('<Say loop="11">hi</Say>'), "line 1 <Say> attribute 'loop': '11' is not a whole number from 1 to 10"),
    (response('<Say loop="-1">hi</Say>'), "line 1 <Say> attribute 'loop': '-1' is not a whole number from 1 to 10"),
    (response('<Say loop="0">hi</Say>'), "line 1 <Say> attribute 'loop': 0 (repeat until interrupted) is not supported; use 1 to 10"),
    (response('<Say voice="a b">hi</Say>'), "line 1 <Say> attribute 'voice': 'a b' is not a voice name such as 'woman' or 'man'"),
    (response('<Say language="english!">hi</Say>'), "line 1 <Say> attribute 'language': 'english!' is not a language code such as 'en' or 'hi-IN'"),
    (response("<Say>hi <break/> there</Say>"), "line 1 <break>: not allowed inside <Say>: Say holds only the text to speak (SSML is not supported)"),
    (response("<Play/>"), "line 1 <Play>: needs the URL of the audio to play"),
    (response("<Play>ftp://cdn.example/a.wav</Play>"), "line 1 <Play>: 'ftp://cdn.example/a.wav' is not an http or https URL"),
    (response("<Play>javascript:alert(1)</Play>"), "line 1 <Play>: 'javascript:alert(1)' is not an http or https URL"),
    (response("<Play>http://a b/x.wav</Play>"), "line 1 <Play>: 'http://a b/x.wav' is not a valid URL"),
    (response("<Play>http://cdn.example:99999/a.wav</Play>"), "line 1 <Play>: 'http://cdn.example:99999/a.wav' is not a valid URL"),
    (response("<Play>http:///a.wav</Play>"), "line 1 <Play>: 'http:///a.wav' is not an http or https URL"),
    (response(f"<Play>https://cdn.example/{'a' * 2100}</Play>"), "line 1 <Play>: the URL is longer than 2048 characters"),
    (response('<Gather numDigits="abc"/>'), "line 1 <Gather> attribute 'numDigits': 'abc' is not a whole number from 1 to 32"),
    (response('<Gather numDigits="0"/>'), "line 1 <Gather> attribute 'numDigits': '0' is not a whole number from 1 to 32"),
    (response('<Gather numDigits="1.5"/>'), "line 1 <Gather> attribute 'numDigits': '1.5' is not a whole number from 1 to 32"),
    (response('<Gather numDigits="99999999999999999999"/>'), "line 1 <Gather> attribute 'numDigits': '99999999999999999999' is not a whole number from 1 to 32"),
    (response('<Gather numDigits="2" maxDigits="3"/>'), "line 1 <Gather> attribute 'maxDigits': give numDigits or its alias maxDigits, not both"),
    (response('<Gather timeout="0"/>'), "line 1 <Gather> attribute 'timeout': '0' is not a whole number from 1 to 60"),
    (response('<Gather finishOnKey="##"/>'), "line 1 <Gather> attribute 'finishOnKey': '##' is not one key of 0-9, * or # (or empty for none)"),
    (response('<Gather finishOnKey="a"/>'), "line 1 <Gather> attribute 'finishOnKey': 'a' is not one key of 0-9, * or # (or empty for none)"),
    (response('<Gather method="PUT"/>'), "line 1 <Gather> attribute 'method': 'PUT' is not GET or POST"),
    (response('<Gather action="mailto:x@y.example"/>'), "line 1 <Gather> attribute 'action': 'mailto:x@y.example' is not an http or https URL"),
    (response('<Gather action=""/>'), "line 1 <Gather> attribute 'action': must be a URL, not empty"),
    (response("<Gather><Redirect>x</Redirect></Gather>"), "line 1 <Redirect>: only Say and Play may be nested in Gather"),
    (response("<Gather>press 1</Gather>"), "line 1 <Gather>: unexpected text 'press 1'"),
    (response("<Dial/>"), "line 1 <Dial>: needs the number to dial"),
    (response("<Dial>12</Dial>"), "line 1 <Dial>: the number '12' is not a valid phone number: it is too short"),
    (response("<Dial>call me</Dial>"), "line 1 <Dial>: the number 'call me' is not a valid phone number: it may contain only digits, a leading '+', spaces, hyphens, dots and brackets"),
    (response("<Dial>09812345678<Number>09812345679</Number></Dial>"), "line 1 <Dial>: holds either a number as text or <Number> elements, not both"),
    (response("<Dial><Say>hi</Say></Dial>"), "line 1 <Say>: only Number may be nested in Dial"),
    (response("<Dial><Number/></Dial>"), "line 1 <Number>: needs the number to dial"),
    (response('<Dial><Number sendDigits="1">09812345678</Number></Dial>'), "line 1 <Number> attribute 'sendDigits': not an attribute of Number (takes no attributes)"),
    (response("<Dial>" + "<Number>09812345678</Number>" * 11 + "</Dial>"), "line 1 <Dial>: dials more than 10 numbers"),
    (response('<Dial timeout="601">09812345678</Dial>'), "line 1 <Dial> attribute 'timeout': '601' is not a whole number from 1 to 600"),
    (response('<Dial timeLimit="14401">09812345678</Dial>'), "line 1 <Dial> attribute 'timeLimit': '14401' is not a whole number from 1 to 14400"),
    (response('<Dial record="yes">09812345678</Dial>'), "line 1 <Dial> attribute 'record': 'yes' is not true or false"),
    (response('<Dial callerId="x">09812345678</Dial>'), "line 1 <Dial> attribute 'callerId': the number 'x' is not a valid phone number: it may contain only digits, a leading '+', spaces, hyphens, dots and brackets"),
    (response('<Record maxLength="0"/>'), "line 1 <Record> attribute 'maxLength': '0' is not a whole number from 1 to 3600"),
    (response('<Record maxLength="3601"/>'), "line 1 <Record> attribute 'maxLength': '3601' is not a whole number from 1 to 3600"),
    (response('<Record finishOnKey="1a"/>'), "line 1 <Record> attribute 'finishOnKey': '1a' is not a set of keys from 0-9, * and #"),
    (response('<Record playBeep="1"/>'), "line 1 <Record> attribute 'playBeep': '1' is not true or false"),
    (response("<Record>x</Record>"), "line 1 <Record>: unexpected text 'x'"),
    (response("<Redirect/>"), "line 1 <Redirect>: needs the URL of the next document"),
    (response("<Redirect>file:///etc/passwd</Redirect>"), "line 1 <Redirect>: 'file:///etc/passwd' is not an http or https URL"),
    (response('<Redirect method="DELETE">x</Redirect>'), "line 1 <Redirect> attribute 'method': 'DELETE' is not GET or POST"),
    (response("<Hangup>now</Hangup>"), "line 1 <Hangup>: unexpected text 'now'"),
    (response('<Hangup reason="x"/>'), "line 1 <Hangup> attribute 'reason': not an attribute of Hangup (takes no attributes)"),
    (response("<Hangup><Say>bye</Say></Hangup>"), "line 1 <Say>: not allowed inside <Hangup>: Hangup holds nothing"),
    (response("<Say>" * 301 + "x" + "</Say>" * 301), "line 1: the document has elements nested more than 6 deep"),
    (response("<Hangup/>" * 101), "line 1 <Response>: holds more than 100 verbs"),
    (response("<Hangup/>" * 600), "line 1: the document has more than 500 elements"),
    ('<Response xmlns="http://www.twilio.com/"><Hangup/></Response>', "line 1 <{http://www.twilio.com/}Response>: the root element must be <Response>"),
    # Not XML at all, or XML that would make the parser do dangerous work.
    ("", "the document is empty"),
    ("   \n", "the document is empty"),
    ("hello", "line 1: not well-formed XML: syntax error"),
    ("<Response>", "line 1: not well-formed XML: no element found"),
    ("<Response></Respons>", "line 1: not well-formed XML: mismatched tag"),
    ("<Response/><Response/>", "line 1: not well-formed XML: junk after document element"),
    ("<Response>\n<Say>&nbsp;</Say></Response>", "line 2: not well-formed XML: undefined entity"),
    ("<Response><x:Say/></Response>", "line 1: not well-formed XML: unbound prefix"),
    ("<Response>\x00</Response>", "line 1: not well-formed XML: not well-formed (invalid token)"),
    ("\ud800", "the document is not valid Unicode text"),
    (
        (
            '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>\n'
            "<Response><Say>&lol2;</Say></Response>"
        ),
        "line 2: DTDs and entity declarations are not allowed in ExoML",
    ),
    (
        '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response><Say>&x;</Say></Response>',
        "line 1: DTDs and entity declarations are not allowed in ExoML",
    ),
    ("<Response>" + " " * (64 * 1024) + "</Response>", "the document is larger than 64 KiB"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), INVALID, ids=[m[:60] for _, m in INVALID])
def test_invalid_documents_are_refused_with_line_element_and_attribute(body, message):
    assert problems(body) == [message]


def test_every_problem_of_a_document_is_reported_at_once():
    body = """<Response>
  <Say loop="x" colour="red"/>
  <Gather numDigits="abc" action="ftp://x"><Hangup/></Gather>
  <Dance/>
</Response>"""
    assert problems(body) == [
        "line 2 <Say> attribute 'loop': 'x' is not a whole number from 1 to 10",
        "line 2 <Say> attribute 'colour': not an attribute of Say (takes voice, language, loop)",
        "line 2 <Say>: needs the text to speak",
        "line 3 <Gather> attribute 'numDigits': 'abc' is not a whole number from 1 to 32",
        "line 3 <Gather> attribute 'action': 'ftp://x' is not an http or https URL",
        "line 3 <Hangup>: only Say and Play may be nested in Gather",
        "line 4 <Dance>: not an ExoML verb (Say, Play, Gather, Dial, Record, Redirect, Hangup)",
    ]


def test_the_message_is_cut_after_twenty_problems():
    with pytest.raises(exoml.ExomlInvalid) as info:
        parse(response("<Pause/>" * 25))
    assert len(info.value.problems) == 25
    assert str(info.value).endswith("; and 5 more problems")


def test_a_problem_names_its_parts():
    problem = exoml.Problem("bad", line=3, element="Gather", attribute="numDigits")
    assert (problem.line, problem.element, problem.attribute) == (3, "Gather", "numDigits")
    assert str(problem) == "line 3 <Gather> attribute 'numDigits': bad"
    assert str(exoml.Problem("empty")) == "empty"


# --- property tests: anything in, a Document or ExomlInvalid out ----------------------------

FRAGMENTS = [
    "<", ">", "</", "/>", "=", '"', "'", " ", "\n", "&", ";", "&amp;", "&lt;", "&#65;", "&#0;",
    "Response", "Say", "Play", "Gather", "Dial", "Number", "Record", "Redirect", "Hangup", "Pause",
    "numDigits", "loop", "action", "timeout", "finishOnKey", "1", "0", "-1", "x", "#", "http://a.example/",
    "<?xml version='1.0'?>", "<!DOCTYPE r>", "<!ENTITY e 'x'>", "<![CDATA[", "]]>", "<!--", "-->",
    "xmlns='u'", "p:", "\x00", "\u00e9", "\U0001f600",
]  # fmt: skip


def _parse_or_refuse(body: str | bytes) -> exoml.Document | None:
    try:
        return exoml.parse(body, BASE)
    except exoml.ExomlInvalid as exc:
        assert exc.problems and all(str(p) for p in exc.problems)
        return None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join) | st.text(max_size=200))
def test_random_xmlish_text_parses_or_is_refused_never_crashes(body):
    _parse_or_refuse(body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_parse_or_are_refused(body):
    _parse_or_refuse(b"<Response>" + body + b"</Response>")
    _parse_or_refuse(body)


@dataclasses.dataclass
class El:
    tag: str
    attrs: dict[str, str]
    text: str
    children: list[El]

    def xml(self) -> str:
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in self.attrs.items())
        inner = escape(self.text) + "".join(c.xml() for c in self.children)
        return f"<{self.tag}{attrs}>{inner}</{self.tag}>"


ALL_ATTRS = sorted(
    {*exoml.SAY_ATTRS, *exoml.GATHER_ATTRS, *exoml.DIAL_ATTRS, *exoml.RECORD_ATTRS, "colour", "x-y"}
)
VALUES = st.sampled_from(
    ["1", "5", "0", "11", "abc", "true", "false", "GET", "POST", "#", "", "*#", "hi", "en",
     "09812345678", "+14155550100", "/next", "ftp://x", "https://a.example/n", " 7 ", "woman"]
) | st.text(max_size=12)  # fmt: skip
TAGS = st.sampled_from([*exoml.VERBS, "Number", "Response", "Pause", "say", "Foo"])
TEXTS = st.sampled_from(
    ["", "hi", " ", "09812345678", "https://a.example/a.wav", "next", "sip:x@y"]
)

trees = st.recursive(
    st.builds(El, TAGS, st.dictionaries(st.sampled_from(ALL_ATTRS), VALUES, max_size=3), TEXTS, st.just([])),
    lambda kids: st.builds(
        El, TAGS, st.dictionaries(st.sampled_from(ALL_ATTRS), VALUES, max_size=3), TEXTS,
        st.lists(kids, max_size=4),
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(trees, max_size=6))
def test_random_trees_of_known_and_unknown_elements_parse_fully_or_explain(verbs):
    doc = _parse_or_refuse(El("Response", {}, "", verbs).xml())
    if doc is None:
        return
    # What parses is fully checked: absolute http(s) URLs, numbers in range, known verbs only.
    assert len(doc.verbs) == len(verbs)
    for verb in doc.verbs:
        _assert_sound(verb)


def _assert_sound(verb: exoml.Verb) -> None:
    assert isinstance(
        verb,
        exoml.Say
        | exoml.Play
        | exoml.Gather
        | exoml.Dial
        | exoml.Record
        | exoml.Redirect
        | exoml.Hangup,
    )
    for field in ("url", "action"):
        value = getattr(verb, field, None)
        if value is not None:
            assert exoml.resolve_url(value, BASE) == value
    if isinstance(verb, exoml.Say | exoml.Play):
        assert 1 <= verb.loop <= exoml.MAX_LOOP
    if isinstance(verb, exoml.Say):
        assert verb.text
    if isinstance(verb, exoml.Gather):
        assert 1 <= verb.num_digits <= exoml.MAX_DIGITS and 1 <= verb.timeout <= 60
        assert verb.finish_on_key in ("", *exoml.KEYS)
        for prompt in verb.prompts:
            _assert_sound(prompt)
    if isinstance(verb, exoml.Dial):
        assert 1 <= len(verb.numbers) <= exoml.MAX_NUMBERS
        assert all(n.startswith(("+", "sip:")) for n in verb.numbers)


# Valid trees always parse: the property above must not pass by refusing everything.
say = st.builds(
    lambda text, loop: El("Say", {"loop": str(loop)}, text, []),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xD7FF), min_size=1, max_size=20).filter(str.strip),
    st.integers(1, 10),
)  # fmt: skip
play = st.builds(
    lambda path: El("Play", {}, f"/audio/{path}.wav", []),
    st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
)
gather = st.builds(
    lambda prompts, n, key: El("Gather", {"numDigits": str(n), "finishOnKey": key}, "", prompts),
    st.lists(say | play, max_size=3),
    st.integers(1, 32),
    st.sampled_from(["", *exoml.KEYS]),
)
valid_verb = (
    say
    | play
    | gather
    | st.just(El("Hangup", {}, "", []))
    | st.just(El("Redirect", {}, "next", []))
)


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_verb, max_size=8))
def test_valid_trees_always_parse(verbs):
    doc = exoml.parse(El("Response", {}, "", verbs).xml(), BASE)
    assert [type(v).__name__ for v in doc.verbs] == [v.tag for v in verbs]


# --- the applet, as a generator -------------------------------------------------------------


def xml(body: str, status: int = 200) -> HttpResult:
    return HttpResult(status, "application/xml", body)


class Customer:
    """Answers each HttpGet from a list of results, each CollectDigits from a list of keys,
    each Dial and Record from lists of their results."""

    def __init__(
        self,
        *documents: HttpResult,
        keys: tuple[str, ...] = (),
        dials: tuple[DialResult, ...] = (),
        records: tuple[RecordResult, ...] = (),
    ):
        self.documents = list(documents)
        self.keys = list(keys)
        self.dials = list(dials)
        self.records = list(records)

    def __call__(self, action: Any) -> Any:
        if isinstance(action, HttpGet):
            return self.documents.pop(0) if self.documents else xml(response())
        if isinstance(action, CollectDigits):
            return self.keys.pop(0) if self.keys else ""
        if isinstance(action, Dial):
            return self.dials.pop(0)
        if isinstance(action, Record):
            return self.records.pop(0)
        return None


def drive(
    context: FlowContext, answer: Callable[[Any], Any], **config: Any
) -> tuple[list[Any], str]:
    """Run the exoml applet on ``config``; return (actions yielded, exit)."""
    config.setdefault("url", BASE)
    node = Node(name="n", applet="exoml", config=config, exits={"next": None, "on_error": None})
    gen = applet.SPEC.run(node, context)
    actions: list[Any] = []
    result = None
    try:
        while True:
            action = gen.send(result)
            actions.append(action)
            result = answer(action)
    except StopIteration as stop:
        return actions, stop.value


def gets(actions: list[Any]) -> list[HttpGet]:
    return [a for a in actions if isinstance(a, HttpGet)]


def test_say_and_gather_send_the_digits_to_the_action_whose_answer_runs_next():
    context = ctx()
    first = response(
        '<Say language="hi">Namaste</Say>',
        '<Gather action="/pin" numDigits="4" finishOnKey="*" timeout="7"><Say>Your PIN</Say></Gather>',
        "<Say>never reached</Say>",
    )
    second = response("<Say>Thank you</Say>", "<Hangup/>", "<Say>never reached</Say>")
    actions, taken = drive(context, Customer(xml(first), xml(second), keys=("1234",)))
    assert taken == HANGUP
    start, pin = gets(actions)
    assert start.url == BASE and start.params["CallSid"] == "abc" and "digits" not in start.params
    assert start.timeout == 10.0 and start.wait
    assert pin.url == "https://cust.example/pin"
    assert pin.params["digits"] == '"1234"'  # quoted, as Passthru sends it
    assert {k: v for k, v in pin.params.items() if k != "digits"} == start.params
    assert [a for a in actions if not isinstance(a, HttpGet)] == [
        Say("Namaste", "hi"),
        Say("Your PIN", None),
        CollectDigits(max_digits=4, timeout=7.0, finish_on="*"),
        Say("Thank you", None),
    ]
    assert context.vars["digits"] == "1234" and "exoml_error" not in context.vars


def test_a_gather_without_keys_goes_on_to_the_next_verb_and_the_end_leaves_by_next():
    doc = response('<Gather><Play loop="2">a.wav</Play></Gather>', "<Say>No input</Say>")
    actions, taken = drive(ctx(), Customer(xml(doc)))
    assert taken == "next"
    assert actions[1:] == [
        Play("https://cust.example/ivr/a.wav"),
        Play("https://cust.example/ivr/a.wav"),
        CollectDigits(max_digits=exoml.MAX_DIGITS, timeout=5.0, finish_on="#"),
        Say("No input", None),
    ]


def test_say_loops():
    actions, _ = drive(ctx(), Customer(xml(response('<Say loop="3">again</Say>'))))
    assert actions[1:] == [Say("again", None)] * 3


def test_redirects_are_followed_in_order():
    docs = [
        xml(response("<Say>one</Say>", "<Redirect>two</Redirect>", "<Say>skipped</Say>")),
        xml(response("<Redirect>/three?x=1</Redirect>")),
        xml(response("<Say>three</Say>")),
    ]
    actions, taken = drive(ctx(), Customer(*docs))
    assert taken == "next"
    assert [g.url for g in gets(actions)] == [
        BASE,
        "https://cust.example/ivr/two",
        "https://cust.example/three?x=1",
    ]
    assert [a.text for a in actions if isinstance(a, Say)] == ["one", "three"]


def test_a_redirect_loop_stops_at_the_bound():
    context = ctx()
    loop = xml(response("<Redirect>start</Redirect>"))
    actions, taken = drive(context, lambda a: loop)
    assert taken == "on_error"
    assert len(gets(actions)) == applet.DEFAULT_MAX_DOCUMENTS
    assert context.vars["exoml_error"] == (
        "more than 10 ExoML documents in one visit (a Redirect or Gather loop?)"
    )


def test_the_bound_is_configurable():
    loop = xml(response("<Redirect>start</Redirect>"))
    actions, taken = drive(ctx(), lambda a: loop, max_documents=3, timeout=2)
    assert taken == "on_error" and len(gets(actions)) == 3
    assert all(g.timeout == 2.0 for g in gets(actions))


def test_a_gather_loop_counts_against_the_bound_too():
    menu = xml(response("<Gather numDigits='1'><Say>Press a key</Say></Gather>"))
    actions, taken = drive(ctx(), Customer(*[menu] * 20, keys=("5",) * 20))
    assert taken == "on_error" and len(gets(actions)) == 10
    assert all(g.params["digits"] == '"5"' for g in gets(actions)[1:])


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (HttpResult(None, error="no answer within 10s"), f"GET {BASE}: no answer within 10s"),
        (HttpResult(None), f"GET {BASE}: no answer"),
        (None, f"GET {BASE}: no answer"),
        (HttpResult(500, "text/plain", "oops"), f"GET {BASE}: answered 500"),
        (HttpResult(302, "text/plain", ""), f"GET {BASE}: answered 302"),
        (xml(""), f"{BASE}: invalid ExoML: the document is empty"),
        (
            xml("<Response>\n<Say>ok</Say>\n<Gather numDigits='x'/></Response>"),
            f"{BASE}: invalid ExoML: line 3 <Gather> attribute 'numDigits': 'x' is not a whole number from 1 to 32",
        ),
    ],
)
def test_errors_leave_by_on_error_with_the_reason(result, reason):
    context = ctx(exoml_error="left over from an earlier visit")
    _, taken = drive(context, Customer(result))
    assert taken == "on_error"
    assert context.vars["exoml_error"] == reason


def test_an_invalid_document_plays_nothing_at_all():
    bad = xml(response("<Say>Welcome</Say>", "<Play>a.wav</Play>", "<Gather numDigits='x'/>"))
    actions, taken = drive(ctx(), Customer(bad))
    assert taken == "on_error"
    assert all(isinstance(a, HttpGet) for a in actions)


def test_an_invalid_next_document_ends_the_visit_after_what_already_played():
    actions, taken = drive(
        ctx(), Customer(xml(response("<Say>one</Say>", "<Redirect>n</Redirect>")), xml("<Response"))
    )
    assert taken == "on_error"
    assert [a.text for a in actions if isinstance(a, Say)] == ["one"]


def test_a_successful_visit_clears_an_old_error():
    context = ctx(exoml_error="old")
    _, taken = drive(context, Customer(xml(response("<Say>hi</Say>"))))
    assert taken == "next" and "exoml_error" not in context.vars


REC = "https://ringflow.example/v1/Accounts/acme/Recordings/re1.mp3"


def test_dial_rings_the_numbers_in_turn_and_goes_on_with_the_next_verb_without_action():
    context = ctx()
    doc = response(
        '<Dial callerId="08039591234" timeout="20" timeLimit="600" record="true">'
        "<Number>09812345679</Number><Number>sip:agent@pbx.example</Number></Dial>",
        "<Say>After the call</Say>",
    )
    answered = DialResult("completed", "+919812345679", 42, recording_url=REC)
    actions, taken = drive(context, Customer(xml(doc), dials=(answered,)))
    assert taken == "next"
    assert actions[1:] == [
        Dial(
            numbers=("+919812345679", "sip:agent@pbx.example"),
            ring_timeout=20.0,
            simultaneous=False,
            caller_id="+918039591234",
            max_conversation=600.0,
            record=True,
        ),
        Say("After the call", None),
    ]
    assert context.vars["DialCallStatus"] == "completed"
    assert context.vars["DialCallDuration"] == "42"
    assert context.vars["DialWhomNumber"] == "09812345679"
    assert context.vars["RecordingUrl"] == REC


def test_dial_defaults():
    doc = xml(response("<Dial>09812345679</Dial>"))
    actions, _ = drive(ctx(), Customer(doc, dials=(DialResult("busy"),)))
    assert actions[1] == Dial(
        numbers=("+919812345679",), ring_timeout=30.0, max_conversation=14400.0, record=False
    )


def test_dial_with_action_sends_the_outcome_and_runs_the_answer():
    context = ctx()
    doc = response('<Dial action="/dialed">09812345679</Dial>', "<Say>never reached</Say>")
    after = response("<Say>Nobody answered</Say>", "<Hangup/>")
    actions, taken = drive(
        context, Customer(xml(doc), xml(after), dials=(DialResult("no-answer", "+919812345679"),))
    )
    assert taken == HANGUP
    start, dialed = gets(actions)
    assert dialed.url == "https://cust.example/dialed"
    assert "DialCallStatus" not in start.params
    assert dialed.params["DialCallStatus"] == "no-answer"
    assert dialed.params["DialCallDuration"] == "0"
    assert dialed.params["DialWhomNumber"] == "09812345679"
    assert dialed.params["CallSid"] == "abc" and "RecordingUrl" not in dialed.params
    assert [a.text for a in actions if isinstance(a, Say)] == ["Nobody answered"]


def test_record_with_action_sends_the_url_and_the_key_and_runs_the_answer():
    context = ctx(digits="12")  # an earlier Gather's keys: replaced by the key that ended it
    doc = response(
        "<Say>Leave a message</Say>",
        '<Record action="/vm" maxLength="60" timeout="3" finishOnKey="#*" playBeep="false"/>',
        "<Say>never reached</Say>",
    )
    after = response("<Say>Thanks</Say>")
    heard = RecordResult(REC, 7.5, digits="#", ended_by="key", sid="re1")
    actions, taken = drive(context, Customer(xml(doc), xml(after), records=(heard,)))
    assert taken == "next"
    assert [a for a in actions if not isinstance(a, HttpGet)] == [
        Say("Leave a message", None),
        Record(max_length=60.0, finish_on="#*", beep=False, silence_timeout=3.0),
        Say("Thanks", None),
    ]
    _, vm = gets(actions)
    assert vm.url == "https://cust.example/vm"
    assert vm.params["RecordingUrl"] == REC and vm.params["digits"] == '"#"'
    assert vm.params["CallType"] == "voicemail"
    assert context.vars["RecordingUrl"] == REC


def test_record_without_action_posts_back_to_the_document_and_defaults_follow_exotel():
    heard = RecordResult(REC, 4.0, digits="", ended_by="silence")
    loop = xml(response("<Record/>"))
    actions, taken = drive(ctx(), Customer(loop, xml(response()), records=(heard,)))
    assert taken == "next"
    assert actions[1] == Record(
        max_length=3600.0, finish_on="1234567890*#", beep=True, silence_timeout=5.0
    )
    start, again = gets(actions)
    assert again.url == start.url == BASE
    assert again.params["RecordingUrl"] == REC and again.params["digits"] == '""'


def test_a_silent_record_goes_on_with_the_next_verb_without_asking_the_action():
    context = ctx()
    doc = response('<Record action="/vm"/>', "<Say>We did not hear you</Say>")
    silence = RecordResult(None, ended_by="silence")
    actions, taken = drive(context, Customer(xml(doc), records=(silence,)))
    assert taken == "next"
    assert len(gets(actions)) == 1 and "RecordingUrl" not in context.vars
    assert actions[-1] == Say("We did not hear you", None)


def test_a_caller_who_hangs_up_while_recording_is_told_to_the_action_whose_answer_is_not_run():
    doc = response('<Record action="/vm"/>', "<Say>never reached</Say>")
    heard = RecordResult(REC, 3.0, ended_by="hangup")
    actions, taken = drive(
        ctx(), Customer(xml(doc), xml(response("<Say>not run</Say>")), records=(heard,))
    )
    assert taken == "next"
    _, vm = gets(actions)
    assert vm.url == "https://cust.example/vm" and vm.params["RecordingUrl"] == REC
    assert not any(isinstance(a, Say) for a in actions)


# --- the applet's fields, checked with the app ---------------------------------------------

WITH_EXOML = {**REGISTRY, "exoml": applet.SPEC}


def app(**node: Any) -> dict[str, Any]:
    return {"name": "t", "start": "x", "nodes": {"x": {"applet": "exoml", **node}}}


def test_the_applet_validates_its_fields():
    graph = parse_app(
        app(url=BASE, timeout=5, max_documents=20, next=None, on_error=None), WITH_EXOML
    )
    assert graph.nodes["x"].config == {"url": BASE, "timeout": 5, "max_documents": 20}
    with pytest.raises(AppInvalid) as info:
        parse_app(app(url="ftp://x", timeout=0, max_documents=51, colour="red"), WITH_EXOML)
    assert info.value.problems[:3] == [
        "node 'x': field 'url': 'ftp://x' is not an http or https URL",
        "node 'x': field 'timeout': must be a number of seconds from 1 to 30",
        "node 'x': field 'max_documents': must be a whole number from 1 to 50",
    ]
    with pytest.raises(AppInvalid) as info:
        parse_app(app(), WITH_EXOML)
    assert info.value.problems == ["node 'x': field 'url': required by exoml"]


def test_the_example_app_is_valid():
    data = yaml.safe_load(
        (pathlib.Path(__file__).parent.parent / "examples" / "exoml.yaml").read_text()
    )
    graph = parse_app(data, WITH_EXOML)
    assert graph.nodes[graph.start].applet == "exoml"
