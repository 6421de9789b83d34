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

from ringflow.calls.sids import new_api_key, new_api_token
from ringflow.clock import Clock
from ringflow.errors import AppInvalid, Conflict, InvalidRequest, NotFound
from ringflow.flows.applets import REGISTRY
from ringflow.flows.model import AppGraph, parse_app
from ringflow.media.tts import TextToSpeech, TtsUnavailable
from ringflow.numeric import whole_number
from ringflow.phone import normalize
from ringflow.storage import accounts as stored
from ringflow.storage import apps as stored_apps
from ringflow.storage import phones as stored_phones
from ringflow.storage.cache import Lookups
from ringflow.storage.db import Database
from ringflow.storage.models import Account, App, PhoneNumber, SandboxPhone
from ringflow.storage.session import Duplicate, Session, detach
from ringflow.telephony.sandbox import PhoneScript

_DUMMY_HASH = hashlib.sha256(b"ringflow-no-such-key").hexdigest()


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A freshly made API key and its token (the only time the token exists in clear)."""

    account_sid: str
    api_key: str
    api_token: str


@dataclasses.dataclass(frozen=True)
class Limit:
    """An account's own limit: its column, its name in the CLI and admin API, the setting that
    applies when the account has none, and its lowest value."""

    column: str
    name: str
    setting: str
    low: int


LIMITS = (
    Limit("max_concurrent_calls", "max_concurrent_calls", "max_concurrent_calls", 1),
    Limit("max_queued_calls", "queue_limit", "queue_limit", 0),
    # 0 would read as "unset" where the rate limit is applied, so one request a minute is least.
    Limit("rate_limit_per_minute", "rate_limit_per_minute", "rate_limit_per_minute", 1),
    Limit("max_concurrent_streams", "max_concurrent_streams", "stream_limit", 0),
)
MAX_LIMIT = 1_000_000  # well inside the INTEGER columns of every backend
CLEAR_WORDS = ("default", "none")


def parse_limit(value: object, name: str, low: int) -> int | None:
    """A limit as given (a whole number, or ``default``/``none``/null to clear it); InvalidRequest
    naming ``name`` if it is neither."""
    if value is None or (isinstance(value, str) and value.strip().lower() in CLEAR_WORDS):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a whole number or default, got {value!r}")
    return whole_number(value, name, low=low, high=MAX_LIMIT)


def hash_token(token: str) -> str:
    """The stored form of an API token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())[:40] or "account"


class Accounts:
    """Admin operations on accounts and what they own, and the cached lookups of requests.

    The accounts, keys, ExoPhones and apps it returns may be shared between requests: read
    them, never change them (changes go through the methods here, which forget the cache).
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        tts: TextToSpeech | None = None,
        lookups: Lookups | None = None,
    ):
        self.db = db
        self.clock = clock
        self.tts = tts  # when set, saving an app checks that its texts can be spoken
        self.lookups = lookups or Lookups(clock)

    async def close(self) -> None:
        """Stop listening for other processes' changes."""
        await self.lookups.close()

    async def create_account(
        self, name: str, time_zone: str = "Asia/Kolkata", *, taken_is_error: bool = False
    ) -> Credentials:
        """A new account with its first API key; its SID is derived from the name.

        A SID already taken gets a number (``acme1``), or with ``taken_is_error`` is a Conflict:
        an operator typing the name twice meant the account they already have.
        """
        if not name.strip():
            raise InvalidRequest("account name must not be empty")
        _check_zone(time_zone)
        base = _slug(name)
        async with self.db.session() as session:
            taken = await stored.sids_starting(session, base)
            if taken_is_error and base in taken:
                raise Conflict(
                    f"the name {name.strip()!r} is taken: account {base!r} exists "
                    f"(ringflow accounts show {base}); choose another name"
                )
            sid = (
                base
                if base not in taken
                else next(f"{base}{n}" for n in range(1, 10_000) if f"{base}{n}" not in taken)
            )
            account = await stored.add_account(
                session, sid, name.strip(), time_zone, self.clock.wall()
            )
            credentials = self._add_key(session, account)
        await self.lookups.changed()
        return credentials

    def _add_key(self, session: Session, account: Account) -> Credentials:
        key, token = new_api_key(), new_api_token()
        stored.add_key(session, account.id, key, hash_token(token), self.clock.wall())
        return Credentials(account.sid, key, token)

    async def get(self, session: Session, sid: str) -> Account:
        """The account with this SID (SIDs compare case-insensitively), or NotFound."""
        account = await self._cached(
            ("account-sid", sid.strip().lower()), session, stored.account_by_sid, sid
        )
        if account is None:
            raise NotFound(f"no account {sid!r}")
        return account

    async def create_key(self, account_sid: str) -> Credentials:
        """Another API key for the account."""
        async with self.db.session() as session:
            credentials = self._add_key(session, await self.get(session, account_sid))
        await self.lookups.changed()  # the account's SID with a token opens it now
        return credentials

    async def revoke_key(self, account_sid: str, key: str) -> None:
        """Revoke an API key; requests using it get 401 from then on."""
        async with self.db.session() as session:
            account = await self.get(session, account_sid)
            if not await stored.revoke_key(session, account.id, key, self.clock.wall()):
                raise NotFound(f"no API key {key!r} in account {account.sid}")
        await self.lookups.changed()

    async def authenticate(self, username: str, password: str) -> Account | None:
        """The account these Basic credentials open: API key + token, or account SID + token."""
        # Names that open nothing are not kept: guesses must not crowd out the real keys.
        rows: list[tuple[str, int | None]] = [
            *await self.lookups.get(
                ("keys", username),
                lambda: self._read(stored.active_keys, username),
                keep=bool,
                shared=True,
            )
        ]
        given = hash_token(password)
        match = None
        # Every candidate is compared, and a dummy when there is none, so the time taken
        # tells nothing about which part of the credentials was wrong.
        for token_hash, account_id in rows or [(_DUMMY_HASH, None)]:
            if hmac.compare_digest(given, token_hash) and account_id is not None:
                match = account_id
        if match is None:
            return None
        found: Account | None = await self._cached(
            ("account-id", match), None, stored.account_by_id, match
        )
        return found

    async def _read(self, query: Any, *args: Any) -> Any:
        """``query(session, *args)`` in a transaction of its own."""
        async with self.db.session() as session:
            return await query(session, *args)

    async def _cached(
        self,
        key: tuple[Any, ...],
        session: Session | None,
        query: Any,
        *args: Any,
        keep_none: bool = False,
    ) -> Any:
        """The row ``query(session, *args)`` finds (None: none), through the cache. Without a
        session the query runs in one of its own (when it must run)."""

        async def load() -> Any:
            if session is None:
                async with self.db.session() as own:
                    return await self._detached(own, query, *args)
            return await self._detached(session, query, *args)

        return await self.lookups.get(
            key, load, keep=(lambda _: True) if keep_none else _found, shared=session is None
        )

    @staticmethod
    async def _detached(session: Session, query: Any, *args: Any) -> Any:
        row = await query(session, *args)
        if row is not None:
            detach(session, row)
        return row

    async def set_limits(self, account_sid: str, values: dict[str, int | None]) -> Account:
        """Set some of the account's own limits (by column; None: the server's default applies);
        returns the account as stored now."""
        async with self.db.session() as session:
            account = await self.get(session, account_sid)
            await stored.set_limits(session, account.id, values)
        await self.lookups.changed()
        async with self.db.session() as session:
            return await self.get(session, account.sid)

    async def add_number(self, account_sid: str, number: str, friendly_name: str = "") -> str:
        """Give the account an ExoPhone; returns it in E.164."""
        e164 = normalize(number, field="number")
        try:
            async with self.db.session() as session:
                account = await self.get(session, account_sid)
                await stored_phones.add_number(
                    session, account.id, e164, friendly_name, self.clock.wall()
                )
        except Duplicate:
            raise Conflict(f"{number} is already an ExoPhone of an account") from None
        await self.lookups.changed()
        return e164

    async def numbers(self, session: Session, account_id: int) -> list[PhoneNumber]:
        """The account's ExoPhones, oldest first."""
        return await stored_phones.numbers(session, account_id)

    async def owns_number(self, session: Session | None, account_id: int, number: str) -> bool:
        """Whether ``number`` (E.164) is an ExoPhone of the account (read, when not cached, in
        ``session`` or without one in a transaction of its own)."""

        async def load() -> bool:
            if session is None:
                return bool(await self._read(stored_phones.owns_number, account_id, number))
            return await stored_phones.owns_number(session, account_id, number)

        return await self.lookups.get(("owns", account_id, number), load, shared=session is None)

    async def script_phone(
        self, scope: str, number: str, script: Any
    ) -> tuple[str, dict[str, Any]]:
        """Set how a virtual phone answers the calls of the account ``scope`` ("": of every
        account); returns (E.164, stored script)."""
        number = normalize(number, field="number")
        data = PhoneScript.from_dict(script).to_dict()
        async with self.db.session() as session:
            scope = (await self.get(session, scope)).sid if scope else ""
            await stored_phones.set_phone_script(session, scope, number, data, self.clock.wall())
        await self.lookups.changed()
        return number, data

    async def clear_phone(self, scope: str, number: str) -> str:
        """Forget the script of a virtual phone for the account ``scope`` ("": every account's);
        returns the number in E.164."""
        number = normalize(number, field="number")
        async with self.db.session() as session:
            await stored_phones.clear_phone_script(session, scope.lower(), number)
        await self.lookups.changed()
        return number

    async def script_for(self, account_sid: str, number: str) -> dict[str, Any] | None:
        """The script a sandbox call of the account to ``number`` meets (cached: the scripts
        of an account are few, the numbers it calls are many)."""

        async def load() -> dict[str, dict[str, Any]]:
            async with self.db.session() as session:
                return await stored_phones.scripts_met(session, account_sid)

        scripts: dict[str, dict[str, Any]] = await self.lookups.get(
            ("scripts", account_sid), load, shared=True
        )
        return scripts.get(number)

    async def phone(self, session: Session, account_sid: str, number: str) -> SandboxPhone | None:
        """The account's own script for a virtual phone (``number`` in E.164), or None."""
        return await stored_phones.phone_script(session, account_sid.lower(), number)

    async def phones(self, session: Session, account_sid: str) -> list[SandboxPhone]:
        """Scripts that apply to the account's calls: its own and those set for every account."""
        return await stored_phones.phone_scripts(session, account_sid)

    async def save_app(self, account_sid: str, data: Any, app_id: int | None = None) -> App:
        """Validate and store an app; with ``app_id``, replace that app as a new version."""
        graph = parse_app(data, REGISTRY)
        await self._check_speech(graph)
        async with self.db.session() as session:
            account = await self.get(session, account_sid)
            await self._check_transfers(session, account.id, graph, app_id)
            now = self.clock.wall()
            if app_id is None:
                app = await stored_apps.add_app(session, account.id, graph.name, data, now)
            else:
                # The row itself, not a shared cached copy: it is changed in this transaction.
                found = await stored_apps.app_of(session, account.id, app_id)
                if found is None:
                    raise NotFound(f"no app {app_id} in this account")
                app = await stored_apps.replace_app(session, found, graph.name, data, now)
        await self.lookups.changed()
        return app

    async def _check_transfers(
        self, session: Session, account_id: int, graph: AppGraph, own_id: int | None
    ) -> None:
        """A Transfer must lead to an app of the same account (or the app itself)."""
        wanted = {
            node.name: node.config["app_id"]
            for node in graph.nodes.values()
            if node.applet == "transfer"
        }
        if not wanted:
            return
        found = await stored_apps.app_ids_in(session, account_id, wanted.values())
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

    async def app(self, session: Session | None, account_id: int, app_id: int) -> App:
        """One of the account's apps, or NotFound (another account's app is not found either);
        read, when not cached, in ``session`` or without one in a transaction of its own."""
        app = await self._cached(
            ("app", account_id, app_id),
            session,
            stored_apps.app_of,
            account_id,
            app_id,
            keep_none=True,
        )
        if app is None:
            raise NotFound(f"no app {app_id} in this account")
        return app

    async def find_app(self, account_id: int, app_id: int) -> App | None:
        """One of the account's apps, or None; read from the cache when it can be."""
        found: App | None = await self._cached(
            ("app", account_id, app_id),
            None,
            stored_apps.app_of,
            account_id,
            app_id,
            keep_none=True,
        )
        return found

    async def apps(self, account_sid: str) -> list[App]:
        """The account's apps."""
        async with self.db.session() as session:
            account = await self.get(session, account_sid)
            return await stored_apps.apps_of(session, account.id)


def _found(value: object) -> bool:
    return value is not None


def _check_zone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone {name!r}") from None
