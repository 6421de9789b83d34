"""Connect inside a flow: ring one or more numbers for the caller and bridge the one who answers.

Each number tried becomes a leg of the call (2, 3, ...) with its own status, moved through the
same transition table as every other leg. Sequential mode tries the numbers in order; simultaneous
mode rings them all and cancels the rest when one answers. The conversation is recorded when the
Connect asks for it or the call was placed with ``Record=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Protocol

from ringflow.calls.status import Event, outcome_event
from ringflow.calls.transitions import Change
from ringflow.clock import Clock, wait_with_timeout
from ringflow.errors import RingflowError
from ringflow.flows.actions import Dial, DialResult, HttpGet, HttpResult
from ringflow.media.audio import Prompt
from ringflow.telephony.carrier import Answered, Channel, ConversationTap, Rejected

if TYPE_CHECKING:
    from ringflow.calls.runner import Carried

# When every number failed, the result reports the most telling outcome.
PRECEDENCE = ("no-answer", "busy", "failed")

# Who answered: the leg, its number and channel; None when nobody did.
Answerer = tuple[int, str, Channel] | None


class FlowGetter(Protocol):
    """What a call's flows reach the outside with: GET for applets (the engine's
    ``HttpGetter``) and the prompt an audio URL plays, which the music on hold needs as well
    (``audio_files.FlowHttp`` is the one the server wires)."""

    async def __call__(self, action: HttpGet) -> HttpResult:
        """Fetch an applet's URL."""
        ...

    async def audio(self, url: str, account_id: int) -> Prompt:
        """The prompt ``url`` plays in a call of ``account_id``."""
        ...


class FlowDialer:
    """Carries out the Dial actions of one flow run."""

    def __init__(self, carried: Carried, http_get: FlowGetter, clock: Clock, caller: Channel):
        self.carried = carried
        self.timeline = carried.timeline
        self.http_get = http_get
        self.clock = clock
        self.account = carried.account
        self.caller = caller
        self.channels = carried.channels  # the call's live channels (the time limit ends them)

    async def __call__(self, action: Dial) -> DialResult:
        music = asyncio.ensure_future(self._music(action.music)) if action.music else None
        try:
            if action.simultaneous:
                answered, outcomes = await self._ring_all(action)
            else:
                answered, outcomes = await self._ring_in_turn(action)
        finally:
            if music is not None:
                music.cancel()
                await asyncio.gather(music, return_exceptions=True)
        if answered is None:
            status = next((o for o in PRECEDENCE if o in outcomes), "failed")
            return DialResult(status, action.numbers[-1] if action.numbers else None)
        leg_no, number, channel = answered
        return await self._talk(leg_no, number, channel, action)

    async def _music(self, url: str) -> None:
        """Loop ``url`` to the caller until the ringing is over (the task is canceled)."""
        try:
            prompt = await self.http_get.audio(url, self.account.id)
        except RingflowError as exc:
            await self.timeline.record("play.failed", {"url": url, "error": str(exc)})
            return
        await self.timeline.record("music", {"url": url})
        while not self.caller.closed:
            await self.caller.play(url, prompt.pcm)

    async def _ring(self, number: str, action: Dial) -> tuple[int, Answered | Rejected]:
        # A leg each: simultaneous dials add theirs at once, each under the call's lock.
        leg_no = await self.timeline.add_leg(number)
        event = await self.carried.legs.ring(leg_no, number, action.ring_timeout, action.caller_id)
        if isinstance(event, Rejected):
            change = Change(legs=((leg_no, outcome_event(event.outcome)),), cause=event.cause)
            await self.timeline.change(change)
        return leg_no, event

    async def _ring_in_turn(self, action: Dial) -> tuple[Answerer, list[str]]:
        outcomes: list[str] = []
        for number in action.numbers:
            if self.caller.closed:
                break
            ringing = asyncio.ensure_future(self._ring(number, action))
            if not await self._while_caller_waits(ringing):
                break
            leg_no, event = ringing.result()
            if isinstance(event, Answered):
                return (leg_no, number, event.channel), outcomes
            outcomes.append(event.outcome)
        return None, outcomes

    async def _ring_all(self, action: Dial) -> tuple[Answerer, list[str]]:
        tasks: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(self._ring(n, action)): n for n in action.numbers
        }
        outcomes: list[str] = []
        winner: Answerer = None
        pending: set[asyncio.Future[Any]] = set(tasks)
        gone: asyncio.Future[Any] = asyncio.ensure_future(self.caller.wait_closed())
        try:
            while pending and winner is None:
                done, pending = await asyncio.wait(
                    pending | {gone}, return_when=asyncio.FIRST_COMPLETED
                )
                if gone in done:
                    break
                pending.discard(gone)
                for task in done:
                    leg_no, event = task.result()
                    if isinstance(event, Answered) and winner is None:
                        winner = (leg_no, tasks[task], event.channel)
                    elif isinstance(event, Answered):
                        await event.channel.hangup("another number answered first")
                    else:
                        outcomes.append(event.outcome)
        finally:
            gone.cancel()
            for task in pending - {gone}:
                task.cancel()
            await asyncio.gather(*(pending - {gone}), return_exceptions=True)
        return winner, outcomes

    async def _while_caller_waits(
        self, ringing: asyncio.Future[tuple[int, Answered | Rejected]]
    ) -> bool:
        """Wait for ``ringing``; False (and it is canceled) if the caller hangs up first."""
        gone = asyncio.ensure_future(self.caller.wait_closed())
        either: set[asyncio.Future[Any]] = {ringing, gone}
        done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if ringing in done:
            return True
        ringing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ringing
        return False

    async def _talk(self, leg_no: int, number: str, callee: Channel, action: Dial) -> DialResult:
        clock = self.clock
        self.channels.append(callee)
        # Record=true on the call tapes all of it already (runner): only the applet's own
        # ``record`` keeps this conversation apart.
        tap = ConversationTap() if action.record else None
        stopped = False
        try:
            if action.announce:
                await callee.say(action.announce)
            started = clock.now()
            bridge = self.caller.bridge(callee, tap)
            if action.max_conversation:
                await wait_with_timeout(clock, bridge, action.max_conversation)
            else:
                await bridge
            talked = round(clock.now() - started)
        except asyncio.CancelledError:
            stopped = True  # a redirect (or the call's end) stops the app mid-conversation
            raise
        finally:
            await callee.hangup("conversation ended")
            self.channels.remove(callee)
            if stopped:  # the agent's leg ends here, and says so before the cancel goes on
                await self.timeline.change(Change(legs=((leg_no, Event.HANGUP),)))
        url = None
        if tap is not None:
            url = await self.carried.conversation.keep(tap, action.recording_channels)
        await self.timeline.change(Change(legs=((leg_no, Event.HANGUP),)))
        return DialResult("completed", number, talked, url)
