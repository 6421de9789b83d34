"""App validation and the applets, without a call: pure generators and the graph checks."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringflow.errors import AppInvalid
from ringflow.flows.actions import HANGUP, HttpGet, HttpResult, Say
from ringflow.flows.applets import REGISTRY
from ringflow.flows.applets.passthru import query_params
from ringflow.flows.model import parse_app
from tests.flowkit import ctx, drive

UTC = dt.UTC


def app(**nodes):
    return {"name": "t", "start": next(iter(nodes)), "nodes": nodes}


def problems(data) -> list[str]:
    with pytest.raises(AppInvalid) as info:
        parse_app(data, REGISTRY)
    return info.value.problems


def test_a_valid_app_parses():
    graph = parse_app(
        app(
            hello={"applet": "greeting", "text": "Hi", "next": "ask"},
            ask={
                "applet": "passthru",
                "url": "https://example.com/x",
                "on_200": "bye",
                "on_302": None,
            },
            bye={"applet": "hangup"},
        ),
        REGISTRY,
    )
    assert graph.start == "hello"
    assert graph.nodes["ask"].exits == {"on_200": "bye", "on_302": None}


def test_problems_name_the_node_and_field():
    found = problems(
        app(
            hello={"applet": "greeting", "next": "nowhere", "colour": "red"},
            ask={"applet": "passthru", "url": "ftp://example.com"},
            odd={"applet": "dance"},
        )
    )
    assert "node 'hello': exit 'next': unknown node 'nowhere'" in found
    assert "node 'hello': field 'text': required by greeting" in found
    assert any(p.startswith("node 'hello': field 'colour': not a field of greeting") for p in found)
    assert "node 'ask': field 'url': 'ftp://example.com' is not an http or https URL" in found
    assert any(p.startswith("node 'odd': field 'applet': 'dance' is not an applet") for p in found)


def test_unreachable_nodes_are_refused():
    assert problems(app(a={"applet": "hangup"}, b={"applet": "greeting", "text": "lost"})) == [
        "node 'b': unreachable from start 'a'"
    ]


def test_a_loop_without_a_wait_is_refused_but_one_with_a_greeting_is_fine():
    spin = app(
        a={"applet": "passthru", "url": "http://x.example/", "on_200": "b", "on_302": "b"},
        b={"applet": "passthru", "url": "http://x.example/", "on_200": "a", "on_302": "a"},
    )
    assert problems(spin) == ["nodes 'a', 'b': form a loop with no input or wait, which would spin"]
    waits = app(
        a={"applet": "passthru", "url": "http://x.example/", "on_200": "b", "on_302": "b"},
        b={"applet": "greeting", "text": "again", "next": "a"},
    )
    parse_app(waits, REGISTRY)


def test_start_must_be_a_node():
    data = app(a={"applet": "hangup"})
    data["start"] = "zz"
    assert "start: 'zz' is not a node of this app" in problems(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_documents_are_rejected_with_a_message_never_a_crash(data):
    try:
        parse_app(data, REGISTRY)
    except AppInvalid as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


node_names = st.sampled_from(["a", "b", "c", "d"])
nodes = st.fixed_dictionaries(
    {"applet": st.sampled_from(["greeting", "passthru", "hangup"])},
    optional={
        "text": st.text(max_size=5),
        "url": st.sampled_from(["http://x.example/", "nope", 3]),
        "next": node_names | st.none(),
        "on_200": node_names,
        "on_302": node_names,
        "mode": st.sampled_from(["sync", "async", "later"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(node_names, nodes, min_size=1), node_names)
def test_random_graphs_either_parse_fully_or_explain(graph_nodes, start):
    data = {"name": "fuzz", "start": start, "nodes": graph_nodes}
    try:
        graph = parse_app(data, REGISTRY)
    except AppInvalid as exc:
        assert exc.problems
        return
    # A graph that parses has every exit resolved and every node reachable.
    for node in graph.nodes.values():
        for target in node.exits.values():
            assert target is None or target in graph.nodes


def test_passthru_query_parameters_have_exotels_quirks():
    q = query_params(ctx(digits="89"))
    assert q["digits"] == '"89"'
    assert q["Created"] == "Wed, 23 Feb 2022 12:31:59"
    assert q["StartTime"] == "2022-02-23 12:31:59"
    assert q["CurrentTime"] == "2022-02-23 12:32:09"
    assert q["EndTime"] == "1970-01-01 05:30:00"
    assert q["Direction"] == "outbound-dial"
    assert (q["flow_id"], q["tenant_id"], q["CustomField"]) == ("42", "7", "cf")


def test_greeting_says_its_text():
    actions, exit_name = drive({"applet": "greeting", "text": "Hello"}, ctx(), [])
    assert actions == [Say("Hello", None)] and exit_name == "next"


@pytest.mark.parametrize(
    ("result", "exit_name"),
    [
        (HttpResult(200), "on_200"),
        (HttpResult(302), "on_302"),
        (HttpResult(500), "on_302"),
        (HttpResult(None, error="no answer within 10s"), "on_302"),
    ],
)
def test_passthru_branches(result, exit_name):
    actions, taken = drive({"applet": "passthru", "url": "http://x.example/h"}, ctx(), [result])
    assert isinstance(actions[0], HttpGet) and actions[0].wait
    assert taken == exit_name


def test_passthru_select_body_is_kept_for_switch_case():
    context = ctx()
    body = HttpResult(200, "text/plain; charset=utf-8", '{"select": "gold"}')
    drive({"applet": "passthru", "url": "http://x.example/h"}, context, [body])
    assert context.vars["select"] == "gold"


def test_async_passthru_does_not_wait():
    actions, taken = drive(
        {"applet": "passthru", "url": "http://x.example/h", "mode": "async"}, ctx(), []
    )
    assert actions[0].wait is False and taken == "next"


def test_hangup_ends_the_call():
    assert drive({"applet": "hangup"}, ctx(), []) == ([], HANGUP)


@pytest.mark.parametrize(
    ("vars", "expected"),
    [
        ({}, "call-attempt"),
        ({"RecordingUrl": "http://x/r.mp3"}, "voicemail"),
        ({"DialCallStatus": "completed", "RecordingUrl": "http://x/r.mp3"}, "completed"),
        ({"DialCallStatus": "no-answer"}, "call-attempt"),
    ],
)
def test_passthru_call_type(vars, expected):
    assert query_params(ctx(**vars))["CallType"] == expected


def test_a_loop_through_an_error_exit_taken_without_waiting_is_refused():
    spin = app(
        ask={"applet": "gather", "url": "http://x.example/g", "on_error": "ask", "on_input": None},
    )
    assert problems(spin) == ["nodes 'ask': form a loop with no input or wait, which would spin"]
    # The same node looping on input is fine: the caller was asked and answered.
    parse_app(
        app(ask={"applet": "gather", "url": "http://x.example/g", "on_input": "ask"}), REGISTRY
    )
