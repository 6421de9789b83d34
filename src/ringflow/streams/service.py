"""The streams of this process: opened under each account's limit, found by call to stop them.

``Streams.run`` is the one way a stream starts (a voicebot or stream applet, or a
``StreamUrl`` call): it asks an http(s) URL endpoint for the WebSocket URL, takes a place under
the account's limit on concurrent streams (``max_concurrent_streams``, else
``RINGFLOW_STREAM_LIMIT``, default 100), runs the ``Stream`` and gives the place back.
A stream over the limit does not open; it fails with that reason, as Exotel's does. So does
one over the process's own limit (``RINGFLOW_STREAMS_PER_PROCESS``), which keeps a process from
taking more streams than it can keep on time.

The places are ``SharedPlaces``: rows in the database, taken under the account's row lock, so
the limit holds exactly and ``ActiveStreams`` counts every process's streams with
``--workers N``; a process that dies leaves its places to the housekeeping, which frees them
with its calls. ``LocalPlaces`` counts one process's streams alone, for a process without a
database (the benchmark).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest
from ringflow.metrics import STREAMS_ACTIVE
from ringflow.storage import streams as stored
from ringflow.storage.db import Database
from ringflow.storage.streams import StreamPlace
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
    answered_by: str | None = None  # the verdict of answering machine detection, if it ran


class Places(Protocol):
    """Where the places under the accounts' stream limits are kept."""

    async def take(self, account_sid: str, limit: int, place: StreamPlace) -> bool:
        """Take a place for ``place`` if the account has fewer than ``limit`` streams open."""

    async def give_back(self, account_sid: str, stream_sid: str) -> None:
        """The stream ended."""

    async def count(self, account_sid: str) -> int:
        """The account's streams open now."""


class SharedPlaces:
    """The places of every process on the database (``storage/streams.py``)."""

    def __init__(self, db: Database, owner: str):
        self.db = db
        self.owner = owner

    async def take(self, account_sid: str, limit: int, place: StreamPlace) -> bool:
        async with self.db.session() as session:
            return (
                await stored.take_place(session, account_sid, limit, place, self.owner) is not None
            )

    async def give_back(self, account_sid: str, stream_sid: str) -> None:
        async with self.db.session() as session:
            await stored.give_back(session, stream_sid)

    async def count(self, account_sid: str) -> int:
        async with self.db.session() as session:
            return await stored.count_open(session, account_sid)


class LocalPlaces:
    """The places of this process alone (a process without a database)."""

    def __init__(self) -> None:
        self._open: collections.Counter[str] = collections.Counter()

    async def take(self, account_sid: str, limit: int, place: StreamPlace) -> bool:
        if self._open[account_sid] >= limit:
            return False
        self._open[account_sid] += 1
        return True

    async def give_back(self, account_sid: str, stream_sid: str) -> None:
        self._open[account_sid] -= 1

    async def count(self, account_sid: str) -> int:
        return self._open[account_sid]


class Streams:
    """Starts streams and keeps track of the running ones."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        http: OutboundHttp | None,
        places: Places,
        keep_latencies: int = 0,
    ):
        self.settings = settings
        self.clock = clock
        self.http = http
        self.places = places
        self.keep_latencies = keep_latencies
        self._by_call: dict[str, set[Stream]] = collections.defaultdict(set)
        self._carrying = 0  # streams this process runs or is opening, of every account
        self.finished: list[Stream] = []  # kept only with keep_latencies (the benchmark)

    async def active(self, account_sid: str) -> int:
        """Streams open now for the account, in every process."""
        return await self.places.count(account_sid)

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
        most = self.settings.streams_per_process
        if most and self._carrying >= most:
            reason = (
                f"this server carries its limit of {most} streams (RINGFLOW_STREAMS_PER_PROCESS)"
            )
            return await _failed(stream_sid, target.shown, reason, record)
        self._carrying += 1
        try:
            return await self._open(
                request, stream_sid, target, channel, record, started, by_request
            )
        finally:
            self._carrying -= 1

    async def _open(
        self,
        request: StreamRequest,
        stream_sid: str,
        target: StreamTarget,
        channel: Channel,
        record: Record,
        started: Callable[[Stream], None] | None,
        by_request: Callable[[], bool],
    ) -> StreamOutcome:
        """Take a place under the account's limit and carry the stream."""
        limit = self.limit(request.limit)
        place = StreamPlace(
            stream_sid,
            request.call_sid,
            target.shown,
            request.bidirectional,
            request.track,
            self.clock.wall(),
        )
        if not await self.places.take(request.account_sid, limit, place):
            reason = f"the account's limit of {limit} concurrent streams is reached"
            return await _failed(stream_sid, target.shown, reason, record)
        try:
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
                    request.answered_by,
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
            return await self._carry(stream, started)
        finally:
            try:
                await self.places.give_back(request.account_sid, stream_sid)
            except Exception:  # the place stays until this process stops or is found silent
                log.exception("stream %s: could not free its place", stream_sid)

    async def _carry(
        self, stream: Stream, started: Callable[[Stream], None] | None
    ) -> StreamOutcome:
        """Run the stream, findable by its call meanwhile."""
        call_sid = stream.info.call_sid
        self._by_call[call_sid].add(stream)
        gauge = STREAMS_ACTIVE.labels(stream.info.account_sid)
        gauge.inc()
        try:
            if started is not None:
                started(stream)
            return await stream.run()
        finally:
            gauge.dec()
            _discard(self._by_call, call_sid, stream)
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
