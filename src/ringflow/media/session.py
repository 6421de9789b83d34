"""One leg's RTP: a UDP socket, what we send each 20 ms, and what we hear from the party.

Sending: the engine's pacer calls ``tick`` once per 20 ms frame. The packet carries, in order
of precedence, a DTMF event being sent, the bridged party's audio, the current ``play()``, or
silence: RTP never stops while the session runs (NATs and symmetric-RTP peers rely on it). A
play is encoded once, when ``play()`` is called, into ready payloads; a tick only picks the
next one and packs a 12-byte header. The RTP timestamp is derived from the frame number, so
it follows the wall clock even across skipped ticks.

Receiving (``inbound.py``): only the party's stream is used. Without ``latch`` (the default)
that is RTP from the host the SDP announced, from any of its ports (carrier gateways often send
from another port than the one they announce), and nothing else: a stranger on another host who
finds the port is neither heard, recorded nor taken for key presses. We keep sending to the
announced address. With ``latch`` (a trunk configured for symmetric RTP) the first valid packet
after ``start()`` fixes the source address and we send there too: a peer behind NAT announces an
address it cannot be reached at, then sends from the one it can. Packets from the host the SDP
announced always win over a source latched first.
Audio is decoded on arrival into a jitter buffer that ``tick`` drains one frame at a time for
``listen`` sinks and bridges. A listener of several frames at a time (a stream to a bot takes
100 ms chunks) gets groups that end on the same frames in every session: frame numbers that are
``frames - 1`` modulo ``frames`` (its first group is made whole with silence in front). So every
call's chunks leave in the same ticks, and a bot's prompt answers arrive together: the event
loop wakes for them a few times per chunk rather than on every tick. While only such listeners
listen they are served lazily: each tick counts its frame, and the tick that completes a group
takes the group's frames from the jitter buffer at once. A listener gets the same audio on the
same tick either way.

Keys (``dtmf.py``) come from RFC 4733 events, from ``push_digit`` (SIP INFO) and from tones in
the received audio. Tones are looked for (``inband``) until the party's first RFC 4733 event:
after that, tones would only repeat its events (gateways often send both). The engine batches
the tone analysis of all its sessions once per tick. A key is read as soon as it is pressed
(``next_digit``: menus, gathers) or once it is released, with its length (``next_key``: a
bot); each tick releases a press whose source has gone quiet (``KeyStream.expire``).

Bridged audio always goes through PCM (decode from one party's law, encode in the other's):
the tap needs PCM anyway, G.711 re-encoding in the same law is lossless, and it costs well
under a microsecond a frame.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import logging
import random
import struct
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ringflow.errors import MediaError
from ringflow.media import g711
from ringflow.media.bridge import Bridge
from ringflow.media.dtmf import (
    EventReceiver,
    Key,
    KeyNews,
    KeyStream,
    Press,
    ToneDetector,
    event_packets,
    info_duration,
    tone,
)
from ringflow.media.g711 import FRAME_BYTES, FRAME_SAMPLES, SILENCE_PCM
from ringflow.media.inbound import DUPLICATE, InboundStream, JitterBuffer
from ringflow.media.pieces import Cutter
from ringflow.media.playout import Playout
from ringflow.media.rtp import HEADER, RtpPacket, RtpParseError, TelephoneEvent, event_of
from ringflow.media.stats import SessionStats
from ringflow.sip.sdp import Direction, MediaPlan

if TYPE_CHECKING:
    from ringflow.media.engine import MediaEngine

log = logging.getLogger("ringflow.media")

_SEQ_TS_SSRC = struct.Struct("!HII")
_COMFORT_NOISE = 13


class SessionClosed(MediaError):
    """The session was closed while waiting on it (the leg hung up)."""


class _Play:
    """A queued ``play()``: its payloads in the current law and how far it got."""

    __slots__ = ("chunks", "done", "index", "law", "pcm")

    def __init__(self, pcm: bytes, law: g711.G711 | None, done: asyncio.Future[None]):
        self.pcm, self.law, self.index, self.done = pcm, law, 0, done
        self.chunks = g711.payloads(law, pcm) if law else ()


class _DigitSend:
    """A queued ``send_digit()``: its event payloads and the timestamp of the key press."""

    __slots__ = ("done", "events", "index", "timestamp")

    def __init__(self, events: list[TelephoneEvent], done: asyncio.Future[None]):
        self.events, self.index, self.timestamp, self.done = events, 0, 0, done


def _no_marks(marks: list[str]) -> None:
    """Where marks go while no stream plays out."""


class _Group:
    """A listener of the party's audio ``frames`` 20 ms frames at a time, and what it has of
    the group under way."""

    __slots__ = ("aligned", "cut", "frames", "sink")

    def __init__(self, sink: Callable[[bytes], None], frames: int) -> None:
        self.sink, self.frames, self.cut = sink, frames, Cutter(frames * FRAME_BYTES)
        self.aligned = False  # its first frame, which places it on the grid, is still to come

    @property
    def missing(self) -> int:
        """Frames this group still needs: 1 before its first, which places it on the grid."""
        return self.frames - len(self.cut) // FRAME_BYTES if self.aligned else 1

    def align(self, frame: int, count: int) -> None:
        """Place the group on the grid with its first ``count`` frames, which end at ``frame``:
        silence before them makes its groups end on frames ``frames - 1`` modulo ``frames``."""
        self.aligned = True
        ahead = (self.frames - 1 - frame) % self.frames  # frames after this one in its group
        self.cut.pad(max(0, self.frames - ahead - count) * FRAME_BYTES)


def _resolve(future: asyncio.Future[Any], value: Any = None) -> None:
    if not future.done():
        future.set_result(value)


class RtpSession(asyncio.DatagramProtocol):
    """One leg's RTP stream; created by ``MediaEngine.open_session``."""

    def __init__(self, engine: MediaEngine, local: tuple[str, int], *, latch: bool = False) -> None:
        self.local = local
        self.latch = latch  # symmetric RTP: hear the first source and send back to it
        self.closed = False
        self.stats = SessionStats()
        # In-band tones: True always detected, False never; None (auto) until the first RFC 4733
        # event shows the party signals keys out of band (then tones would only repeat them).
        self.inband: bool | None = None
        self._engine = engine
        self._transport: asyncio.DatagramTransport | None = None
        self._plan: MediaPlan | None = None
        self._law, self._pt = g711.PCMU, g711.PCMU.payload_type
        self._send_to: tuple[str, int] = ("", 0)
        self._sending = False
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts_base = random.getrandbits(32)
        self._marker = True
        self._frame = 0
        self._plays: collections.deque[_Play] = collections.deque()
        self._digit_sends: collections.deque[_DigitSend] = collections.deque()
        self._sinks: dict[object, Callable[[bytes], None]] = {}
        self._groups: dict[object, _Group] = {}  # listeners of several frames at a time
        self._unheard = 0  # ticks whose frame the groups are owed, still in the jitter buffer
        self._group_due = 0  # owed frames that complete the nearest group
        self._rx = JitterBuffer(self.stats)
        self._inbound = InboundStream(self.stats)
        self._bridge: Bridge | None = None
        self.bridge_in: collections.deque[bytes] | None = None  # PCM frames from the other party
        self._keys = KeyStream()
        self._events = EventReceiver()
        self._tones: ToneDetector | None = None
        self._rtp_press: Press | None = None  # the press the RFC 4733 events are about
        self._tone_press: Press | None = None  # the press the tones are about
        self._taps: list[Callable[[bytes, bytes], None]] = []
        self._playout: Playout | None = None  # a bot's audio (a stream), paced by tick
        self._on_marks: Callable[[list[str]], None] = _no_marks

    # -- control ---------------------------------------------------------------------------

    def start(self, plan: MediaPlan) -> None:
        """Send to ``plan.remote`` with ``plan.codec``; again after a re-INVITE changes the plan."""
        if self.closed:
            return
        law = g711.law(plan.codec.name)
        host = plan.remote[0]
        try:
            # Written as the socket reports sources, so a source equal to it compares equal.
            remote = (str(ipaddress.ip_address(host)), plan.remote[1])
        except ValueError:
            # A host name here would make every send a blocking DNS lookup on the media loop.
            raise MediaError(f"RTP remote must be an IP address, got {host!r}") from None
        if remote != plan.remote:
            plan = dataclasses.replace(plan, remote=remote)
        previous, self._plan = self._plan, plan
        self._law, self._pt = law, plan.codec.payload_type
        if previous is None or previous.remote != plan.remote:
            self._send_to = plan.remote
            self._inbound.reset(plan.remote, only_announced=not self.latch)
        self._sending = plan.direction in (Direction.SENDRECV, Direction.SENDONLY)
        if plan.dtmf_pt is None:  # the new plan has no telephone-event to finish them with
            for item in self._digit_sends:
                _resolve(item.done)
            self._digit_sends.clear()
        if self.inband is False:
            self._tones = None
        elif self._tones is None and (self.inband or not self._events.seen):
            self._tones = ToneDetector()
        if previous is None:
            self._engine.pacer.add(self)

    def close(self) -> None:
        """Stop sending, release the port, wake everything waiting on this session."""
        if self.closed:
            return
        self.closed = True
        self._engine.forget(self)
        if self._bridge is not None:
            self._bridge.undo()
        if self._transport is not None:
            self._transport.close()
        for done in (*(p.done for p in self._plays), *(d.done for d in self._digit_sends)):
            _resolve(done)
        self._plays.clear()
        self._digit_sends.clear()
        self._keys.close(SessionClosed("the RTP session closed"))
        self._sinks.clear()
        self._groups.clear()

    # -- what we send ----------------------------------------------------------------------

    async def play(self, pcm: bytes) -> None:
        """Play 8 kHz mono s16le audio after anything already queued; returns once it was sent."""
        if len(pcm) % 2:
            raise ValueError("PCM must be whole 16-bit samples")
        if self.closed or not pcm:
            return
        item = _Play(
            pcm, self._law if self._plan else None, asyncio.get_running_loop().create_future()
        )
        self._plays.append(item)
        try:
            await item.done
        finally:
            if item.done.cancelled():
                with contextlib.suppress(ValueError):
                    self._plays.remove(item)

    async def send_digit(self, digit: str, duration_ms: int = 160) -> None:
        """Send one key: RFC 4733 events if the plan has telephone-event, else in-band tones."""
        event_of(digit)  # ValueError now rather than a surprise on the wire
        if self.closed:
            return
        if self._plan is None:
            raise MediaError("send_digit before start(): no remote to send to")
        if self._plan.dtmf_pt is None:
            await self.play(tone(digit, duration_ms / 1000) + SILENCE_PCM * 3)
            return
        item = _DigitSend(
            event_packets(digit, duration_ms, g711.FRAME_MS),
            asyncio.get_running_loop().create_future(),
        )
        self._digit_sends.append(item)
        try:
            await item.done
        finally:
            if item.done.cancelled():
                with contextlib.suppress(ValueError):
                    self._digit_sends.remove(item)

    def bridge(
        self, other: RtpSession, tap: Callable[[bytes, bytes], None] | None = None
    ) -> Callable[[], None]:
        """Carry audio both ways between this party and ``other``; returns the undo function."""
        for session in (self, other):
            if session._bridge is not None:
                session._bridge.undo()
        bridge = Bridge(self, other, tap)
        self._bridge = other._bridge = bridge
        return bridge.undo

    def unbridged(self, bridge: Bridge) -> None:
        """Called by ``bridge`` when it is undone."""
        if self._bridge is bridge:
            self._bridge, self.bridge_in = None, None

    def tap(self, write: Callable[[bytes, bytes], None]) -> Callable[[], None]:
        """Give ``write(heard, sent)`` every 20 ms: the party's audio and what we sent it
        (prompts, a bridged party, silence), as PCM; returns the undo function. (Who wants
        only the party's audio listens: ``listen``.)"""
        self._catch_up()
        self._taps.append(write)
        self._listeners_changed()

        def undo() -> None:
            with contextlib.suppress(ValueError):
                self._taps.remove(write)
            self._listeners_changed()

        return undo

    def play_out(
        self, playout: Playout, on_marks: Callable[[list[str]], None]
    ) -> Callable[[], None]:
        """Send ``playout``'s frames, one a tick, while nothing louder (keys, a bridge) is sent;
        ``on_marks`` gets the marks each frame completes. Returns the undo function."""
        self._playout, self._on_marks = playout, on_marks

        def undo() -> None:
            if self._playout is playout:
                self._playout, self._on_marks = None, _no_marks

        return undo

    # -- what we hear ----------------------------------------------------------------------

    def listen(self, sink: Callable[[bytes], None], frames: int = 1) -> Callable[[], None]:
        """Give ``sink`` the party's audio ``frames`` 20 ms frames at a time (one per tick by
        default), on the tick that completes them; returns the unsubscribe. Groups of several
        frames end on frames ``frames - 1`` modulo ``frames``; the first is padded in front
        with silence to get there."""
        if frames < 1:
            raise ValueError("a listener takes at least one frame at a time")
        self._catch_up()
        token = object()
        if frames == 1:
            self._sinks[token] = sink
        else:
            self._groups[token] = _Group(sink, frames)
        self._listeners_changed()

        def unsubscribe() -> None:
            self._sinks.pop(token, None)
            self._groups.pop(token, None)
            self._listeners_changed()

        return unsubscribe

    def _listeners_changed(self) -> None:
        """After a listener came or went: what the groups are owed, and the jitter buffer."""
        groups, eager = self._groups, bool(self._sinks or self._taps)
        if not groups and not eager:
            self._rx.clear()
        if groups:
            self._group_due = min(group.missing for group in groups.values())
        else:
            self._unheard = 0
        # Served lazily, the groups' frames wait in the jitter buffer until one is complete.
        lazy = groups and not eager
        self._rx.slack = max(g.cut.size for g in groups.values()) if lazy else 0

    def _catch_up(self) -> None:
        """Give the groups the frames they are owed (before a listener joins: they are not its)."""
        if self._unheard:
            count, self._unheard = self._unheard, 0
            self._feed_groups(self._rx.take_frames(count), count)

    def push_digit(self, digit: str, duration_ms: int | None = None) -> None:
        """A key that arrived another way (SIP INFO, with the Duration it gave, if any) joins
        the stream of keys, pressed and released at once."""
        event_of(digit)
        news = KeyNews(digit.upper(), info_duration(duration_ms), started=True, ended=True)
        self._heard(news, "info", None)

    async def next_digit(self) -> str:
        """The next key the party pressed, as soon as it starts; SessionClosed if the session
        closes first."""
        return await self._keys.next()

    async def next_key(self) -> Key:
        """The next key the party pressed, once released, with its length; SessionClosed if the
        session closes first."""
        return await self._keys.next_released()

    def clear_digits(self) -> None:
        """Forget keys pressed but not yet read."""
        self._keys.clear()

    def _tone(self, news: KeyNews) -> None:
        if not self.closed:
            self._tone_press = self._heard(news, "tone", self._tone_press)

    def _heard(self, news: KeyNews, source: str, press: Press | None) -> Press | None:
        """Pass what a source heard of a press to the keys; returns the press it is about."""
        keys, frame = self._keys, self._frame
        if news.started:
            press, new = keys.press(news.key, source, frame, news.ms)
            if new:
                self.stats.digits += 1
        if press is not None:
            if news.ended:
                keys.release(press, news.ms)
            else:
                keys.hold(press, frame, news.ms)
        return press

    # -- the socket's side -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is ready (asyncio calls this)."""
        self._transport = typing.cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket closed (asyncio calls this)."""
        if not self.closed:
            self.close()

    def error_received(self, exc: Exception) -> None:
        """A send failed (ICMP unreachable, an address of the wrong family): count it."""
        self.stats.send_errors += 1

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram: used if it is our party's RTP, else counted and dropped. Never raises."""
        if self.closed or self._plan is None:
            return
        try:
            self._receive(data, addr)
        except RtpParseError:
            self.stats.malformed += 1

    def _receive(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > 12 and data[0] == 0x80:  # the usual packet: no padding, extension, CSRC
            pt = data[1] & 0x7F
            seq, timestamp, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            payload = data[12:]
        else:
            packet = RtpPacket.parse(data)
            pt, seq, timestamp = packet.payload_type, packet.sequence, packet.timestamp
            ssrc, payload = packet.ssrc, packet.payload
        assert self._plan is not None
        law = self._law if pt == self._pt else g711.BY_STATIC_PT.get(pt)
        event = law is None and pt in self._plan.dtmf_receive
        if law is None and not event and pt != _COMFORT_NOISE:
            self.stats.foreign += 1
            return
        gap = self._accept(addr, ssrc, seq)
        if gap is None:
            return
        if event:
            # Events are deduplicated by press, not by sequence number: a replayed or reordered
            # event packet is harmless, and its press may be one not seen yet.
            news = self._events.feed(ssrc, timestamp, TelephoneEvent.parse(payload))
            if self.inband is None:
                self._tones = None
            if news is not None:
                self._rtp_press = self._heard(news, "rtp", self._rtp_press)
        elif (
            law is not None
            and gap != DUPLICATE
            and (self._sinks or self._taps or self._groups or self._tones)
        ):
            self._audio(law.decode(payload), gap)

    def _accept(self, addr: tuple[str, int], ssrc: int, seq: int) -> int | None:
        source = self._inbound.source
        gap = self._inbound.accept(addr, ssrc, seq, self._frame)
        if gap is not None and addr != source and self.latch and addr != self._send_to:
            log.debug(
                "RTP %s: latching to %s (SDP said %s)", self.local, addr, self._inbound.announced
            )
            self._send_to = addr
        return gap

    def _audio(self, pcm: bytes, gap: int) -> None:
        if self._tones is not None:
            self._engine.tones.submit(self._tones, pcm, self._tone)
        if self._sinks or self._taps or self._groups:
            self._rx.put(pcm, gap)

    # -- the pacer's side ------------------------------------------------------------------

    def tick(self, frame: int) -> None:
        """Send this frame's packet and hand the party's frame to sinks (called by the pacer)."""
        self._frame = frame
        if self._keys.held:
            self._keys.expire(frame)
        taps = self._taps
        if self._sinks or taps:
            heard = self._hear()
        else:
            heard = b""
            if self._groups:
                self._unheard += 1
                if self._unheard >= self._group_due:
                    self._catch_up()
        law, pt = self._law, self._pt
        timestamp = (self._ts_base + frame * FRAME_SAMPLES) & 0xFFFFFFFF
        marker = self._marker
        if self._digit_sends:
            payload, pt, timestamp, marker = self._event_packet(timestamp)
        elif self.bridge_in is not None:
            payload = law.encode(self.bridge_in.popleft()) if self.bridge_in else law.silence
        elif self._playout is not None and (payload := self._playout_frame(law)):
            pass
        elif self._plays:
            payload = self._play_frame()
        else:
            payload = law.silence
        if taps:
            sent = law.decode(payload if pt == law.payload_type else law.silence)
            for write in taps:
                write(heard, sent)
        if not self._sending:
            return
        assert self._transport is not None
        self._transport.sendto(
            HEADER.pack(0x80, marker << 7 | pt, self._seq, timestamp, self._ssrc) + payload,
            self._send_to,
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self._marker = False
        self.stats.sent += 1

    def note_late(self) -> None:
        """Count a packet that left late (called by the pacer)."""
        self.stats.late += 1

    def fail(self) -> None:
        """Close after a bug in a tick (called by the pacer)."""
        self.close()

    def _playout_frame(self, law: g711.G711) -> bytes:
        assert self._playout is not None
        payload, marks = self._playout.take_payload(law)
        if marks:
            self._on_marks(marks)
        return payload or b""

    def _play_frame(self) -> bytes:
        plays = self._plays
        while plays and plays[0].done.done():  # cancelled while queued
            plays.popleft()
        if not plays:
            return self._law.silence
        item = plays[0]
        if item.law is not self._law:  # the codec changed (a re-INVITE) since it was queued
            item.law, item.chunks = self._law, g711.payloads(self._law, item.pcm)
        payload = item.chunks[item.index]
        item.index += 1
        if item.index >= len(item.chunks):
            plays.popleft()
            item.done.set_result(None)
        return payload

    def _event_packet(self, timestamp: int) -> tuple[bytes, int, int, bool]:
        item = self._digit_sends[0]
        first = item.index == 0
        if first:
            item.timestamp = timestamp  # every packet of one press carries its start time
        payload = bytes(item.events[item.index])
        item.index += 1
        if item.index >= len(item.events):
            self._digit_sends.popleft()
            _resolve(item.done)
        assert self._plan is not None and self._plan.dtmf_pt is not None
        return payload, self._plan.dtmf_pt, item.timestamp, first

    def _hear(self) -> bytes:
        frame = self._rx.take()
        if self._groups:
            self._feed_groups(frame, 1)
        if not self._sinks:
            return frame
        for token, sink in tuple(self._sinks.items()):
            try:
                sink(frame)
            except Exception:
                log.exception("an RTP listener failed; unsubscribing it")
                self._sinks.pop(token, None)
        return frame

    def _feed_groups(self, pcm: bytes, count: int) -> None:
        """Add the party's next ``count`` frames, up to this tick's, to every group; a group
        that is complete goes out."""
        groups, dropped = self._groups, False
        for token, group in tuple(groups.items()):
            if not group.aligned:
                group.align(self._frame, count)
            try:
                for chunk in group.cut.feed(pcm):  # served lazily: the owed frames, one group
                    group.sink(chunk)
            except Exception:
                log.exception("an RTP listener failed; unsubscribing it")
                groups.pop(token, None)
                dropped = True
        # Served every tick (beside a tap or sink), nothing is owed: only a drop changes that.
        if dropped or not (self._sinks or self._taps):
            self._listeners_changed()
