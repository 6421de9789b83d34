"""The ``ringflow`` command: admin actions, and errors as one clear line with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ringflow.cli import main

APP = """
name: Hello
start: hi
nodes:
  hi: {applet: greeting, text: "Hello there", next: bye}
  bye: {applet: hangup}
"""


@pytest.fixture
def ringflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run ``ringflow ARGS`` in-process against a fresh SQLite file; returns (code, out, err)."""
    monkeypatch.setenv("RINGFLOW_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("RINGFLOW_DATA_DIR", str(tmp_path / "data"))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run("migrate")
    return run


def test_account_keys_numbers_and_apps(ringflow, tmp_path: Path):
    code, out, _ = ringflow("accounts", "create", "Acme Corp", "--json")
    assert code == 0
    creds = json.loads(out)
    assert creds["sid"] == "acmecorp" and len(creds["api_token"]) >= 40
    assert ringflow("accounts", "create", "Acme Corp", "--json")[0] == 1  # the name is taken

    code, out, _ = ringflow("keys", "create", "acmecorp", "--json")
    key = json.loads(out)["api_key"]
    assert ringflow("keys", "revoke", "acmecorp", key)[:2] == (0, f"revoked {key}\n")

    assert ringflow("numbers", "add", "acmecorp", "080 3959 1234")[1] == "+918039591234\n"

    app_file = tmp_path / "hello.yaml"
    app_file.write_text(APP)
    code, out, _ = ringflow("apps", "import", "acmecorp", str(app_file))
    assert code == 0 and out == "app 1 (Hello) version 1\n"
    code, out, _ = ringflow("apps", "export", "acmecorp", "1")
    assert yaml.safe_load(out) == yaml.safe_load(APP)
    code, out, _ = ringflow("apps", "import", "acmecorp", str(app_file), "--replace", "1")
    assert out == "app 1 (Hello) version 2\n"
    assert ringflow("apps", "list", "acmecorp")[1] == "1\tHello\tversion 2\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("numbers", "add", "nosuch", "08039591234"), "no account 'nosuch'"),
        (("keys", "revoke", "nosuch", "k"), "no account 'nosuch'"),
        (("numbers", "add", "acme", "12ab"), "number '12ab' is not a valid phone number"),
        (("apps", "import", "acme", "/nonexistent.yaml"), "cannot read /nonexistent.yaml"),
        (("sandbox", "script", "09812345678", "--outcome", "maybe"), "outcome must be one of"),
        (("accounts", "create", "X", "--time-zone", "Mars/Olympus"), "unknown time zone"),
    ],
)
def test_errors_are_one_line_and_fail(ringflow, args, message):
    ringflow("accounts", "create", "acme")
    code, out, err = ringflow(*args)
    assert code == 1 and out == ""
    assert err.startswith("ringflow: error: ") and message in err
    assert err.count("\n") == 1


def test_an_invalid_app_names_the_node_and_field(ringflow, tmp_path: Path):
    ringflow("accounts", "create", "acme")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstart: a\nnodes:\n  a: {applet: greeting, next: b}\n")
    code, _, err = ringflow("apps", "import", "acme", str(bad))
    assert code == 1
    assert "node 'a': exit 'next': unknown node 'b'" in err
    assert "node 'a': field 'text': required by greeting" in err


def test_sandbox_script_and_clear(ringflow):
    ringflow("accounts", "create", "acme")
    code, out, _ = ringflow(
        "sandbox", "script", "09812345678", "--ring", "3", "--keys", "2", "--account", "acme"
    )
    assert code == 0
    assert json.loads(out.split(": ", 1)[1]) == {
        "ring": 3.0,
        "outcome": "answer",
        "keys": ["2"],
        "hangup_after": None,
    }
    assert (
        ringflow("sandbox", "clear", "09812345678", "--account", "acme")[1]
        == "+919812345678: default behaviour\n"
    )


def test_a_bad_setting_is_one_line(ringflow, monkeypatch):
    monkeypatch.setenv("RINGFLOW_PORT", "eighty")
    code, _, err = ringflow("migrate")
    assert code == 1 and err == "ringflow: error: RINGFLOW_PORT='eighty' is not a valid int\n"


def test_validate_checks_a_file_without_a_database(ringflow, tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text(APP)
    assert ringflow("apps", "validate", str(good)) == (
        0,
        f"{good}: valid, 2 nodes, starts at 'hi'\n",
        "",
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstart: a\nnodes:\n  a: {applet: ivr_menu, text: Hi, on_1: gone}\n")
    code, _, err = ringflow("apps", "validate", str(bad))
    assert code == 1 and "node 'a': exit 'on_1': unknown node 'gone'" in err
