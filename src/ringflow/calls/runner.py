"""Carries one call from dialing to its final status.

Flow calls: dial ``From``; when answered, run the app; hang up. Two-number calls: dial ``From``;
when answered, dial ``To`` and bridge the two (recording the conversation when ``Record=true``).
Stream calls: dial ``From``; when answered, stream to the bot until one side ends it.
``TimeOut`` bounds each leg's ringing and ``TimeLimit`` (counted from the first answer) ends the
call. Each call is registered with ``calls.control`` while it runs, so it can be hung up or
redirected to another app by request.

The runner holds no status: what happens is written by the call's ``Timeline``, its legs are
placed by the ``LegDialer`` and its talk is the ``Conversation``'s (bridge, taps, recording).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from ringflow.calls.control import CallControl, LiveCall
from ringflow.calls.conversation import Conversation
from ringflow.calls.detection import detect_machine, detected_answer
from ringflow.calls.dialing import FlowDialer, FlowGetter
from ringflow.calls.dispatcher import Line
from ringflow.calls.legs import LegDialer
from ringflow.calls.status import Event
from ringflow.calls.streaming import CallStreams, run_stream_call
from ringflow.calls.timeline import Timeline
from ringflow.calls.transitions import Change
from ringflow.clock import Clock
from ringflow.flows.applets import REGISTRY
from ringflow.flows.applets.passthru import query_params
from ringflow.flows.context import FlowContext
from ringflow.flows.engine import FlowEngine
from ringflow.flows.model import AppGraph, parse_app
from ringflow.phone import display
from ringflow.recordings import RecordingStore
from ringflow.storage.apps import app_of
from ringflow.storage.db import Database
from ringflow.storage.models import Account, App, Call
from ringflow.streams.service import Streams
from ringflow.telephony.carrier import Answered, Carrier, Channel, Recording
from ringflow.webhooks.deliverer import Deliverer

log = logging.getLogger(__name__)

FindApp = Callable[[int, int], Awaitable[App | None]]  # (account id, app id)


@dataclasses.dataclass
class Carried:
    """One call being carried, and the parts that carry it."""

    call: Call
    account: Account
    timeline: Timeline
    legs: LegDialer
    conversation: Conversation
    live: LiveCall
    channels: list[Channel]  # answered channels: the time limit and a shutdown hang them up


class CallRunner:
    """Runs calls on a carrier; one ``run(call, account, line)`` per call."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        carrier: Carrier,
        http_get: FlowGetter,
        on_enqueued: Callable[[], None],
        recordings: RecordingStore | None = None,
        control: CallControl | None = None,
        streams: Streams | None = None,
        deliverer: Deliverer | None = None,
        find_app: FindApp | None = None,
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
        self._find_app = find_app  # a cached lookup, when there is one

    async def run(self, call: Call, account: Account, line: Line | None = None) -> None:
        """Carry the call (just admitted) to a final status, whatever happens on the way."""
        channels: list[Channel] = []
        live = self.control.register(call.sid, channels)
        timeline = Timeline(
            self.db,
            self.clock,
            call,
            account.time_zone,
            line=line,
            callbacks=self.deliverer,
            on_enqueued=self.on_enqueued,
        )
        legs = LegDialer(self.carrier, self.clock, call, account, timeline, live)
        carried = Carried(
            call,
            account,
            timeline,
            legs,
            Conversation(call, account, timeline, legs, live, self.recordings),
            live,
            channels,
        )
        try:
            await self._run(carried)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(carried, "ringflow is shutting down"))
            raise
        except Exception as exc:  # a bug must not leave a call hanging: finish it, keep the cause
            log.exception("call %s failed inside ringflow", call.sid)
            await self._abandon(carried, f"internal error: {exc}")
        finally:
            await asyncio.shield(timeline.flush())
            self.control.unregister(call.sid)

    async def _abandon(self, carried: Carried, reason: str) -> None:
        for channel in carried.channels:
            await channel.hangup(reason)
        await carried.timeline.finish(reason)

    async def _run(self, carried: Carried) -> None:
        call = carried.call
        first = await carried.legs.dial(1, call.from_number)
        if not isinstance(first, Answered):
            return
        carried.channels.append(first.channel)
        await carried.live.hang_up_if_stopped(first.channel)
        watchdog = asyncio.ensure_future(self._time_limit(carried))
        try:
            if call.machine_detection:  # who answered, before anything is played to them
                await detect_machine(call, first.channel, carried.timeline, self.clock)
            if call.shape == "numbers":
                await carried.conversation.connect(first.channel, carried.channels)
                return
            keep_tape = carried.conversation.tape(first.channel)
            if call.shape == "flow":
                await self._run_flow(carried, first.channel)
            else:
                await run_stream_call(carried, self.streams, first.channel)
            await first.channel.hangup("app ended")
            await keep_tape()
            await carried.timeline.change(
                Change(
                    call=Event.HANGUP, legs=((1, Event.HANGUP),), reason=carried.live.stop_reason
                )
            )
        finally:
            watchdog.cancel()

    async def _time_limit(self, carried: Carried) -> None:
        seconds = carried.call.time_limit
        await self.clock.sleep(seconds)
        await carried.timeline.record("time-limit", {"seconds": seconds})
        for channel in list(carried.channels):
            await channel.hangup("time limit")

    async def _run_flow(self, carried: Carried, channel: Channel) -> None:
        """Run the call's app, then any app a redirect asks for."""
        assert carried.call.app_id is not None

        async def run_app(app_id: int) -> None:
            await self._run_app(carried, channel, app_id)

        await carried.live.run_apps(carried.call.app_id, run_app, carried.timeline.record)

    async def _run_app(self, carried: Carried, channel: Channel, app_id: int) -> None:
        call, account, record = carried.call, carried.account, carried.timeline.record
        app = await self._app(account.id, app_id)
        if app is None:
            await record("flow.aborted", {"reason": f"app {app_id} was deleted"})
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
        answered_by = detected_answer(call)
        if answered_by is not None:
            ctx.vars["AnsweredBy"] = answered_by  # for a Switch Case, and sent by a Passthru

        async def save_recording(heard: Recording) -> tuple[str, str]:
            assert self.recordings is not None
            stored = await self.recordings.save(account, call, [heard.pcm], channels="single")
            return stored.sid, stored.url

        async def load_app(app_id: int) -> AppGraph | None:
            target = await self._app(account.id, app_id)
            return parse_app(target.graph, REGISTRY) if target is not None else None

        await record("flow.start", {"app": app.id, "version": app.version, "name": app.name})
        engine = FlowEngine(
            graph,
            REGISTRY,
            ctx,
            channel,
            self.http_get,
            record,
            load_app=load_app,
            dial=FlowDialer(carried, self.http_get, self.clock, channel),
            save_recording=save_recording if self.recordings is not None else None,
            streamer=self._streamer(carried, channel, ctx),
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

    def _streamer(self, carried: Carried, channel: Channel, ctx: FlowContext) -> CallStreams | None:
        """The flow's way to stream to bots (None when this runner has no streams)."""
        if self.streams is None:
            return None
        live = carried.live
        return CallStreams(
            self.streams,
            channel,
            carried.timeline.record,
            account_sid=carried.account.sid,
            account_limit=carried.account.max_concurrent_streams,
            call_sid=carried.call.sid,
            answered_by=detected_answer(carried.call),
            from_number=ctx.customer,
            to_number=ctx.exophone,
            params=lambda: query_params(ctx),
            by_request=lambda: live.stopped_by_request,
            keep=carried.conversation.keep,
        )
