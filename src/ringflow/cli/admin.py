"""The admin commands: accounts, keys, ExoPhones, apps, calls and the sandbox's phones."""

from __future__ import annotations

import argparse
import asyncio
import json
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
from ringflow.media.tts import TextToSpeech
from ringflow.storage import call_views, schema, timeline
from ringflow.storage.accounts import account_by_id
from ringflow.storage.cache import Lookups
from ringflow.storage.db import Database
from ringflow.storage.models import Call


def cmd_calls_hangup(settings: Settings, args: argparse.Namespace) -> int:
    """Hang up a call through the database (and Redis, when set) the server processes share."""
    from ringflow.calls.control import CallControl
    from ringflow.calls.status import is_terminal

    open_database(settings)

    async def go() -> Call:
        db = Database(settings.database_url)
        control = CallControl(
            db,
            make_clock(),
            settings.instance_name,
            settings.redis_url,
            lease=settings.instance_lease,
        )
        try:
            return await control.hang_up(args.call_sid, "cli")
        finally:
            await control.close()
            await db.close()

    call = asyncio.run(go())
    reason = f" ({call.reason})" if call.reason else ""
    if not is_terminal(call.status):
        print(
            f"call {call.sid}: hangup requested; still {call.status}: the server carrying it "
            "has not ended it yet (is it running?)",
            file=sys.stderr,
        )
        return 1
    print(f"call {call.sid}: {call.status}{reason}")
    return 0


def cmd_apps_validate(settings: Settings, args: argparse.Namespace) -> int:
    from ringflow.flows.applets import REGISTRY
    from ringflow.flows.model import parse_app

    graph = parse_app(_load_app_file(args.file), REGISTRY)
    print(f"{args.file}: valid, {len(graph.nodes)} nodes, starts at {graph.start!r}")
    return 0


def open_database(settings: Settings, *, create: bool = False) -> None:
    """The database must exist unless ``create``; its schema is brought up to date."""
    if not create:
        schema.require_database(settings.database_url)
    schema.migrate(settings.database_url)


def command(
    action: Callable[[Accounts, argparse.Namespace], Awaitable[Any]], *, create: bool = False
) -> Callable[..., int]:
    """Wrap an async admin action: find (or, with ``create``, make) the database, run, close."""

    def command(settings: Settings, args: argparse.Namespace) -> int:
        open_database(settings, create=create)

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
        print(
            json.dumps(
                {"sid": creds.account_sid, "api_key": creds.api_key, "api_token": creds.api_token}
            )
        )
    else:
        print(
            f"Account SID: {creds.account_sid}\nAPI key:     {creds.api_key}\nAPI token:   {creds.api_token}"
        )
        print("The token is shown only now; it is stored hashed.")


async def accounts_create(accounts: Accounts, args: argparse.Namespace) -> None:
    made = await accounts.create_account(args.name, args.time_zone, taken_is_error=True)
    _print_credentials(made, args.json)


def option(limit: Limit) -> str:
    return "--" + limit.name.replace("_", "-")


async def accounts_show(accounts: Accounts, args: argparse.Namespace) -> None:
    async with accounts.db.session() as session:
        account = await accounts.get(session, args.account_sid)
    _print_limits(account, args.settings, args.json)


async def accounts_set_limits(accounts: Accounts, args: argparse.Namespace) -> None:
    given = {limit: getattr(args, limit.name) for limit in LIMITS}
    values = {
        limit.column: parse_limit(text, option(limit), limit.low)
        for limit, text in given.items()
        if text is not None
    }
    if not values:
        raise RingflowError("give at least one of " + ", ".join(option(x) for x in LIMITS))
    _print_limits(await accounts.set_limits(args.account_sid, values), args.settings, False)


def _print_limits(account: Any, settings: Settings, as_json: bool) -> None:
    own = {limit.name: getattr(account, limit.column) for limit in LIMITS}
    applied = {
        limit.name: own[limit.name]
        if own[limit.name] is not None
        else getattr(settings, limit.setting)
        for limit in LIMITS
    }
    if as_json:
        print(
            json.dumps(
                {
                    "sid": account.sid,
                    "name": account.name,
                    "time_zone": account.time_zone,
                    "limits": own,
                    "effective_limits": applied,
                },
                indent=2,
            )
        )
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


async def accounts_password(accounts: Accounts, args: argparse.Namespace) -> None:
    from ringflow.dashboard.logins import set_account_password

    sid = await set_account_password(accounts, args.account_sid, _read_password(args))
    print(f"dashboard password set for {sid}; sign in at /login with the account SID")


async def operator_password(accounts: Accounts, args: argparse.Namespace) -> None:
    from ringflow.dashboard.logins import set_operator_password

    name = await set_operator_password(accounts, args.name, _read_password(args))
    print(f"operator {name} can sign in at /operator/login")


async def operator_remove(accounts: Accounts, args: argparse.Namespace) -> None:
    from ringflow.dashboard.logins import remove_operator

    await remove_operator(accounts, args.name)
    print(f"removed operator {args.name}")


async def keys_create(accounts: Accounts, args: argparse.Namespace) -> None:
    _print_credentials(await accounts.create_key(args.account_sid), args.json)


async def keys_revoke(accounts: Accounts, args: argparse.Namespace) -> None:
    await accounts.revoke_key(args.account_sid, args.key)
    print(f"revoked {args.key}")


async def numbers_add(accounts: Accounts, args: argparse.Namespace) -> None:
    print(await accounts.add_number(args.account_sid, args.number, args.name))


def _load_app_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RingflowError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise RingflowError(_yaml_problem(path, exc)) from None


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """One line, ``file:line:column: problem``, as compilers and editors point at a place."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return f"{path}: not valid YAML or JSON: {problem}"
    context = getattr(exc, "context", None)
    also = f" ({context})" if context else ""
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML or JSON: {problem}{also}"


async def apps_import(accounts: Accounts, args: argparse.Namespace) -> None:
    app = await accounts.save_app(args.account_sid, _load_app_file(args.file), args.replace)
    print(f"app {app.id} ({app.name}) version {app.version}")


async def apps_export(accounts: Accounts, args: argparse.Namespace) -> None:
    async with accounts.db.session() as session:
        account = await accounts.get(session, args.account_sid)
        app = await accounts.app(session, account.id, args.app_id)
    if args.format == "json":
        print(json.dumps(app.graph, indent=2))
    else:
        print(yaml.safe_dump(app.graph, sort_keys=False), end="")


async def apps_list(accounts: Accounts, args: argparse.Namespace) -> None:
    for app in await accounts.apps(args.account_sid):
        print(f"{app.id}\t{app.name}\tversion {app.version}")


async def calls_show(accounts: Accounts, args: argparse.Namespace) -> None:
    async with accounts.db.session() as session:
        call = await call_views.call_by_sid(session, args.call_sid)
        if call is None:
            raise NotFound(f"no call {args.call_sid}")
        account = await account_by_id(session, call.account_id)
        events = await timeline.steps(session, call.id)
    assert account is not None
    if args.json:
        print(
            json.dumps(
                {
                    "sid": call.sid,
                    "account": account.sid,
                    "status": call.status,
                    "reason": call.reason,
                    "legs": [
                        {
                            "leg": leg.leg_no,
                            "number": leg.number,
                            "status": leg.status,
                            "cause": leg.cause,
                        }
                        for leg in call.legs
                    ],
                    "events": [
                        {"at": e.at.isoformat(), "kind": e.kind, "data": e.data} for e in events
                    ],
                },
                indent=2,
            )
        )
        return
    print(
        f"call {call.sid} ({account.sid}, {call.shape}): {call.status}"
        + (f" - {call.reason}" if call.reason else "")
    )
    for leg in call.legs:
        cause = f" ({leg.cause})" if leg.cause else ""
        print(f"  leg {leg.leg_no} {leg.number}: {leg.status or 'never attempted'}{cause}")
    start = events[0].at if events else call.created_at
    for e in events:
        offset = (e.at - start).total_seconds()
        print(f"  +{offset:7.1f}s  {e.kind:<14} {describe(e.kind, e.data)}")


async def sandbox_script(accounts: Accounts, args: argparse.Namespace) -> None:
    script = {
        "ring": args.ring,
        "outcome": args.outcome,
        "keys": args.keys,
        "hangup_after": args.hangup_after,
        "says": args.says,
    }
    number, stored = await accounts.script_phone(args.account, args.number, script)
    print(f"{number}: {json.dumps(stored)}")


async def sandbox_clear(accounts: Accounts, args: argparse.Namespace) -> None:
    number = await accounts.clear_phone(args.account, args.number)
    print(f"{number}: default behaviour")
