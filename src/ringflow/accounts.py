"""Accounts, their API credentials, ExoPhones and apps: the admin operations the CLI and the
admin API share.

API tokens are random 256-bit secrets, so a fast keyed-free SHA-256 is the right hash: there is
nothing to brute-force, and every API request pays for it. Comparison is constant-time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ringflow.calls.sids import new_api_key, new_api_token
from ringflow.clock import Clock
from ringflow.errors import AppInvalid, Conflict, InvalidRequest, NotFound
from ringflow.flows.applets import REGISTRY
from ringflow.flows.model import AppGraph, parse_app
from ringflow.media.tts import TextToSpeech, TtsUnavailable
from ringflow.phone import normalize
from ringflow.storage.db import Database
from ringflow.storage.models import Account, ApiKey, App, PhoneNumber, SandboxPhone
from ringflow.telephony.sandbox import PhoneScript

_DUMMY_HASH = hashlib.sha256(b"ringflow-no-such-key").hexdigest()
# Ids are BIGINT: a larger number (from a Url or a path) names no app, and handing it to the
# database driver would fail with an overflow (a 500) instead.
_MAX_ID = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A freshly made API key and its token (the only time the token exists in clear)."""

    account_sid: str
    api_key: str
    api_token: str


def hash_token(token: str) -> str:
    """The stored form of an API token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())[:40] or "account"


class Accounts:
    """Admin operations on accounts and what they own."""

    def __init__(self, db: Database, clock: Clock, tts: TextToSpeech | None = None):
        self.db = db
        self.clock = clock
        self.tts = tts  # when set, saving an app checks that its texts can be spoken

    async def create_account(self, name: str, time_zone: str = "Asia/Kolkata") -> Credentials:
        """A new account with its first API key; its SID is derived from the name."""
        if not name.strip():
            raise InvalidRequest("account name must not be empty")
        _check_zone(time_zone)
        base = _slug(name)
        async with self.db.session() as session:
            taken = set(
                (
                    await session.execute(select(Account.sid).where(Account.sid.like(f"{base}%")))
                ).scalars()
            )
            sid = base if base not in taken else next(
                f"{base}{n}" for n in range(1, 10_000) if f"{base}{n}" not in taken
            )
            account = Account(sid=sid, name=name.strip(), time_zone=time_zone, created_at=self.clock.wall())
            session.add(account)
            await session.flush()
            return await self._add_key(session, account)

    async def _add_key(self, session: AsyncSession, account: Account) -> Credentials:
        key, token = new_api_key(), new_api_token()
        session.add(
            ApiKey(account_id=account.id, key=key, token_hash=hash_token(token), created_at=self.clock.wall())
        )
        return Credentials(account.sid, key, token)

    async def get(self, session: AsyncSession, sid: str) -> Account:
        """The account with this SID (SIDs compare case-insensitively), or NotFound."""
        account = (
            await session.execute(select(Account).where(Account.sid == sid.lower()))
        ).scalar_one_or_none()
        if account is None:
            raise NotFound(f"no account {sid!r}")
        return account

    async def create_key(self, account_sid: str) -> Credentials:
        """Another API key for the account."""
        async with self.db.session() as session:
            return await self._add_key(session, await self.get(session, account_sid))

    async def revoke_key(self, account_sid: str, key: str) -> None:
        """Revoke an API key; requests using it get 401 from then on."""
        async with self.db.session() as session:
            account = await self.get(session, account_sid)
            row = (
                await session.execute(
                    select(ApiKey).where(ApiKey.account_id == account.id, ApiKey.key == key)
                )
            ).scalar_one_or_none()
            if row is None:
                raise NotFound(f"no API key {key!r} in account {account.sid}")
            row.revoked_at = row.revoked_at or self.clock.wall()

    async def authenticate(self, username: str, password: str) -> Account | None:
        """The account these Basic credentials open: API key + token, or account SID + token."""
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(ApiKey).where(ApiKey.key == username, ApiKey.revoked_at.is_(None))
                )
            ).scalars().all()
            if not rows:
                account = (
                    await session.execute(select(Account).where(Account.sid == username.lower()))
                ).scalar_one_or_none()
                if account is not None:
                    rows = (
                        await session.execute(
                            select(ApiKey).where(
                                ApiKey.account_id == account.id, ApiKey.revoked_at.is_(None)
                            )
                        )
                    ).scalars().all()
        given = hash_token(password)
        match = None
        for row in rows or [None]:
            stored = row.token_hash if row is not None else _DUMMY_HASH
            if hmac.compare_digest(given, stored) and row is not None:
                match = row.account
        return match

    async def add_number(self, account_sid: str, number: str, friendly_name: str = "") -> str:
        """Give the account an ExoPhone; returns it in E.164."""
        e164 = normalize(number, field="number")
        try:
            async with self.db.session() as session:
                account = await self.get(session, account_sid)
                session.add(
                    PhoneNumber(
                        account_id=account.id,
                        number=e164,
                        friendly_name=friendly_name,
                        created_at=self.clock.wall(),
                    )
                )
        except IntegrityError:
            raise Conflict(f"{number} is already an ExoPhone of an account") from None
        return e164

    async def numbers(self, session: AsyncSession, account_id: int) -> list[PhoneNumber]:
        """The account's ExoPhones, oldest first."""
        return list(
            (
                await session.execute(
                    select(PhoneNumber).where(PhoneNumber.account_id == account_id).order_by(PhoneNumber.id)
                )
            ).scalars()
        )

    async def script_phone(self, account_sid: str, number: str, script: Any) -> tuple[str, dict[str, Any]]:
        """Set how a virtual phone answers this account's calls; returns (E.164, stored script)."""
        number = normalize(number, field="number")
        stored = PhoneScript.from_dict(script).to_dict()
        async with self.db.session() as session:
            account = await self.get(session, account_sid)
            row = await session.get(SandboxPhone, (account.sid, number))
            if row is None:
                session.add(SandboxPhone(scope=account.sid, number=number, script=stored, updated_at=self.clock.wall()))
            else:
                row.script, row.updated_at = stored, self.clock.wall()
        return number, stored

    async def clear_phone(self, account_sid: str, number: str) -> str:
        """Forget this account's script for a virtual phone; returns the number in E.164."""
        number = normalize(number, field="number")
        async with self.db.session() as session:
            await session.execute(
                delete(SandboxPhone).where(SandboxPhone.scope == account_sid.lower(), SandboxPhone.number == number)
            )
        return number

    async def phones(self, session: AsyncSession, account_sid: str) -> list[SandboxPhone]:
        """Scripts that apply to the account's calls: its own and those set for every account."""
        query = select(SandboxPhone).where(or_(SandboxPhone.scope == account_sid.lower(), SandboxPhone.scope == ""))
        return list((await session.execute(query.order_by(SandboxPhone.number, SandboxPhone.scope))).scalars())

    async def save_app(self, account_sid: str, data: Any, app_id: int | None = None) -> App:
        """Validate and store an app; with ``app_id``, replace that app as a new version."""
        graph = parse_app(data, REGISTRY)
        await self._check_speech(graph)
        async with self.db.session() as session:
            account = await self.get(session, account_sid)
            await self._check_transfers(session, account.id, graph, app_id)
            now = self.clock.wall()
            if app_id is None:
                app = App(account_id=account.id, name=graph.name, graph=data, version=1, created_at=now, updated_at=now)
                session.add(app)
            else:
                app = await self.app(session, account.id, app_id)
                app.graph, app.name, app.version, app.updated_at = data, graph.name, app.version + 1, now
            await session.flush()
            return app

    async def _check_transfers(
        self, session: AsyncSession, account_id: int, graph: AppGraph, own_id: int | None
    ) -> None:
        """A Transfer must lead to an app of the same account (or the app itself)."""
        wanted = {
            node.name: node.config["app_id"]
            for node in graph.nodes.values()
            if node.applet == "transfer"
        }
        if not wanted:
            return
        found = set(
            (
                await session.execute(
                    select(App.id).where(App.account_id == account_id, App.id.in_(set(wanted.values())))
                )
            ).scalars()
        )
        problems = [
            f"node {name!r}: field 'app_id': there is no app {target} in this account"
            for name, target in wanted.items()
            if target not in found and target != own_id
        ]
        if problems:
            raise AppInvalid(problems)

    async def _check_speech(self, graph: AppGraph) -> None:
        """Every text the app speaks must be speakable now (engine installed, voice known)."""
        if self.tts is None:
            return
        await self.tts.ready()
        problems = []
        for node in graph.nodes.values():
            for field in REGISTRY[node.applet].spoken:
                text = node.config.get(field)
                if not text:
                    continue
                try:
                    self.tts.check(text, node.config.get("voice"))
                except (TtsUnavailable, InvalidRequest) as exc:
                    problems.append(f"node {node.name!r}: field {field!r}: {exc}")
        if problems:
            raise AppInvalid(problems)

    async def app(self, session: AsyncSession, account_id: int, app_id: int) -> App:
        """One of the account's apps, or NotFound (another account's app is not found either)."""
        if not 0 < app_id <= _MAX_ID:
            raise NotFound(f"no app {app_id} in this account")
        app = (
            await session.execute(select(App).where(App.id == app_id, App.account_id == account_id))
        ).scalar_one_or_none()
        if app is None:
            raise NotFound(f"no app {app_id} in this account")
        return app

    async def apps(self, account_sid: str) -> list[App]:
        """The account's apps."""
        async with self.db.session() as session:
            account = await self.get(session, account_sid)
            return list(
                (await session.execute(select(App).where(App.account_id == account.id).order_by(App.id))).scalars()
            )


def _check_zone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone {name!r}") from None
