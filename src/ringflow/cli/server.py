"""``ringflow serve``, ``migrate``, ``demo`` and ``dial``: the commands that run ringflow."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket

from ringflow.accounts import Accounts
from ringflow.cli.admin import command
from ringflow.config import Settings
from ringflow.logs import redact_logs
from ringflow.private_files import tighten
from ringflow.storage.db import migrate


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


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    migrate(settings.database_url)
    print("database is up to date")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from ringflow.demo import banner, ensure_demo

    async def go(accounts: Accounts) -> None:
        saved = await ensure_demo(accounts, settings.base_url, args.credentials_file)
        print(banner(saved, settings.base_url))

    return command(lambda accounts, _args: go(accounts))(settings, args)
