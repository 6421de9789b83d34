"""The error boundary: the tree drawn in errors.py is the classes' real tree, the one table
answers each error with its status, and a Redis outage reaches every face of the server as
ringflow's ``Unavailable`` (503 from the APIs, a refused sign-in on the dashboard)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import free_port

import ringflow.errors
from ringflow.api.errors import NO_SUCH_PAGE, refusal
from ringflow.audio_files import AudioUnavailable
from ringflow.dashboard.editor import SourceError
from ringflow.dashboard.logins import set_account_password
from ringflow.errors import (
    AppInvalid,
    AuthError,
    CallOver,
    CapacityExceeded,
    ConfigError,
    Conflict,
    Forbidden,
    IllegalTransition,
    InvalidRequest,
    MediaError,
    NotFound,
    RateLimited,
    RingflowError,
    Unavailable,
)
from ringflow.flows.exoml import ExomlInvalid
from ringflow.media.rtp import RtpParseError
from ringflow.media.session import SessionClosed
from ringflow.media.tts import TtsError, TtsUnavailable
from ringflow.sip.errors import (
    NegotiationError,
    SdpParseError,
    SipError,
    SipParseError,
    SipStateError,
)
from ringflow.storage.campaigns import AlreadyCalled
from ringflow.storage.schema import DatabaseUnavailable
from ringflow.storage.session import Duplicate
from ringflow.streams.client import StreamFailed
from ringflow.telephony.sip.capacity import TrunkUnavailable
from ringflow.webhooks.http import FetchError, FetchTimeout
from tests.e2e import running

CLASSES: dict[str, type[RingflowError]] = {
    cls.__name__: cls
    for cls in [
        RingflowError,
        ConfigError,
        NotFound,
        Conflict,
        CallOver,
        Duplicate,
        AlreadyCalled,
        InvalidRequest,
        AppInvalid,
        ExomlInvalid,
        SourceError,
        AuthError,
        Forbidden,
        RateLimited,
        CapacityExceeded,
        Unavailable,
        TrunkUnavailable,
        DatabaseUnavailable,
        IllegalTransition,
        AudioUnavailable,
        FetchError,
        FetchTimeout,
        StreamFailed,
        TtsError,
        TtsUnavailable,
        SipError,
        SipParseError,
        SdpParseError,
        SipStateError,
        NegotiationError,
        MediaError,
        RtpParseError,
        SessionClosed,
    ]
}


def _drawn_tree() -> list[tuple[str, str]]:
    """(parent, child) for every edge drawn in errors.py's docstring."""
    edges: list[tuple[str, str]] = []
    stack = ["RingflowError"]  # the names drawn last at each depth, root first
    for line in (ringflow.errors.__doc__ or "").splitlines():
        match = re.match(r"^    ([│ ]*)[├└]── (\w+)", line)
        if match:
            depth = len(match[1]) // 4 + 1
            del stack[depth:]
            edges.append((stack[-1], match[2]))
            stack.append(match[2])
    return edges


def test_the_drawn_tree_is_the_real_one():
    edges = _drawn_tree()
    drawn = {child for _, child in edges}
    # Every error class of ringflow is drawn, each under its real base class.
    assert drawn | {"RingflowError"} == set(CLASSES) - {"SdpParseError"}
    for parent, child in edges:
        assert CLASSES[child].__bases__ == (CLASSES[parent],), (parent, child)
    assert "SdpParseError" in (ringflow.errors.__doc__ or "")  # named beside SipParseError


def test_every_error_class_loaded_is_one_the_tree_draws():
    # The server and its parts are imported (tests.e2e imports the app): any error class they
    # define beside the tree shows up here.
    loaded, todo = set(), [RingflowError]
    while todo:
        cls = todo.pop()
        loaded.add(cls)
        todo.extend(cls.__subclasses__())
    public = {
        cls
        for cls in loaded
        if cls.__module__.startswith("ringflow.") and not cls.__name__.startswith("_")
    }
    assert public == set(CLASSES.values())


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InvalidRequest("To: not a phone number"), 400),
        (AppInvalid(["node 'a': unknown applet"]), 400),
        (SourceError("not valid YAML or JSON", 3), 400),
        (AuthError("Authentication failed"), 401),
        (Forbidden("not yours"), 403),
        (NotFound("Call x not found"), 404),
        (Conflict("exists"), 409),
        (CallOver("the call is over"), 409),
        (Duplicate("exists"), 409),
        (ExomlInvalid([]), 400),
        (RateLimited("Too many requests", {"Retry-After": "7"}), 429),
        (CapacityExceeded("the queue is full"), 429),
        (Unavailable("rate limiter unavailable; try again shortly"), 503),
        (TrunkUnavailable("trunk limits unreadable"), 503),
    ],
)
def test_each_error_answers_with_its_status_and_message(exc: RingflowError, status: int):
    refused = refusal(exc)
    assert refused is not None
    assert (refused.status, refused.message) == (status, str(exc))
    assert refused.page_message == (NO_SUCH_PAGE if status == 404 else str(exc))


def test_the_headers_that_go_with_an_answer():
    auth, limited, down = (
        refusal(e)
        for e in (
            AuthError("no"),
            RateLimited("slow down", {"Retry-After": "7"}),
            Unavailable("down"),
        )
    )
    assert auth and auth.headers == {"WWW-Authenticate": 'Basic realm="ringflow"'}
    assert limited and limited.headers == {"Retry-After": "7"}
    assert down and down.headers == {"Retry-After": "5"}
    found = refusal(NotFound("x"))
    assert found and found.headers == {}


@pytest.mark.parametrize(
    "exc",
    [
        IllegalTransition("completed -> ringing"),
        MediaError("no port"),
        FetchError("refused"),
        TtsError("crashed"),
        ConfigError("bad"),
        RingflowError("?"),
    ],
)
def test_errors_no_request_should_meet_are_faults(exc: RingflowError):
    assert refusal(exc) is None


async def test_redis_down_is_503_on_the_admin_api_and_a_refused_sign_in_on_the_dashboard(
    tmp_path: Path, sqlite_template: Path
):
    path = tmp_path / "r.db"
    shutil.copy(sqlite_template, path)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with running(f"sqlite+aiosqlite:///{path}", redis_url=dead) as rig:
        r = await rig.http.get(f"{rig.base}/admin/v1/accounts/{rig.sid}", auth=rig.auth)
        assert r.status_code == 503, r.text
        assert r.json() == {
            "error": {"status": 503, "message": "rate limiter unavailable; try again shortly"}
        }
        assert r.headers["Retry-After"] == "5"

        await set_account_password(rig.services.accounts, rig.sid, "a good password")
        async with httpx.AsyncClient(base_url=rig.base, timeout=30) as browser:
            form = await browser.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf
            r = await browser.post(
                "/login", data={"csrf": csrf[1], "name": rig.sid, "password": "a good password"}
            )
        assert r.status_code == 429
        assert "Sign-in is unavailable for a moment (the rate limiter is down)" in r.text
