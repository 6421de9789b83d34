"""A call's streams to bots: the voicebot and stream applets' side, and ``StreamUrl`` calls.

``CallStreams`` is what the flow engine calls for a ``StreamAudio`` action: a bidirectional
stream is carried to its end (recorded while it runs when the voicebot asks) and its outcome
returned; a unidirectional one starts beside the
flow (at most ``MAX_BESIDE`` at once per call) and is stopped when the flow ends. Each stream
is opened through the process's ``Streams`` (account limit, lookup by call for the hang-up
API) with the call's facts in its ``start`` message and the Passthru parameters of the moment
for an http(s) URL endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ringflow.calls.detection import detected_answer
from ringflow.flows.actions import StreamAudio
from ringflow.phone import display
from ringflow.storage.models import Call
from ringflow.streams.service import StreamRequest, Streams
from ringflow.streams.stream import Stream, StreamOutcome
from ringflow.telephony.carrier import Channel, ConversationTap

if TYPE_CHECKING:
    from ringflow.calls.runner import Carried

log = logging.getLogger(__name__)

MAX_BESIDE = 4  # unidirectional streams running beside one call's flow

Record = Callable[[str, dict[str, Any]], Awaitable[None]]
# Stores a recorded conversation (channels: single, dual or None for the call's own); its URL.
Keep = Callable[[ConversationTap, str | None], Awaitable[str | None]]


class CallStreams:
    """The streams of one call."""

    def __init__(
        self,
        streams: Streams,
        channel: Channel,
        record: Record,
        *,
        account_sid: str,
        account_limit: int | None,
        call_sid: str,
        answered_by: str | None,
        from_number: str,
        to_number: str,
        params: Callable[[], Mapping[str, str]] = dict,
        by_request: Callable[[], bool] = lambda: False,
        keep: Keep | None = None,
    ):
        self.streams = streams
        self.channel = channel
        self._record = record
        self._keep = keep
        self._request = StreamRequest(
            url="",
            account_sid=account_sid,
            call_sid=call_sid,
            from_number=from_number,
            to_number=to_number,
            limit=account_limit,
            answered_by=answered_by,
        )
        self._params = params
        self._by_request = by_request
        self._beside: dict[asyncio.Task[StreamOutcome], Stream | None] = {}

    async def run(self, action: StreamAudio) -> StreamOutcome | None:
        """Carry a bidirectional stream to its end; start a unidirectional one beside."""
        request = self._for(action)
        if action.wait:
            if action.record and self._keep is not None:
                return await self._recorded(request, action.recording_channels, self._keep)
            return await self.streams.run(
                request, self.channel, self._record, by_request=self._by_request
            )
        if len(self._beside) >= MAX_BESIDE:
            await self._record(
                "stream.failed",
                {"url": request.url, "reason": f"at most {MAX_BESIDE} streams beside one call"},
            )
            return None
        task: asyncio.Task[StreamOutcome] = asyncio.ensure_future(
            self.streams.run(
                request,
                self.channel,
                self._record,
                started=lambda stream: self._beside.__setitem__(task, stream),
                by_request=self._by_request,
            )
        )
        self._beside[task] = None
        task.add_done_callback(lambda done: self._beside.pop(done, None))
        return None

    async def _recorded(
        self, request: StreamRequest, channels: str | None, keep: Keep
    ) -> StreamOutcome:
        """A bidirectional stream with the conversation recorded while it runs."""
        tap = ConversationTap()
        stop = self.channel.record_call(tap)
        try:
            outcome = await self.streams.run(
                request, self.channel, self._record, by_request=self._by_request
            )
        finally:
            stop()
        if outcome.status == "completed":
            outcome.recording_url = await keep(tap, channels) or ""
        return outcome

    async def stop_all(self) -> None:
        """Stop the streams running beside the flow (``stop`` with ``stopped``) and wait."""
        tasks = list(self._beside)
        for task, stream in list(self._beside.items()):
            if stream is not None:
                stream.stop("stopped")
            else:
                task.cancel()  # still asking an endpoint for its URL: never opened
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _for(self, action: StreamAudio) -> StreamRequest:
        request = self._request
        return StreamRequest(
            url=action.url,
            account_sid=request.account_sid,
            call_sid=request.call_sid,
            from_number=request.from_number,
            to_number=request.to_number,
            limit=request.limit,
            bidirectional=action.bidirectional,
            track=action.track,
            params=dict(self._params()),
            answered_by=request.answered_by,
        )


async def run_stream_call(carried: Carried, streams: Streams | None, channel: Channel) -> None:
    """A ``StreamUrl`` call, answered: stream until the bot or the caller ends it.

    The call then hangs up (the runner ends it ``completed``: the customer did answer, even
    when the stream could not be opened; the reason is on the timeline).
    """
    call, account, record = carried.call, carried.account, carried.timeline.record
    if streams is None:
        await record("stream.failed", {"reason": "streams are not available here"})
        return
    answered_by = detected_answer(call)
    request = StreamRequest(
        url=call.stream_url or "",
        account_sid=account.sid,
        call_sid=call.sid,
        from_number=display(call.from_number),
        to_number=display(call.caller_id),
        limit=account.max_concurrent_streams,
        bidirectional=call.stream_type != "unidirectional",
        params=_call_params(call, answered_by),
        answered_by=answered_by,
    )
    live = carried.live
    outcome = await streams.run(
        request, channel, record, by_request=lambda: live.stopped_by_request
    )
    log.info(
        "call %s: stream %s %s (%s)",
        call.sid,
        outcome.stream_sid,
        outcome.status,
        outcome.detailed_status,
    )


def _call_params(call: Call, answered_by: str | None) -> dict[str, str]:
    """What an http(s) stream URL endpoint is told of a ``StreamUrl`` call (no app runs, so
    the Passthru parameters that describe the call itself, and who answered when answering
    machine detection ran)."""
    customer, exophone = display(call.from_number), display(call.caller_id)
    params = {
        "CallSid": call.sid,
        "CallFrom": customer,
        "CallTo": exophone,
        "From": customer,
        "To": exophone,
        "Direction": "outbound-dial",
    }
    if call.stream_name:
        params["StreamName"] = call.stream_name
    if call.custom_field:
        params["CustomField"] = call.custom_field
    if answered_by is not None:
        params["AnsweredBy"] = answered_by
    return params
