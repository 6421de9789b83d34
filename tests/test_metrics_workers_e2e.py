"""``/metrics`` with ``ringflow serve --workers 2``: one scrape, whichever worker answers it,
counts every worker's calls (prometheus_client's multiprocess mode over a per-run directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from ringflow import metrics
from tests.conftest import REDIS_URL
from tests.metrics_support import scrape
from tests.processes import account_with_app, server_env
from tests.test_restart_e2e import EXOPHONE, LONG_FLOW, Client, eventually, server
from tests.test_workers_e2e import calls_of, statuses

CALLS = 12  # on a connection each: the kernel spreads them over both workers


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("empty_pg")
@pytest.mark.parametrize("directory", ["operator's", "supervisor's"])
async def test_one_scrape_counts_the_calls_of_both_workers(
    pg_url: str, tmp_path: Path, directory: str
) -> None:
    instance = f"metrics-{uuid.uuid4().hex[:8]}"
    extra = {"RINGFLOW_REDIS_URL": REDIS_URL}
    if directory == "operator's":
        (tmp_path / "samples").mkdir()
        extra["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "samples")
    env = server_env(pg_url, instance, **extra)
    creds, app_id = await account_with_app(env, tmp_path, LONG_FLOW, EXOPHONE)
    from ringflow.storage.db import Database

    db = Database(pg_url)
    try:
        async with server(env, tmp_path / "server.log", "--workers", "2") as srv:
            await srv.start()
            sids = []
            for n in range(CALLS):
                async with httpx.AsyncClient(timeout=10) as http:
                    call = await Client(http, srv, creds).connect(
                        From=f"0981234{n:04d}", Url=f"http://my.exotel.com/exoml/start/{app_id}"
                    )
                sids.append(call["Sid"])

            async def all_talking() -> bool:
                return await statuses(db, sids) == {"in-progress"}

            await eventually(all_talking, "every call to be answered", srv)
            owners = {call.owner for call in (await calls_of(db, sids)).values()}
            assert owners == {f"{instance}/w1", f"{instance}/w2"}, owners
            # Several scrapes, each on a connection of its own: whichever worker answers, it
            # sums both workers' samples (the run's directory is fresh: totals are this run's).
            for _ in range(4):
                async with httpx.AsyncClient(timeout=10) as http:
                    found = await scrape(http, srv.base)
                assert found.get("ringflow_calls_started_total", carrier="sandbox") == CALLS
                assert found.get("ringflow_calls_in_progress", account=creds["sid"]) == CALLS
                assert (
                    found.get(
                        "ringflow_http_requests_total",
                        route="exotel:connect",
                        method="POST",
                        status="200",
                    )
                    == CALLS
                )
                assert found.get("ringflow_calls_queued", account=creds["sid"]) == 0
            await srv.terminate()
    finally:
        await db.close()


def test_the_supervisor_makes_a_directory_for_the_run_and_removes_it(tmp_path: Path) -> None:
    script = (
        "import os, sys; from ringflow import metrics\n"
        "path = metrics.prepare_multiprocess_dir()\n"
        "assert os.environ['PROMETHEUS_MULTIPROC_DIR'] == path and os.path.isdir(path)\n"
        "print(path)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    made = Path(out.stdout.strip())
    assert made.name.startswith("ringflow-metrics-")
    assert not made.exists()  # removed when the supervisor exited


def test_an_operators_directory_is_emptied_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "samples"
    chosen.mkdir()
    (chosen / "counter_123.db").write_bytes(b"old run")
    (chosen / "notes.txt").write_text("not ours")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(chosen))
    assert metrics.prepare_multiprocess_dir() == str(chosen)
    assert sorted(p.name for p in chosen.iterdir()) == ["notes.txt"]


def test_the_live_gauges_of_a_dead_worker_are_dropped(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = int(dead.stdout)
    for name in (
        f"gauge_livesum_{gone}.db",
        f"gauge_livesum_{os.getpid()}.db",
        f"counter_{gone}.db",
    ):
        (tmp_path / name).write_bytes(b"")
    metrics.forget_dead_workers(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"counter_{gone}.db",
        f"gauge_livesum_{os.getpid()}.db",
    ]
