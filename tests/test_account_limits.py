"""An account's own limits, set and read with the real CLI and the admin API (both backends)."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx

from ringflow.dashboard.logins import set_operator_password
from tests.e2e import running
from tests.processes import server_env

OPERATOR = ("ops", "a long operator password")


async def ringflow(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the ``ringflow`` command in its own process: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ringflow.cli", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_sets_shows_and_clears_limits(database_url: str):
    env = server_env(database_url, "limits-cli")
    code, out, err = await ringflow(env, "accounts", "create", "Limits Co", "--json")
    assert code == 0, err
    sid = json.loads(out)["sid"]

    code, out, err = await ringflow(
        env,
        "accounts",
        "set-limits",
        sid,
        "--max-concurrent-calls",
        "5",
        "--queue-limit",
        "0",
        "--rate-limit-per-minute",
        "90",
    )
    assert code == 0, err
    assert "max concurrent calls    5\n" in out and "queue limit             0\n" in out
    assert "max concurrent streams  default (100)\n" in out

    code, out, err = await ringflow(env, "accounts", "show", sid, "--json")
    shown = json.loads(out)
    assert shown["limits"] == {
        "max_concurrent_calls": 5,
        "queue_limit": 0,
        "rate_limit_per_minute": 90,
        "max_concurrent_streams": None,
    }
    assert shown["effective_limits"]["max_concurrent_streams"] == 100

    # A bad value names its option, and nothing of that command is stored.
    for option, value in (
        ("--max-concurrent-calls", "-1"),
        ("--queue-limit", "lots"),
        ("--rate-limit-per-minute", "0"),
        ("--max-concurrent-streams", "2.5"),
    ):
        code, out, err = await ringflow(
            env, "accounts", "set-limits", sid, "--max-concurrent-streams", "7", option, value
        )
        assert code == 1 and err.startswith(f"ringflow: error: {option} must be a whole number")
    code, out, err = await ringflow(env, "accounts", "set-limits", sid)
    assert code == 1 and "give at least one of --max-concurrent-calls" in err

    code, out, err = await ringflow(
        env,
        "accounts",
        "set-limits",
        sid,
        "--max-concurrent-calls",
        "default",
        "--queue-limit",
        "none",
    )
    assert code == 0, err
    shown = json.loads((await ringflow(env, "accounts", "show", sid, "--json"))[1])
    assert shown["limits"] == {
        "max_concurrent_calls": None,
        "queue_limit": None,
        "rate_limit_per_minute": 90,
        "max_concurrent_streams": None,
    }

    code, _, err = await ringflow(env, "accounts", "show", "nobody")
    assert code == 1 and err == "ringflow: error: no account 'nobody'\n"


async def test_admin_api_reads_and_operator_sets_limits(database_url: str):
    async with running(database_url, max_concurrent_calls=20, queue_limit=1000) as rig:
        url = f"{rig.base}/admin/v1/accounts/{rig.sid}"
        r = await rig.http.get(url, auth=rig.auth)
        assert r.status_code == 200, r.text
        assert r.json()["limits"] == dict.fromkeys(
            (
                "max_concurrent_calls",
                "queue_limit",
                "rate_limit_per_minute",
                "max_concurrent_streams",
            )
        )
        assert r.json()["effective_limits"]["queue_limit"] == 1000

        # The account itself may read its limits but not raise them.
        r = await rig.http.patch(url, json={"max_concurrent_calls": 500}, auth=rig.auth)
        assert r.status_code == 401 and "operator" in r.json()["error"]["message"]

        await set_operator_password(rig.services.accounts, *OPERATOR)
        r = await rig.http.patch(
            url,
            json={"max_concurrent_calls": 3, "queue_limit": "7", "rate_limit_per_minute": 2},
            auth=OPERATOR,
        )
        assert r.status_code == 200, r.text
        assert r.json()["limits"] == {
            "max_concurrent_calls": 3,
            "queue_limit": 7,
            "rate_limit_per_minute": 2,
            "max_concurrent_streams": None,
        }
        assert r.json()["effective_limits"]["max_concurrent_streams"] == 100

        # The CLI, another process, reads what the admin API stored.
        env = server_env(database_url, "limits-admin")
        shown = json.loads((await ringflow(env, "accounts", "show", rig.sid, "--json"))[1])
        assert shown["limits"]["queue_limit"] == 7 and shown["limits"]["max_concurrent_calls"] == 3

        # The stored rate limit applies to the account's next requests at once.
        calls = f"{rig.base}/v1/Accounts/{rig.sid}/Calls.json"
        answers = [await rig.http.get(calls, auth=rig.auth) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[0].headers["X-RateLimit-Limit"] == "2"

        for body, named in (
            ({"queue_limit": -1}, "queue_limit must be a whole number"),
            ({"max_concurrent_calls": "many"}, "max_concurrent_calls must be"),
            ({"max_concurrent_calls": 1.5}, "max_concurrent_calls must be"),
            ({"max_concurrent_calls": True}, "max_concurrent_calls must be"),
            ({"lines": 4}, "lines is not an account limit"),
            ([1], "body must be a JSON object"),
        ):
            r = await rig.http.patch(url, json=body, auth=OPERATOR)
            assert r.status_code == 400 and named in r.json()["error"]["message"], r.text

        r = await rig.http.patch(
            url, json={"rate_limit_per_minute": None, "queue_limit": "default"}, auth=OPERATOR
        )
        assert r.status_code == 200
        assert r.json()["limits"]["rate_limit_per_minute"] is None
        assert r.json()["limits"]["queue_limit"] is None
        assert r.json()["limits"]["max_concurrent_calls"] == 3

        r = await rig.http.patch(
            f"{rig.base}/admin/v1/accounts/nobody", json={"queue_limit": 1}, auth=OPERATOR
        )
        assert r.status_code == 404
        r = await rig.http.patch(url, json={"queue_limit": 1}, auth=("ops", "wrong password!!"))
        assert r.status_code == 401
        async with httpx.AsyncClient() as other:
            r = await other.get(url)
        assert r.status_code == 401
