"""``ringflow serve --workers N``: N server processes on one port, so every core does work.

Each worker is a whole ringflow (API, dashboard, call engine, carrier) in its own process. They
listen on the same HTTP port with ``SO_REUSEPORT`` and the kernel spreads connections among
them; each places the calls it admits. What must be shared already is: calls, callbacks and
heartbeats in PostgreSQL, rate limits and trunk limits in Redis, so several workers need both.

Worker ``i`` (from 1) runs as instance ``NAME/wI`` and, when SIP is configured with a fixed port,
binds SIP port ``RINGFLOW_SIP_PORT + i - 1`` (a dialog's messages must reach the process that
holds it, so workers cannot share a SIP socket). RTP ports come from the shared range; each
worker skips the ones another holds.

The supervisor restarts a worker that dies, under the same instance name, so the restarted
worker finishes the calls its predecessor was carrying at once (their callbacks go out). A
worker that keeps dying is restarted with a growing pause, up to 30 s. SIGTERM or SIGINT stops
every worker gracefully (running calls are ended and their callbacks flushed). A worker whose
supervisor is gone (killed with SIGKILL) stops gracefully by itself within a second.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ringflow.config import Settings
from ringflow.errors import ConfigError
from ringflow.metrics import prepare_multiprocess_dir

log = logging.getLogger(__name__)

MAX_WORKERS = 64
STOP_WAIT = 30.0  # seconds a worker has to end its calls after SIGTERM, beyond its drain
QUICK_DEATH = 10.0  # a worker that dies sooner than this after starting backs off
MAX_BACKOFF = 30.0


def check(settings: Settings, workers: int) -> None:
    """Refuse a worker count the configuration cannot share correctly."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers: from 1 to {MAX_WORKERS}, not {workers}")
    if workers == 1:
        return
    if not settings.database_url.startswith("postgresql"):
        raise ConfigError(
            "--workers above 1 needs PostgreSQL (RINGFLOW_DATABASE_URL=postgresql+"
            "asyncpg://...): the workers share calls and callbacks through it"
        )
    if not settings.redis_url:
        raise ConfigError(
            "--workers above 1 needs RINGFLOW_REDIS_URL: the workers share rate "
            "limits and trunk limits through it"
        )
    if settings.sip_port and settings.sip_port + workers - 1 > 65535:
        raise ConfigError(
            f"RINGFLOW_SIP_PORT={settings.sip_port}: {workers} workers need "
            f"ports up to {settings.sip_port + workers - 1}"
        )


@dataclasses.dataclass
class Worker:
    """One worker process and what its restarts need."""

    index: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None

    def start(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, env=self.env)
        self.started = time.monotonic()
        self.restart_at = None
        log.info("worker %d started (pid %d)", self.index, self.proc.pid)


def worker_env(settings: Settings, index: int, base: dict[str, str]) -> dict[str, str]:
    """The environment of worker ``index``: its instance name and SIP port."""
    env = dict(base)
    env["RINGFLOW_INSTANCE"] = f"{settings.instance_name}/w{index}"
    env[SUPERVISOR_ENV] = str(os.getpid())
    if settings.sip_port:
        env["RINGFLOW_SIP_PORT"] = str(settings.sip_port + index - 1)
    return env


SUPERVISOR_ENV = "RINGFLOW_SUPERVISOR_PID"


def stop_when_orphaned(server: Any, every: float = 1.0) -> threading.Thread:
    """Ask the worker's uvicorn ``server`` to stop once its supervisor process is gone.

    The supervisor's pid comes from the environment, so a supervisor that died while this
    worker was still starting is noticed too.
    """
    supervisor = int(os.environ.get(SUPERVISOR_ENV) or os.getppid())

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(every)
        log.warning("the supervisor (pid %d) is gone; stopping", supervisor)
        server.should_exit = True

    thread = threading.Thread(target=watch, name="supervisor-watch", daemon=True)
    thread.start()
    return thread


def supervise(settings: Settings, workers: int) -> int:
    """Run ``workers`` server processes until SIGTERM or SIGINT; returns the exit code."""
    check(settings, workers)
    prepare_multiprocess_dir()  # workers share metric samples there (PROMETHEUS_MULTIPROC_DIR)
    argv = [
        sys.executable,
        "-m",
        "ringflow",
        "serve",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--worker",
    ]
    pool = [Worker(i, worker_env(settings, i, dict(os.environ))) for i in range(1, workers + 1)]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in pool:
            worker.start(argv)
        log.info("%d workers on http://%s:%d", workers, settings.host, settings.port)
        while not stopping:
            _tend(pool, argv)
            time.sleep(0.2)
        return _stop_all(pool, settings.drain_seconds + STOP_WAIT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _tend(pool: list[Worker], argv: list[str]) -> None:
    """Restart workers that died, after their backoff."""
    now = time.monotonic()
    for worker in pool:
        assert worker.proc is not None
        if worker.restart_at is None and worker.proc.poll() is not None:
            lived = now - worker.started
            worker.backoff = min(worker.backoff * 2, MAX_BACKOFF) if lived < QUICK_DEATH else 1.0
            worker.restart_at = now + worker.backoff
            log.warning(
                "worker %d (pid %d) exited with %s after %.0f s; restarting in %.0f s",
                worker.index,
                worker.proc.pid,
                worker.proc.returncode,
                lived,
                worker.backoff,
            )
        if worker.restart_at is not None and now >= worker.restart_at:
            worker.start(argv)


def _stop_all(pool: list[Worker], wait: float) -> int:
    """SIGTERM every worker, wait for them to drain and end their calls, kill the ones that
    do not within ``wait`` seconds."""
    for worker in pool:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + wait
    for worker in pool:
        assert worker.proc is not None
        try:
            worker.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop in %.0f s; killing it", worker.index, wait)
            worker.proc.kill()
            worker.proc.wait()
    return 0
