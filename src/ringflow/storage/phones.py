"""ExoPhones (the numbers an account may show as CallerId) and the sandbox's scripted phones.

A sandbox script's ``scope`` is an account SID (it applies to that account's calls) or ""
(every account's).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from ringflow.storage.models import PhoneNumber, SandboxPhone
from ringflow.storage.session import Duplicate, Session


async def numbers(session: Session, account_id: int) -> list[PhoneNumber]:
    """The account's ExoPhones, oldest first."""
    query = select(PhoneNumber).where(PhoneNumber.account_id == account_id)
    return list((await session.execute(query.order_by(PhoneNumber.id))).scalars())


async def owns_number(session: Session, account_id: int, number: str) -> bool:
    """Whether ``number`` (E.164) is an ExoPhone of the account."""
    query = select(PhoneNumber.id).where(
        PhoneNumber.account_id == account_id, PhoneNumber.number == number
    )
    return (await session.execute(query)).first() is not None


async def add_number(
    session: Session, account_id: int, number: str, friendly_name: str, now: dt.datetime
) -> None:
    """Give the account an ExoPhone; Duplicate when any account has it already."""
    session.add(
        PhoneNumber(
            account_id=account_id, number=number, friendly_name=friendly_name, created_at=now
        )
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Duplicate(f"{number} is taken") from exc


async def phone_script(session: Session, scope: str, number: str) -> SandboxPhone | None:
    """The script set for ``number`` in exactly this scope, or None."""
    return await session.get(SandboxPhone, (scope, number))


async def set_phone_script(
    session: Session, scope: str, number: str, script: dict[str, Any], now: dt.datetime
) -> None:
    """Set (or replace) the script of ``number`` in ``scope``."""
    row = await session.get(SandboxPhone, (scope, number))
    if row is None:
        session.add(SandboxPhone(scope=scope, number=number, script=script, updated_at=now))
    else:
        row.script, row.updated_at = script, now


async def clear_phone_script(session: Session, scope: str, number: str) -> None:
    """Forget the script of ``number`` in ``scope`` (nothing happens if there is none)."""
    await session.execute(
        delete(SandboxPhone).where(SandboxPhone.scope == scope, SandboxPhone.number == number)
    )


async def phone_scripts(session: Session, account_sid: str) -> list[SandboxPhone]:
    """Scripts that apply to the account's calls: its own and those set for every account."""
    query = select(SandboxPhone).where(
        or_(SandboxPhone.scope == account_sid.lower(), SandboxPhone.scope == "")
    )
    return list(
        (await session.execute(query.order_by(SandboxPhone.number, SandboxPhone.scope))).scalars()
    )


async def scripts_met(session: Session, account_sid: str) -> dict[str, dict[str, Any]]:
    """The script a call of the account meets, by number: its own, else every account's."""
    query = select(SandboxPhone.number, SandboxPhone.scope, SandboxPhone.script).where(
        SandboxPhone.scope.in_([account_sid, ""])
    )
    scripts: dict[str, dict[str, Any]] = {}
    # Every account's first, so that the account's own script overwrites it.
    for number, _scope, script in sorted(
        (await session.execute(query)).all(), key=lambda row: row[1] != ""
    ):
        scripts[number] = script
    return scripts
