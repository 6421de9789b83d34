"""Live call control: hang up or redirect a call, whichever ringflow process carries it.

The runner registers every call it carries as a ``LiveCall`` (its channels, the running app, a
way to stop it); the API, the dashboard and the CLI ask ``CallControl``.

A request locks the call's row and decides in that one transaction:

- the call is over: ``CallOver`` (the API's 409), nothing is written;
- it is ``queued``: it leaves the queue there and then, ``failed`` with leg 1's cause
  ``canceled by request``. The row lock, and the dispatcher admitting queued calls with
  ``SKIP LOCKED``, make the removal happen exactly once however many processes race for it;
- it is ringing or talking: a ``control.request`` step is added to its timeline. That row is
  the request itself, so it reaches the process carrying the call whichever that is.

A hang-up of a call whose process has been silent past ``RINGFLOW_INSTANCE_LEASE`` (it died,
and the housekeeping has not ended its calls yet) ends the call there and then, as the
housekeeping would: nobody else would act on the request.

The carrying process acts on the request: at once when it is the one that took it; otherwise
every process looks for requests on its own live calls every ``POLL_EVERY`` seconds (reading
the requests by an index of their own, not the calls' timelines), and with
Redis (``RINGFLOW_REDIS_URL``) a publish on ``ringflow:control:<instance>`` wakes it at once.
The database stays the one source of requests: a publish lost while a process restarts costs the
poll's delay, never the request. The requester then waits, bounded, for the call to end, so its
answer is the call's final state in all but the slowest cases.

Hanging up CANCELs a first leg still ringing (the call ends ``failed``, as a call never
answered, leg cause ``canceled by request``) and hangs up every answered channel (BYE on SIP;
the call ends ``completed`` like any hung-up call). ``LiveCall.stopped_by_request`` tells code
that ends with the call (a stream to a bot) that it ends because someone asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from ringflow.calls.status import Event, Status, is_terminal
from ringflow.calls.transitions import Change, apply, interrupted
from ringflow.clock import Clock
from ringflow.errors import CallOver, Conflict, NotFound
from ringflow.metrics import CALLS_ENDED
from ringflow.redis_client import publish
from ringflow.storage import instances
from ringflow.storage.calls import control_requests, load_call, lock_call
from ringflow.storage.db import Database
from ringflow.storage.models import CONTROL_REQUEST, Call, CallEvent
from ringflow.storage.session import Session
from ringflow.telephony.carrier import Channel, Outcome, Rejected

log = logging.getLogger(__name__)

CANCELED_BY_REQUEST = "canceled by request"
CHANNEL_PREFIX = "ringflow:control:"
# Real seconds, not the call clock: these wait on another process, like any I/O.
POLL_EVERY = 0.5
WAIT_FOR_END = 10.0

# What a first leg's ringing ends with when a hang-up is asked for (never a carrier outcome).
STOPPED = Rejected(Outcome.CANCELED, CANCELED_BY_REQUEST)

AppRunner = Callable[[int], Awaitable[None]]
StepRecorder = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclasses.dataclass(eq=False)
class LiveCall:
    """One call this process carries: its answered channels and the app running on them."""

    sid: str
    channels: list[Channel]  # the runner's own list: legs join it as they answer
    stopped_by_request: bool = False  # True once a hang-up was asked for (API, dashboard, CLI)
    stopped_by: str | None = None
    handled: set[int] = dataclasses.field(default_factory=set)  # request rows acted on
    _stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _flow: asyncio.Task[None] | None = None
    _next_app: int | None = None

    @property
    def stop_reason(self) -> str | None:
        """The reason kept on the call when it ends by request, else None."""
        return f"hangup requested ({self.stopped_by})" if self.stopped_by_request else None

    async def hang_up(self, by: str) -> None:
        """End the call: a ringing first leg is canceled, every answered channel hung up."""
        self.stopped_by_request = True
        self.stopped_by = self.stopped_by or by
        self._stop.set()
        for channel in list(self.channels):
            await channel.hangup("hangup requested")

    async def hang_up_if_stopped(self, channel: Channel) -> None:
        """Hang up a leg that answered after the call was asked to end."""
        if self.stopped_by_request:
            await channel.hangup("hangup requested")

    async def unless_stopped(self, awaitable: Awaitable[Any]) -> Any:
        """``awaitable``'s result, or ``STOPPED`` if a hang-up is asked for first."""
        event = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({event, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not event.done():
                event.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await event
        # An answer that came with the request wins: the answered leg is then hung up.
        return event.result() if not event.cancelled() else STOPPED

    def redirect(self, app_id: int) -> bool:
        """Run ``app_id`` from its start instead of the running app; False when none runs."""
        if self._flow is None or self._flow.done() or self.stopped_by_request:
            return False
        self._next_app = app_id
        self._flow.cancel()
        return True

    async def run_apps(self, app_id: int, run: AppRunner, record: StepRecorder) -> None:
        """Run ``app_id`` with ``run``, then each app a redirect asks for, on the same call."""
        current = app_id
        while True:
            self._flow = asyncio.ensure_future(run(current))
            try:
                await self._flow
            except asyncio.CancelledError:
                task = asyncio.current_task()
                # The runner itself being cancelled (shutdown) is not a redirect.
                if self._next_app is None or (task is not None and task.cancelling()):
                    self._flow.cancel()
                    raise
            finally:
                self._flow = None
            if self._next_app is None:
                return
            current, previous, self._next_app = self._next_app, current, None
            await record("flow.redirect", {"from": previous, "to": current, "by": self.stopped_by})

    def ended(self) -> None:
        """Mark the call finished (its final status is written)."""
        self._ended.set()

    async def wait_ended(self, timeout: float) -> bool:
        """Wait (real seconds) for the call to finish; False on timeout."""
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            return False
        return True


class CallControl:
    """The registry of this process's live calls, and the way to control any call."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        instance: str,
        redis_url: str | None = None,
        on_enqueued: Callable[[], None] = lambda: None,
        lease: float = 60.0,
    ):
        self.db = db
        self.clock = clock
        self.instance = instance
        self.redis_url = redis_url
        self.lease = lease  # a process silent this long is gone (``RINGFLOW_INSTANCE_LEASE``)
        self.on_enqueued = on_enqueued
        self._live: dict[str, LiveCall] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Any = None

    # -- the runner's side --------------------------------------------------------------------

    def register(self, sid: str, channels: list[Channel]) -> LiveCall:
        """A call this process starts carrying."""
        live = LiveCall(sid, channels)
        self._live[sid] = live
        return live

    def unregister(self, sid: str) -> None:
        """A call this process carried has its final status."""
        live = self._live.pop(sid, None)
        if live is not None:
            live.ended()

    def live(self, sid: str) -> LiveCall | None:
        """The call if this process carries it."""
        return self._live.get(sid)

    # -- the requester's side -----------------------------------------------------------------

    async def hang_up(self, sid: str, by: str, account_id: int | None = None) -> Call:
        """End the call (see the module docstring); returns it as it stands afterwards."""
        call, request = await self._request(sid, "hangup", by, account_id)
        if request is None:  # it left the queue: already final
            return call
        live = self._live.get(call.sid)
        if live is not None:
            live.handled.add(request)
            await live.hang_up(by)
            await live.wait_ended(WAIT_FOR_END)
        else:
            await self._nudge(call.owner)
            await self._wait_final(call.sid)
        return await self._load(call.sid)

    async def redirect(self, sid: str, app_id: int, by: str, account_id: int | None = None) -> Call:
        """Stop the running app and run ``app_id`` from its start on the answered call."""
        call, request = await self._request(sid, "redirect", by, account_id, app_id)
        assert request is not None
        live = self._live.get(call.sid)
        if live is not None:
            live.handled.add(request)
            if not live.redirect(app_id):
                raise Conflict(f"Call {call.sid} is not running an app right now")
        else:
            await self._nudge(call.owner)
        return call

    async def _request(
        self, sid: str, op: str, by: str, account_id: int | None, app_id: int | None = None
    ) -> tuple[Call, int | None]:
        """Lock the call and take the request: (call, id of the request row or None)."""
        async with self.db.session() as session:
            call = await lock_call(session, sid, account_id)
            if call is None:
                raise NotFound(f"Call {sid} not found")
            if is_terminal(call.status):
                raise CallOver(f"Call {call.sid} is already over: it ended {call.status}")
            if op == "redirect":
                if call.shape != "flow":
                    what = "streams to a bot" if call.shape == "stream" else "connects two numbers"
                    raise Conflict(f"Call {call.sid} {what} and runs no app")
                if call.status != Status.IN_PROGRESS:
                    raise Conflict(f"Call {call.sid} is not answered yet ({call.status})")
            if call.status == Status.QUEUED:
                change = Change(
                    call=Event.FAIL,
                    legs=((1, Event.FAIL),),
                    cause=CANCELED_BY_REQUEST,
                    reason=f"hangup requested ({by})",
                )
                queued = await apply(session, call, change, self.clock.wall())
                CALLS_ENDED.labels(call.status, "none").inc()  # never dialled: no carrier
                log.info("call %s removed from the queue (%s)", call.sid, by)
                request = None
            elif op == "hangup" and await self._orphaned(session, call):
                # Nobody carries it any more: end it as the housekeeping would, at once.
                reason = f"hangup requested ({by}); ringflow instance {call.owner} had stopped"
                queued = await apply(session, call, interrupted(call, reason), self.clock.wall())
                log.info("call %s ended: %s", call.sid, reason)
                request = None
            else:
                data: dict[str, Any] = {"op": op, "by": by}
                if app_id is not None:
                    data["app"] = app_id
                row = CallEvent(
                    call_id=call.id, at=self.clock.wall(), kind=CONTROL_REQUEST, data=data
                )
                session.add(row)
                await session.flush()
                request, queued = row.id, []
        if queued:
            self.on_enqueued()
        return call, request

    async def _orphaned(self, session: Session, call: Call) -> bool:
        """Whether the process carrying ``call`` has been silent past its lease (it died, and
        the housekeeping has not noticed yet)."""
        if call.owner is None or call.sid in self._live:
            return False
        cutoff = self.clock.wall() - dt.timedelta(seconds=self.lease)
        return await instances.is_silent(session, call.owner, cutoff)

    async def _load(self, sid: str) -> Call:
        async with self.db.session() as session:
            return await load_call(session, sid)

    async def _wait_final(self, sid: str) -> None:
        """Wait (real seconds, bounded) for another process to end the call."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_END
        while loop.time() < deadline:
            if is_terminal((await self._load(sid)).status):
                return
            await asyncio.sleep(0.05)
        log.warning("call %s: its process has not ended it within %gs", sid, WAIT_FOR_END)

    async def _nudge(self, owner: str | None) -> None:
        """Wake the process carrying the call (Redis); without Redis it polls."""
        if not self.redis_url or not owner:
            return
        try:
            await publish(self._client(), CHANNEL_PREFIX + owner, "request")
        except (RedisError, OSError) as exc:  # the request is in the database: the poll finds it
            log.warning("cannot wake %s through Redis: %s", owner, exc)

    def _client(self) -> Any:
        if self._redis is None:
            from ringflow.redis_client import connect

            assert self.redis_url is not None
            self._redis = connect(self.redis_url)
        return self._redis

    # -- the carrying process's side ----------------------------------------------------------

    def start(self) -> None:
        """Look for requests on this process's calls (and listen on Redis, when configured)."""
        self._tasks.append(asyncio.ensure_future(self._poll()))
        if self.redis_url:
            self._tasks.append(asyncio.ensure_future(self._listen()))

    async def close(self) -> None:
        """Stop looking for requests; close the Redis client."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _poll(self) -> None:
        while True:
            try:
                if self._live:
                    await self.take_requests()
            except Exception:  # one bad round must not stop the polling for good
                log.exception("looking for call control requests failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_EVERY)
            self._wake.clear()

    async def take_requests(self) -> int:
        """Act on the requests written for this process's calls; how many there were."""
        sids = list(self._live)
        async with self.db.session() as session:
            rows = await control_requests(session, sids)
        acted = 0
        for row_id, sid, data in rows:
            live = self._live.get(sid)
            if live is None or row_id in live.handled:
                continue
            live.handled.add(row_id)
            acted += 1
            by = str(data.get("by") or "request")
            if data.get("op") == "hangup":
                log.info("call %s: hangup requested (%s)", sid, by)
                await live.hang_up(by)
            elif data.get("op") == "redirect" and not live.redirect(int(data["app"])):
                log.warning(
                    "call %s: redirect to app %s ignored: no app is running", sid, data["app"]
                )
        return acted

    async def _listen(self) -> None:
        """Set the wake-up event on every publish to this process's channel (while the
        subscription is lost, the poll still finds requests)."""
        from ringflow.redis_client import follow

        assert self.redis_url is not None
        await follow(
            self.redis_url, CHANNEL_PREFIX + self.instance, self._heard, what="call control"
        )

    def _heard(self, message: dict[str, Any]) -> None:
        if message["type"] == "message":
            self._wake.set()
