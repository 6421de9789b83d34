"""The streams of this process: opened under each account's limit, found by call to stop them.

``Streams.run`` is the one way a stream starts (a voicebot or stream applet, or a
``StreamUrl`` call): it asks an http(s) URL endpoint for the WebSocket URL, holds a place
under the account's limit on concurrent streams (``max_concurrent_streams``, else
``RINGFLOW_STREAM_LIMIT``, default 100), runs the ``Stream`` and gives the place back.
A stream over the limit does not open; it fails with that reason, as Exotel's does.

The count is per process: with ``--workers N`` each worker holds its own (the same holds today
for the calls' own admission, which the engine's cross-process admission replaces).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest
from ringflow.metrics import STREAMS_ACTIVE
from ringflow.streams.client import StreamFailed, resolve_target
from ringflow.streams.protocol import StreamInfo
from ringflow.streams.stream import Stream, StreamOutcome, new_stream_sid
from ringflow.streams.target import StreamTarget, is_endpoint, parse_target, without_credentials
from ringflow.telephony.carrier import Channel
from ringflow.webhooks.http import OutboundHttp

log = logging.getLogger(__name__)

Record = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class StreamRequest:
    """One stream to open on an answered call."""

    url: str  # ws(s) URL, or an http(s) endpoint answering {"url": ...}
    account_sid: str
    call_sid: str
    from_number: str  # as shown on the wire
    to_number: str
    limit: int | None  # the account's own limit, None: the server's
    bidirectional: bool = True
    track: str = "inbound"
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)  # for an endpoint


class Streams:
    """Starts streams and keeps track of the running ones."""

    def __init__(
        self, settings: Settings, clock: Clock, http: OutboundHttp | None, keep_latencies: int = 0
    ):
        self.settings = settings
        self.clock = clock
        self.http = http
        self.keep_latencies = keep_latencies
        self._by_account: dict[str, set[Stream]] = collections.defaultdict(set)
        self._by_call: dict[str, set[Stream]] = collections.defaultdict(set)
        self.finished: list[Stream] = []  # kept only with keep_latencies (the benchmark)

    def active(self, account_sid: str) -> int:
        """Streams running now for the account (in this process)."""
        return len(self._by_account.get(account_sid, ()))

    def limit(self, account_limit: int | None) -> int:
        """The limit that applies to an account with ``account_limit`` set (or not)."""
        return self.settings.stream_limit if account_limit is None else account_limit

    def stop_call(self, call_sid: str, reason: str = "stopped") -> int:
        """Stop every stream of a call (``stop`` goes to the bot); returns how many."""
        streams = list(self._by_call.get(call_sid, ()))
        for stream in streams:
            stream.stop(reason)
        return len(streams)

    async def run(
        self,
        request: StreamRequest,
        channel: Channel,
        record: Record,
        started: Callable[[Stream], None] | None = None,
        by_request: Callable[[], bool] = lambda: False,
    ) -> StreamOutcome:
        """Open and carry one stream to its end; the outcome says how it went."""
        stream_sid = new_stream_sid()
        try:
            target = await self._target(request)
        except StreamFailed as exc:
            return await _failed(stream_sid, without_credentials(request.url), str(exc), record)
        limit = self.limit(request.limit)
        if self.active(request.account_sid) >= limit:
            reason = f"the account's limit of {limit} concurrent streams is reached"
            return await _failed(stream_sid, target.shown, reason, record)
        stream = Stream(
            target=target,
            info=StreamInfo(
                stream_sid,
                request.call_sid,
                request.account_sid,
                request.from_number,
                request.to_number,
                target.custom_parameters,
                target.sample_rate,
            ),
            channel=channel,
            clock=self.clock,
            record=record,
            bidirectional=request.bidirectional,
            track=request.track,
            allow_private=self.settings.allow_private_urls,
            keep_latencies=self.keep_latencies,
            by_request=by_request,
        )
        self._by_account[request.account_sid].add(stream)
        self._by_call[request.call_sid].add(stream)
        gauge = STREAMS_ACTIVE.labels(request.account_sid)
        gauge.inc()
        try:
            if started is not None:
                started(stream)
            return await stream.run()
        finally:
            gauge.dec()
            _discard(self._by_account, request.account_sid, stream)
            _discard(self._by_call, request.call_sid, stream)
            if self.keep_latencies:
                self.finished.append(stream)

    async def _target(self, request: StreamRequest) -> StreamTarget:
        allow_private = self.settings.allow_private_urls
        if not is_endpoint(request.url):
            try:
                return parse_target(request.url, allow_private=allow_private)
            except InvalidRequest as exc:  # e.g. a private address: this stream fails
                raise StreamFailed(str(exc)) from exc
        with self.clock.busy():
            return await resolve_target(
                request.url, http=self.http, params=request.params, allow_private=allow_private
            )


def _discard(index: dict[str, set[Stream]], key: str, stream: Stream) -> None:
    streams = index.get(key)
    if streams is not None:
        streams.discard(stream)
        if not streams:
            del index[key]


async def _failed(stream_sid: str, url: str, reason: str, record: Record) -> StreamOutcome:
    log.info("stream %s to %s failed: %s", stream_sid, url, reason)
    await record("stream.failed", {"stream_sid": stream_sid, "url": url, "reason": reason})
    return StreamOutcome(stream_sid, url, status="failed", detailed_status=reason)
