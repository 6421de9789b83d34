"""The ``ringflow`` command: serve, migrate, and the admin of accounts, keys, numbers and apps.

Errors print one line, ``ringflow: error: ...``, and exit non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ringflow import __version__
from ringflow.accounts import LIMITS
from ringflow.cli import admin, server
from ringflow.config import Settings
from ringflow.errors import RingflowError
from ringflow.private_files import owner_only


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ringflow`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `ringflow apps` alone: the help of that group, which lists its actions.
        getattr(args, "help_of", parser).print_help()
        return 2
    owner_only()  # the database, recordings and keys ringflow writes are for its user alone
    try:
        settings = Settings.from_env(
            host=getattr(args, "host", None), port=getattr(args, "port", None)
        )
        code = args.func(settings, args) or 0
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # `ringflow ... --json | head`: the reader has what it wanted. Nothing more is written
        # (nor an "Exception ignored" at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RingflowError as exc:
        print(f"ringflow: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ringflow: error: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with actions (``ringflow apps import``); alone it prints its own help."""
    group = sub.add_parser(name, help=help)
    group.set_defaults(help_of=group)
    return group.add_subparsers(metavar="ACTION")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringflow", description="Self-hosted, Exotel-compatible voice API server"
    )
    parser.add_argument("--version", action="version", version=f"ringflow {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (needs PostgreSQL and Redis above 1)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # run by --workers
    p.set_defaults(func=server.cmd_serve)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.set_defaults(func=server.cmd_migrate)

    p = sub.add_parser(
        "dial", help="place a test call through the configured carrier and follow it"
    )
    p.add_argument("account_sid")
    p.add_argument("number", help="E.164 number or sip: URI to call")
    p.add_argument("--app", type=int, required=True, help="the app the call runs once answered")
    p.add_argument("--caller-id", help="ExoPhone to show (default: the account's first)")
    p.add_argument("--timeout", type=int, default=30, help="seconds to let it ring")
    p.set_defaults(func=server.cmd_dial)

    p = sub.add_parser("demo", help="create the demo account once and print how to use it")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--credentials-file",
        type=Path,
        help="where the demo's credentials are kept "
        "(default: demo-credentials.json in RINGFLOW_DATA_DIR)",
    )
    p.add_argument(
        "--before-serve",
        action="store_true",
        help="first check that serve can listen on the port (make serve)",
    )
    p.set_defaults(func=server.cmd_demo)

    accounts = _group(sub, "accounts", help="manage accounts")
    p = accounts.add_parser("create", help="create an account and its first API key")
    p.add_argument("name")
    p.add_argument("--time-zone", default="Asia/Kolkata")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=admin.command(admin.accounts_create))
    p = accounts.add_parser("show", help="an account and its limits")
    p.add_argument("account_sid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=admin.command(admin.accounts_show))
    p = accounts.add_parser(
        "set-limits", help="set the account's own limits (default or none: the server's)"
    )
    p.add_argument("account_sid")
    for limit in LIMITS:
        p.add_argument(admin.option(limit), metavar="N", dest=limit.name)
    p.set_defaults(func=admin.command(admin.accounts_set_limits))
    p = accounts.add_parser("password", help="set the account's dashboard password")
    p.add_argument("account_sid")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=admin.command(admin.accounts_password))

    operator = _group(sub, "operator", help="dashboard sign-ins that see every account")
    p = operator.add_parser("password", help="create an operator or set its password")
    p.add_argument("name", nargs="?", default="admin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=admin.command(admin.operator_password))
    p = operator.add_parser("remove", help="remove an operator sign-in")
    p.add_argument("name")
    p.set_defaults(func=admin.command(admin.operator_remove))

    keys = _group(sub, "keys", help="manage API keys")
    p = keys.add_parser("create", help="create an API key (the token is shown once)")
    p.add_argument("account_sid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=admin.command(admin.keys_create))
    p = keys.add_parser("revoke", help="revoke an API key")
    p.add_argument("account_sid")
    p.add_argument("key")
    p.set_defaults(func=admin.command(admin.keys_revoke))

    numbers = _group(sub, "numbers", help="manage ExoPhones")
    p = numbers.add_parser("add", help="give an account an ExoPhone")
    p.add_argument("account_sid")
    p.add_argument("number")
    p.add_argument("--name", default="")
    p.set_defaults(func=admin.command(admin.numbers_add))

    apps = _group(sub, "apps", help="manage apps (flows)")
    p = apps.add_parser("import", help="validate and store an app from a YAML or JSON file")
    p.add_argument("account_sid")
    p.add_argument("file", type=Path)
    p.add_argument("--replace", type=int, metavar="APP_ID", help="replace this app (new version)")
    p.set_defaults(func=admin.command(admin.apps_import))
    p = apps.add_parser("export", help="print an app as YAML or JSON")
    p.add_argument("account_sid")
    p.add_argument("app_id", type=int)
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.set_defaults(func=admin.command(admin.apps_export))
    p = apps.add_parser("validate", help="check an app file without saving it")
    p.add_argument("file", type=Path)
    p.set_defaults(func=admin.cmd_apps_validate)
    p = apps.add_parser("list", help="list an account's apps")
    p.add_argument("account_sid")
    p.set_defaults(func=admin.command(admin.apps_list))

    calls = _group(sub, "calls", help="inspect and end calls")
    p = calls.add_parser("show", help="a call's status, legs and timeline")
    p.add_argument("call_sid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=admin.command(admin.calls_show))
    p = calls.add_parser("hangup", help="hang up a live call (or take a queued one off the queue)")
    p.add_argument("call_sid")
    p.set_defaults(func=admin.cmd_calls_hangup)

    sandbox = _group(sub, "sandbox", help="script virtual phones")
    p = sandbox.add_parser("script", help="set how a virtual phone behaves")
    p.add_argument("number")
    p.add_argument("--account", default="", help="only for this account's calls (default: all)")
    p.add_argument("--ring", type=float, default=1.0, help="seconds of ringing (default 1)")
    p.add_argument("--outcome", default="answer", help="answer, busy, no-answer or failed")
    p.add_argument(
        "--keys", action="append", default=[], help="keys pressed at an input (repeatable)"
    )
    p.add_argument("--hangup-after", type=float, help="hang up this many seconds after answering")
    p.add_argument(
        "--says", action="append", default=[], help="what it says when recorded (repeatable)"
    )
    p.set_defaults(func=admin.command(admin.sandbox_script))
    p = sandbox.add_parser("clear", help="forget a virtual phone's script")
    p.add_argument("number")
    p.add_argument("--account", default="")
    p.set_defaults(func=admin.command(admin.sandbox_clear))
    return parser
