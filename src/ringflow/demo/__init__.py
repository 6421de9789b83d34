"""The demo account that ``make serve`` creates on a fresh machine."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from ringflow.accounts import Accounts
from ringflow.dashboard.logins import account_hash, set_account_password
from ringflow.errors import NotFound

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
            "thanks": {"applet": "greeting", "text": "Your server said yes. Goodbye.", "next": "bye"},
            "sorry": {"applet": "greeting", "text": "Your server said no. Goodbye.", "next": "bye"},
            "bye": {"applet": "hangup"},
        },
    }


async def ensure_demo(accounts: Accounts, base_url: str, credentials_file: Path) -> dict[str, Any]:
    """Create the demo account once; later runs read its credentials back from the file."""
    if credentials_file.exists():
        saved = json.loads(credentials_file.read_text())
        try:
            async with accounts.db.session() as session:
                await accounts.get(session, saved["sid"])
        except NotFound:
            pass  # the database was reset: make a new demo account
        else:
            # Demo accounts made before the dashboard existed get their sign-in now.
            if not saved.get("dashboard_password") or await account_hash(accounts, saved["sid"]) is None:
                saved["dashboard_password"] = await _dashboard_password(accounts, saved["sid"])
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


def banner(saved: dict[str, Any], base_url: str) -> str:
    """What ``make serve`` prints: the credentials and a curl line that places a call."""
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
            "",
            "Or watch it in the dashboard:",
            f"  Dashboard   : {base_url}/",
            f"  Sign in     : account SID {sid}, password {saved['dashboard_password']}",
            "",
        ]
    )
