"""The dashboard's pure parts: password hashes, session cookies and CSRF, the editor's line
mapping of validation problems, and the graph layout."""

from __future__ import annotations

import pytest

from ringflow.dashboard import editor
from ringflow.dashboard.auth import (
    SESSION_TTL,
    SessionCodec,
    csrf_ok,
    hash_password,
    verify_password,
)
from ringflow.dashboard.graph import layout, render_svg
from ringflow.dashboard.site import _safe_next
from ringflow.errors import AppInvalid
from ringflow.flows.applets import REGISTRY
from ringflow.flows.model import parse_app

FAST = 2**4  # scrypt cost for tests of the format; the real cost is checked once below


def test_a_password_hash_is_salted_scrypt_and_verifies_only_its_password():
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$16384$8$1$")
    assert stored != hash_password("correct horse battery")  # salted
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert not verify_password("", stored)


@pytest.mark.parametrize("stored", [None, "", "plain", "scrypt$x$8$1$aa$bb", "bcrypt$1$2$3$4$5"])
def test_a_missing_or_malformed_hash_opens_nothing(stored):
    assert not verify_password("anything at all", stored)


def test_a_hash_keeps_its_cost_so_it_can_be_raised_later():
    cheap = hash_password("correct horse battery", n=FAST)
    assert cheap.split("$")[1] == str(FAST)
    assert verify_password("correct horse battery", cheap)


def test_a_session_round_trips_and_expires():
    codec = SessionCodec(b"k" * 32)
    session = codec.new(1000.0, "account", "acme", "scrypt$hash")
    cookie = codec.dump(session)
    assert codec.load(cookie, 1000.0 + SESSION_TTL) == session
    assert codec.load(cookie, 1000.0 + SESSION_TTL + 1) is None
    assert codec.load(cookie, 1000.0 - 3600) is None  # issued in the future: not ours


def test_a_forged_or_foreign_session_is_refused():
    codec = SessionCodec(b"k" * 32)
    cookie = codec.dump(codec.new(1000.0, "account", "acme", "h"))
    other = SessionCodec(b"x" * 32)
    assert other.load(cookie, 1000.0) is None
    payload, _, signature = cookie.rpartition(".")
    assert codec.load(payload + "." + signature[::-1], 1000.0) is None
    assert codec.load("", 1000.0) is None and codec.load("a" * 5000, 1000.0) is None


def test_a_new_password_ends_sessions_opened_with_the_old_one():
    codec = SessionCodec(b"k" * 32)
    session = codec.new(0.0, "account", "acme", "scrypt$old")
    assert codec.current(session, "scrypt$old")
    assert not codec.current(session, "scrypt$new")
    assert not codec.current(session, None)


def test_csrf_tokens_are_per_session():
    codec = SessionCodec(b"k" * 32)
    one, two = codec.new(0.0), codec.new(0.0)
    assert one.csrf != two.csrf and len(one.csrf) >= 32
    assert csrf_ok(one, one.csrf)
    assert not csrf_ok(one, two.csrf)
    assert not csrf_ok(one, "") and not csrf_ok(one, None)


@pytest.mark.parametrize(
    ("target", "allowed", "expected"),
    [
        ("/a/acme/calls", "/a/acme/", "/a/acme/calls"),
        ("/a/other/calls", "/a/acme/", "/a/acme/"),
        ("//evil.example/a/acme/", "/a/acme/", "/a/acme/"),
        ("/a/acme//evil.example", "/a/acme/", "/a/acme/"),
        ("https://evil.example/", "/a/acme/", "/a/acme/"),
        ("", "/a/acme/", "/a/acme/"),
    ],
)
def test_after_sign_in_only_own_pages_are_followed(target, allowed, expected):
    assert _safe_next(target, allowed, "/a/acme/") == expected


BAD_APP = """\
name: Leave a message
start: hello
nodes:
  hello:
    applet: greeting
    text: Thanks for calling.
    next: vm
  vm:
    applet: voicemail
    prompt: Please leave a message.
    colour: blue
    next: byebye
  bye:
    applet: hangup
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(AppInvalid) as caught:
        parse_app(editor.load(text), REGISTRY)
    return caught.value.problems


def test_each_problem_is_pinned_to_the_line_it_is_about():
    problems = problems_of(BAD_APP)
    lines, loose = editor.annotate(BAD_APP, problems)
    pinned = {line.number: line.problems for line in lines if line.problems}
    assert set(pinned) == {11, 12}, pinned
    assert "field 'colour'" in pinned[11][0]
    assert "unknown node 'byebye'" in pinned[12][0]
    assert loose == []
    assert [line.text for line in lines] == BAD_APP.splitlines()


def test_json_problems_are_pinned_too():
    text = editor.dump(
        {
            "name": "x",
            "start": "a",
            "nodes": {"a": {"applet": "greeting", "text": "hi", "next": "zz"}},
        },
        "json",
    )
    lines, _ = editor.annotate(text, problems_of(text))
    [bad] = [line for line in lines if line.problems]
    assert '"next": "zz"' in bad.text


def test_problems_about_the_whole_app_or_its_top_fields():
    text = "name: x\nstart: nowhere\nnodes:\n  a: {applet: hangup}\n"
    lines, loose = editor.annotate(text, problems_of(text))
    assert [line.number for line in lines if line.problems] == [2]
    _, loose = editor.annotate(
        "- a list\n", ["an app must be a mapping with name, start and nodes"]
    )
    assert loose == ["an app must be a mapping with name, start and nodes"]


def test_a_syntax_error_names_its_line():
    with pytest.raises(editor.SourceError) as caught:
        editor.load("name: x\nnodes:\n  a: {applet: hangup\nstart: a\n")
    assert caught.value.line is not None and 3 <= caught.value.line <= 4
    assert "not valid YAML or JSON" in str(caught.value)


def test_a_loop_is_pinned_to_its_first_node():
    problem = "nodes 'a', 'b': form a loop with no input or wait, which would spin"
    lines = editor.key_lines("nodes:\n  a: {applet: hangup}\n  b: {applet: hangup}\n")
    assert editor.locate(problem, lines) == 2


def test_the_layout_puts_each_node_below_the_nodes_that_lead_to_it():
    graph = parse_app(
        {
            "name": "menu <&>",
            "start": "menu",
            "nodes": {
                "menu": {
                    "applet": "ivr_menu",
                    "text": "Press 1",
                    "on_1": "sales",
                    "on_invalid": "menu",
                    "on_no_input": "bye",
                },
                "sales": {"applet": "greeting", "text": "Sales", "next": "bye"},
                "bye": {"applet": "hangup"},
            },
        },
        REGISTRY,
    )
    plan = layout(graph)
    assert {b.name: b.layer for b in plan.boxes.values()} == {"menu": 0, "sales": 1, "bye": 2}
    assert plan.boxes["menu"].y < plan.boxes["sales"].y < plan.boxes["bye"].y
    kinds = {(a.source, a.target): a.kind for a in plan.arrows}
    assert kinds == {
        ("menu", "sales"): "down",
        ("menu", "menu"): "back",
        ("menu", "bye"): "skip",
        ("sales", "bye"): "down",
    }
    svg = render_svg(graph)
    assert svg.count('class="node') == 3
    assert "menu &lt;&amp;&gt;" in svg and "<&>" not in svg


def test_exits_to_the_same_node_share_one_arrow():
    graph = parse_app(
        {
            "name": "hook",
            "start": "ask",
            "nodes": {
                "ask": {
                    "applet": "passthru",
                    "url": "https://example.com/x",
                    "on_200": "bye",
                    "on_302": "bye",
                },
                "bye": {"applet": "hangup"},
            },
        },
        REGISTRY,
    )
    [arrow] = layout(graph).arrows
    assert arrow.label == "on_200, on_302"


def test_a_loop_through_several_nodes_points_back_up():
    graph = parse_app(
        {
            "name": "retry",
            "start": "hello",
            "nodes": {
                "hello": {"applet": "greeting", "text": "Hi", "next": "ask"},
                "ask": {
                    "applet": "gather",
                    "text": "Your PIN?",
                    "max_digits": 4,
                    "on_input": "check",
                    "on_no_input": "hello",
                },
                "check": {
                    "applet": "passthru",
                    "url": "https://example.com/pin",
                    "on_200": "bye",
                    "on_302": "ask",
                },
                "bye": {"applet": "hangup"},
            },
        },
        REGISTRY,
    )
    plan = layout(graph)
    assert [plan.boxes[n].layer for n in ("hello", "ask", "check", "bye")] == [0, 1, 2, 3]
    kinds = {(a.source, a.target): a.kind for a in plan.arrows}
    assert kinds[("ask", "hello")] == "back" and kinds[("check", "ask")] == "back"
    assert render_svg(graph).count('class="edge back"') == 2
