"""The IVR Menu, Gather, Switch Case, Timing and Transfer applets, without a call: each branch of
each generator, and each validation message, through the app validator."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringflow.errors import AppInvalid
from ringflow.flows.actions import CollectDigits, HttpGet, HttpResult, Play, Say, TransferTo
from ringflow.flows.applets import REGISTRY, switch_case
from ringflow.flows.applets.passthru import query_params
from ringflow.flows.context import FlowContext
from ringflow.flows.model import Node, parse_app
from tests.flowkit import run_node

UTC = dt.UTC
# Thursday 26 November 2026, 15:30 in Asia/Kolkata.
THURSDAY_1000_UTC = dt.datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

# Tests that need the model to read Switch Case's exits from its config (AppletSpec.config_exits,
# proposed in issue 3): skipped until the model has it.


def ctx(
    now: dt.datetime = THURSDAY_1000_UTC, time_zone: str = "Asia/Kolkata", **vars
) -> FlowContext:
    return FlowContext(
        call_sid="abc",
        account_id=7,
        app_id=42,
        customer="09812345678",
        exophone="08039591234",
        direction="outbound-dial",
        created_at=now - dt.timedelta(seconds=5),
        started_at=now - dt.timedelta(seconds=4),
        time_zone=time_zone,
        custom_field=None,
        now=lambda: now,
        vars=dict(vars),
    )


def app(**nodes):
    """An app starting at the first node; exits to nodes not given lead to hangups."""
    targets = set()
    for node in nodes.values():
        targets |= {t for k, t in node.items() if k.startswith("on_") or k in ("next", "default")}
        if isinstance(node.get("cases"), dict):
            targets |= set(node["cases"].values())
    for target in sorted(t for t in targets if isinstance(t, str) and t not in nodes):
        nodes[target] = {"applet": "hangup"}
    return {"name": "t", "start": next(iter(nodes)), "nodes": nodes}


def problems(node_cfg: dict) -> list[str]:
    with pytest.raises(AppInvalid) as info:
        parse_app(app(n=node_cfg), REGISTRY)
    return info.value.problems


def drive(node_cfg: dict, context: FlowContext, results: list):
    """Run one applet (validated as an app) feeding ``results``; return (actions, exit)."""
    node = parse_app(app(n=node_cfg), REGISTRY).nodes["n"]
    return run_node(node, context, results)


# IVR Menu

MENU = {"applet": "ivr_menu", "text": "Press 1 or 2", "on_1": "one", "on_2": "two"}
ASK_KEY = CollectDigits(max_digits=1, timeout=5.0, finish_on="")


def test_menu_takes_the_branch_of_the_key_pressed():
    context = ctx()
    actions, taken = drive(MENU, context, [None, "2"])
    assert actions == [Say("Press 1 or 2"), ASK_KEY]
    assert taken == "on_2" and context.vars["digits"] == "2"


@pytest.mark.parametrize(("key", "exit_name"), [("*", "on_star"), ("#", "on_hash"), ("0", "on_0")])
def test_menu_star_hash_and_zero_are_keys_too(key, exit_name):
    cfg = {"applet": "ivr_menu", "text": "Go", "on_star": "a", "on_hash": "b", "on_0": "c"}
    actions, taken = drive(cfg, ctx(), [None, key])
    assert taken == exit_name and actions[1].finish_on == ""  # "#" must not end the input


def test_menu_plays_audio_and_uses_its_timeout_and_voice():
    cfg = {
        "applet": "ivr_menu",
        "audio_url": "https://x.example/menu.wav",
        "timeout": 9,
        "on_1": "a",
    }
    actions, _ = drive(cfg, ctx(), [None, "1"])
    assert actions == [Play("https://x.example/menu.wav"), CollectDigits(1, 9.0, "")]
    actions, _ = drive({**MENU, "voice": "hi"}, ctx(), [None, "1"])
    assert actions[0] == Say("Press 1 or 2", "hi")


def test_menu_replays_after_an_invalid_key_then_takes_a_valid_one():
    context = ctx()
    actions, taken = drive(MENU, context, [None, "7", None, "1"])
    assert actions == [Say("Press 1 or 2"), ASK_KEY] * 2
    assert taken == "on_1" and context.vars["digits"] == "1"


def test_menu_without_input_repeats_then_leaves_by_no_input():
    context = ctx(digits="99")  # an earlier applet's digits are not this menu's answer
    actions, taken = drive(MENU, context, [])
    assert actions == [Say("Press 1 or 2"), ASK_KEY] * 3  # the prompt, then 2 repeats by default
    assert taken == "on_no_input" and context.vars["digits"] == ""


def test_menu_exit_reflects_the_last_attempt():
    context = ctx()
    actions, taken = drive({**MENU, "repeats": 1}, context, [None, "", None, "5"])
    assert len(actions) == 4 and taken == "on_invalid" and context.vars["digits"] == "5"
    actions, taken = drive({**MENU, "repeats": 1}, ctx(), [None, "5", None, ""])
    assert taken == "on_no_input"


def test_menu_with_no_repeats_asks_once():
    actions, taken = drive({**MENU, "repeats": 0}, ctx(), [None, "9"])
    assert actions == [Say("Press 1 or 2"), ASK_KEY] and taken == "on_invalid"


def test_menu_offers_a_key_whose_exit_is_null_and_only_written_keys():
    cfg = {**MENU, "on_3": None}
    assert drive(cfg, ctx(), [None, "3"])[1] == "on_3"  # offered: the engine then ends the call
    assert drive(cfg, ctx(), [None, "4"] * 3)[1] == "on_invalid"


@pytest.mark.parametrize(
    ("cfg", "problem"),
    [
        (
            {"applet": "ivr_menu", "on_1": "a"},
            "node 'n': field 'text': a prompt is required: 'text' to speak or 'audio_url' to play",
        ),
        (
            {**MENU, "audio_url": "https://x.example/a.wav"},
            "node 'n': field 'text': give 'text' or 'audio_url', not both",
        ),
        ({**MENU, "text": ""}, "node 'n': field 'text': must be a non-empty text to speak"),
        ({**MENU, "text": "x" * 4001}, "node 'n': field 'text': must be at most 4000 characters"),
        (
            {"applet": "ivr_menu", "audio_url": "ftp://x.example/a.wav", "on_1": "a"},
            "node 'n': field 'audio_url': 'ftp://x.example/a.wav' is not an http or https URL",
        ),
        ({**MENU, "voice": ""}, "node 'n': field 'voice': must be a voice name such as 'en'"),
        ({**MENU, "repeats": 11}, "node 'n': field 'repeats': must be a whole number from 0 to 10"),
        (
            {**MENU, "repeats": True},
            "node 'n': field 'repeats': must be a whole number from 0 to 10",
        ),
        (
            {**MENU, "repeats": 1.5},
            "node 'n': field 'repeats': must be a whole number from 0 to 10",
        ),
        (
            {**MENU, "timeout": 0},
            "node 'n': field 'timeout': must be a number of seconds from 1 to 60",
        ),
        (
            {**MENU, "timeout": "5"},
            "node 'n': field 'timeout': must be a number of seconds from 1 to 60",
        ),
        ({**MENU, "on_1": 5}, "node 'n': exit 'on_1': must be a node name"),
    ],
)
def test_menu_validation_names_the_field(cfg, problem):
    assert problem in problems(cfg)


def test_menu_unknown_fields_and_exits_are_refused():
    found = problems({**MENU, "on_10": "a"})
    assert found[0].startswith("node 'n': field 'on_10': not a field of ivr_menu (text, audio_url")
    assert "on_star, on_hash, on_invalid, on_no_input" in found[0]


def test_menu_exit_to_an_unknown_node_is_refused():
    data = {"name": "t", "start": "m", "nodes": {"m": {**MENU, "on_1": "nowhere", "on_2": None}}}
    with pytest.raises(AppInvalid) as info:
        parse_app(data, REGISTRY)
    assert info.value.problems == ["node 'm': exit 'on_1': unknown node 'nowhere'"]


# Gather, static form

GATHER = {
    "applet": "gather",
    "text": "Enter your order number",
    "max_digits": 4,
    "finish_on_key": "#",
    "input_timeout": 6,
    "on_input": "got",
    "on_no_input": "none",
}
ASK_DIGITS = CollectDigits(max_digits=4, timeout=6.0, finish_on="#")


def test_gather_keeps_the_digits_for_later_applets():
    context = ctx()
    actions, taken = drive(GATHER, context, [None, "1234"])
    assert actions == [Say("Enter your order number"), ASK_DIGITS]
    assert taken == "on_input" and context.vars["digits"] == "1234"
    assert query_params(context)["digits"] == '"1234"'  # what a following Passthru sends


def test_gather_defaults():
    cfg = {"applet": "gather", "audio_url": "https://x.example/p.wav"}
    actions, taken = drive(cfg, ctx(), [])
    assert actions == [Play("https://x.example/p.wav"), CollectDigits(10, 5.0, "#")] * 3
    assert taken == "on_no_input"


def test_gather_repeats_with_the_repeat_prompt_then_no_input():
    context = ctx(digits="55")
    cfg = {**GATHER, "repeats": 2, "repeat_text": "Once more", "voice": "en"}
    actions, taken = drive(cfg, context, [])
    assert actions == [
        Say("Enter your order number", "en"),
        ASK_DIGITS,
        Say("Once more", "en"),
        ASK_DIGITS,
        Say("Once more", "en"),
        ASK_DIGITS,
    ]
    assert taken == "on_no_input" and context.vars["digits"] == ""


def test_gather_input_on_a_repeat_and_a_repeat_audio_prompt():
    cfg = {**GATHER, "repeats": 1, "repeat_audio_url": "https://x.example/again.wav"}
    actions, taken = drive(cfg, ctx(), [None, "", None, "77"])
    assert actions[2] == Play("https://x.example/again.wav") and taken == "on_input"


@pytest.mark.parametrize("key", ["*", ""])
def test_gather_finish_key_may_be_star_or_none(key):
    actions, _ = drive({**GATHER, "finish_on_key": key}, ctx(), [None, "1"])
    assert actions[1].finish_on == key


@pytest.mark.parametrize(
    ("cfg", "problem"),
    [
        (
            {"applet": "gather", "max_digits": 4},
            "node 'n': field 'text': a prompt is required: 'text' to speak or 'audio_url' to play",
        ),
        (
            {**GATHER, "audio_url": "https://x.example/a.wav"},
            "node 'n': field 'text': give 'text' or 'audio_url', not both",
        ),
        (
            {**GATHER, "repeat_text": "a", "repeat_audio_url": "https://x.example/a.wav"},
            "node 'n': field 'repeat_text': give 'repeat_text' or 'repeat_audio_url', not both",
        ),
        ({**GATHER, "url_timeout": 5}, "node 'n': field 'url_timeout': only used with 'url'"),
        (
            {**GATHER, "max_digits": 0},
            "node 'n': field 'max_digits': must be a whole number from 1 to 32",
        ),
        (
            {**GATHER, "max_digits": 33},
            "node 'n': field 'max_digits': must be a whole number from 1 to 32",
        ),
        (
            {**GATHER, "finish_on_key": "5"},
            "node 'n': field 'finish_on_key': must be '#', '*' or '' (no finish key)",
        ),
        (
            {**GATHER, "input_timeout": 61},
            "node 'n': field 'input_timeout': must be a number of seconds from 1 to 60",
        ),
        (
            {**GATHER, "repeats": -1},
            "node 'n': field 'repeats': must be a whole number from 0 to 10",
        ),
        (
            {**GATHER, "repeat_text": " "},
            "node 'n': field 'repeat_text': must be a non-empty text to speak",
        ),
        (
            {**GATHER, "repeat_audio_url": "nope"},
            "node 'n': field 'repeat_audio_url': 'nope' is not an http or https URL",
        ),
        (
            {**GATHER, "url": "x.example/g"},
            "node 'n': field 'url': 'x.example/g' is not an http or https URL",
        ),
        (
            {"applet": "gather", "url": "https://x.example/g", "url_timeout": 31},
            "node 'n': field 'url_timeout': must be a number of seconds from 1 to 30",
        ),
        ({**GATHER, "on_error": 3}, "node 'n': exit 'on_error': must be a node name"),
    ],
)
def test_gather_validation_names_the_field(cfg, problem):
    assert problem in problems(cfg)


def test_gather_cross_field_problems_are_reported_together():
    found = problems(
        {
            "applet": "gather",
            "url_timeout": 5,
            "repeat_text": "a",
            "repeat_audio_url": "https://x.example/a",
        }
    )
    assert (
        "node 'n': field 'text': a prompt is required: 'text' to speak or 'audio_url' to play; "
        "field 'repeat_text': give 'repeat_text' or 'repeat_audio_url', not both; "
        "field 'url_timeout': only used with 'url'"
    ) in found


# Gather, dynamic form

DYNAMIC = {
    "applet": "gather",
    "url": "https://x.example/gather",
    "on_input": "got",
    "on_no_input": "none",
    "on_error": "oops",
}


def answer(body, status=200, content_type="application/json") -> HttpResult:
    return HttpResult(status, content_type, body if isinstance(body, str) else json.dumps(body))


def test_dynamic_gather_asks_the_url_with_the_exotel_version_header():
    context = ctx(digits="12")
    expected = query_params(context)
    actions, _ = drive(DYNAMIC, context, [HttpResult(500)])
    assert actions == [
        HttpGet(
            url="https://x.example/gather",
            params=expected,
            timeout=10.0,
            headers={"Exotel-Version": "1.0"},
        )
    ]
    assert actions[0].params["digits"] == '"12"' and actions[0].wait
    actions, _ = drive({**DYNAMIC, "url_timeout": 3}, ctx(), [HttpResult(500)])
    assert actions[0].timeout == 3.0


def test_dynamic_gather_runs_the_answers_settings():
    body = {
        "gather_prompt": {"text": "Enter your PIN"},
        "max_input_digits": 4,
        "finish_on_key": "*",
        "input_timeout": 6,
        "repeat_menu": 1,
        "repeat_gather_prompt": {"audio_url": "https://x.example/again.wav"},
        "something_else": True,  # unknown fields are ignored
    }
    context = ctx()
    actions, taken = drive(DYNAMIC, context, [answer(body), None, "", None, "4321"])
    assert actions[1:] == [
        Say("Enter your PIN"),
        CollectDigits(4, 6.0, "*"),
        Play("https://x.example/again.wav"),
        CollectDigits(4, 6.0, "*"),
    ]
    assert taken == "on_input" and context.vars["digits"] == "4321"


def test_dynamic_gather_numbers_may_be_strings_and_null_finish_key_means_none():
    body = {
        "gather_prompt": {"audio_url": "https://x.example/p.wav"},
        "max_input_digits": "6",
        "input_timeout": "2.5",
        "repeat_menu": "0",
        "finish_on_key": None,
    }
    actions, taken = drive(DYNAMIC, ctx(), [answer(body, content_type="text/plain")])
    assert actions[1:] == [Play("https://x.example/p.wav"), CollectDigits(6, 2.5, "")]
    assert taken == "on_no_input"


def test_dynamic_gather_falls_back_to_the_nodes_values():
    cfg = {**DYNAMIC, "text": "Node prompt", "max_digits": 3, "repeats": 0, "voice": "hi"}
    actions, taken = drive(cfg, ctx(), [answer({"input_timeout": 8}), None, "123"])
    assert actions[1:] == [Say("Node prompt", "hi"), CollectDigits(3, 8.0, "#")]
    assert taken == "on_input"
    actions, _ = drive(cfg, ctx(), [answer({"gather_prompt": {"text": "From URL"}})])
    assert actions[1] == Say("From URL", "hi")


@pytest.mark.parametrize(
    "result",
    [
        HttpResult(500, "text/plain", "oops"),
        HttpResult(302),
        HttpResult(None, error="no answer within 10s"),
        answer("not json"),
        answer([1, 2]),
        answer({}),  # no gather_prompt and the node has no prompt either
        answer({"gather_prompt": "Enter your PIN"}),
        answer({"gather_prompt": {"text": "a", "audio_url": "https://x.example/a.wav"}}),
        answer({"gather_prompt": {}}),
        answer({"gather_prompt": {"text": " "}}),
        answer({"gather_prompt": {"audio_url": "file:///etc/passwd"}}),
        answer({"gather_prompt": {"text": "a"}, "repeat_gather_prompt": {"txt": "b"}}),
        answer({"gather_prompt": {"text": "a"}, "max_input_digits": 0}),
        answer({"gather_prompt": {"text": "a"}, "max_input_digits": 33}),
        answer({"gather_prompt": {"text": "a"}, "max_input_digits": 2.5}),
        answer({"gather_prompt": {"text": "a"}, "max_input_digits": "four"}),
        answer({"gather_prompt": {"text": "a"}, "max_input_digits": True}),
        answer({"gather_prompt": {"text": "a"}, "finish_on_key": "5"}),
        answer({"gather_prompt": {"text": "a"}, "input_timeout": 0}),
        answer({"gather_prompt": {"text": "a"}, "input_timeout": 61}),
        answer({"gather_prompt": {"text": "a"}, "input_timeout": [6]}),
        answer({"gather_prompt": {"text": "a"}, "repeat_menu": -1}),
        answer({"gather_prompt": {"text": "a"}, "repeat_menu": 11}),
    ],
)
def test_dynamic_gather_bad_answers_leave_by_on_error_without_prompting(result):
    context = ctx(digits="12")
    actions, taken = drive(DYNAMIC, context, [result])
    assert len(actions) == 1 and isinstance(actions[0], HttpGet)
    assert taken == "on_error" and context.vars["digits"] == ""
    assert context.vars["gather_error"].startswith("GET https://x.example/gather: ")


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (HttpResult(500, "text/plain", "oops"), "answered 500"),
        (HttpResult(None, error="no answer within 10s"), "no answer within 10s"),
        (answer("<xml/>"), "the answer is not JSON"),
        (answer([1]), "the answer is not a JSON object"),
        (answer({}), "gather_prompt: required (the node has no text or audio_url)"),
        (
            answer({"gather_prompt": "hi"}),
            'gather_prompt: must be {"text": ...} or {"audio_url": ...}',
        ),
        (
            answer({"gather_prompt": {"text": ""}}),
            "gather_prompt.text: must be a non-empty text to speak",
        ),
        (
            answer({"gather_prompt": {"audio_url": "x"}}),
            "gather_prompt.audio_url: 'x' is not an http or https URL",
        ),
        (
            answer({"gather_prompt": {"text": "a"}, "max_input_digits": 40}),
            "max_input_digits: must be a whole number from 1 to 32",
        ),
        (
            answer({"gather_prompt": {"text": "a"}, "max_input_digits": "four"}),
            "max_input_digits: 'four' is not a number",
        ),
        (
            answer({"gather_prompt": {"text": "a"}, "input_timeout": 0.5}),
            "input_timeout: must be a number of seconds from 1 to 60",
        ),
        (
            answer({"gather_prompt": {"text": "a"}, "finish_on_key": "0"}),
            "finish_on_key: must be '#', '*' or '' (no finish key)",
        ),
        (
            answer({"gather_prompt": {"text": "a"}, "repeat_menu": 99}),
            "repeat_menu: must be a whole number from 0 to 10",
        ),
    ],
)
def test_dynamic_gather_says_why_an_answer_is_bad(result, reason):
    context = ctx()
    drive(DYNAMIC, context, [result])
    assert context.vars["gather_error"] == f"GET https://x.example/gather: {reason}"


def test_a_gather_that_works_clears_an_earlier_gathers_error():
    context = ctx(gather_error="GET https://x.example/gather: answered 500")
    drive(DYNAMIC, context, [answer({"gather_prompt": {"text": "a"}}), None, "12"])
    assert "gather_error" not in context.vars
    drive(GATHER, context := ctx(gather_error="old"), [None, "12"])
    assert "gather_error" not in context.vars


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
ANSWER_KEYS = [
    "gather_prompt", "repeat_gather_prompt", "max_input_digits", "finish_on_key",
    "input_timeout", "repeat_menu", "text", "audio_url",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(ANSWER_KEYS), json_values, max_size=6) | json_values,
    st.sampled_from(["application/json", "text/plain", ""]),
)
def test_dynamic_gather_any_answer_either_configures_or_takes_on_error(body, content_type):
    text = json.dumps(body)  # floats may be NaN or Infinity: JSON parsers accept those too
    context = ctx()
    actions, taken = drive(DYNAMIC, context, [HttpResult(200, content_type, text)])
    assert taken in ("on_no_input", "on_error")
    if taken == "on_error":
        assert len(actions) == 1
    else:
        assert all(isinstance(a, Say | Play | CollectDigits) for a in actions[1:])
        assert all(1 <= a.max_digits <= 32 and 1 <= a.timeout <= 60 for a in actions[2::2])
    assert context.vars["digits"] == ""


def test_dynamic_gather_needs_no_node_prompt_but_refuses_two():
    parse_app(app(n=DYNAMIC), REGISTRY)
    found = problems({**DYNAMIC, "text": "a", "audio_url": "https://x.example/a.wav"})
    assert found == ["node 'n': field 'text': give 'text' or 'audio_url', not both"]


# Switch Case


def switch_node(config: dict, exits: dict | None = None) -> Node:
    """A Switch Case node as the model (with config_exits) parses it."""
    return Node("n", "switch_case", config, {**switch_case.config_exits(config), **(exits or {})})


CASES = {"gold": "vip", "silver": "regular", 3: "three"}


@pytest.mark.parametrize(
    ("variable", "vars", "exit_name"),
    [
        (None, {"select": "gold"}, "cases.gold"),
        ("select", {"select": "silver", "digits": "gold"}, "cases.silver"),
        ("digits", {"select": "gold", "digits": "3"}, "cases.3"),
        (None, {"select": "bronze"}, "default"),
        (None, {"select": "Gold"}, "default"),  # exact: case counts
        (None, {"digits": "gold"}, "default"),  # select unset
        ("digits", {}, "default"),
        ("AnsweredBy", {"AnsweredBy": "gold", "select": "silver"}, "cases.gold"),
        ("AnsweredBy", {"select": "gold"}, "default"),  # no detection ran
    ],
)
def test_switch_case_branches_on_the_variable(variable, vars, exit_name):
    config = {"cases": CASES} | ({"variable": variable} if variable else {})
    actions, taken = run_node(switch_node(config, {"default": "d"}), ctx(**vars), [])
    assert actions == [] and taken == exit_name


def test_switch_case_exits_come_from_its_cases():
    assert switch_case.config_exits({"cases": CASES}) == {
        "cases.gold": "vip",
        "cases.silver": "regular",
        "cases.3": "three",
    }
    # Entries the field check refuses are not exits (the model calls this on invalid nodes too).
    assert switch_case.config_exits({"cases": {True: "a", "": "b", "x": 5, "y": None}}) == {
        "cases.y": None
    }
    assert switch_case.config_exits({"cases": ["gold"]}) == {}
    assert switch_case.config_exits({}) == {}


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (
            "cases",
            {},
            "must be a mapping of values to node names, such as {gold: vip, silver: regular}",
        ),
        (
            "cases",
            ["gold"],
            "must be a mapping of values to node names, such as {gold: vip, silver: regular}",
        ),
        ("cases", {"": "a"}, "'' cannot be a case: use a non-empty text or a whole number"),
        ("cases", {True: "a"}, "True cannot be a case: use a non-empty text or a whole number"),
        ("cases", {1: "a", "1": "b"}, "'1' appears twice"),
        ("cases", {"gold": 5}, "case 'gold': must lead to a node name (or null to end the call)"),
        ("cases", {str(i): "a" for i in range(101)}, "at most 100 cases"),
        ("variable", "dtmf", "must be one of select, digits, AnsweredBy"),
    ],
)
def test_switch_case_field_checks(field, value, problem):
    spec = switch_case.SPEC
    check = spec.required.get(field) or spec.optional[field]
    assert check(value) == problem


def test_switch_case_field_checks_accept_good_values():
    assert switch_case.SPEC.required["cases"]({"gold": "a", 2: None}) is None
    assert switch_case.SPEC.optional["variable"]("digits") is None


def test_switch_case_stays_out_of_the_registry_until_the_model_reads_its_exits():
    assert ("switch_case" in REGISTRY) == True


SWITCH = {"applet": "switch_case", "cases": {"gold": "vip", "silver": None}, "default": "other"}


def test_switch_case_app_validates_case_targets():
    data = {
        "name": "t",
        "start": "s",
        "nodes": {"s": {**SWITCH, "cases": {"gold": "nowhere"}}, "other": {"applet": "hangup"}},
    }
    with pytest.raises(AppInvalid) as info:
        parse_app(data, REGISTRY)
    assert info.value.problems == ["node 's': exit 'cases.gold': unknown node 'nowhere'"]


def test_switch_case_targets_count_as_reachable_and_loops_through_cases_are_caught():
    graph = parse_app(app(s=SWITCH), REGISTRY)
    assert graph.nodes["s"].exits == {"default": "other", "cases.gold": "vip", "cases.silver": None}
    spin = {
        "name": "t",
        "start": "s",
        "nodes": {
            "s": {"applet": "switch_case", "cases": {"again": "p"}},
            "p": {"applet": "passthru", "url": "http://x.example/", "on_200": "s", "on_302": "s"},
        },
    }
    with pytest.raises(AppInvalid) as info:
        parse_app(spin, REGISTRY)
    assert info.value.problems == [
        "nodes 'p', 's': form a loop with no input or wait, which would spin"
    ]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (
            "cases",
            {"gold": 5},
            "node 'n': field 'cases': case 'gold': must lead to a node name (or null to end the call)",
        ),
        (
            "variable",
            "dtmf",
            "node 'n': field 'variable': must be one of select, digits, AnsweredBy",
        ),
    ],
)
def test_switch_case_validation_names_the_field(field, value, problem):
    assert problem in problems({**SWITCH, field: value})


def test_switch_case_driven_as_an_app():
    assert drive(SWITCH, ctx(select="gold"), []) == ([], "cases.gold")
    assert drive({**SWITCH, "variable": "digits"}, ctx(digits="1"), []) == ([], "default")


# Timing

HOURS = {
    "mon": ["09:00-18:00"],
    "thu": ["09:00-13:00", "14:00-18:00"],
    "sat": "10:00-24:00",
}
TIMING = {
    "applet": "timing",
    "hours": HOURS,
    "holidays": ["2026-01-26"],
    "on_open": "o",
    "on_closed": "c",
}
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("local", "exit_name"),
    [
        (dt.datetime(2026, 11, 26, 15, 30, tzinfo=IST), "on_open"),  # Thursday afternoon
        (dt.datetime(2026, 11, 26, 9, 0, tzinfo=IST), "on_open"),  # a range includes its start
        (dt.datetime(2026, 11, 26, 8, 59, 59, tzinfo=IST), "on_closed"),
        (dt.datetime(2026, 11, 26, 13, 0, tzinfo=IST), "on_closed"),  # and excludes its end
        (dt.datetime(2026, 11, 26, 13, 59, tzinfo=IST), "on_closed"),  # lunch
        (dt.datetime(2026, 11, 26, 17, 59, 59, tzinfo=IST), "on_open"),
        (dt.datetime(2026, 11, 26, 18, 0, tzinfo=IST), "on_closed"),
        (dt.datetime(2026, 11, 27, 12, 0, tzinfo=IST), "on_closed"),  # Friday: not listed
        (dt.datetime(2026, 11, 28, 23, 59, 59, tzinfo=IST), "on_open"),  # Saturday until 24:00
        (dt.datetime(2026, 1, 26, 12, 0, tzinfo=IST), "on_closed"),  # a Monday, but a holiday
        (dt.datetime(2026, 1, 19, 12, 0, tzinfo=IST), "on_open"),  # the Monday before
    ],
)
def test_timing_open_and_closed(local, exit_name):
    actions, taken = drive(TIMING, ctx(now=local.astimezone(UTC)), [])
    assert actions == [] and taken == exit_name


def test_timing_reads_the_clock_in_the_accounts_time_zone():
    # 10:00 UTC on Thursday is 15:30 in Kolkata (open) but 05:00 in New York (closed).
    assert drive(TIMING, ctx(time_zone="Asia/Kolkata"), [])[1] == "on_open"
    assert drive(TIMING, ctx(time_zone="America/New_York"), [])[1] == "on_closed"
    # 04:00 UTC on Monday 26 January is still Sunday 25 January in New York: not the holiday,
    # and Sunday is closed; 14:00 UTC is Monday 09:00 there, the holiday.
    monday = dt.datetime(2026, 1, 26, 14, 0, tzinfo=UTC)
    assert drive(TIMING, ctx(now=monday, time_zone="America/New_York"), [])[1] == "on_closed"
    no_holiday = {**TIMING, "holidays": []}
    assert drive(no_holiday, ctx(now=monday, time_zone="America/New_York"), [])[1] == "on_open"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (
            "hours",
            ["09:00-18:00"],
            "must map weekdays (mon ... sun) to lists of ranges like '09:00-18:00'",
        ),
        (
            "hours",
            {"monday": ["09:00-18:00"]},
            "'monday' is not a weekday (mon, tue, wed, thu, fri, sat, sun)",
        ),
        ("hours", {"mon": 9}, "mon: must be a list of ranges like '09:00-18:00'"),
        ("hours", {"mon": ["9-18"]}, "mon: '9-18' is not a range like '09:00-18:00'"),
        ("hours", {"mon": [900]}, "mon: 900 is not a range like '09:00-18:00'"),
        (
            "hours",
            {"tue": ["18:00-09:00"]},
            "tue: '18:00-09:00': ends before it starts (write hours past midnight on both days)",
        ),
        (
            "hours",
            {"tue": ["09:00-09:00"]},
            "tue: '09:00-09:00': ends before it starts (write hours past midnight on both days)",
        ),
        ("hours", {"wed": ["09:00-25:00"]}, "wed: '09:00-25:00': hours run from 00:00 to 24:00"),
        ("hours", {"wed": ["09:60-10:00"]}, "wed: '09:60-10:00': hours run from 00:00 to 24:00"),
        ("hours", {"wed": ["24:00-24:00"]}, "wed: '24:00-24:00': hours run from 00:00 to 24:00"),
        ("hours", {"wed": ["09:00-24:30"]}, "wed: '09:00-24:30': hours run from 00:00 to 24:00"),
        ("holidays", "2026-01-26", "must be a list of dates like '2026-01-26'"),
        ("holidays", ["2026-02-30"], "'2026-02-30' is not a date like '2026-01-26'"),
        ("holidays", ["2026-1-26"], "'2026-1-26' is not a date like '2026-01-26'"),
        ("holidays", ["20260126"], "'20260126' is not a date like '2026-01-26'"),
        ("holidays", [20260126], "20260126 is not a date like '2026-01-26'"),
        ("holidays", ["2026-01-01"] * 1001, "at most 1000 dates"),
    ],
)
def test_timing_validation_names_the_field(field, value, problem):
    assert f"node 'n': field {field!r}: {problem}" in problems({**TIMING, field: value})


def test_timing_needs_hours_and_takes_an_empty_week():
    assert "node 'n': field 'hours': required by timing" in problems(
        {"applet": "timing", "on_open": "o"}
    )
    # No hours at all is a valid (always closed) timing.
    assert drive({"applet": "timing", "hours": {}}, ctx(), [])[1] == "on_closed"


# Transfer


def test_transfer_returns_the_app_to_continue_in():
    assert drive({"applet": "transfer", "app_id": 7}, ctx(), []) == ([], TransferTo(7))


@pytest.mark.parametrize("value", ["7", 0, -1, True, 7.0, 2**63])
def test_transfer_app_id_must_be_a_positive_whole_number(value):
    assert problems({"applet": "transfer", "app_id": value}) == [
        "node 'n': field 'app_id': must be the id of an app of this account (a positive whole number)"
    ]


def test_transfer_needs_an_app_id_and_has_no_exits():
    assert problems({"applet": "transfer"}) == ["node 'n': field 'app_id': required by transfer"]
    found = problems({"applet": "transfer", "app_id": 2, "next": "x"})
    assert found == ["node 'n': field 'next': not a field of transfer (app_id)"]


# The validator never crashes on these applets, whatever their fields hold.

junk = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
values = st.recursive(
    junk,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = [
    "text", "audio_url", "voice", "repeats", "timeout", "on_1", "on_star", "on_invalid",
    "max_digits", "finish_on_key", "input_timeout", "url", "url_timeout", "repeat_text",
    "repeat_audio_url", "cases", "variable", "default", "hours", "holidays", "app_id", "on_open",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["ivr_menu", "gather", "switch_case", "timing", "transfer"]),
    st.dictionaries(st.sampled_from(FIELDS), values | st.sampled_from(["n", "end"]), max_size=6),
)
def test_random_applet_configs_are_refused_with_messages_or_parse(applet, fields):
    data = {
        "name": "fuzz",
        "start": "n",
        "nodes": {"n": {"applet": applet, **fields}, "end": {"applet": "hangup"}},
    }
    try:
        graph = parse_app(data, REGISTRY)
    except AppInvalid as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    for node in graph.nodes.values():
        assert all(t is None or t in graph.nodes for t in node.exits.values())
