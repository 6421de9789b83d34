"""Campaigns as the API and dashboard use them, and the process's share of driving them.

``Campaigns`` creates, reads, changes and deletes campaigns, takes CSV contact lists, and runs
this process's drivers: every few seconds it leases the campaigns that have no live driver
(``storage.campaigns.claim``) and starts a ``Driver`` for each (campaigns/driver.py). A process
that stops gives its campaigns up at once; one that dies loses them when their lease runs out
(``RINGFLOW_CAMPAIGN_LEASE``), and another process takes them over.

Every change of a campaign's status goes through ``change_status``, which writes it and the
campaign's ``status_callback`` in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import functools
import io
import logging
import secrets
import uuid
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from ringflow.calls.dispatcher import Dispatcher
from ringflow.campaigns import callbacks, states
from ringflow.campaigns.driver import Driver
from ringflow.campaigns.spec import (
    LIVE_FIELDS,
    CampaignSpec,
    callback_urls,
    parse_action,
    parse_changes,
    parse_create,
    unwrap,
)
from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import Conflict, InvalidRequest, NotFound, RingflowError
from ringflow.phone import display, normalize
from ringflow.storage import campaigns as store
from ringflow.storage.db import Database
from ringflow.storage.models import Account, Campaign, ContactList, ContactUpload
from ringflow.storage.phones import owns_number
from ringflow.storage.session import Session

log = logging.getLogger(__name__)

# Seconds between looks for campaigns that need a driver: at most SCAN, sooner when a campaign
# is due to wake or another process's lease on one runs out (a campaign made or resumed here
# is looked for at once).
SCAN = 5.0
MAX_LIST_ROWS = 100_000
MAX_FAILURES_SHOWN = 1000  # failed rows kept with an upload's status
NUMBER_COLUMNS = ("number", "phone", "phone_number", "phonenumber", "mobile", "msisdn", "to")


@dataclasses.dataclass(frozen=True)
class CampaignView:
    """A campaign with its progress: numbers counted by state, and attempts made."""

    campaign: Campaign
    counts: dict[str, int]
    attempts: int
    lists: tuple[str, ...] = ()

    @property
    def stats(self) -> dict[str, int]:
        stats = {state: self.counts.get(state, 0) for state in states.NUMBER_STATES}
        return {**stats, "attempts": self.attempts, "total": self.campaign.numbers_total}


def new_sid() -> str:
    """A campaign, list or upload id: 32 lowercase hex digits."""
    return secrets.token_hex(16)


class Campaigns:
    """The campaigns of every account, and the drivers this process runs."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        dispatcher: Dispatcher,
        wake_deliverer: Any,
    ):
        self.db = db
        self.clock = clock
        self.settings = settings
        self.dispatcher = dispatcher
        self.wake_deliverer = wake_deliverer
        self.me = settings.instance_name
        self.lease = dt.timedelta(seconds=settings.campaign_lease)
        self.drivers: dict[int, asyncio.Task[None]] = {}
        self._scanner: asyncio.Task[None] | None = None
        self._scan_now = asyncio.Event()
        self._handing_over: asyncio.Task[None] | None = None
        self.stopping = False

    # -- the API's operations ------------------------------------------------------------------

    async def create(self, account: Account, body: Any, app_id: int | None) -> CampaignView:
        """Create a campaign from a v2 body (``app_id``: the app its ``url`` names)."""
        spec = parse_create(unwrap(body), allow_private=self.settings.allow_private_urls)
        now = self.clock.wall()
        if spec.end_at is not None and spec.end_at <= now:
            raise InvalidRequest("schedule.end_at is in the past")
        async with self.db.session() as session:
            numbers = await self._numbers(session, account, spec)
            status = (
                states.SCHEDULED
                if spec.send_at is not None and spec.send_at > now
                else states.IN_PROGRESS
            )
            values = {
                "sid": new_sid(),
                "account_id": account.id,
                "name": spec.name or _default_name(account, now),
                "status": status,
                "caller_id": spec.caller_id,
                "app_id": app_id,
                "stream_url": spec.stream_url,
                "stream_type": spec.stream_type,
                "calls_per_second": spec.calls_per_second,
                "max_concurrent": spec.max_concurrent or self._account_limit(account),
                "retries": spec.retries.to_json(),
                "calling_hours": spec.calling_hours.to_json() if spec.calling_hours else None,
                "send_at": spec.send_at,
                "end_at": spec.end_at,
                "custom_field": spec.custom_field,
                "machine_detection": spec.machine_detection,
                "created_at": now,
                "updated_at": now,
                "started_at": now if status == states.IN_PROGRESS else None,
                "wake_at": spec.send_at if status == states.SCHEDULED else now,
                **{
                    name: spec.callbacks.get(name)
                    for name in (
                        "status_callback",
                        "call_status_callback",
                        "call_schedule_callback",
                    )
                },
            }
            campaign = await store.add_campaign(session, values, numbers, now)
            await self._announce(session, campaign, states.CREATED, None, now)
        log.info(
            "campaign %s created for %s: %d numbers, %s",
            campaign.sid,
            account.sid,
            len(numbers),
            status,
        )
        self.wake_deliverer()
        self._scan_now.set()
        return CampaignView(campaign, {states.PENDING: len(numbers)}, 0, spec.lists)

    async def get(self, account: Account, sid: str) -> CampaignView:
        async with self.db.session() as session:
            campaign = await self._find(session, account, sid)
            return await self._view(session, campaign)

    async def page(
        self, account: Account, status: str | None, limit: int, offset: int
    ) -> tuple[list[CampaignView], int]:
        async with self.db.session() as session:
            rows, total = await store.campaigns_of(session, account.id, status, limit, offset)
            found = await store.counts(session, [c.id for c in rows])
        return [CampaignView(c, *found[c.id]) for c in rows], total

    async def update(
        self, account: Account, sid: str, body: Any, app_id: int | None
    ) -> CampaignView:
        """A PUT: an ``action``, callback URLs, or (before it starts) any setting."""
        fields = unwrap(body)
        action = parse_action(fields["action"]) if "action" in fields else None
        rest = {k: v for k, v in fields.items() if k != "action"}
        now = self.clock.wall()
        async with self.db.session() as session:
            campaign = await self._find(session, account, sid, lock=True)
            if rest:
                await self._change_settings(session, account, campaign, rest, app_id, now)
            if action is not None:
                await self._act(session, campaign, action, now)
            view = await self._view(session, campaign)
        self.wake_deliverer()
        self._scan_now.set()
        return view

    async def delete(self, account: Account, sid: str) -> str:
        """Delete a campaign that has not started, or archive a finished one; says which."""
        now = self.clock.wall()
        async with self.db.session() as session:
            campaign = await self._find(session, account, sid, lock=True)
            if campaign.status in states.NOT_STARTED:
                await store.delete_campaign(session, campaign.id)
                return "deleted"
            if campaign.status == states.COMPLETED:
                await self.change_status(session, campaign, states.ARCHIVED, None, now)
                self.wake_deliverer()
                return "archived"
            if campaign.status == states.ARCHIVED:
                return "archived"
        raise Conflict(
            f"campaign {campaign.sid} is {campaign.status}: complete it "
            "(action complete) before deleting it"
        )

    async def campaign_id(self, account: Account, sid: str) -> int:
        async with self.db.session() as session:
            return (await self._find(session, account, sid)).id

    async def _find(
        self, session: Session, account: Account, sid: str, *, lock: bool = False
    ) -> Campaign:
        campaign = await store.campaign_in_account(session, account.id, sid, lock=lock)
        if campaign is None:
            raise NotFound(f"campaign {sid} not found")
        return campaign

    async def _view(self, session: Session, campaign: Campaign) -> CampaignView:
        counts, attempts = (await store.counts(session, [campaign.id]))[campaign.id]
        return CampaignView(campaign, counts, attempts)

    def _account_limit(self, account: Account) -> int:
        limit = account.max_concurrent_calls
        return limit if limit is not None else self.settings.max_concurrent_calls

    async def _numbers(
        self, session: Session, account: Account, spec: CampaignSpec
    ) -> list[tuple[str, dict[str, Any] | None]]:
        if not await owns_number(session, account.id, spec.caller_id):
            raise InvalidRequest(
                f"caller_id {display(spec.caller_id)} is not an ExoPhone of this account"
            )
        numbers: list[tuple[str, dict[str, Any] | None]] = [(n, None) for n in spec.numbers]
        if spec.lists:
            found = await store.lists_in_account(session, account.id, spec.lists)
            missing = [sid for sid in spec.lists if sid.lower() not in found]
            if missing:
                raise InvalidRequest(f"lists: no contact list {', '.join(missing)} in this account")
            numbers += await store.contacts_of(session, [found[s.lower()] for s in spec.lists])
        if not spec.call_duplicate_numbers:
            seen: set[str] = set()
            unique = []
            for number, row in numbers:
                if number not in seen:
                    seen.add(number)
                    unique.append((number, row))
            numbers = unique
        if not numbers:
            raise InvalidRequest("the campaign has no numbers to call (its lists are empty)")
        return numbers

    async def _change_settings(
        self,
        session: Session,
        account: Account,
        campaign: Campaign,
        fields: dict[str, Any],
        app_id: int | None,
        now: dt.datetime,
    ) -> None:
        allow_private = self.settings.allow_private_urls
        if campaign.status in states.NOT_STARTED:
            values = parse_changes(fields, allow_private=allow_private)
        else:
            extra = set(fields) - LIVE_FIELDS
            if extra:
                raise Conflict(
                    f"campaign {campaign.sid} has started: only action and the "
                    f"callback URLs can change, not {', '.join(sorted(extra))}"
                )
            values = dict(callback_urls(fields, allow_private=allow_private))
        if fields.get("url"):
            values.update(app_id=app_id, stream_url=None, stream_type=None)
        if "caller_id" in values and not await owns_number(
            session, account.id, values["caller_id"]
        ):
            raise InvalidRequest(
                f"caller_id {display(values['caller_id'])} is not an ExoPhone of this account"
            )
        if "send_at" in values:
            if values["end_at"] is not None and values["end_at"] <= now:
                raise InvalidRequest("schedule.end_at is in the past")
            later = values["send_at"] is not None and values["send_at"] > now
            values["status"] = states.SCHEDULED if later else states.IN_PROGRESS
            values["wake_at"] = values["send_at"] if later else now
            if not later:
                values["started_at"] = now
        if not values:
            return
        values["updated_at"] = now
        previous = campaign.status
        await store.set_campaign(session, campaign.id, values)
        for name, value in values.items():
            setattr(campaign, name, value)
        if campaign.status != previous:
            await self._announce(session, campaign, previous, None, now)

    async def _act(
        self, session: Session, campaign: Campaign, action: str, now: dt.datetime
    ) -> None:
        status = campaign.status
        if action == "pause":
            if status == states.PAUSED and campaign.pause_reason == states.BY_USER:
                return
            if status not in (states.IN_PROGRESS, states.PAUSED, *states.NOT_STARTED):
                raise Conflict(f"campaign {campaign.sid} is {status}: it cannot be paused")
            await self.change_status(session, campaign, states.PAUSED, states.BY_USER, now)
        elif action == "resume":
            if status == states.IN_PROGRESS:
                return
            if status != states.PAUSED:
                raise Conflict(
                    f"campaign {campaign.sid} is {status}: only a paused campaign resumes"
                )
            resumed = (
                states.SCHEDULED
                if campaign.send_at is not None
                and campaign.send_at > now
                and campaign.started_at is None
                else states.IN_PROGRESS
            )
            # Outside its calling hours the driver pauses it again at once, as the hours'.
            await self.change_status(session, campaign, resumed, None, now)
        else:
            if status in (states.COMPLETED, states.ARCHIVED):
                return
            await self.complete(session, campaign, now, "completed by request")

    async def complete(
        self, session: Session, campaign: Campaign, now: dt.datetime, why: str
    ) -> None:
        """End a campaign: numbers not called (or waiting for a retry) are settled failed;
        calls already up go on, and their driver records how they end."""
        left = await store.give_up_rest(session, campaign.id, states.WAITING, states.FAILED, now)
        if left:
            log.info("campaign %s: %d numbers left uncalled (%s)", campaign.sid, left, why)
        await self.change_status(session, campaign, states.COMPLETED, None, now)

    async def change_status(
        self,
        session: Session,
        campaign: Campaign,
        status: str,
        reason: str | None,
        now: dt.datetime,
    ) -> None:
        """Move the campaign to ``status`` and queue its status callback, in ``session``."""
        previous = campaign.status
        values: dict[str, Any] = {"status": status, "pause_reason": reason, "updated_at": now}
        if status == states.IN_PROGRESS and campaign.started_at is None:
            values["started_at"] = now
        if status in (states.IN_PROGRESS, states.COMPLETED):
            values["wake_at"] = now  # a driver places its calls, or records how the last end
        elif status == states.SCHEDULED:
            values["wake_at"] = campaign.send_at
        elif status == states.ARCHIVED:
            values["wake_at"] = None
        await store.set_campaign(session, campaign.id, values)
        for name, value in values.items():
            setattr(campaign, name, value)
        log.info(
            "campaign %s: %s -> %s%s",
            campaign.sid,
            previous,
            status,
            f" ({reason})" if reason else "",
        )
        await self._announce(session, campaign, previous, reason, now)

    async def _announce(
        self,
        session: Session,
        campaign: Campaign,
        previous: str,
        reason: str | None,
        now: dt.datetime,
    ) -> None:
        if not campaign.status_callback:
            return
        counts, attempts = (await store.counts(session, [campaign.id]))[campaign.id]
        view = CampaignView(campaign, counts, attempts)
        payload = {
            "name": campaign.name,
            "status": campaign.status,
            "previous_status": previous,
            "reason": reason,
            "stats": view.stats,
        }
        key = f"status:{uuid.uuid4().hex[:20]}"  # a campaign may pass through a status again
        await callbacks.post(
            session, campaign, "campaign", campaign.status_callback, payload, key, now
        )

    # -- contact lists ---------------------------------------------------------------------

    async def upload(
        self, account: Account, list_name: str, file_name: str, content: bytes
    ) -> tuple[ContactUpload, ContactList]:
        """Add a CSV's rows to the list ``list_name`` (made if new): a row whose number is bad
        is reported in the upload's failures, a number the list has already is a duplicate."""
        name = list_name.strip()
        if not 1 <= len(name) <= 200:
            raise InvalidRequest("list_name must be 1 to 200 characters")
        # Reading 100,000 rows takes seconds of CPU: off the event loop, so calls go on.
        parsed = await asyncio.to_thread(_parse_csv, content)
        now = self.clock.wall()
        async with self.db.session() as session:
            contact_list = await store.list_named(session, account.id, name)
            if contact_list is None:
                contact_list = await store.add_list(session, account.id, new_sid(), name, now)
                known: set[str] = set()
            else:
                known = await store.numbers_in_list(session, contact_list.id)
            good, failures, duplicates = _contacts(parsed, known)
            if contact_list.row_count + len(good) > MAX_LIST_ROWS:
                raise InvalidRequest(
                    f"a list holds at most {MAX_LIST_ROWS} rows: {name} has "
                    f"{contact_list.row_count} and this file adds {len(good)}"
                )
            await store.add_contacts(session, contact_list, good)
            upload = await store.add_upload(
                session,
                {
                    "sid": new_sid(),
                    "account_id": account.id,
                    "list_id": contact_list.id,
                    "file_name": (file_name or "upload.csv")[:200],
                    "total": len(parsed),
                    "succeeded": len(good),
                    "duplicates": duplicates,
                    "failed": len(failures),
                    "failures": failures[:MAX_FAILURES_SHOWN],
                    "created_at": now,
                },
            )
        log.info(
            "contact list %s: %d rows added from %s (%d failed, %d duplicates)",
            contact_list.sid,
            len(good),
            upload.file_name,
            len(failures),
            duplicates,
        )
        return upload, contact_list

    async def upload_status(self, account: Account, sid: str) -> tuple[ContactUpload, ContactList]:
        async with self.db.session() as session:
            found = await store.upload_in_account(session, account.id, sid)
        if found is None:
            raise NotFound(f"upload {sid} not found")
        return found

    # -- driving -------------------------------------------------------------------------------

    def start(self) -> None:
        self._scanner = asyncio.ensure_future(self._scan())

    def hand_over(self) -> None:
        """Stop driving, without waiting (a drain): see ``stop``."""
        if self._handing_over is None:
            self._handing_over = asyncio.ensure_future(self.stop())

    async def stop(self) -> None:
        """Stop driving: each driver gives its campaign up for another process to take."""
        self.stopping = True
        tasks = [t for t in (self._scanner, *self.drivers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _scan(self) -> None:
        while not self.stopping:
            pause = SCAN
            try:
                now = self.clock.wall()
                async with self.db.session() as session:
                    taken = await store.claim(
                        session, self.me, now, now + self.lease, list(self.drivers)
                    )
                    soonest = await store.next_look(session, now, self.me)
                if soonest is not None:
                    pause = min(SCAN, max(0.05, (soonest - now).total_seconds()))
                for campaign_id in taken:
                    task = asyncio.ensure_future(Driver(self, campaign_id).run())
                    self.drivers[campaign_id] = task
                    task.add_done_callback(functools.partial(self._driver_done, campaign_id))
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is down: try again next round
                log.exception("looking for campaigns to drive failed")
            self._scan_now.clear()
            with contextlib.suppress(TimeoutError):
                await _first(self.clock.sleep(pause), self._scan_now.wait())

    def _driver_done(self, campaign_id: int, _task: asyncio.Task[None]) -> None:
        self.drivers.pop(campaign_id, None)


async def _first(*waits: Any) -> None:
    """Wait for the first of ``waits`` to finish; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _default_name(account: Account, now: dt.datetime) -> str:
    local = now.astimezone(ZoneInfo(account.time_zone))
    return f"{account.sid} {local:%Y-%m-%d %H:%M:%S}"


def _read_csv(content: bytes) -> tuple[list[list[str]], list[str] | None]:
    """The CSV's rows and its header (None: the first row is data)."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("the CSV file must be UTF-8 text") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise InvalidRequest(f"the CSV file cannot be read: {exc}") from None
    if not rows:
        raise InvalidRequest("the CSV file has no rows")
    if len(rows) > MAX_LIST_ROWS + 1:
        raise InvalidRequest(
            f"the CSV file has {len(rows)} rows: a list holds at most {MAX_LIST_ROWS}"
        )
    first = [cell.strip().lower() for cell in rows[0]]
    if any(cell in NUMBER_COLUMNS for cell in first):
        return rows[1:], [cell.strip() for cell in rows[0]]
    try:
        normalize(rows[0][0])
    except InvalidRequest:
        raise InvalidRequest(
            "the CSV file needs a header with a number column (one of "
            f"{', '.join(NUMBER_COLUMNS)}), or numbers in its first column"
        ) from None
    return rows, None


@dataclasses.dataclass(frozen=True)
class CsvRow:
    """A data row of an uploaded CSV: its row number in the file, its number in E.164 (None:
    a bad number, ``reason`` says why), the number as written, and its other columns."""

    row: int
    number: str | None
    value: str
    fields: dict[str, Any] | None
    reason: str = ""


def _parse_csv(content: bytes) -> list[CsvRow]:
    """Every data row of the CSV, its number checked (run in a thread: it is CPU work)."""
    rows, header = _read_csv(content)
    column = 0
    if header is not None:
        column = next(i for i, name in enumerate(header) if name.lower() in NUMBER_COLUMNS)
    parsed: list[CsvRow] = []
    for index, row in enumerate(rows, 2 if header is not None else 1):
        raw = row[column] if column < len(row) else ""
        fields = None
        if header is not None:
            fields = {
                name: row[i] if i < len(row) else ""
                for i, name in enumerate(header)
                if i != column and name
            }
        try:
            parsed.append(CsvRow(index, normalize(raw, field="number"), raw, fields))
        except RingflowError as exc:
            parsed.append(CsvRow(index, None, raw[:64], fields, str(exc)))
    return parsed


def _contacts(
    parsed: Sequence[CsvRow], known: set[str]
) -> tuple[list[tuple[str, dict[str, Any] | None]], list[dict[str, Any]], int]:
    """Good rows (number, other columns), failed rows (why), and how many were duplicates."""
    good: list[tuple[str, dict[str, Any] | None]] = []
    failures: list[dict[str, Any]] = []
    duplicates = 0
    for row in parsed:
        if row.number is None:
            failures.append({"row": row.row, "value": row.value, "reason": row.reason})
        elif row.number in known:
            duplicates += 1
        else:
            known.add(row.number)
            good.append((row.number, row.fields))
    return good, failures, duplicates
