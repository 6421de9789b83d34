"""ExoML, Exotel's TwiML-like XML: parse a customer's ``<Response>`` into typed verbs.

Pure: no I/O. ``parse(text, url)`` reads the whole document, checks every verb and attribute
and returns a ``Document``, or raises ``ExomlInvalid`` listing each problem with its line,
element and attribute. Nothing of a document runs unless all of it is valid, so a caller
never hears half a menu followed by a parse error.

The XML comes from the customer's server, so it is read with ``defusedxml`` (no DTDs, so no
entity expansion or external references), at most ``MAX_BYTES`` long, ``MAX_DEPTH`` deep and
``MAX_ELEMENTS`` elements. Relative URLs resolve against the document's own URL.

Verbs::

    <Response>
      <Say voice="woman" language="en" loop="1">text</Say>
      <Play loop="1">audio URL</Play>
      <Gather action="URL" method="GET|POST" numDigits="4" finishOnKey="#" timeout="5">
        <Say>...</Say> <Play>...</Play>
      </Gather>
      <Dial action="URL" method callerId="number" timeout="30" timeLimit="14400" record="false">
        number, or <Number>number</Number>...
      </Dial>
      <Record action="URL" method maxLength="3600" timeout="5" finishOnKey="#" playBeep="true"/>
      <Redirect method="GET|POST">URL</Redirect>
      <Hangup/>
    </Response>
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from ringflow.errors import InvalidRequest
from ringflow.phone import normalize

MAX_BYTES = 64 * 1024
MAX_DEPTH = 6  # Response > Gather > Say is 3 deep; anything deeper is wrong anyway
MAX_ELEMENTS = 500
MAX_VERBS = 100
MAX_NUMBERS = 10
MAX_TEXT = 4000  # characters one Say may speak
MAX_URL = 2048
MAX_LOOP = 10
MAX_DIGITS = 32  # a Gather without numDigits takes up to this many keys
MAX_PROBLEMS = 20  # reported; a document with more is cut short in the message
KEYS = "0123456789*#"


@dataclasses.dataclass(frozen=True)
class Say:
    """Speak ``text``, ``loop`` times."""

    text: str
    voice: str | None = None
    language: str | None = None
    loop: int = 1
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Play:
    """Play the audio at ``url``, ``loop`` times."""

    url: str
    loop: int = 1
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Gather:
    """Play the prompts, collect keys; the keys go to ``action``, whose answer runs next."""

    action: str
    prompts: tuple[Say | Play, ...] = ()
    method: str = "POST"
    num_digits: int = MAX_DIGITS
    finish_on_key: str = "#"  # "" : no key ends the input early
    timeout: int = 5
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Dial:
    """Connect the caller to the first of ``numbers`` (E.164 or sip: URIs) to answer.

    The numbers ring one after another, in document order, as in Exotel's Connect applet
    (TwiML rings them all at once)."""

    numbers: tuple[str, ...]
    action: str | None = None
    method: str = "POST"
    caller_id: str | None = None  # E.164
    timeout: int = 30
    time_limit: int = 14400
    record: bool = False
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Record:
    """Record the caller; the recording's URL goes to ``action``."""

    action: str
    method: str = "POST"
    max_length: int = 3600
    timeout: int = 5  # seconds of silence that end the recording
    finish_on_key: str = "1234567890*#"
    play_beep: bool = True
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Redirect:
    """Continue with the document at ``url``."""

    url: str
    method: str = "POST"
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Hangup:
    """End the call."""

    line: int = 0


Verb = Say | Play | Gather | Dial | Record | Redirect | Hangup


@dataclasses.dataclass(frozen=True)
class Document:
    """A valid ExoML document: its verbs in order, and the URL it came from."""

    url: str
    verbs: tuple[Verb, ...]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a document, and where."""

    message: str
    line: int | None = None
    element: str | None = None
    attribute: str | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line else []
        if self.element:
            where.append(f"<{self.element}>")
        if self.attribute:
            where.append(f"attribute {self.attribute!r}")
        return f"{' '.join(where)}: {self.message}" if where else self.message


class ExomlInvalid(InvalidRequest):
    """An ExoML document that cannot run; ``problems`` says what is wrong and where."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:MAX_PROBLEMS])
        more = len(problems) - MAX_PROBLEMS
        super().__init__(f"{shown}; and {more} more problems" if more > 0 else shown)


def parse(document: str | bytes, url: str) -> Document:
    """Parse and validate a whole ExoML document fetched from ``url``; raises ExomlInvalid."""
    root = _read_xml(document)
    reader = _Reader(url)
    verbs = reader.response(root)
    if reader.problems:
        raise ExomlInvalid(reader.problems)
    return Document(url=url, verbs=tuple(verbs))


# --- XML to a small tree of elements with their lines -------------------------------------


@dataclasses.dataclass
class _Element:
    tag: str
    attrs: dict[str, str]
    line: int
    children: list[_Element] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts).strip()


class _TooBig(Exception):
    """Raised from inside the XML parser's callbacks when a limit is passed."""


class _Builder:
    """The parser's target: builds ``_Element``s and enforces the depth and size limits."""

    def __init__(self, line: Callable[[], int]):
        self._line = line
        self._stack: list[_Element] = []
        self._count = 0
        self.root: _Element | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self._count += 1
        if self._count > MAX_ELEMENTS:
            raise _TooBig(f"more than {MAX_ELEMENTS} elements")
        if len(self._stack) >= MAX_DEPTH:
            raise _TooBig(f"elements nested more than {MAX_DEPTH} deep")
        element = _Element(tag=tag, attrs=dict(attrs), line=self._line())
        if self._stack:
            self._stack[-1].children.append(element)
        else:
            self.root = element
        self._stack.append(element)

    def end(self, tag: str) -> None:
        self._stack.pop()

    def data(self, text: str) -> None:
        if self._stack:
            self._stack[-1].texts.append(text)

    def close(self) -> _Element | None:
        return self.root


def _read_xml(document: str | bytes) -> _Element:
    if isinstance(document, str):
        try:
            data = document.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ExomlInvalid([Problem("the document is not valid Unicode text")]) from exc
    elif isinstance(document, bytes):
        data = document
    else:
        raise ExomlInvalid([Problem("the document must be text")])
    if not data.strip():
        raise ExomlInvalid([Problem("the document is empty")])
    if len(data) > MAX_BYTES:
        raise ExomlInvalid([Problem(f"the document is larger than {MAX_BYTES // 1024} KiB")])
    builder = _Builder(lambda: parser.parser.CurrentLineNumber)
    parser = DefusedXMLParser(target=builder, forbid_dtd=True)
    try:
        parser.feed(data)
        parser.close()
        # The builder's own answer, typed as ours: the parser's close() passes it through, but
        # its stubs say it returns an ElementTree Element.
        root = builder.close()
    except ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        message = str(exc).split(": line ")[0]
        raise ExomlInvalid([Problem(f"not well-formed XML: {message}", line)]) from exc
    except DefusedXmlException as exc:
        line = parser.parser.CurrentLineNumber
        raise ExomlInvalid(
            [Problem("DTDs and entity declarations are not allowed in ExoML", line)]
        ) from exc
    except _TooBig as exc:
        line = parser.parser.CurrentLineNumber
        raise ExomlInvalid([Problem(f"the document has {exc}", line)]) from exc
    if root is None:  # expat reports a missing root itself; this keeps the type checker honest
        raise ExomlInvalid([Problem("the document has no root element")])
    return root


# --- attribute values -----------------------------------------------------------------------


class _Bad(Exception):
    """An attribute or text value that is wrong; the message says why."""


Check = Callable[[str, str], Any]  # (value, document URL) -> parsed value, or raises _Bad


def _whole(low: int, high: int) -> Check:
    def check(value: str, base: str) -> int:
        text = value.strip()
        # Length first: int() of a huge digit string is slow, or refused outright.
        if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
            raise _Bad(f"{value!r} is not a whole number from {low} to {high}")
        return int(text)

    return check


def _loop(value: str, base: str) -> int:
    if value.strip() == "0":
        raise _Bad(f"0 (repeat until interrupted) is not supported; use 1 to {MAX_LOOP}")
    return _whole(1, MAX_LOOP)(value, base)


def _boolean(value: str, base: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise _Bad(f"{value!r} is not true or false")
    return text == "true"


def _method(value: str, base: str) -> str:
    text = value.strip().upper()
    if text not in ("GET", "POST"):
        raise _Bad(f"{value!r} is not GET or POST")
    return text


def resolve_url(value: str, base: str) -> str:
    """``value`` made absolute against ``base``; raises ValueError unless it is http(s)."""
    text = value.strip()
    if not text:
        raise ValueError("must be a URL, not empty")
    # Spaces, backslashes and control characters are where URL parsers disagree about the host.
    if "\\" in text or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{_short(value)} is not a valid URL")
    try:
        absolute = urljoin(base, text)
        parts = urlsplit(absolute)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise ValueError(f"{_short(value)} is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{_short(value)} is not an http or https URL")
    if len(absolute) > MAX_URL:
        raise ValueError(f"the URL is longer than {MAX_URL} characters")
    return absolute


def _url(value: str, base: str) -> str:
    try:
        return resolve_url(value, base)
    except ValueError as exc:
        raise _Bad(str(exc)) from exc


def _key(value: str, base: str) -> str:
    text = value.strip()
    if len(text) > 1 or (text and text not in KEYS):
        raise _Bad(f"{value!r} is not one key of 0-9, * or # (or empty for none)")
    return text


def _keys(value: str, base: str) -> str:
    text = value.strip()
    if any(c not in KEYS for c in text) or len(set(text)) != len(text):
        raise _Bad(f"{value!r} is not a set of keys from 0-9, * and #")
    return text


def _voice(value: str, base: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", text):
        raise _Bad(f"{_short(value)} is not a voice name such as 'woman' or 'man'")
    return text


def _language(value: str, base: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,3}", text):
        raise _Bad(f"{_short(value)} is not a language code such as 'en' or 'hi-IN'")
    return text


def _phone(value: str, base: str) -> str:
    try:
        return normalize(value, field="the number")
    except InvalidRequest as exc:
        raise _Bad(str(exc)) from exc


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


# Attributes each verb takes (name -> check). Names are case-sensitive, as in TwiML.
SAY_ATTRS: dict[str, Check] = {"voice": _voice, "language": _language, "loop": _loop}
PLAY_ATTRS: dict[str, Check] = {"loop": _loop}
GATHER_ATTRS: dict[str, Check] = {
    "action": _url,
    "method": _method,
    "numDigits": _whole(1, MAX_DIGITS),
    "maxDigits": _whole(1, MAX_DIGITS),  # Exotel's alias of numDigits
    "finishOnKey": _key,
    "timeout": _whole(1, 60),
}
DIAL_ATTRS: dict[str, Check] = {
    "action": _url,
    "method": _method,
    "callerId": _phone,
    "timeout": _whole(1, 600),
    "timeLimit": _whole(1, 14400),
    "record": _boolean,
}
RECORD_ATTRS: dict[str, Check] = {
    "action": _url,
    "method": _method,
    "maxLength": _whole(1, 3600),
    "timeout": _whole(1, 60),
    "finishOnKey": _keys,
    "playBeep": _boolean,
}
REDIRECT_ATTRS: dict[str, Check] = {"method": _method}
VERBS = ("Say", "Play", "Gather", "Dial", "Record", "Redirect", "Hangup")


# --- elements to verbs ----------------------------------------------------------------------


class _Reader:
    """Turns elements into verbs, collecting every problem instead of stopping at the first."""

    def __init__(self, url: str):
        self.url = url
        self.problems: list[Problem] = []

    def problem(self, element: _Element, message: str, attribute: str | None = None) -> None:
        self.problems.append(Problem(message, element.line, element.tag, attribute))

    def response(self, root: _Element) -> list[Verb]:
        if root.tag != "Response":
            self.problem(root, "the root element must be <Response>")
            return []
        self.attrs(root, {})
        self.no_text(root)
        if len(root.children) > MAX_VERBS:
            self.problem(root, f"holds more than {MAX_VERBS} verbs")
            return []
        verbs = []
        for child in root.children:
            verb = self.verb(child)
            if verb is not None:
                verbs.append(verb)
        return verbs

    def verb(self, element: _Element) -> Verb | None:
        readers: dict[str, Callable[[_Element], Verb | None]] = {
            "Say": self.say,
            "Play": self.play,
            "Gather": self.gather,
            "Dial": self.dial,
            "Record": self.record,
            "Redirect": self.redirect,
            "Hangup": self.hangup,
        }
        reader = readers.get(element.tag)
        if reader is None:
            self.problem(element, f"not an ExoML verb ({', '.join(VERBS)})")
            return None
        return reader(element)

    # Each verb reader checks everything it can even after a problem, so one pass reports all.

    def say(self, element: _Element) -> Say | None:
        values = self.attrs(element, SAY_ATTRS)
        self.no_children(element, "Say holds only the text to speak (SSML is not supported)")
        text = element.text
        if not text:
            self.problem(element, "needs the text to speak")
            return None
        if len(text) > MAX_TEXT:
            self.problem(element, f"text longer than {MAX_TEXT} characters")
            return None
        return Say(
            text=" ".join(text.split()),
            voice=values.get("voice"),
            language=values.get("language"),
            loop=values.get("loop", 1),
            line=element.line,
        )

    def play(self, element: _Element) -> Play | None:
        values = self.attrs(element, PLAY_ATTRS)
        self.no_children(element, "Play holds only the URL of the audio")
        url = self.text_url(element, "the URL of the audio to play")
        return None if url is None else Play(url, values.get("loop", 1), element.line)

    def gather(self, element: _Element) -> Gather | None:
        values = self.attrs(element, GATHER_ATTRS)
        self.no_text(element)
        if "numDigits" in values and "maxDigits" in values:
            self.problem(element, "give numDigits or its alias maxDigits, not both", "maxDigits")
        prompts: list[Say | Play] = []
        for child in element.children:
            if child.tag not in ("Say", "Play"):
                self.problem(child, "only Say and Play may be nested in Gather")
                continue
            prompt = self.say(child) if child.tag == "Say" else self.play(child)
            if prompt is not None:
                prompts.append(prompt)
        return Gather(
            action=values.get("action", self.url),
            prompts=tuple(prompts),
            method=values.get("method", "POST"),
            num_digits=values.get("numDigits", values.get("maxDigits", MAX_DIGITS)),
            finish_on_key=values.get("finishOnKey", "#"),
            timeout=values.get("timeout", 5),
            line=element.line,
        )

    def dial(self, element: _Element) -> Dial | None:
        values = self.attrs(element, DIAL_ATTRS)
        numbers: list[str] = []
        if element.children and element.text:
            self.problem(element, "holds either a number as text or <Number> elements, not both")
            return None
        if len(element.children) > MAX_NUMBERS:
            self.problem(element, f"dials more than {MAX_NUMBERS} numbers")
            return None
        for child in element.children:
            if child.tag != "Number":
                self.problem(child, "only Number may be nested in Dial")
                continue
            self.attrs(child, {})
            self.no_children(child, "Number holds only the number to dial")
            number = self.text_number(child)
            if number is not None:
                numbers.append(number)
        if not element.children:
            number = self.text_number(element)
            if number is None:
                return None
            numbers.append(number)
        elif not numbers:
            return None
        return Dial(
            numbers=tuple(numbers),
            action=values.get("action"),
            method=values.get("method", "POST"),
            caller_id=values.get("callerId"),
            timeout=values.get("timeout", 30),
            time_limit=values.get("timeLimit", 14400),
            record=values.get("record", False),
            line=element.line,
        )

    def record(self, element: _Element) -> Record:
        values = self.attrs(element, RECORD_ATTRS)
        self.no_children(element, "Record holds nothing")
        self.no_text(element)
        return Record(
            action=values.get("action", self.url),
            method=values.get("method", "POST"),
            max_length=values.get("maxLength", 3600),
            timeout=values.get("timeout", 5),
            finish_on_key=values.get("finishOnKey", "1234567890*#"),
            play_beep=values.get("playBeep", True),
            line=element.line,
        )

    def redirect(self, element: _Element) -> Redirect | None:
        values = self.attrs(element, REDIRECT_ATTRS)
        self.no_children(element, "Redirect holds only the URL of the next document")
        url = self.text_url(element, "the URL of the next document")
        if url is None:
            return None
        return Redirect(url, values.get("method", "POST"), element.line)

    def hangup(self, element: _Element) -> Hangup:
        self.attrs(element, {})
        self.no_children(element, "Hangup holds nothing")
        self.no_text(element)
        return Hangup(element.line)

    # --- shared checks ---

    def attrs(self, element: _Element, allowed: dict[str, Check]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, raw in element.attrs.items():
            check = allowed.get(name)
            if check is None:
                takes = f"takes {', '.join(allowed)}" if allowed else "takes no attributes"
                self.problem(element, f"not an attribute of {element.tag} ({takes})", name)
                continue
            try:
                values[name] = check(raw, self.url)
            except _Bad as exc:
                self.problem(element, str(exc), name)
        return values

    def no_children(self, element: _Element, why: str) -> None:
        for child in element.children:
            self.problem(child, f"not allowed inside <{element.tag}>: {why}")

    def no_text(self, element: _Element) -> None:
        if element.text:
            self.problem(element, f"unexpected text {_short(element.text)}")

    def text_url(self, element: _Element, what: str) -> str | None:
        if not element.text:
            self.problem(element, f"needs {what}")
            return None
        try:
            return resolve_url(element.text, self.url)
        except ValueError as exc:
            self.problem(element, str(exc))
            return None

    def text_number(self, element: _Element) -> str | None:
        if not element.text:
            self.problem(element, "needs the number to dial")
            return None
        try:
            return _phone(element.text, self.url)
        except _Bad as exc:
            self.problem(element, str(exc))
            return None
