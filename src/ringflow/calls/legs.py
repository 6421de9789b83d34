"""The leg dialer: places a call's legs on the carrier and says how each one ended.

``ring`` places one leg and waits until it is answered, rejected, or rings ``TimeOut`` out;
a leg waiting for room on its trunk does not count that wait as ringing. A first leg also ends
when live call control asks the call to stop (the ringing leg is canceled). ``dial`` rings a leg
of the call's own shape (``From``, or ``To`` of a two-number call) and applies its outcome.
"""

from __future__ import annotations

import asyncio

from ringflow.calls.control import STOPPED, LiveCall
from ringflow.calls.status import Event, outcome_event
from ringflow.calls.timeline import Timeline
from ringflow.calls.transitions import Change
from ringflow.clock import Clock, wait_with_timeout
from ringflow.metrics import CALL_SETUP, carrier_label
from ringflow.storage.models import Account, Call
from ringflow.telephony.carrier import (
    Answered,
    Carrier,
    DialRequest,
    Outcome,
    Placed,
    Rejected,
    Ringing,
    Waiting,
)


class LegDialer:
    """Places the legs of one call."""

    def __init__(
        self,
        carrier: Carrier,
        clock: Clock,
        call: Call,
        account: Account,
        timeline: Timeline,
        live: LiveCall,
    ):
        self.carrier = carrier
        self.clock = clock
        self.call = call
        self.account = account
        self.timeline = timeline
        self.live = live

    async def dial(self, leg_no: int, number: str) -> Answered | Rejected:
        """Ring a leg of the call's own shape (already marked ringing) within ``TimeOut``, and
        apply how it ended (for leg 2 of a two-number call, only its answer: the rest is the
        conversation's to apply, with the first leg's)."""
        event = await self.ring(leg_no, number, self.call.time_out, None)
        if isinstance(event, Answered):
            call_event = Event.ANSWER if leg_no == 1 else None
            await self.timeline.change(Change(call=call_event, legs=((leg_no, Event.ANSWER),)))
            if leg_no == 1:
                self._count_setup()
        elif event is STOPPED:  # never answered: failed, the ringing leg canceled
            await self.timeline.change(
                Change(
                    call=Event.FAIL,
                    legs=((1, Event.CANCEL),),
                    cause=event.cause,
                    reason=self.live.stop_reason,
                )
            )
        elif leg_no == 1:
            outcome = outcome_event(event.outcome)
            await self.timeline.change(
                Change(call=outcome, legs=((1, outcome),), cause=event.cause)
            )
        return event

    def _count_setup(self) -> None:
        """The first leg answered: the call's setup time, from its dial to this answer."""
        leg = next((leg for leg in self.call.legs if leg.leg_no == 1), None)
        if leg is not None and leg.dialed_at is not None and leg.answered_at is not None:
            CALL_SETUP.labels(carrier_label(self.carrier, self.account.sid)).observe(
                max(0.0, (leg.answered_at - leg.dialed_at).total_seconds())
            )

    async def ring(
        self, leg_no: int, number: str, ring_timeout: float, caller_id: str | None
    ) -> Answered | Rejected:
        """Place one leg and wait until it answers, is rejected, or rings ``ring_timeout`` out.

        An answered leg 2+ of a flow call is marked answered here; other outcomes are the
        caller's to apply.
        """
        call = self.call
        request = DialRequest(
            number, caller_id or call.caller_id, self.account.sid, call.sid, leg_no
        )
        attempt = self.carrier.dial(request)
        deadline: float | None = self.clock.now() + ring_timeout
        while True:
            next_event = attempt.next_event()
            if leg_no == 1:  # later legs end with the first one (hung up by the request)
                next_event = self.live.unless_stopped(next_event)
            event: Waiting | Placed | Ringing | Answered | Rejected | None
            try:
                if deadline is None:  # waiting for the trunk: no ring timeout yet
                    event = await next_event
                else:
                    remaining = deadline - self.clock.now()
                    event = await wait_with_timeout(self.clock, next_event, remaining)
            except asyncio.CancelledError:
                await asyncio.shield(attempt.cancel())
                await asyncio.shield(self.timeline.cancel_leg(leg_no))
                raise
            if isinstance(event, Waiting):
                deadline = None
                await self.timeline.record("trunk.wait", {"leg": leg_no, "reason": event.reason})
                continue
            if isinstance(event, Placed):
                deadline = self.clock.now() + ring_timeout
                await self.timeline.record("trunk.placed", {"leg": leg_no})
                continue
            if isinstance(event, Ringing):
                continue
            if event is STOPPED:
                await attempt.cancel()  # on SIP: CANCEL
                return STOPPED
            if event is None:
                known = await attempt.cancel()  # the carrier may know better than "no answer"
                return known or Rejected(Outcome.NO_ANSWER, f"no answer within {ring_timeout:g}s")
            if isinstance(event, Answered) and leg_no > 1 and call.shape == "flow":
                await self.timeline.change(Change(legs=((leg_no, Event.ANSWER),)))
            assert isinstance(event, Answered | Rejected)
            return event
