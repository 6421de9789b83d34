"""The conversation of an answered call: bridging two parties and keeping what was recorded.

A two-number call rings ``To`` while ``From`` waits and bridges the two; ``Record=true`` tapes
the whole of a flow or stream call (the customer, and the prompts, any connected party and the
bot they heard) or the bridge of a two-number call. A recording is kept before the call's final
status, so its terminal callback carries the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from ringflow.calls.control import LiveCall
from ringflow.calls.legs import LegDialer
from ringflow.calls.status import Event, outcome_event
from ringflow.calls.timeline import Timeline
from ringflow.calls.transitions import Change
from ringflow.recordings import RecordingStore
from ringflow.storage.models import Account, Call
from ringflow.telephony.carrier import Answered, Channel, ConversationTap


async def _nothing() -> None:
    """Keeps a tape that was never started."""


class Conversation:
    """Bridges and records one call."""

    def __init__(
        self,
        call: Call,
        account: Account,
        timeline: Timeline,
        legs: LegDialer,
        live: LiveCall,
        recordings: RecordingStore | None,
    ):
        self.call = call
        self.account = account
        self.timeline = timeline
        self.legs = legs
        self.live = live
        self.recordings = recordings

    def tape(self, channel: Channel) -> Callable[[], Awaitable[None]]:
        """Start taping the whole call on ``channel`` if it asked for ``Record=true``; returns
        what stops the tape and keeps it."""
        if not self.call.record:
            return _nothing
        tap = ConversationTap()
        stop = channel.record_call(tap)

        async def keep() -> None:
            stop()
            await self.keep(tap)

        return keep

    async def keep(self, tap: ConversationTap, channels: str | None = None) -> str | None:
        """Store a recorded conversation (in the call's format); returns its URL."""
        if self.recordings is None or not tap.near:
            return None
        stored = await self.recordings.save(
            self.account, self.call, [bytes(tap.near), bytes(tap.far)], channels=channels
        )
        await self.timeline.record(
            "recording",
            {
                "sid": stored.sid,
                "url": stored.url,
                "duration": round(stored.duration, 2),
                "conversation": True,
            },
        )
        return stored.url

    async def connect(self, first: Channel, channels: list[Channel]) -> None:
        """Two-number shape: ring ``To`` while ``From`` waits, then bridge them to the end."""
        await self.timeline.change(Change(legs=((2, Event.DIAL),)))
        dialing = asyncio.ensure_future(self.legs.dial(2, self.call.to_number))
        gone = asyncio.ensure_future(first.wait_closed())
        done, _ = await asyncio.wait({dialing, gone}, return_when=asyncio.FIRST_COMPLETED)
        if dialing not in done:
            # From hung up (or the time limit hit) while To was ringing: failed, leg 2 canceled.
            dialing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dialing
            await self.timeline.change(
                Change(
                    call=Event.FAIL,
                    legs=((1, Event.HANGUP), (2, Event.CANCEL)),
                    reason=self.live.stop_reason or "From hung up while To was ringing",
                )
            )
            return
        gone.cancel()
        second = dialing.result()
        if not isinstance(second, Answered):
            await first.hangup("second leg not answered")
            outcome = outcome_event(second.outcome)
            await self.timeline.change(
                Change(call=outcome, legs=((1, Event.HANGUP), (2, outcome)), cause=second.cause)
            )
            return
        channels.append(second.channel)
        tap = ConversationTap() if self.call.record else None
        await first.bridge(second.channel, tap)
        await first.hangup("bridge ended")
        await second.channel.hangup("bridge ended")
        if tap is not None:
            await self.keep(tap)
        await self.timeline.change(
            Change(
                call=Event.HANGUP,
                legs=((1, Event.HANGUP), (2, Event.HANGUP)),
                reason=self.live.stop_reason,
            )
        )
