"""The demo account that ``make serve`` creates on a fresh machine."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from ringflow.accounts import Accounts
from ringflow.dashboard.logins import check_account, set_account_password
from ringflow.errors import NotFound
from ringflow.phone import normalize

DEMO_NAME = "Demo"
DEMO_EXOPHONE = "08039591234"
DEMO_CUSTOMER = "09812345678"


def demo_app(base_url: str) -> dict[str, Any]:
    """Greeting, then a Passthru to this server's demo endpoint, then a goodbye."""
    return {
        "name": "Demo: greeting and passthru",
        "start": "welcome",
        "nodes": {
            "welcome": {
                "applet": "greeting",
                "text": "Hello from ringflow. This is the demo app.",
                "next": "notify",
            },
            "notify": {
                "applet": "passthru",
                "url": f"{base_url}/demo/passthru",
                "mode": "sync",
                "on_200": "thanks",
                "on_302": "sorry",
            },
            "thanks": {
                "applet": "greeting",
                "text": "Your server said yes. Goodbye.",
                "next": "bye",
            },
            "sorry": {"applet": "greeting", "text": "Your server said no. Goodbye.", "next": "bye"},
            "bye": {"applet": "hangup"},
        },
    }


async def ensure_demo(accounts: Accounts, base_url: str, credentials_file: Path) -> dict[str, Any]:
    """Create the demo account once; later runs reuse it, checked against the database.

    The file may be from another database (a reset, another RINGFLOW_DATABASE_URL, a copied
    folder): each part it holds is tried, and a part that does not work is made anew, so what
    is printed always works.
    """
    if credentials_file.exists():
        saved = json.loads(credentials_file.read_text())
        if await _is_demo_account(accounts, saved.get("sid")):
            if await _repair(accounts, base_url, saved):
                _write(credentials_file, saved)
            return saved
    creds = await accounts.create_account(DEMO_NAME)
    await accounts.add_number(creds.account_sid, DEMO_EXOPHONE, "Demo ExoPhone")
    app = await accounts.save_app(creds.account_sid, demo_app(base_url))
    saved = {
        "sid": creds.account_sid,
        "api_key": creds.api_key,
        "api_token": creds.api_token,
        "exophone": DEMO_EXOPHONE,
        "app_id": app.id,
        "dashboard_password": await _dashboard_password(accounts, creds.account_sid),
    }
    _write(credentials_file, saved)
    return saved


async def _is_demo_account(accounts: Accounts, sid: Any) -> bool:
    if not isinstance(sid, str):
        return False
    try:
        async with accounts.db.session() as session:
            account = await accounts.get(session, sid)
    except NotFound:
        return False  # the database was reset: make a new demo account
    return bool(account.name == DEMO_NAME)


async def _repair(accounts: Accounts, base_url: str, saved: dict[str, Any]) -> bool:
    """Make anew each saved part that does not work; True if anything changed."""
    changed = False
    sid = saved["sid"]
    opened = await accounts.authenticate(str(saved.get("api_key")), str(saved.get("api_token")))
    if opened is None or opened.sid != sid:
        creds = await accounts.create_key(sid)
        saved["api_key"], saved["api_token"] = creds.api_key, creds.api_token
        changed = True
    async with accounts.db.session() as session:
        account = await accounts.get(session, sid)
        owns = await accounts.owns_number(session, account.id, normalize(DEMO_EXOPHONE))
    if not owns:
        await accounts.add_number(sid, DEMO_EXOPHONE, "Demo ExoPhone")
    if not owns or saved.get("exophone") != DEMO_EXOPHONE:
        saved["exophone"], changed = DEMO_EXOPHONE, True
    app_id = saved.get("app_id")
    if not isinstance(app_id, int) or await accounts.find_app(account.id, app_id) is None:
        saved["app_id"], changed = (await accounts.save_app(sid, demo_app(base_url))).id, True
    password = saved.get("dashboard_password")
    if not password or await check_account(accounts, sid, str(password)) is None:
        saved["dashboard_password"], changed = await _dashboard_password(accounts, sid), True
    return changed


async def _dashboard_password(accounts: Accounts, sid: str) -> str:
    """A random dashboard password for the demo account (kept, like its token, in the file)."""
    password = secrets.token_urlsafe(12)
    await set_account_password(accounts, sid, password)
    return password


def _write(credentials_file: Path, saved: dict[str, Any]) -> None:
    credentials_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(saved, out, indent=2)
    os.chmod(credentials_file, 0o600)


def banner(saved: dict[str, Any], base_url: str, command: str = "ringflow") -> str:
    """What ``make serve`` prints: the credentials, curl lines, and the CLI to inspect a call.

    ``command`` is how this shell runs the CLI (``.venv/bin/ringflow`` from ``make serve``).
    """
    sid, key, token = saved["sid"], saved["api_key"], saved["api_token"]
    url = f"http://my.exotel.com/{sid}/exoml/start_voice/{saved['app_id']}"
    return "\n".join(
        [
            "",
            "ringflow demo account (sandbox phone network)",
            f"  Account SID : {sid}",
            f"  API key     : {key}",
            f"  API token   : {token}",
            f"  ExoPhone    : {saved['exophone']}",
            f"  Demo app    : {saved['app_id']}",
            "",
            "Place a call (the virtual phone answers after 1 s and hears the demo app):",
            f"  curl -u {key}:{token} {base_url}/v1/Accounts/{sid}/Calls/connect \\",
            f"    -d From={DEMO_CUSTOMER} -d CallerId={saved['exophone']} -d Url={url}",
            "",
            "Then read it back with details:",
            f"  curl -u {key}:{token} '{base_url}/v1/Accounts/{sid}/Calls/<Sid>.json?details=true'",
            "and its timeline, step by step:",
            f"  curl -u {key}:{token} {base_url}/admin/v1/accounts/{sid}/calls/<Sid>/events",
            "",
            *_cli_lines(command),
            "Or watch it in the dashboard:",
            f"  Dashboard   : {base_url}/",
            f"  Sign in     : account SID {sid}, password {saved['dashboard_password']}",
            "",
        ]
    )


def _cli_lines(command: str) -> list[str]:
    """How to run the ``ringflow`` command from this shell, and what to try first."""
    lines = ["The ringflow command (accounts, apps, calls) from this folder:"]
    bin_dir = Path(command).parent
    if (bin_dir / "activate").exists():
        lines.append(f"  . {bin_dir / 'activate'}   # then: ringflow calls show <Sid>")
        lines.append(f"  or without it: {command} calls show <Sid>")
    else:
        lines.append(f"  {command} calls show <Sid>")
    return [*lines, ""]
