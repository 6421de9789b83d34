"""The lenient request-parameter reader of spec §0: query string plus a body in any encoding.

Exotel clients send parameters as a form, as multipart, as JSON, as a query string on a POST,
often with a Content-Type that does not match the body. ``read_params`` merges all of it into
one ``Params`` whose names ignore letter case and whose empty values count as absent.

Precedence: the body's values come first, then the query string's, so ``get`` prefers the body
when both carry a name (as Rails and PHP's default ``request_order`` do) while a name only in the
query string (``?details=true`` on a POST) is still seen.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from ringflow.errors import InvalidRequest
from ringflow.numeric import whole_number

if TYPE_CHECKING:  # python-multipart declares its callbacks' types for type checkers only
    from python_multipart.multipart import MultipartCallbacks

MAX_BODY = 64 * 1024
MAX_FIELDS = 1000

# Charsets a declared Content-Type may choose; anything else (or a non-text codec such as
# rot13, which codecs.lookup accepts) falls back to UTF-8.
_CHARSETS = {"utf-8", "ascii", "iso8859-1", "cp1252"}
_INDEX_SUFFIX = re.compile(r"\[[^\[\]]*\]$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}

Pairs = list[tuple[str, str]]


class Params:
    """Request parameters: names in any letter case, several values each, blank means absent."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs = [(name.strip().casefold(), value) for name, value in pairs]

    def __repr__(self) -> str:
        return f"Params({self._pairs!r})"

    def get_all(self, name: str) -> list[str]:
        """Every non-blank value of ``name``, body values before query values."""
        key = name.casefold()
        return [value for n, value in self._pairs if n == key and value.strip()]

    def get(self, name: str) -> str | None:
        """The first non-blank value of ``name``, or None."""
        values = self.get_all(name)
        return values[0] if values else None

    def require(self, name: str) -> str:
        """The value of ``name``; InvalidRequest if it is missing or blank."""
        value = self.get(name)
        if value is None:
            raise InvalidRequest(f"{name} is a mandatory parameter")
        return value

    def get_int(self, name: str, *, min: int, max: int) -> int | None:
        """``name`` as a whole number within ``min``..``max``, or None if absent."""
        value = self.get(name)
        return None if value is None else whole_number(value, name, low=min, high=max)

    def get_bool(self, name: str) -> bool | None:
        """``name`` as true/false (also 1/0, yes/no, any case), or None if absent."""
        value = self.get(name)
        if value is None:
            return None
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise InvalidRequest(f"{name} must be true or false, got {_show(value)}")

    def events(self, name: str) -> list[str]:
        """A list parameter in any client's encoding, trimmed, lower-cased, without repeats."""
        # X[0]=a&X[1]=b, X[]=a, X=a, X=a,b and X=a&X=b all land here; order is as sent
        # (not by index) because the values are a set to every caller.
        key = name.casefold()
        seen: dict[str, None] = {}
        for n, value in self._pairs:
            if _INDEX_SUFFIX.sub("", n).rstrip() != key:
                continue
            for item in value.split(","):
                # Quotes and brackets too: some clients send a JSON list as one form value.
                word = item.strip(" \t\r\n\"'[]").lower()
                if word:
                    seen.setdefault(word)
        return list(seen)


async def read_params(request: Request) -> Params:
    """Merge the body (form, multipart or JSON, sniffed) and the query string into Params."""
    body = await _read_body(request)
    body_pairs = _parse_body(body, request.headers.get("content-type", ""))
    query_pairs = _parse_urlencoded(request.scope.get("query_string", b""), "utf-8", "query string")
    return Params(body_pairs + query_pairs)


async def _read_body(request: Request) -> bytes:
    too_large = InvalidRequest(f"request body too large (the limit is {MAX_BODY} bytes)")
    declared = request.headers.get("content-length")
    if declared and whole_number(declared, "Content-Length", low=0, high=2**53) > MAX_BODY:
        raise too_large
    body = bytearray()
    # Read in chunks rather than request.body() so a chunked upload cannot outgrow the cap.
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise too_large
    return bytes(body)


def _parse_body(body: bytes, content_type: str) -> Pairs:
    media, options = parse_options_header(content_type)
    charset = _charset(options.get(b"charset", b""))
    body = body.removeprefix(codecs.BOM_UTF8)
    start = body.lstrip()
    if not start:
        return []
    # Sniff rather than trust the header: JSON declared with a form sent (and the reverse)
    # must work. No form or multipart body starts with a brace or bracket.
    if start[:1] in (b"{", b"["):
        return _parse_json(start)
    boundary = _boundary(media, options.get(b"boundary", b""), body)
    if boundary:
        return _parse_multipart(body, boundary, charset)
    if b"=" not in body and start.rstrip().strip(b"&"):
        # Not one name=value pair: the body was meant as something else. Say so, rather than
        # later report as missing the parameters it failed to carry.
        raise InvalidRequest("request body is not form-encoded, multipart or a JSON object")
    return _parse_urlencoded(body, charset, "request body")


def _charset(declared: bytes) -> str:
    try:
        name = codecs.lookup(declared.decode("latin-1")).name
    except (LookupError, ValueError):  # ValueError: a NUL inside the name
        return "utf-8"
    return name if name in _CHARSETS else "utf-8"


def _boundary(media: bytes, declared: bytes, body: bytes) -> bytes:
    if media.startswith(b"multipart/") and declared and b"--" + declared in body:
        return declared
    # No usable declared boundary, but the body opens like multipart: take its first line.
    if body.startswith(b"--"):
        first = body.split(b"\n", 1)[0].rstrip(b"\r")[2:]
        if first and not first.endswith(b"--"):
            return first
    return b""


def _parse_json(body: bytes) -> Pairs:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON, bad UTF-8 and integers too long to convert.
        raise InvalidRequest(f"request body is not valid JSON: {_reason(exc)}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object of parameters")
    return [(str(name), text) for name, value in data.items() for text in _json_texts(value)]


def _json_texts(value: Any) -> list[str]:
    if isinstance(value, list):
        # One level only: ["terminal", "answered"] is two values; a nested list is one text.
        return [text for item in value for text in _json_scalar(item)]
    return _json_scalar(value)


def _json_scalar(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, float) and value.is_integer():
        return [str(int(value))]
    if isinstance(value, (str, int, float)):
        return [str(value)]
    # A nested object or list is kept as JSON text, so a complaint about it shows what came.
    return [json.dumps(value)]


class _Parts:
    """python-multipart callbacks that collect the non-file fields of a multipart body."""

    def __init__(self, charset: str) -> None:
        self.charset = charset
        self.pairs: Pairs = []
        self.ended = False
        self._header = b""
        self._value = b""
        self._disposition = b""
        self._data = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._add("_header", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_part_data": lambda d, s, e: self._data.extend(d[s:e]),
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _begin(self) -> None:
        self._disposition, self._data = b"", bytearray()

    def _header_end(self) -> None:
        if self._header.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _part_end(self) -> None:
        _, options = parse_options_header(self._disposition)
        # Files are not parameters of any endpoint, and a part without a name has no key.
        if b"name" in options and b"filename" not in options:
            name = _decode(options[b"name"], self.charset, "multipart field name")
            self.pairs.append((name, _decode(bytes(self._data), self.charset, "multipart value")))
        if len(self.pairs) > MAX_FIELDS:
            raise InvalidRequest(f"request has more than {MAX_FIELDS} parameters")

    def _end(self) -> None:
        self.ended = True


def _parse_multipart(body: bytes, boundary: bytes, charset: str) -> Pairs:
    parts = _Parts(charset)
    # RFC 2046 allows a preamble before the first boundary; python-multipart does not.
    body = body[body.find(b"--" + boundary) :]
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise InvalidRequest(f"request body is not valid multipart/form-data: {exc}") from exc
    if not parts.ended:
        # python-multipart accepts a body cut short; its last field would vanish silently.
        raise InvalidRequest(
            "request body is not valid multipart/form-data: it ends before the closing boundary"
        )
    return parts.pairs


def _parse_urlencoded(raw: bytes, charset: str, what: str) -> Pairs:
    text = _decode(raw, charset, what).strip()
    if _CONTROL.search(text):
        raise InvalidRequest(
            f"{what} is not form-encoded, multipart or a JSON object: "
            "it contains control characters"
        )
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding=charset,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError as exc:
        raise InvalidRequest(f"{what} cannot be decoded: {_reason(exc)}") from exc


def _decode(raw: bytes, charset: str, what: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid {charset} text") from exc


def _reason(exc: BaseException) -> str:
    return str(exc)[:120] or type(exc).__name__


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")
