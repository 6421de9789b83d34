"""The traps a new user met, each run through the real ``ringflow`` command: every one ends in
one line that names what is wrong and what to change, and nothing is created on the way."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ringflow import __version__
from ringflow.storage.db import alembic_config
from tests.conftest import PG_ADMIN_URL, _pg_execute, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

BAD_YAML = "name: x\nstart: a\nnodes:\n  a: {applet: greeting, text: [unclosed}\n"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with no RINGFLOW_* setting but those given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFLOW_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def ringflow(
    env: dict[str, str],
    *args: str,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real command; its exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "ringflow.cli", *args],
        env=env,
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(run: subprocess.CompletedProcess[str]) -> str:
    """The single ``ringflow: error:`` line of a failed run, without its prefix."""
    assert run.returncode == 1, run
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("ringflow: error: "), run.stderr
    return run.stderr.removeprefix("ringflow: error: ").rstrip("\n")


@pytest.fixture
def sqlite(tmp_path: Path) -> dict[str, str]:
    """The environment of a ringflow whose database is a SQLite file in tmp_path."""
    return env_for(
        tmp_path,
        RINGFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/rf.db",
        RINGFLOW_DATA_DIR=str(tmp_path / "data"),
    )


def test_a_command_run_in_another_folder_names_the_missing_database(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    message = one_error_line(ringflow(env_for(tmp_path), "calls", "show", "abc", cwd=elsewhere))
    path = elsewhere / "data" / "ringflow.db"
    assert message.startswith(f"no database at {path} (RINGFLOW_DATABASE_URL=")
    assert not (elsewhere / "data").exists()  # nothing was created
    for args in (("accounts", "show", "acme"), ("calls", "hangup", "abc"), ("apps", "list", "a")):
        assert "no database at" in one_error_line(ringflow(env_for(tmp_path), *args, cwd=elsewhere))
    assert not (elsewhere / "data").exists()


def test_migrate_says_what_it_did(sqlite: dict[str, str], tmp_path: Path):
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(sqlite["RINGFLOW_DATABASE_URL"])
    head = ScriptDirectory.from_config(config).get_current_head()
    before = ScriptDirectory.from_config(config).get_revision(head).down_revision
    created = ringflow(sqlite, "migrate")
    assert created.returncode == 0 and f"created the schema (revision {head})" in created.stdout
    assert f"the schema is up to date (revision {head})" in ringflow(sqlite, "migrate").stdout
    command.downgrade(config, before)
    upgraded = ringflow(sqlite, "migrate").stdout
    assert upgraded == (
        f"sqlite+aiosqlite:///{tmp_path}/rf.db: upgraded the schema from "
        f"revision {before} to {head}\n"
    )


def test_a_database_that_does_not_answer_is_named_with_its_variable(tmp_path: Path):
    port = free_port()  # nothing listens: connections are refused
    env = env_for(tmp_path, RINGFLOW_DATABASE_URL=f"postgresql+asyncpg://rf:pw@127.0.0.1:{port}/rf")
    for args in (("migrate",), ("accounts", "show", "acme")):
        message = one_error_line(ringflow(env, *args))
        assert message == (
            f"cannot reach the database at 127.0.0.1:{port} (RINGFLOW_DATABASE_URL="
            f"postgresql+asyncpg://rf:***@127.0.0.1:{port}/rf): connection refused; "
            "is the database server running, and is that its address?"
        )
        assert "pw" not in message


@pytest.mark.parametrize("over", ["tcp", "unix socket"])
def test_a_postgresql_database_that_does_not_exist_is_one_line(tmp_path: Path, over: str):
    name = f"ringflow_missing_{uuid.uuid4().hex[:8]}"
    url = PG_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
    where, query = "127.0.0.1:5432", ""
    if over == "unix socket":  # the server's own socket folder, the same server
        folder = _pg_execute(PG_ADMIN_URL, "SHOW unix_socket_directories").split(",")[0]
        url, where = "postgresql+asyncpg://postgres@", f"{folder}/.s.PGSQL.5432"
        query = f"?host={folder}"
    env = env_for(tmp_path, RINGFLOW_DATABASE_URL=f"{url}/{name}{query}")
    message = one_error_line(ringflow(env, "migrate"))
    assert message.startswith(
        f'database "{name}" does not exist on {where} (RINGFLOW_DATABASE_URL='
    )
    assert message.endswith(
        f"create it (createdb {name}) or point RINGFLOW_DATABASE_URL at one that exists"
    )


def test_a_port_in_use_is_found_before_anything_is_made(sqlite: dict[str, str], tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args in (("serve",), ("demo", "--before-serve")):
            message = one_error_line(ringflow(sqlite, *args, "--port", str(port)))
            assert message == (
                f"port {port} on 127.0.0.1 is in use (another ringflow?): stop "
                "what listens there, or choose another port with --port or "
                "RINGFLOW_PORT"
            )
    assert not (tmp_path / "rf.db").exists() and not (tmp_path / "data").exists()


def test_a_yaml_syntax_error_names_file_line_and_column(sqlite: dict[str, str], tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML)
    message = one_error_line(ringflow(sqlite, "apps", "validate", str(bad)))
    assert message.startswith(f"{bad}:4:40: not valid YAML or JSON: ")
    ringflow(sqlite, "migrate")
    ringflow(sqlite, "accounts", "create", "acme")
    assert one_error_line(ringflow(sqlite, "apps", "import", "acme", str(bad))) == message


def test_json_into_a_closed_pipe_says_nothing(sqlite: dict[str, str]):
    ringflow(sqlite, "migrate")
    ringflow(sqlite, "accounts", "create", "acme")
    # The reader is gone before ringflow writes, as when `head` has read its lines and exited.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringflow.cli", "accounts", "show", "acme", "--json"],
        env=sqlite,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and err == ""


def test_the_same_account_name_twice_is_refused(sqlite: dict[str, str]):
    ringflow(sqlite, "migrate")
    made = json.loads(ringflow(sqlite, "accounts", "create", "acme", "--json").stdout)
    assert made["sid"] == "acme"
    assert one_error_line(ringflow(sqlite, "accounts", "create", "Acme")) == (
        "the name 'Acme' is taken: account 'acme' exists (ringflow accounts show acme); "
        "choose another name"
    )


def test_a_group_alone_prints_its_help_and_version_is_there(sqlite: dict[str, str]):
    run = ringflow(sqlite, "apps")
    assert run.returncode == 2 and run.stdout.startswith("usage: ringflow apps [-h] ACTION")
    for action in ("import", "export", "validate", "list"):
        assert f"    {action} " in run.stdout
    version = ringflow(sqlite, "--version")
    assert version.returncode == 0 and version.stdout == f"ringflow {__version__}\n"


def test_demo_keeps_its_credentials_in_the_data_dir_and_prints_only_working_ones(
    sqlite: dict[str, str], tmp_path: Path
):
    first = ringflow(sqlite, "demo", "--port", "8080")
    assert first.returncode == 0, first.stderr
    kept = tmp_path / "data" / "demo-credentials.json"
    saved = json.loads(kept.read_text())
    assert f"(kept in {kept})" in first.stdout and saved["api_token"] in first.stdout
    assert "/admin/v1/accounts/demo/calls/<Sid>/events" in first.stdout  # the timeline
    assert "calls show <Sid>" in first.stdout  # and how to run the CLI from here

    # The key was revoked: the next banner has a new key that works, in the same account.
    assert ringflow(sqlite, "keys", "revoke", "demo", saved["api_key"]).returncode == 0
    again = ringflow(sqlite, "demo", "--port", "8080").stdout
    renewed = json.loads(kept.read_text())
    assert renewed["sid"] == "demo" and renewed["api_key"] != saved["api_key"]
    assert renewed["api_key"] in again and saved["api_key"] not in again
    assert works(sqlite, renewed)

    # The database is gone (a reset): a new demo account, not the dead credentials.
    (tmp_path / "rf.db").unlink()
    fresh = ringflow(sqlite, "demo", "--port", "8080")
    assert "created the schema" in fresh.stdout
    made = json.loads(kept.read_text())
    assert made["api_token"] != renewed["api_token"] and works(sqlite, made)


def works(env: dict[str, str], saved: dict[str, str]) -> bool:
    """Whether the saved key and token open the saved account, asked of the database."""
    import asyncio

    from ringflow.accounts import Accounts
    from ringflow.clock import make_clock
    from ringflow.storage.db import Database

    async def check() -> bool:
        db = Database(env["RINGFLOW_DATABASE_URL"])
        accounts = Accounts(db, make_clock())
        try:
            account = await accounts.authenticate(saved["api_key"], saved["api_token"])
            return account is not None and account.sid == saved["sid"]
        finally:
            await accounts.close()
            await db.close()

    return asyncio.run(check())
