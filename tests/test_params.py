"""The lenient parameter reader (spec §0), fed real Starlette requests in every encoding."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ringflow.api.params import MAX_BODY, Params, read_params
from ringflow.errors import InvalidRequest

FORM = "application/x-www-form-urlencoded"


def post(path: str = "/connect", **kwargs: Any) -> Params:
    """POST through a real Starlette app; return its Params or raise what read_params raised."""
    outcome: list[Params | Exception] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        try:
            outcome.append(await read_params(request))
        except InvalidRequest as exc:
            outcome.append(exc)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/connect", endpoint, methods=["POST"])])
    with TestClient(app) as client:
        assert client.post(path, **kwargs).status_code == 200
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def raw_request(
    body: bytes | list[bytes], content_type: str | None = None, query: bytes = b""
) -> Request:
    """A Request built from an ASGI scope; a list body arrives in chunks with no length."""
    chunks = body if isinstance(body, list) else [body]
    headers = [] if content_type is None else [(b"content-type", content_type.encode("latin-1"))]
    if not isinstance(body, list):
        headers.append((b"content-length", str(len(body)).encode()))
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": query,
        "headers": headers,
    }
    return Request(scope, receive)


def read_raw(
    body: bytes | list[bytes], content_type: str | None = None, query: bytes = b""
) -> Params:
    return asyncio.run(read_params(raw_request(body, content_type, query)))


# --- encodings ---------------------------------------------------------------------------


def test_form() -> None:
    params = post(data={"From": "09052161119", "CallerId": "08039591234", "CallType": "trans"})
    assert params.get("From") == "09052161119"
    assert params.get("CallerId") == "08039591234"
    assert params.get("CallType") == "trans"
    assert params.get("Url") is None


def test_multipart() -> None:
    params = post(
        data={"From": "09052161119", "CustomField": "order 42"},
        files={"Attachment": ("a.txt", b"not a parameter", "text/plain")},
    )
    assert params.get("From") == "09052161119"
    assert params.get("CustomField") == "order 42"
    assert params.get("Attachment") is None  # files are not parameters


def _multipart(fields: dict[str, str], boundary: str = "XyZ") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def test_multipart_with_a_preamble() -> None:
    body = b"this is a preamble\r\n" + _multipart({"From": "0905"})
    params = post(content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert params.get("From") == "0905"


def test_multipart_without_a_content_type_is_sniffed() -> None:
    params = post(content=_multipart({"From": "0905", "To": "0806"}))
    assert (params.get("From"), params.get("To")) == ("0905", "0806")


def test_multipart_declared_with_a_wrong_boundary_is_sniffed() -> None:
    body = _multipart({"From": "0905"}, boundary="real")
    params = post(content=body, headers={"content-type": "multipart/form-data; boundary=other"})
    assert params.get("From") == "0905"


def test_multipart_cut_short_is_rejected() -> None:
    body = _multipart({"From": "0905"})[:-9]
    with pytest.raises(InvalidRequest, match="closing boundary"):
        post(content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"})


def test_query_only_post() -> None:
    params = post("/connect?From=09052161119&CallerId=08039591234&Url=http%3A%2F%2Fx%2F1")
    assert params.get("From") == "09052161119"
    assert params.get("Url") == "http://x/1"


def test_json_body() -> None:
    params = post(
        json={
            "From": "09052161119",
            "TimeLimit": 30,
            "TimeOut": 45.0,
            "Record": True,
            "Url": None,
            "Extra": {"a": 1},
        }
    )
    assert params.get("From") == "09052161119"
    assert params.get_int("TimeLimit", min=1, max=14400) == 30
    assert params.get_int("TimeOut", min=1, max=60) == 45
    assert params.get_bool("Record") is True
    assert params.get("Url") is None  # null means absent
    assert json.loads(params.get("Extra") or "") == {"a": 1}


def test_json_declared_but_form_sent() -> None:
    params = post(content=b"From=0905&CallerId=0803", headers={"content-type": "application/json"})
    assert (params.get("From"), params.get("CallerId")) == ("0905", "0803")


def test_form_declared_but_json_sent() -> None:
    params = post(content=b'  {"From": "0905"}', headers={"content-type": FORM})
    assert params.get("From") == "0905"


def test_form_without_content_type() -> None:
    assert post(content=b"From=0905").get("From") == "0905"


def test_leading_ampersand() -> None:
    params = post(content=b"&From=0905&&CallerId=0803&", headers={"content-type": FORM})
    assert (params.get("From"), params.get("CallerId")) == ("0905", "0803")


@pytest.mark.parametrize("body", [b"", b"  \r\n", b"&", b"&&\n"])
def test_empty_body(body: bytes) -> None:
    assert (
        post("/connect?From=0905", content=body, headers={"content-type": FORM}).get("From")
        == "0905"
    )


def test_declared_charset_is_honoured() -> None:
    params = post(
        content=b"CustomField=caf%E9", headers={"content-type": FORM + "; charset=ISO-8859-1"}
    )
    assert params.get("CustomField") == "café"


# --- names and values --------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["CallerId", "CallerID", "callerid", "CALLERID"])
def test_names_ignore_case(spelling: str) -> None:
    params = post(data={spelling: "08039591234"})
    assert params.get("CallerId") == "08039591234"
    assert params.get("callerID") == "08039591234"


def test_empty_values_are_absent() -> None:
    params = post(content=b"From=&To=%20&CallerId=&CallerId=0803", headers={"content-type": FORM})
    assert params.get("From") is None
    assert params.get("To") is None
    assert params.get("CallerId") == "0803"
    assert params.get_all("CallerId") == ["0803"]


def test_multiple_values_keep_order() -> None:
    params = post(content=b"X=a&x=b&X=c", headers={"content-type": FORM})
    assert params.get_all("X") == ["a", "b", "c"]
    assert params.get("X") == "a"


def test_body_wins_over_query_and_query_fills_in() -> None:
    params = post("/connect?From=query&To=0806", data={"From": "body"})
    assert params.get("From") == "body"
    assert params.get("To") == "0806"
    assert params.get_all("From") == ["body", "query"]


def test_details_query_on_a_form_post() -> None:
    params = post("/connect?details=true", data={"From": "0905"})
    assert params.get_bool("details") is True
    assert params.get("From") == "0905"


def test_details_query_on_a_json_post() -> None:
    params = post("/connect?details=TRUE", json={"From": "0905"})
    assert params.get_bool("Details") is True


def test_require() -> None:
    params = Params([("from", "0905"), ("To", "")])
    assert params.require("From") == "0905"
    with pytest.raises(InvalidRequest, match="^To is a mandatory parameter$"):
        params.require("To")
    with pytest.raises(InvalidRequest, match="^CallerId is a mandatory parameter$"):
        params.require("CallerId")


def test_get_int() -> None:
    params = Params(
        [("TimeLimit", " 300 "), ("TimeOut", "61"), ("A", "ten"), ("B", "1.5"), ("C", "9" * 40)]
    )
    assert params.get_int("timelimit", min=1, max=14400) == 300
    assert params.get_int("Missing", min=1, max=2) is None
    with pytest.raises(InvalidRequest, match=r"^TimeOut must be a whole number from 1 to 60"):
        params.get_int("TimeOut", min=1, max=60)
    for name in ("A", "B", "C"):
        with pytest.raises(InvalidRequest, match=f"^{name} must be a whole number from 0 to 9"):
            params.get_int(name, min=0, max=9)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("Yes", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("", None),
    ],
)
def test_get_bool(value: str, expected: bool | None) -> None:
    assert Params([("Record", value)]).get_bool("Record") is expected


def test_get_bool_rejects_other_words() -> None:
    with pytest.raises(InvalidRequest, match="^Record must be true or false, got 'maybe'$"):
        Params([("Record", "maybe")]).get_bool("Record")


# --- StatusCallbackEvents in every form clients use -------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"StatusCallbackEvents[0]=terminal&StatusCallbackEvents[1]=answered",
        b"StatusCallbackEvents%5B0%5D=terminal&StatusCallbackEvents%5B1%5D=answered",
        b"StatusCallbackEvents[]=terminal&StatusCallbackEvents[]=answered",
        b"StatusCallbackEvents=terminal,answered",
        b"StatusCallbackEvents=terminal&StatusCallbackEvents=answered",
        b"statuscallbackevents=%20Terminal%20,%20ANSWERED%20",
        b"StatusCallbackEvents=terminal,terminal&StatusCallbackEvents[]=answered,terminal",
        b'StatusCallbackEvents=["terminal","answered"]',
        b"StatusCallbackEvents[0]=terminal&StatusCallbackEvents[0]=&StatusCallbackEvents=answered",
    ],
)
def test_events_forms(body: bytes) -> None:
    params = post(content=body, headers={"content-type": FORM})
    assert params.events("StatusCallbackEvents") == ["terminal", "answered"]


def test_events_single_and_absent() -> None:
    params = post(data={"StatusCallbackEvents": "terminal"})
    assert params.events("StatusCallbackEvents") == ["terminal"]
    assert params.events("Other") == []


def test_events_from_json_list_and_multipart() -> None:
    params = post(json={"StatusCallbackEvents": ["Terminal", "answered"]})
    assert params.events("StatusCallbackEvents") == ["terminal", "answered"]
    body = _multipart({"StatusCallbackEvents[0]": "terminal", "StatusCallbackEvents[1]": "ringing"})
    params = post(content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert params.events("statuscallbackevents") == ["terminal", "ringing"]


def test_events_do_not_match_longer_names() -> None:
    params = Params([("StatusCallbackEventsX", "a"), ("XStatusCallbackEvents[]", "b")])
    assert params.events("StatusCallbackEvents") == []


# --- bodies that are too large or not parseable ------------------------------------------


def test_oversize_body_with_content_length() -> None:
    with pytest.raises(InvalidRequest, match="request body too large"):
        post(content=b"From=" + b"9" * MAX_BODY, headers={"content-type": FORM})


def test_oversize_chunked_body() -> None:
    chunks = [b"From=0905&"] + [b"X=" + b"1" * 1022] * 70
    with pytest.raises(InvalidRequest, match="request body too large"):
        read_raw(chunks, FORM)


def test_body_at_the_limit_is_read() -> None:
    body = b"From=" + b"9" * (MAX_BODY - 5)
    assert len(read_raw(body, FORM).get("From") or "") == MAX_BODY - 5


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"\x00\xff\xfe\x01binary", None, "not form-encoded"),
        (b"\x89PNG\r\n\x1a\n\x00=\x00", "image/png", "not valid utf-8"),
        (b"From=\xff\xfe", FORM, "not valid utf-8"),
        (b"hello world", FORM, "not form-encoded"),
        (b"From=0905\x00&To=1", FORM, "control characters"),
        (b"From=%FF%FE", FORM, "cannot be decoded"),
        (b'{"From": "0905"', "application/json", "not valid JSON"),
        (b'["From", "0905"]', "application/json", "JSON object"),
        (b"[" * 5000 + b"]" * 5000, "application/json", "not valid JSON"),
        (b'{"From": 1' + b"0" * 5000 + b"}", "application/json", "not valid JSON"),
    ],
)
def test_garbage_bodies(body: bytes, content_type: str | None, message: str) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    with pytest.raises(InvalidRequest, match=f"(?i){message}"):
        post(content=body, headers=headers)


def test_too_many_fields() -> None:
    body = b"&".join(b"f%d=1" % i for i in range(1100))
    with pytest.raises(InvalidRequest, match="cannot be decoded"):
        read_raw(body, FORM)


_CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            FORM,
            "application/json",
            "multipart/form-data; boundary=XX",
            "multipart/form-data",
            "text/plain; charset=rot13",
            FORM + "; charset=\x00",
            "application/json; charset=utf-16",
            'multipart/mixed; boundary=""',
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
)
_PREFIXES = st.sampled_from(
    [
        b"",
        b"{",
        b"[",
        b"&",
        b"From=",
        b"--XX\r\n",
        b"--XX--\r\n",
        b'--XX\r\nContent-Disposition: form-data; name="From"\r\n\r\n',
        b'--XX\r\nContent-Disposition: form-data; name="F"; filename="f"\r\n\r\n',
    ]
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(bytes.__add__, _PREFIXES, st.binary(max_size=200)),
    st.builds(lambda p, t: p + t.encode(), _PREFIXES, st.text(max_size=200)),
)


@settings(max_examples=300, deadline=None)
@given(
    body=_BODIES,
    content_type=_CONTENT_TYPES,
    query=st.binary(max_size=40).map(lambda b: b.replace(b" ", b"+")),
)
def test_random_bodies_raise_only_invalid_request(
    body: bytes, content_type: str | None, query: bytes
) -> None:
    try:
        params = read_raw(body, content_type, query)
    except InvalidRequest:
        return
    params.get("From")
    params.events("StatusCallbackEvents")
