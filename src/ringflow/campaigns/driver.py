"""The driver of one campaign: turns its numbers into calls at its pace, and settles them.

One process drives a campaign at a time, under a lease it renews every ``TICK``. Each tick
it also reads the campaign (a PUT may have paused it), records how its calls ended (each
number settled, or scheduled for a retry), and moves the campaign by its schedule and calling
hours. Between ticks it places calls:

- **pace**: call ``k`` is due at ``start + k / calls_per_second`` on the clock, and never
  placed before; a driver that fell behind (no room, a slow database) does not catch up in a
  burst, it starts the grid again from now;
- **concurrency**: at most ``max_concurrent`` (bounded by the account's own limit) of its
  calls are up at once, counted from placing a call until its end is recorded;
- **retries** come before new numbers once due.

Each call is an ordinary call submitted to the dispatcher, so the account's admission, queue
and trunk gates apply to it as to any other. The call is inserted in the same transaction
that marks its number called (``storage.campaigns.mark_called``), which holds only while this
process drives the campaign and it is in progress: no number is called twice for one attempt.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
from typing import TYPE_CHECKING, Any

from ringflow.calls.requests import CallRequest, CampaignTag
from ringflow.calls.status import TERMINAL, Status
from ringflow.campaigns import callbacks, states
from ringflow.campaigns.hours import CallingHours
from ringflow.campaigns.spec import Retries
from ringflow.clock import wait_with_timeout
from ringflow.errors import CapacityExceeded, RingflowError
from ringflow.logs import bind_account
from ringflow.storage import campaigns as store
from ringflow.storage.accounts import account_by_id
from ringflow.storage.models import Account, Campaign
from ringflow.storage.session import Duplicate, Session

if TYPE_CHECKING:
    from ringflow.campaigns.service import Campaigns

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between lease renewals, status reads and settling ended calls
LET_GO_WAIT = 5.0  # seconds a stopping driver tries to give its lease up
FULL_QUEUE_PAUSE = 1.0  # seconds to wait after the account's queue refused a call
IDLE_AFTER = 10.0  # seconds with nothing to do (retries not due yet) after which a driver
# gives its campaign up until then


class Driver:
    """Drives one campaign while this process holds its lease."""

    def __init__(self, owner: Campaigns, campaign_id: int):
        self.owner = owner
        self.clock = owner.clock
        self.db = owner.db
        self.campaign_id = campaign_id
        self.campaign: Campaign | None = None
        self.account: Account | None = None
        self.pending: collections.deque[store.NumberRow] = collections.deque()
        self.retrying: list[tuple[Any, int, store.NumberRow]] = []  # (due, position, number)
        self.calling: dict[int, store.NumberRow] = {}  # number id -> number, call up
        self._slot = 0.0  # clock time the next call may start
        self._next_tick = 0.0
        self._seq = itertools.count()

    async def run(self) -> None:
        try:
            if await self._load():
                while await self._tick():
                    await self._place_due()
                    await self.clock.sleep(self._rest())
        except Exception:
            log.exception(
                "campaign %d: its driver failed; another round takes it up", self.campaign_id
            )
        finally:
            await self._let_go()

    # -- state -------------------------------------------------------------------------------

    async def _load(self) -> bool:
        async with self.db.session() as session:
            campaign = await self._renew(session)
            if campaign is None:
                return False
            self.account = await account_by_id(session, campaign.account_id)
            numbers = await store.open_numbers(session, campaign.id, states.FINAL)
        assert self.account is not None
        bind_account(self.account.sid)
        for number in numbers:
            if number.state == states.PENDING:
                self.pending.append(number)
            elif number.state == states.RETRYING:
                self._retry_later(number)
            else:
                self.calling[number.id] = number
        log.info(
            "campaign %s: driven by %s (%d to call, %d waiting to retry, %d calls up)",
            campaign.sid,
            self.owner.me,
            len(self.pending),
            len(self.retrying),
            len(self.calling),
        )
        self._slot = self._next_tick = self.clock.now()
        return True

    async def _renew(self, session: Session) -> Campaign | None:
        until = self.clock.wall() + self.owner.lease
        self.campaign = await store.renew(session, self.campaign_id, self.owner.me, until)
        return self.campaign

    async def _let_go(self) -> None:
        """Give the lease up (a stop, or a failure): another process may take it at once. At
        most ``LET_GO_WAIT`` seconds: the campaign's row may be locked by a transaction that
        will never end (one the stop cut short, whose connection is not closed yet), and the
        lease runs out by itself, so a stop must not wait for it."""

        async def let_go() -> bool:
            async with self.db.session() as session:
                await store.let_go(session, self.campaign_id, self.owner.me)
            return True

        try:
            if await wait_with_timeout(self.clock, let_go(), LET_GO_WAIT):
                return
            why = f"no answer in {LET_GO_WAIT:g} s"
        except Exception as error:  # noqa: BLE001 - the lease runs out by itself
            why = type(error).__name__
        log.warning(
            "campaign %d: could not give up its lease (%s); it runs out within %g s",
            self.campaign_id,
            why,
            self.owner.lease.total_seconds(),
        )

    async def _idle(self, session: Session, until: Any) -> bool:
        """Nothing to do before ``until`` (None: before a request changes the campaign): give
        the campaign up until then, in ``session``. Returns False (stop driving)."""
        assert self.campaign is not None
        end_at = self.campaign.end_at
        if end_at is not None and self.campaign.status not in (states.COMPLETED, states.ARCHIVED):
            until = end_at if until is None else min(until, end_at)
        await store.let_go(session, self.campaign_id, self.owner.me, wake_at=until)
        log.info(
            "campaign %s: idle until %s",
            self.campaign.sid,
            until.isoformat() if until else "a request",
        )
        return False

    # -- each tick ---------------------------------------------------------------------------

    async def _tick(self) -> bool:
        """Renew, settle and move the campaign when a tick is due; False: stop driving."""
        if self.clock.now() < self._next_tick:
            return True
        self._next_tick = self.clock.now() + TICK
        now = self.clock.wall()
        async with self.db.session() as session:
            campaign = await self._renew(session)
            if campaign is None:
                log.warning("campaign %d: another process drives it now", self.campaign_id)
                return False
            await self._settle(session, campaign, now)
            going = await self._move(session, campaign, now)
        self.owner.wake_deliverer()
        return going

    async def _settle(self, session: Session, campaign: Campaign, now: Any) -> None:
        """Record the calls that have ended: each number retried later or settled."""
        if not self.calling:
            return
        ended = await store.ended_calls(session, campaign.id, states.CALLING, TERMINAL)
        if not ended:
            return
        retries = Retries.parse(campaign.retries)
        may_retry = campaign.status in states.LIVE
        changes = []
        for end in ended:
            number = self.calling.pop(end.number_id, None)
            if number is None:
                continue
            change = {
                "id": number.id,
                "last_status": end.status,
                "updated_at": now,
                "next_attempt_at": None,
            }
            if may_retry and retries.again(number.attempts, end.status):
                number.state = change["state"] = states.RETRYING
                due = (end.ended_at or now) + retries.wait_after(number.attempts)
                number.next_attempt_at = change["next_attempt_at"] = due
                self._retry_later(number)
            else:
                number.state = change["state"] = states.SETTLED_AS.get(
                    Status(end.status), states.FAILED
                )
                await self._number_over(session, campaign, number, end, now)
            changes.append(change)
        await store.settle(session, changes)

    async def _number_over(
        self,
        session: Session,
        campaign: Campaign,
        number: store.NumberRow,
        end: store.Ended,
        now: Any,
    ) -> None:
        """A number's attempts are over: its ``call_schedule_callback``."""
        if not campaign.call_schedule_callback:
            return
        payload = {
            "number": number.number,
            "status": number.state,
            "attempts": number.attempts,
            "call_sid": end.call_sid,
        }
        await callbacks.post(
            session,
            campaign,
            "campaign-number",
            campaign.call_schedule_callback,
            payload,
            f"number:{number.id}",
            now,
        )

    async def _move(self, session: Session, campaign: Campaign, now: Any) -> bool:
        """The campaign's schedule, calling hours and end; False: it needs no driver now."""
        assert self.account is not None
        owner = self.owner
        if campaign.status == states.ARCHIVED:
            return await self._idle(session, None)
        if campaign.status == states.COMPLETED:
            if self.calling:
                return True
            if campaign.ended_at is None:
                await store.set_campaign(session, campaign.id, {"ended_at": now})
            return await self._idle(session, None)
        if campaign.end_at is not None and now >= campaign.end_at:
            await owner.complete(session, campaign, now, "its end_at passed")
            self.pending.clear()
            self.retrying.clear()
            return True  # the next tick records the calls still up, then ends it
        if campaign.status in states.NOT_STARTED:
            if campaign.send_at is not None and campaign.send_at > now:
                return True if self.calling else await self._idle(session, campaign.send_at)
            await owner.change_status(session, campaign, states.IN_PROGRESS, None, now)
        hours = CallingHours.parse(campaign.calling_hours) if campaign.calling_hours else None
        zone = self.account.time_zone
        if hours is not None:
            open_now = hours.is_open(now, zone)
            if campaign.status == states.IN_PROGRESS and not open_now:
                await owner.change_status(session, campaign, states.PAUSED, states.BY_HOURS, now)
            elif (
                campaign.status == states.PAUSED
                and campaign.pause_reason == states.BY_HOURS
                and open_now
            ):
                await owner.change_status(session, campaign, states.IN_PROGRESS, None, now)
        if campaign.status == states.PAUSED:
            if self.calling:
                return True
            by_hours = campaign.pause_reason == states.BY_HOURS and hours is not None
            return await self._idle(
                session, hours.next_change(now, zone) if by_hours and hours is not None else None
            )
        if not (self.pending or self.retrying or self.calling):
            await owner.change_status(session, campaign, states.COMPLETED, None, now)
            await store.set_campaign(session, campaign.id, {"ended_at": now})
            return await self._idle(session, None)
        if not self.pending and not self.calling:
            due = self.retrying[0][0]
            if (due - now).total_seconds() > IDLE_AFTER:
                return await self._idle(session, due)
        return True

    # -- placing calls -----------------------------------------------------------------------

    async def _place_due(self) -> None:
        campaign = self.campaign
        if campaign is None or campaign.status != states.IN_PROGRESS:
            return
        period = 1.0 / campaign.calls_per_second
        while len(self.calling) < self._room(campaign):
            now = self.clock.now()
            if now < self._slot or now >= self._next_tick:
                return
            number = self._next_number()
            if number is None:
                return
            if not await self._place(campaign, number):
                return
            # On the grid while on time; a driver that fell behind starts it again from now.
            self._slot = (self._slot if now - self._slot < period else now) + period

    def _room(self, campaign: Campaign) -> int:
        assert self.account is not None
        account_limit = self.account.max_concurrent_calls
        if account_limit is None:
            account_limit = self.owner.settings.max_concurrent_calls
        return min(campaign.max_concurrent, account_limit)

    def _next_number(self) -> store.NumberRow | None:
        """A retry that is due, else the next number not called yet."""
        if self.retrying and self.retrying[0][0] <= self.clock.wall():
            return heapq.heappop(self.retrying)[2]
        return self.pending.popleft() if self.pending else None

    def _retry_later(self, number: store.NumberRow) -> None:
        heapq.heappush(self.retrying, (number.next_attempt_at, next(self._seq), number))

    async def _place(self, campaign: Campaign, number: store.NumberRow) -> bool:
        """Submit the number's next attempt; False: stop placing until the next tick."""
        attempt = number.attempts + 1
        request = self._request(campaign, number, attempt)
        now = self.clock.wall()

        async def mark(session: Session, call: Any) -> None:
            await store.mark_called(
                session,
                number,
                attempt,
                call.id,
                campaign_id=campaign.id,
                driver=self.owner.me,
                placing=states.IN_PROGRESS,
                waiting=states.WAITING,
                state=states.CALLING,
                now=now,
            )

        try:
            call, _ = await self.owner.dispatcher.submit(request, mark)
        except CapacityExceeded:
            self._put_back(number)
            self._slot = self.clock.now() + FULL_QUEUE_PAUSE
            log.info("campaign %s: the account's queue is full; waiting", campaign.sid)
            return False
        except (store.AlreadyCalled, Duplicate) as exc:
            # Paused, completed or taken over since the last tick: read it again first.
            log.info("campaign %s: %s", campaign.sid, exc)
            self._put_back(number)
            self._next_tick = self.clock.now()
            return False
        except RingflowError as exc:
            log.warning("campaign %s: %s could not be called: %s", campaign.sid, number.number, exc)
            self._put_back(number)
            self._slot = self.clock.now() + FULL_QUEUE_PAUSE
            return False
        number.attempts, number.state, number.call_id = attempt, states.CALLING, call.id
        self.calling[number.id] = number
        return True

    def _put_back(self, number: store.NumberRow) -> None:
        if number.state == states.RETRYING:
            self._retry_later(number)
        else:
            self.pending.appendleft(number)

    def _request(self, campaign: Campaign, number: store.NumberRow, attempt: int) -> CallRequest:
        shape = "stream" if campaign.stream_url else "flow"
        return CallRequest(
            account_id=campaign.account_id,
            shape=shape,
            from_number=number.number,
            caller_id=campaign.caller_id,
            app_id=campaign.app_id,
            status_callback=campaign.call_status_callback,
            custom_field=campaign.custom_field,
            stream_url=campaign.stream_url,
            stream_type=campaign.stream_type,
            machine_detection=campaign.machine_detection,
            campaign=CampaignTag(campaign.id, number.id, attempt),
        )

    def _rest(self) -> float:
        """Clock seconds until there is something to do: the next slot or the next tick."""
        now = self.clock.now()
        wake = self._next_tick
        campaign = self.campaign
        if (
            campaign is not None
            and campaign.status == states.IN_PROGRESS
            and len(self.calling) < self._room(campaign)
            and self._has_due()
        ):
            wake = min(wake, max(self._slot, now))
        return max(0.0, wake - now)

    def _has_due(self) -> bool:
        return bool(self.pending) or bool(
            self.retrying and self.retrying[0][0] <= self.clock.wall()
        )
