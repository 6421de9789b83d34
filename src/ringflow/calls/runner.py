"""Carries one call from dialing to its final status.

Flow calls: dial ``From``; when answered, run the app; hang up. Two-number calls: dial ``From``;
when answered, dial ``To`` and bridge the two (recording the conversation when ``Record=true``).
``TimeOut`` bounds each leg's ringing and ``TimeLimit`` (counted from the first answer) ends the
call. Every status change goes through ``transitions.apply``; the runner itself holds no status.
Each call is registered with ``calls.control`` while it runs, so it can be hung up or
redirected to another app by request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ringflow.calls.control import STOPPED, CallControl, LiveCall
from ringflow.calls.dialing import FlowDialer
from ringflow.calls.dispatcher import Line
from ringflow.calls.status import Event, Status, is_terminal
from ringflow.calls.streaming import CallStreams, run_stream_call
from ringflow.calls.transitions import Change, apply, interrupted
from ringflow.clock import Clock, wait_with_timeout
from ringflow.flows.applets import REGISTRY
from ringflow.flows.applets.passthru import query_params
from ringflow.flows.context import FlowContext
from ringflow.flows.engine import FlowEngine, HttpGetter
from ringflow.flows.model import AppGraph, parse_app
from ringflow.phone import display
from ringflow.recordings import RecordingStore
from ringflow.storage.apps import app_of
from ringflow.storage.calls import lock_call
from ringflow.storage.db import Database
from ringflow.storage.models import Account, App, Call, CallEvent
from ringflow.storage.session import Session
from ringflow.streams.service import Streams
from ringflow.telephony.carrier import (
    Answered,
    Carrier,
    Channel,
    ConversationTap,
    DialRequest,
    Placed,
    Recording,
    Rejected,
    Ringing,
    Waiting,
)
from ringflow.webhooks.deliverer import Deliverer

log = logging.getLogger(__name__)

STEPS_PER_WRITE = 20
OUTCOME_EVENTS = {"busy": Event.BUSY, "no-answer": Event.NO_ANSWER, "failed": Event.FAIL}


def _nothing() -> None:
    """Stops a tape that was never started."""


class CallRunner:
    """Runs calls on a carrier; one ``run(sid)`` per call."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        carrier: Carrier,
        http_get: HttpGetter,
        on_enqueued: Callable[[], None],
        recordings: RecordingStore | None = None,
        control: CallControl | None = None,
        streams: Streams | None = None,
        deliverer: Deliverer | None = None,
        find_app: Callable[[int, int], Awaitable[App | None]] | None = None,
    ):
        self.db = db
        self.clock = clock
        self.carrier = carrier
        self.http_get = http_get
        self.on_enqueued = on_enqueued
        self.recordings = recordings
        self.control = control or CallControl(db, clock, "", on_enqueued=on_enqueued)
        self.streams = streams
        # Sends the calls' callbacks, written already leased to it (no claim needed).
        self.deliverer = deliverer
        self._find_app = find_app  # (account id, app id): a cached lookup, when there is one
        self._steps: dict[str, list[CallEvent]] = {}  # by call SID, not yet written
        self._lines: dict[str, Line] = {}  # by call SID: the account line each call holds
        self._time_zones: dict[str, str] = {}  # by call SID: its account's, for callbacks

    async def change(self, sid: str, change: Change) -> Call:
        """Apply a status change (with the timeline steps kept since the last one).

        The change that ends the call also frees its line, in the same transaction.
        """
        line = self._lines.get(sid)
        start_next = None
        async with self.db.session() as session:
            # Locked: a call's legs can change from several tasks at once (simultaneous dials).
            call = await self._locked(session, sid)
            session.add_all(self._steps.pop(sid, []))
            lease = self.deliverer.birth_lease() if self.deliverer is not None else None
            queued = await apply(session, call, change, self.clock.wall(), lease,
                                 self._time_zones.get(sid))
            if line is not None and not line.freed and is_terminal(call.status):
                start_next = await line.free(session)
        if queued and self.deliverer is not None:
            self.deliverer.take(queued)
        elif queued:
            self.on_enqueued()
        if start_next is not None:
            start_next()
        return call

    @staticmethod
    async def _locked(session: Session, sid: str) -> Call:
        call = await lock_call(session, sid)
        assert call is not None, f"call {sid} does not exist"
        return call

    async def record(self, call: Call, kind: str, data: dict[str, Any]) -> None:
        """Add a step to the call's timeline.

        Steps are kept in memory and written with the call's next status change, or once a
        few have gathered, so a flow does not cost a transaction per applet.
        """
        steps = self._steps.setdefault(call.sid, [])
        steps.append(CallEvent(call_id=call.id, at=self.clock.wall(), kind=kind, data=data))
        if len(steps) >= STEPS_PER_WRITE:
            await self.flush(call.sid)

    async def flush(self, sid: str) -> None:
        """Write the timeline steps still held for a call."""
        steps = self._steps.pop(sid, [])
        if steps:
            async with self.db.session() as session:
                session.add_all(steps)

    async def keep_conversation(
        self, call: Call, account: Account, tap: ConversationTap, channels: str | None = None
    ) -> str | None:
        """Store a recorded conversation (in the call's format); returns its URL."""
        if self.recordings is None or not tap.near:
            return None
        stored = await self.recordings.save(
            account, call, [bytes(tap.near), bytes(tap.far)], channels=channels
        )
        await self.record(
            call,
            "recording",
            {"sid": stored.sid, "url": stored.url, "duration": round(stored.duration, 2), "conversation": True},
        )
        return stored.url

    async def run(self, call: Call, account: Account, line: Line | None = None) -> None:
        """Carry the call (just admitted) to a final status, whatever happens on the way."""
        sid = call.sid
        channels: list[Channel] = []
        self.control.register(sid, channels)
        if line is not None:
            self._lines[sid] = line
        self._time_zones[sid] = account.time_zone
        try:
            await self._run(call, account, channels)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(sid, channels, "ringflow is shutting down"))
            raise
        except Exception as exc:  # a bug must not leave a call hanging: finish it, keep the cause
            log.exception("call %s failed inside ringflow", sid)
            await self._abandon(sid, channels, f"internal error: {exc}")
        finally:
            await asyncio.shield(self.flush(sid))
            self.control.unregister(sid)
            self._lines.pop(sid, None)
            self._time_zones.pop(sid, None)

    def _live(self, sid: str) -> LiveCall:
        live = self.control.live(sid)
        assert live is not None, f"call {sid} is not registered"
        return live

    async def _abandon(self, sid: str, channels: list[Channel], reason: str) -> None:
        for channel in channels:
            await channel.hangup(reason)
        async with self.db.session() as session:
            call = await self._locked(session, sid)
            if is_terminal(call.status):
                return
            await apply(session, call, interrupted(call, reason), self.clock.wall())
        self.on_enqueued()

    async def _run(self, call: Call, account: Account, channels: list[Channel]) -> None:
        sid = call.sid
        first = await self._dial(call, account, 1, call.from_number)
        if not isinstance(first, Answered):
            return
        channels.append(first.channel)
        await self._live(sid).hang_up_if_stopped(first.channel)
        watchdog = asyncio.ensure_future(self._time_limit(call, channels))
        try:
            if call.shape in ("flow", "stream"):
                # Record=true tapes the whole call: the customer, and the prompts, any
                # connected party and the bot they heard.
                tap = ConversationTap() if call.record else None
                stop_tape = first.channel.record_call(tap) if tap is not None else _nothing
                if call.shape == "flow":
                    await self._run_flow(call, account, first.channel, channels)
                else:
                    await run_stream_call(self, call, account, first.channel)
                await first.channel.hangup("app ended")
                stop_tape()
                if tap is not None:
                    # Kept before the final status, so the terminal callback carries its URL.
                    await self.keep_conversation(call, account, tap)
                ended = Change(call=Event.HANGUP, legs=((1, Event.HANGUP),),
                               reason=self._live(sid).stop_reason)
                await self.change(sid, ended)
            else:
                await self._connect(call, account, first.channel, channels)
        finally:
            watchdog.cancel()

    async def _dial(self, call: Call, account: Account, leg_no: int, number: str) -> Any:
        """Ring one leg of the call's own shape (already marked ringing), within ``TimeOut``."""
        event = await self.ring(call, account, leg_no, number, call.time_out, None)
        if isinstance(event, Answered):
            call_event = Event.ANSWER if leg_no == 1 else None
            await self.change(call.sid, Change(call=call_event, legs=((leg_no, Event.ANSWER),)))
        elif event is STOPPED:  # never answered: failed, the ringing leg canceled
            change = Change(call=Event.FAIL, legs=((1, Event.CANCEL),), cause=event.cause,
                            reason=self._live(call.sid).stop_reason)
            await self.change(call.sid, change)
        elif leg_no == 1:
            outcome = OUTCOME_EVENTS[event.outcome]
            await self.change(call.sid, Change(call=outcome, legs=((1, outcome),), cause=event.cause))
        return event

    async def ring(
        self,
        call: Call,
        account: Account,
        leg_no: int,
        number: str,
        ring_timeout: float,
        caller_id: str | None,
    ) -> Answered | Rejected:
        """Place one leg and wait until it answers, is rejected, or rings ``ring_timeout`` out.

        An answered leg 2+ is marked answered here; other outcomes are the caller's to apply.
        """
        request = DialRequest(number, caller_id or call.caller_id, account.sid, call.sid, leg_no)
        attempt = self.carrier.dial(request)
        deadline: float | None = self.clock.now() + ring_timeout
        live = self._live(call.sid)
        while True:
            next_event = attempt.next_event()
            if leg_no == 1:  # later legs end with the first one (hung up by the request)
                next_event = live.unless_stopped(next_event)
            try:
                if deadline is None:  # waiting for the trunk: no ring timeout yet
                    event = await next_event
                else:
                    remaining = deadline - self.clock.now()
                    event = await wait_with_timeout(self.clock, next_event, remaining)
            except asyncio.CancelledError:
                await asyncio.shield(attempt.cancel())
                await asyncio.shield(self._cancel_leg(call.sid, leg_no))
                raise
            if isinstance(event, Waiting):
                deadline = None
                await self.record(call, "trunk.wait", {"leg": leg_no, "reason": event.reason})
                continue
            if isinstance(event, Placed):
                deadline = self.clock.now() + ring_timeout
                await self.record(call, "trunk.placed", {"leg": leg_no})
                continue
            if isinstance(event, Ringing):
                continue
            if event is STOPPED:
                await attempt.cancel()  # on SIP: CANCEL
                return event
            if event is None:
                known = await attempt.cancel()  # the carrier may know better than "no answer"
                return known or Rejected("no-answer", f"no answer within {ring_timeout:g}s")
            if isinstance(event, Answered) and leg_no > 1 and call.shape == "flow":
                await self.change(call.sid, Change(legs=((leg_no, Event.ANSWER),)))
            return event

    async def _cancel_leg(self, sid: str, leg_no: int) -> None:
        """A leg that was ringing when its dial was abandoned ends canceled."""
        async with self.db.session() as session:
            call = await self._locked(session, sid)
            leg = next(leg for leg in call.legs if leg.leg_no == leg_no)
            if leg.status == Status.RINGING and call.shape == "flow":
                await apply(session, call, Change(legs=((leg_no, Event.CANCEL),)), self.clock.wall())

    async def _time_limit(self, call: Call, channels: list[Channel]) -> None:
        await self.clock.sleep(call.time_limit)
        await self.record(call, "time-limit", {"seconds": call.time_limit})
        for channel in list(channels):
            await channel.hangup("time limit")

    async def _run_flow(
        self, call: Call, account: Account, channel: Channel, channels: list[Channel]
    ) -> None:
        """Run the call's app, then any app a redirect asks for."""
        assert call.app_id is not None

        async def run_app(app_id: int) -> None:
            await self._run_app(call, account, channel, channels, app_id)

        async def record(kind: str, data: dict[str, Any]) -> None:
            await self.record(call, kind, data)

        await self._live(call.sid).run_apps(call.app_id, run_app, record)

    async def _run_app(
        self, call: Call, account: Account, channel: Channel, channels: list[Channel], app_id: int
    ) -> None:
        app = await self._app(account.id, app_id)
        if app is None:
            await self.record(call, "flow.aborted", {"reason": f"app {app_id} was deleted"})
            return
        graph = parse_app(app.graph, REGISTRY)
        ctx = FlowContext(
            call_sid=call.sid,
            account_id=account.id,
            app_id=app.id,
            customer=display(call.from_number),
            exophone=display(call.caller_id),
            direction="outbound-dial",
            created_at=call.created_at,
            started_at=call.start_time or call.created_at,
            time_zone=account.time_zone,
            custom_field=call.custom_field,
            now=self.clock.wall,
        )

        async def record(kind: str, data: dict[str, Any]) -> None:
            await self.record(call, kind, data)

        async def save_recording(heard: Recording) -> tuple[str, str]:
            assert self.recordings is not None
            stored = await self.recordings.save(account, call, [heard.pcm], channels="single")
            return stored.sid, stored.url

        await record("flow.start", {"app": app.id, "version": app.version, "name": app.name})
        async def load_app(app_id: int) -> AppGraph | None:
            target = await self._app(account.id, app_id)
            return parse_app(target.graph, REGISTRY) if target is not None else None

        engine = FlowEngine(
            graph,
            REGISTRY,
            ctx,
            channel,
            self.http_get,
            record,
            load_app=load_app,
            dial=FlowDialer(self, call, account, channel, channels),
            save_recording=save_recording if self.recordings is not None else None,
            streamer=self._streamer(call, account, channel, ctx, record),
        )
        reason = await engine.run()
        await engine.drain()
        await record("flow.end", {"reason": reason})

    async def _app(self, account_id: int, app_id: int) -> App | None:
        """The account's app ``app_id`` (None: there is none, or another account's)."""
        if self._find_app is not None:
            return await self._find_app(account_id, app_id)
        async with self.db.session() as session:
            return await app_of(session, account_id, app_id)

    def _streamer(self, call: Call, account: Account, channel: Channel, ctx: FlowContext,
                  record: Callable[[str, dict[str, Any]], Awaitable[None]]) -> CallStreams | None:
        """The flow's way to stream to bots (None when this runner has no streams)."""
        if self.streams is None:
            return None
        return CallStreams(
            self.streams, channel, record, account_sid=account.sid,
            account_limit=account.max_concurrent_streams, call_sid=call.sid,
            from_number=ctx.customer, to_number=ctx.exophone,
            params=lambda: query_params(ctx),
            by_request=lambda: self._live(call.sid).stopped_by_request)

    async def _connect(
        self, call: Call, account: Account, first: Channel, channels: list[Channel]
    ) -> None:
        """Two-number shape: ring ``To`` while ``From`` waits, then bridge them."""
        await self.change(call.sid, Change(legs=((2, Event.DIAL),)))
        dialing = asyncio.ensure_future(self._dial(call, account, 2, call.to_number))
        gone = asyncio.ensure_future(first.wait_closed())
        done, _ = await asyncio.wait({dialing, gone}, return_when=asyncio.FIRST_COMPLETED)
        if dialing not in done:
            # From hung up (or the time limit hit) while To was ringing: failed, leg 2 canceled.
            dialing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dialing
            change = Change(
                call=Event.FAIL,
                legs=((1, Event.HANGUP), (2, Event.CANCEL)),
                reason=self._live(call.sid).stop_reason or "From hung up while To was ringing",
            )
            await self.change(call.sid, change)
            return
        gone.cancel()
        second = dialing.result()
        if not isinstance(second, Answered):
            await first.hangup("second leg not answered")
            outcome = OUTCOME_EVENTS[second.outcome]
            change = Change(call=outcome, legs=((1, Event.HANGUP), (2, outcome)), cause=second.cause)
            await self.change(call.sid, change)
            return
        channels.append(second.channel)
        tap = ConversationTap() if call.record else None
        await first.bridge(second.channel, tap)
        await first.hangup("bridge ended")
        await second.channel.hangup("bridge ended")
        if tap is not None:
            # Kept before the final status, so the terminal callback carries its RecordingUrl.
            await self.keep_conversation(call, account, tap)
        await self.change(
            call.sid,
            Change(call=Event.HANGUP, legs=((1, Event.HANGUP), (2, Event.HANGUP)),
                   reason=self._live(call.sid).stop_reason),
        )
