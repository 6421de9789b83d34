"""Answering machine detection on a call's first leg, between its answer and its app.

A call placed with ``MachineDetection`` listens to the party for the detector's verdict
(``media.amd``) before anything is played to it: the app starts once the detector has decided,
so a machine's greeting is not talked over and an app can leave its message after the beep.
``Enable`` decides within the detector's analysis time (a person in about two seconds);
``DetectMessageEnd`` waits, for a machine, until its message ends (its beep, or silence).

The verdict goes to leg 1's ``answered_by``, the call's ``machine_detection_ms`` and a timeline
step ``amd``, in one write (``Timeline.detected``), and to the app as its ``AnsweredBy``
variable. A party that hangs up while being listened to gets what was known by then.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ringflow.calls.timeline import Timeline
from ringflow.clock import Clock, wait_with_timeout
from ringflow.media.amd import ANALYSIS_TIME, MESSAGE_TIME, Decision, Detector, Mode
from ringflow.storage.models import Call
from ringflow.telephony.carrier import Channel

log = logging.getLogger(__name__)

# Frames come on the carrier's own ticks; if they stop coming, the verdict waits this much
# longer than the detector's own limit before it is taken from what was heard.
SLACK_SECONDS = 2.0


async def listen_for_verdict(channel: Channel, mode: Mode, clock: Clock) -> Decision:
    """Feed the party's audio to a detector until it decides or the party hangs up."""
    detector = Detector(mode)
    verdict: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()

    def hear(heard: bytes) -> None:
        if not verdict.done() and (decision := detector.feed(heard)) is not None:
            verdict.set_result(decision)

    limit = (ANALYSIS_TIME if mode is Mode.ENABLE else MESSAGE_TIME) / 1000 + SLACK_SECONDS
    stop = channel.hear(hear)
    closed = asyncio.ensure_future(channel.wait_closed())
    either: set[asyncio.Future[Any]] = {verdict, closed}
    try:
        await wait_with_timeout(
            clock, asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED), limit
        )
    finally:
        stop()
        closed.cancel()
    return verdict.result() if verdict.done() else detector.finish()


async def detect_machine(
    call: Call, channel: Channel, timeline: Timeline, clock: Clock
) -> Decision:
    """Run the call's detection on its answered first leg and record the verdict."""
    assert call.machine_detection is not None
    mode = Mode(call.machine_detection)
    decision = await listen_for_verdict(channel, mode, clock)
    log.info(
        "call %s answered by %s (%d ms: %s)",
        call.sid,
        decision.result.value,
        decision.ms,
        decision.reason,
    )
    await timeline.detected(
        decision.result.value,
        decision.ms,
        {
            "mode": mode.value,
            "result": decision.result.value,
            "ms": decision.ms,
            "reason": decision.reason,
        },
    )
    return decision


def detected_answer(call: Call) -> str | None:
    """Who answered the call's first leg, if answering machine detection ran and decided."""
    if not call.machine_detection:
        return None
    return next((leg.answered_by for leg in call.legs if leg.leg_no == 1), None)
