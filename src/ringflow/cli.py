"""The ``ringflow`` command: serve, migrate, and the admin of accounts, keys, numbers and apps.

Errors print one line, ``ringflow: error: ...``, and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from ringflow.accounts import LIMITS, Accounts, Limit, parse_limit
from ringflow.calls.steps import describe
from ringflow.clock import make_clock
from ringflow.config import Settings
from ringflow.errors import NotFound, RingflowError
from ringflow.logs import redact_logs
from ringflow.media.tts import TextToSpeech
from ringflow.private_files import owner_only, tighten
from ringflow.storage import call_views, timeline
from ringflow.storage.accounts import account_by_id
from ringflow.storage.cache import Lookups
from ringflow.storage.db import Database, migrate
from ringflow.storage.models import Call


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ringflow`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    owner_only()  # the database, recordings and keys ringflow writes are for its user alone
    try:
        settings = Settings.from_env(
            host=getattr(args, "host", None), port=getattr(args, "port", None)
        )
        return args.func(settings, args) or 0
    except RingflowError as exc:
        print(f"ringflow: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ringflow: error: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringflow", description="Self-hosted, Exotel-compatible voice API server")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port (needs PostgreSQL and Redis above 1)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # run by --workers
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("dial", help="place a test call through the configured carrier and follow it")
    p.add_argument("account_sid")
    p.add_argument("number", help="E.164 number or sip: URI to call")
    p.add_argument("--app", type=int, required=True, help="the app the call runs once answered")
    p.add_argument("--caller-id", help="ExoPhone to show (default: the account's first)")
    p.add_argument("--timeout", type=int, default=30, help="seconds to let it ring")
    p.set_defaults(func=cmd_dial)

    p = sub.add_parser("demo", help="create the demo account once and print how to use it")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--credentials-file", type=Path, default=Path("data/demo-credentials.json"))
    p.set_defaults(func=cmd_demo)

    accounts = sub.add_parser("accounts", help="manage accounts").add_subparsers(metavar="ACTION")
    p = accounts.add_parser("create", help="create an account and its first API key")
    p.add_argument("name")
    p.add_argument("--time-zone", default="Asia/Kolkata")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_accounts_create))
    p = accounts.add_parser("show", help="an account and its limits")
    p.add_argument("account_sid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_accounts_show))
    p = accounts.add_parser("set-limits", help="set the account's own limits "
                            "(default or none: the server's)")
    p.add_argument("account_sid")
    for limit in LIMITS:
        p.add_argument(_option(limit), metavar="N", dest=limit.name)
    p.set_defaults(func=_run(_accounts_set_limits))
    p = accounts.add_parser("password", help="set the account's dashboard password")
    p.add_argument("account_sid")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=_run(_accounts_password))

    operator = sub.add_parser("operator", help="dashboard sign-ins that see every account").add_subparsers(metavar="ACTION")
    p = operator.add_parser("password", help="create an operator or set its password")
    p.add_argument("name", nargs="?", default="admin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=_run(_operator_password))
    p = operator.add_parser("remove", help="remove an operator sign-in")
    p.add_argument("name")
    p.set_defaults(func=_run(_operator_remove))

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(metavar="ACTION")
    p = keys.add_parser("create", help="create an API key (the token is shown once)")
    p.add_argument("account_sid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_keys_create))
    p = keys.add_parser("revoke", help="revoke an API key")
    p.add_argument("account_sid")
    p.add_argument("key")
    p.set_defaults(func=_run(_keys_revoke))

    numbers = sub.add_parser("numbers", help="manage ExoPhones").add_subparsers(metavar="ACTION")
    p = numbers.add_parser("add", help="give an account an ExoPhone")
    p.add_argument("account_sid")
    p.add_argument("number")
    p.add_argument("--name", default="")
    p.set_defaults(func=_run(_numbers_add))

    apps = sub.add_parser("apps", help="manage apps (flows)").add_subparsers(metavar="ACTION")
    p = apps.add_parser("import", help="validate and store an app from a YAML or JSON file")
    p.add_argument("account_sid")
    p.add_argument("file", type=Path)
    p.add_argument("--replace", type=int, metavar="APP_ID", help="replace this app (new version)")
    p.set_defaults(func=_run(_apps_import))
    p = apps.add_parser("export", help="print an app as YAML or JSON")
    p.add_argument("account_sid")
    p.add_argument("app_id", type=int)
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.set_defaults(func=_run(_apps_export))
    p = apps.add_parser("validate", help="check an app file without saving it")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_apps_validate)
    p = apps.add_parser("list", help="list an account's apps")
    p.add_argument("account_sid")
    p.set_defaults(func=_run(_apps_list))

    calls = sub.add_parser("calls", help="inspect and end calls").add_subparsers(metavar="ACTION")
    p = calls.add_parser("show", help="a call's status, legs and timeline")
    p.add_argument("call_sid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_calls_show))
    p = calls.add_parser("hangup", help="hang up a live call (or take a queued one off the queue)")
    p.add_argument("call_sid")
    p.set_defaults(func=cmd_calls_hangup)

    sandbox = sub.add_parser("sandbox", help="script virtual phones").add_subparsers(metavar="ACTION")
    p = sandbox.add_parser("script", help="set how a virtual phone behaves")
    p.add_argument("number")
    p.add_argument("--account", default="", help="only for this account's calls (default: all)")
    p.add_argument("--ring", type=float, default=1.0, help="seconds of ringing (default 1)")
    p.add_argument("--outcome", default="answer", help="answer, busy, no-answer or failed")
    p.add_argument("--keys", action="append", default=[], help="keys pressed at an input (repeatable)")
    p.add_argument("--hangup-after", type=float, help="hang up this many seconds after answering")
    p.add_argument("--says", action="append", default=[], help="what it says when recorded (repeatable)")
    p.set_defaults(func=_run(_sandbox_script))
    p = sandbox.add_parser("clear", help="forget a virtual phone's script")
    p.add_argument("number")
    p.add_argument("--account", default="")
    p.set_defaults(func=_run(_sandbox_clear))
    return parser


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from ringflow.app import create_app
    from ringflow.http_connections import (
        ConnectionLimits,
        check_file_limit,
        protocol_class,
        raise_file_limit,
    )

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO; ringflow logs the ones that matter with the call's SID.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redact_logs()
    if args.workers != 1:
        from ringflow.workers import check, supervise

        check(settings, args.workers)
        migrate(settings.database_url)
        return supervise(settings, args.workers)
    if not args.worker:  # the supervisor migrated before starting its workers
        migrate(settings.database_url)
    limits = ConnectionLimits(settings.max_connections, settings.http_head_timeout,
                              settings.http_body_timeout)
    check_file_limit(limits, raise_file_limit())
    # uvicorn with ringflow's protocol: head and body deadlines and a connection cap on top of
    # uvicorn's keep-alive timeout (http_connections.py says why this server).
    config = uvicorn.Config(create_app(settings), log_level=settings.log_level,
                            timeout_graceful_shutdown=10, http=protocol_class(limits),
                            timeout_keep_alive=settings.http_keep_alive)
    redact_logs("uvicorn", "uvicorn.access", "uvicorn.error")  # handlers uvicorn just made
    tighten(settings)
    server = uvicorn.Server(config)
    if args.worker:
        from ringflow.workers import stop_when_orphaned

        stop_when_orphaned(server)
    # Workers share the port: each binds it with SO_REUSEPORT and the kernel spreads connections.
    server.run(sockets=[_listen(settings.host, settings.port, reuse_port=args.worker)])
    return 0


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The HTTP listening socket (uvicorn starts listening on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def cmd_dial(settings: Settings, args: argparse.Namespace) -> int:
    from ringflow.dialer import dial

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    migrate(settings.database_url)
    call = asyncio.run(dial(settings, args.account_sid, args.number, args.app,
                            caller_id=args.caller_id, time_out=args.timeout))
    return 0 if call.status == "completed" else 1


def cmd_calls_hangup(settings: Settings, args: argparse.Namespace) -> int:
    """Hang up a call through the database (and Redis, when set) the server processes share."""
    from ringflow.calls.control import CallControl
    from ringflow.calls.status import is_terminal

    migrate(settings.database_url)

    async def go() -> Call:
        db = Database(settings.database_url)
        control = CallControl(db, make_clock(), settings.instance_name, settings.redis_url)
        try:
            return await control.hang_up(args.call_sid, "cli")
        finally:
            await control.close()
            await db.close()

    call = asyncio.run(go())
    reason = f" ({call.reason})" if call.reason else ""
    if not is_terminal(call.status):
        print(f"call {call.sid}: hangup requested; still {call.status}: the server carrying it "
              "has not ended it yet (is it running?)", file=sys.stderr)
        return 1
    print(f"call {call.sid}: {call.status}{reason}")
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    migrate(settings.database_url)
    print("database is up to date")
    return 0


def cmd_apps_validate(settings: Settings, args: argparse.Namespace) -> int:
    from ringflow.flows.applets import REGISTRY
    from ringflow.flows.model import parse_app

    graph = parse_app(_load_app_file(args.file), REGISTRY)
    print(f"{args.file}: valid, {len(graph.nodes)} nodes, starts at {graph.start!r}")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from ringflow.demo import banner, ensure_demo

    async def go(accounts: Accounts) -> None:
        saved = await ensure_demo(accounts, settings.base_url, args.credentials_file)
        print(banner(saved, settings.base_url))

    return _run(lambda accounts, _args: go(accounts))(settings, args)


def _run(action: Callable[[Accounts, argparse.Namespace], Awaitable[Any]]) -> Callable[..., int]:
    """Wrap an async admin action: migrate, open the database, run, close."""

    def command(settings: Settings, args: argparse.Namespace) -> int:
        migrate(settings.database_url)

        async def go() -> None:
            db = Database(settings.database_url)
            tts = TextToSpeech(Path(settings.data_dir) / "media")
            clock = make_clock()
            # Its changes reach running servers' caches through Redis when one is set.
            accounts = Accounts(db, clock, tts, Lookups(clock, settings.redis_url))
            try:
                await action(accounts, args)
            finally:
                await accounts.close()
                tts.close()
                await db.close()

        args.settings = settings  # for actions that show the server's defaults
        asyncio.run(go())
        return 0

    return command


def _print_credentials(creds: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"sid": creds.account_sid, "api_key": creds.api_key, "api_token": creds.api_token}))
    else:
        print(f"Account SID: {creds.account_sid}\nAPI key:     {creds.api_key}\nAPI token:   {creds.api_token}")
        print("The token is shown only now; it is stored hashed.")


async def _accounts_create(accounts: Accounts, args: argparse.Namespace) -> None:
    _print_credentials(await accounts.create_account(args.name, args.time_zone), args.json)


def _option(limit: Limit) -> str:
    return "--" + limit.name.replace("_", "-")


async def _accounts_show(accounts: Accounts, args: argparse.Namespace) -> None:
    async with accounts.db.session() as session:
        account = await accounts.get(session, args.account_sid)
    _print_limits(account, args.settings, args.json)


async def _accounts_set_limits(accounts: Accounts, args: argparse.Namespace) -> None:
    given = {limit: getattr(args, limit.name) for limit in LIMITS}
    values = {
        limit.column: parse_limit(text, _option(limit), limit.low)
        for limit, text in given.items()
        if text is not None
    }
    if not values:
        raise RingflowError("give at least one of " + ", ".join(_option(x) for x in LIMITS))
    _print_limits(await accounts.set_limits(args.account_sid, values), args.settings, False)


def _print_limits(account: Any, settings: Settings, as_json: bool) -> None:
    own = {limit.name: getattr(account, limit.column) for limit in LIMITS}
    applied = {
        limit.name: own[limit.name] if own[limit.name] is not None
        else getattr(settings, limit.setting)
        for limit in LIMITS
    }
    if as_json:
        print(json.dumps({"sid": account.sid, "name": account.name,
                          "time_zone": account.time_zone, "limits": own,
                          "effective_limits": applied}, indent=2))
        return
    print(f"account {account.sid} ({account.name}), time zone {account.time_zone}")
    for limit in LIMITS:
        value = own[limit.name]
        shown = str(value) if value is not None else f"default ({applied[limit.name]})"
        print(f"  {limit.name.replace('_', ' '):<24}{shown}")


def _read_password(args: argparse.Namespace) -> str:
    """The new password: one line of stdin with --password-stdin, else typed twice."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("New dashboard password: ")
    if getpass.getpass("Again: ") != first:
        raise RingflowError("the two passwords differ")
    return first


async def _accounts_password(accounts: Accounts, args: argparse.Namespace) -> None:
    from ringflow.dashboard.logins import set_account_password

    sid = await set_account_password(accounts, args.account_sid, _read_password(args))
    print(f"dashboard password set for {sid}; sign in at /login with the account SID")


async def _operator_password(accounts: Accounts, args: argparse.Namespace) -> None:
    from ringflow.dashboard.logins import set_operator_password

    name = await set_operator_password(accounts, args.name, _read_password(args))
    print(f"operator {name} can sign in at /operator/login")


async def _operator_remove(accounts: Accounts, args: argparse.Namespace) -> None:
    from ringflow.dashboard.logins import remove_operator

    await remove_operator(accounts, args.name)
    print(f"removed operator {args.name}")


async def _keys_create(accounts: Accounts, args: argparse.Namespace) -> None:
    _print_credentials(await accounts.create_key(args.account_sid), args.json)


async def _keys_revoke(accounts: Accounts, args: argparse.Namespace) -> None:
    await accounts.revoke_key(args.account_sid, args.key)
    print(f"revoked {args.key}")


async def _numbers_add(accounts: Accounts, args: argparse.Namespace) -> None:
    print(await accounts.add_number(args.account_sid, args.number, args.name))


def _load_app_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RingflowError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise RingflowError(f"{path} is not valid YAML or JSON: {exc}") from None


async def _apps_import(accounts: Accounts, args: argparse.Namespace) -> None:
    app = await accounts.save_app(args.account_sid, _load_app_file(args.file), args.replace)
    print(f"app {app.id} ({app.name}) version {app.version}")


async def _apps_export(accounts: Accounts, args: argparse.Namespace) -> None:
    async with accounts.db.session() as session:
        account = await accounts.get(session, args.account_sid)
        app = await accounts.app(session, account.id, args.app_id)
    if args.format == "json":
        print(json.dumps(app.graph, indent=2))
    else:
        print(yaml.safe_dump(app.graph, sort_keys=False), end="")


async def _apps_list(accounts: Accounts, args: argparse.Namespace) -> None:
    for app in await accounts.apps(args.account_sid):
        print(f"{app.id}\t{app.name}\tversion {app.version}")


async def _calls_show(accounts: Accounts, args: argparse.Namespace) -> None:
    async with accounts.db.session() as session:
        call = await call_views.call_by_sid(session, args.call_sid)
        if call is None:
            raise NotFound(f"no call {args.call_sid}")
        account = await account_by_id(session, call.account_id)
        events = await timeline.steps(session, call.id)
    assert account is not None
    if args.json:
        print(json.dumps({
            "sid": call.sid,
            "account": account.sid,
            "status": call.status,
            "reason": call.reason,
            "legs": [{"leg": leg.leg_no, "number": leg.number, "status": leg.status, "cause": leg.cause} for leg in call.legs],
            "events": [{"at": e.at.isoformat(), "kind": e.kind, "data": e.data} for e in events],
        }, indent=2))
        return
    print(f"call {call.sid} ({account.sid}, {call.shape}): {call.status}" + (f" - {call.reason}" if call.reason else ""))
    for leg in call.legs:
        cause = f" ({leg.cause})" if leg.cause else ""
        print(f"  leg {leg.leg_no} {leg.number}: {leg.status or 'never attempted'}{cause}")
    start = events[0].at if events else call.created_at
    for e in events:
        offset = (e.at - start).total_seconds()
        print(f"  +{offset:7.1f}s  {e.kind:<14} {describe(e.kind, e.data)}")


async def _sandbox_script(accounts: Accounts, args: argparse.Namespace) -> None:
    script = {
        "ring": args.ring,
        "outcome": args.outcome,
        "keys": args.keys,
        "hangup_after": args.hangup_after,
        "says": args.says,
    }
    number, stored = await accounts.script_phone(args.account, args.number, script)
    print(f"{number}: {json.dumps(stored)}")


async def _sandbox_clear(accounts: Accounts, args: argparse.Namespace) -> None:
    number = await accounts.clear_phone(args.account, args.number)
    print(f"{number}: default behaviour")


if __name__ == "__main__":
    sys.exit(main())
