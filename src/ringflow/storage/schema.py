"""The schema's state and its migration, with every database failure said in one line.

The CLI and ``serve`` meet the database here first, so this is where a wrong
``RINGFLOW_DATABASE_URL`` becomes a sentence that names the database and the variable, instead
of a driver's traceback (``Connect call failed ('127.0.0.1', 18499)``, 188 lines of asyncpg for a
database that does not exist). Only ``migrate`` (and so ``serve`` and ``demo``) may create a
SQLite file; every other command asks ``require_database`` first, so a command run from the
wrong folder says where it looked instead of quietly making an empty database there.
"""

from __future__ import annotations

import asyncio
import enum
import socket
from pathlib import Path

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from ringflow.errors import Unavailable
from ringflow.storage.db import _ensure_sqlite_dir, alembic_config

SETTING = "RINGFLOW_DATABASE_URL"


class DatabaseUnavailable(Unavailable):
    """The database is missing, unreachable or refuses ringflow."""


class Migrated(enum.Enum):
    """What ``migrate`` did to the schema."""

    CREATED = "created the schema"
    UPGRADED = "upgraded the schema"
    CURRENT = "the schema is up to date"


def shown(url: str) -> str:
    """The URL without its password, fit for a message."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The SQLite file of ``url`` (None for PostgreSQL and in-memory SQLite)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def require_database(url: str) -> None:
    """Fail, naming the path and the variable, unless the SQLite file exists."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise DatabaseUnavailable(
            f"no database at {path.absolute()} ({SETTING}={shown(url)}): run this where the "
            f"server runs, or set {SETTING} to the server's database"
        )


def migrate(url: str) -> tuple[Migrated, str | None, str]:
    """Bring the schema to the newest revision: (what was done, revision before, revision now)."""
    if sqlite_file(url) is not None:
        _ensure_sqlite_dir(url)
    config = alembic_config(url)
    head = ScriptDirectory.from_config(config).get_current_head() or ""
    try:
        before = asyncio.run(_revision(url))
        if before != head:
            command.upgrade(config, "head")
    except (OSError, SQLAlchemyError) as exc:
        raise DatabaseUnavailable(explain(url, exc)) from None
    if before is None:
        return Migrated.CREATED, None, head
    return (Migrated.CURRENT if before == head else Migrated.UPGRADED), before, head


async def _revision(url: str) -> str | None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


def explain(url: str, exc: BaseException) -> str:
    """One line for a failure to open ``url``: what went wrong and what to change."""
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    if not parsed.host and isinstance(folder := parsed.query.get("host"), str):
        where = f"{folder.rstrip('/')}/.s.PGSQL.{parsed.port or 5432}"  # a Unix socket
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        reason = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
        if "does not exist" in reason and "database" in reason:
            return (
                f"{reason} on {where} ({SETTING}={shown(url)}): create it "
                f"(createdb {parsed.database}) or point {SETTING} at one that exists"
            )
        return f"the database {shown(url)} refused: {reason} (set by {SETTING})"
    if isinstance(exc, socket.gaierror):
        return (
            f"cannot find the database host {parsed.host!r} ({SETTING}={shown(url)}): "
            "check the host name"
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"cannot reach the database at {where} ({SETTING}={shown(url)}): connection "
            "refused; is the database server running, and is that its address?"
        )
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return f"cannot open the database {shown(url)} ({SETTING}): {reason}"
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"the database {shown(url)} failed ({SETTING}): {reason}"
