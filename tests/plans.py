"""Query plans as PostgreSQL runs a statement it has prepared: for tests that a statement
reads only the few rows it is after, whatever else the table holds."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ClauseElement
from sqlalchemy.dialects.postgresql import asyncpg

from ringflow.storage.db import Database


def compiled(statement: ClauseElement) -> tuple[str, list[Any]]:
    """A SQLAlchemy statement built with its values, as the driver gets it: SQL with ``$n``
    parameters and their values in order."""
    done = statement.compile(dialect=asyncpg.dialect(), compile_kwargs={"render_postcompile": True})
    return done.string, [done.params[name] for name in done.positiontup or ()]


def rows_read(plan: dict[str, Any]) -> int:
    """Rows every scan of ``plan`` read from a table: those it returned and those its filter
    dropped, over all its loops (a bitmap's index scan only finds the rows its heap scan
    reads; a subquery's scan reads no table)."""
    read = 0
    kind = plan["Node Type"]
    if "Relation Name" in plan and "Scan" in kind and kind != "Bitmap Index Scan":
        per_loop = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        read += per_loop * plan.get("Actual Loops", 1)
    for child in plan.get("Plans", ()):
        read += rows_read(child)
    return read


def sql_value(value: Any) -> str:
    """A parameter's value written as SQL (EXECUTE takes values, not parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(value).lower()
    return "'" + str(value).replace("'", "''") + "'"


async def explained(
    db: Database, sql: str, values: list[Any], *, generic: bool = True
) -> dict[str, Any]:
    """The plan of ``sql`` (with ``$n`` parameters) run with ``values``, PostgreSQL planning it
    for any values of its parameters, as it may once the driver has run it a few times (a plan
    it expects to be cheaper than those for the values given: one that stops at a first row).
    ``generic=False``: planned for these values (what a statement costlier that way gets)."""
    mode = "force_generic_plan" if generic else "force_custom_plan"
    async with db.driver() as driver, driver.transaction():
        await driver.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await driver.execute(f"PREPARE probe AS {sql}")
        args = ", ".join(map(sql_value, values))
        text = await driver.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE probe({args})")
        await driver.execute("DEALLOCATE probe")
    plans = json.loads(text) if isinstance(text, str) else text  # the driver may decode JSON
    return plans[0]["Plan"]


# Rows to plan over, inserted straight into the tables.


async def insert_calls(driver: Any, account_id: int, prefix: str, statuses: list[str]) -> None:
    """Calls of ``account_id`` with ``statuses``, in that order, their SIDs ``prefix`` and a
    number (``Database.driver``)."""
    await driver.execute(
        """INSERT INTO calls (sid, account_id, shape, from_number, to_number, caller_id,
               status, direction, time_limit, time_out, callback_events, callback_json,
               record, recording_channels, recording_format, created_at, updated_at)
           SELECT $2 || s.n, $1, 'numbers', '+919812345678', '+919812345679', '+918039591234',
               s.status, 'outbound-api', 60, 30, '[]', false, false, 'single', 'mp3',
               now() + s.n * interval '1 ms', now()
           FROM unnest($3::text[]) WITH ORDINALITY AS s(status, n)""",
        account_id,
        prefix,
        statuses,
    )


async def new_account(driver: Any, sid: str) -> int:
    """A new account named ``sid``; its id."""
    return int(
        await driver.fetchval(
            "INSERT INTO accounts (sid, name, time_zone, created_at) "
            "VALUES ($1, $1, 'Asia/Kolkata', now()) RETURNING id",
            sid,
        )
    )
