"""``ringflow serve``, ``migrate``, ``demo`` and ``dial``: the commands that run ringflow."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from ringflow import logs
from ringflow.accounts import Accounts
from ringflow.cli.admin import command
from ringflow.config import Settings
from ringflow.errors import ConfigError
from ringflow.private_files import tighten
from ringflow.storage import schema

# The collector's thresholds (``gc.set_threshold``): allocations less frees between two passes
# over the youngest objects, then passes of each generation between two of the next. Python's
# defaults are 700, 10, 10.
COLLECTOR_THRESHOLDS = (20_000, 20, 20)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from ringflow.app import create_app
    from ringflow.drain import DrainGate, DrainingServer
    from ringflow.http_connections import (
        ConnectionLimits,
        check_file_limit,
        protocol_class,
        raise_file_limit,
    )

    logs.configure(settings.log_level, settings.log_format, settings.instance_name)
    if args.workers != 1:
        from ringflow.workers import check, supervise

        check(settings, args.workers)
        check_port(settings)  # before anything is migrated or started
        schema.migrate(settings.database_url)
        return supervise(settings, args.workers)
    # Workers share the port: each binds it with SO_REUSEPORT and the kernel spreads connections.
    # Bound first, so a port in use is said before anything is migrated or generated.
    listener = _listen(settings.host, settings.port, reuse_port=args.worker)
    if not args.worker:  # the supervisor migrated before starting its workers
        schema.migrate(settings.database_url)
    limits = ConnectionLimits(
        settings.max_connections, settings.http_head_timeout, settings.http_body_timeout
    )
    check_file_limit(limits, raise_file_limit())
    # uvicorn with ringflow's protocol: head and body deadlines and a connection cap on top of
    # uvicorn's keep-alive timeout (http_connections.py says why this server).
    app = create_app(settings)
    drain = _drain(settings, app.state.services)
    # log_config=None: uvicorn's lines go to the one handler logs.configure made, in its format.
    config = uvicorn.Config(
        DrainGate(app, drain),
        log_level=settings.log_level,
        log_config=None,
        timeout_graceful_shutdown=10,
        http=protocol_class(limits),
        timeout_keep_alive=settings.http_keep_alive,
    )
    tighten(settings)
    server = DrainingServer(config, drain)
    if args.worker:
        from ringflow.workers import stop_when_orphaned

        stop_when_orphaned(server)
    settle_heap()
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        # Ctrl-C (SIGINT): uvicorn has shut down gracefully and raised the signal again for
        # whoever started it. Say so by the exit status (128 + SIGINT), not by a traceback.
        return 130
    return 0


def settle_heap() -> None:
    """Keep what was built to serve (modules, tables, compiled statements, the app) out of the
    cyclic garbage collector's passes, and let the youngest objects pile up longer before a
    pass: a request's objects are mostly gone by then, so fewer of them are carried into the
    older generations, whose passes cost most. The collector took a seventh of a busy
    server's CPU; these settings took 3-4% off a connect's and a fifth off its p99
    (``bench/README.md``). They also spare the media: a full pass over an unfrozen heap with
    100 streams up took 60-140 ms, a stall of every call's RTP (``bench/streams.py``, which
    runs its calls under these settings, as ``bench/sip_calls.py`` does)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def _drain(settings: Settings, services: Any) -> Any:
    """The drain of this server's calls on SIGTERM (see drain.py)."""
    from ringflow.drain import Drain

    return Drain(settings.drain_seconds, services.dispatcher.tasks, services.stop_admitting)


def check_port(settings: Settings) -> None:
    """Fail, naming the port and how to choose another, unless ``serve`` could listen."""
    _listen(settings.host, settings.port, reuse_port=False).close()


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The HTTP listening socket (uvicorn starts listening on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (another ringflow?): stop what "
                "listens there, or choose another port with --port or "
                "RINGFLOW_PORT"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"port {port} on {host} needs privileges: choose a port above "
                "1023 with --port or RINGFLOW_PORT"
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror} (--host/--port, "
            "RINGFLOW_HOST/RINGFLOW_PORT)"
        ) from None
    return sock


def cmd_dial(settings: Settings, args: argparse.Namespace) -> int:
    from ringflow.dialer import dial

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    schema.require_database(settings.database_url)
    schema.migrate(settings.database_url)
    call = asyncio.run(
        dial(
            settings,
            args.account_sid,
            args.number,
            args.app,
            caller_id=args.caller_id,
            time_out=args.timeout,
        )
    )
    return 0 if call.status == "completed" else 1


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    print(_migrated(settings))
    return 0


def _migrated(settings: Settings) -> str:
    """Migrate; one line that says what was done, to which database."""
    done, before, now = schema.migrate(settings.database_url)
    where = schema.shown(settings.database_url)
    if done is schema.Migrated.UPGRADED:
        return f"{where}: upgraded the schema from revision {before} to {now}"
    return f"{where}: {done.value} (revision {now})"


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from ringflow.demo import banner, ensure_demo

    if args.before_serve:
        check_port(settings)
    print(_migrated(settings))
    credentials = args.credentials_file or Path(settings.data_dir) / "demo-credentials.json"

    async def go(accounts: Accounts) -> None:
        saved = await ensure_demo(accounts, settings.base_url, credentials)
        print(banner(saved, settings.base_url, _this_command()))
        print(f"(kept in {credentials})")

    return command(lambda accounts, _args: go(accounts), create=True)(settings, args)


def _this_command() -> str:
    """How the user's shell runs ringflow: the script's path if it is not on PATH."""
    script = Path(sys.argv[0])
    if script.name != "ringflow":  # python -m ringflow.cli: the script beside this Python
        script = Path(sys.executable).parent / "ringflow"
        if not script.exists():
            return "ringflow"
    found = shutil.which("ringflow")
    if found and Path(found).resolve() == script.resolve():
        return "ringflow"
    try:
        relative = os.path.relpath(script)
    except ValueError:  # another drive
        return str(script)
    return str(script.absolute()) if relative.startswith("..") else relative
