"""What arrives on a session's socket: which datagrams are the party's stream, and the jitter
buffer that turns their arrivals into one 20 ms frame per tick.

``InboundStream`` decides per packet (RFC 3550 A.1 in spirit). Usually only the host the
SDP announced is heard (``only_announced``): anyone else who learns or guesses the port must not
be played, recorded or taken for key presses. Only the host is compared, not the port: carrier
media gateways often send from a port other than the one their SDP names (asymmetric RTP), and
whoever can forge the peer's IP address can forge its port as well, so the port would only make
honest calls deaf. For a party behind NAT (a trunk with symmetric RTP) the first valid packet
after ``reset()`` fixes the source address instead (the caller may latch its sends to it); other
sources are foreign, except the host the SDP announced, which always wins: after a re-INVITE
moves the media, the old party may go on sending for a moment and be latched to first. Hosts
are compared as IP addresses, an IPv4-mapped ``::ffff:a.b.c.d`` (a dual-stack socket's view of
an IPv4 peer) as the IPv4 address it carries. A second SSRC from the party is foreign too
unless the current one has been silent for 200 ms (an SBC switched streams); the party moving
to another port of its host is not a new stream. Sequence numbers give loss, duplicates and
restarts.

``JitterBuffer`` holds decoded PCM. It starts playing out once 40 ms is queued, so packets a
little late or early against our tick still land in time; when it runs dry it pads with silence
and refills; past 200 ms queued it drops the oldest audio, because a listener wants the party
now, not a growing delay. Lost packets are replaced by silence so later audio stays on time.
A session whose listeners take the audio several frames at a time takes them from the buffer
only when a group is complete (``take_frames``); meanwhile the buffer may hold that many frames
more (``slack``) before it counts as too deep.
"""

from __future__ import annotations

from ringflow.media.g711 import FRAME_BYTES, SILENCE_PCM
from ringflow.media.stats import SessionStats
from ringflow.metrics import RTP_LOST
from ringflow.sip.sources import IpAddress, ip_of

PREFILL = 2 * FRAME_BYTES
MAX_BUFFER = 10 * FRAME_BYTES
MAX_DROPOUT, MAX_MISORDER = 3000, 100  # RFC 3550 A.1: a jump beyond either is a restart
MAX_FILL_LOSS = 5  # lost packets replaced by silence (a longer gap is a pause, not loss)
SSRC_SILENT_FRAMES = 10  # a new SSRC is taken once the current one is quiet this long
DUPLICATE = -1


def host_of(host: str) -> IpAddress | str:
    """``host`` as an IP address (IPv4 mapping and zone undone), or as given if it is none."""
    return ip_of(host) or host


class InboundStream:
    """Which received packets belong to the party's stream, and what was lost before them."""

    __slots__ = (
        "_announced_host",
        "_frame",
        "_seq",
        "_stats",
        "announced",
        "only_announced",
        "source",
        "ssrc",
    )

    def __init__(self, stats: SessionStats) -> None:
        self._stats = stats
        self.source: tuple[str, int] | None = None
        self.announced: tuple[str, int] | None = None
        self._announced_host: IpAddress | str | None = None
        self.only_announced = False
        self.ssrc: int | None = None
        self._seq: int | None = None
        self._frame = 0

    def reset(
        self, announced: tuple[str, int] | None = None, *, only_announced: bool = False
    ) -> None:
        """Forget the source and stream: the next valid packet starts a new one. Packets from
        ``announced``'s host (the SDP's address, any port) are taken over any other source; with
        ``only_announced``, they are the only ones taken."""
        self.source = self.ssrc = self._seq = None
        self.announced = announced
        self._announced_host = host_of(announced[0]) if announced is not None else None
        self.only_announced = only_announced and announced is not None

    def accept(self, addr: tuple[str, int], ssrc: int, seq: int, frame: int) -> int | None:
        """Packets lost just before this one (0 usually); DUPLICATE for a packet repeated or
        overtaken (stale audio, though a telephone event in it still counts); None to drop it."""
        if addr != self.source:
            # Rare (a new source, or the party's other port): the steady state skips all this.
            host = host_of(addr[0])
            if host != self._announced_host and (self.only_announced or self.source is not None):
                self._stats.foreign += 1
                return None
            if self.source is None or host_of(self.source[0]) != host:
                self.ssrc = None  # another party: its stream starts afresh
            self.source = addr
        if ssrc != self.ssrc:
            if self.ssrc is not None and frame - self._frame < SSRC_SILENT_FRAMES:
                self._stats.foreign += 1
                return None
            self.ssrc, self._seq = ssrc, None
        gap = 0
        if self._seq is not None:
            delta = (seq - self._seq - 1) & 0xFFFF
            if 0 < delta < MAX_DROPOUT:
                gap = delta
                self._stats.lost += delta
                RTP_LOST.inc(delta)  # a gap is rare: counted as it is found, not per packet
            elif delta >= 0x10000 - MAX_MISORDER:
                self._stats.duplicates += 1
                return DUPLICATE
            # else: a jump of thousands of packets is a restarted sender, not loss
        self._seq, self._frame = seq, frame
        self._stats.received += 1
        return gap


class JitterBuffer:
    """Decoded audio from arrival to play-out, one frame per tick."""

    __slots__ = ("_pcm", "_primed", "_stats", "slack")

    def __init__(self, stats: SessionStats) -> None:
        self._stats = stats
        self._pcm = bytearray()
        self._primed = False
        self.slack = 0  # bytes of audio owed to listeners that take it later, not yet taken

    def __len__(self) -> int:
        return len(self._pcm)

    def put(self, pcm: bytes, lost: int = 0) -> None:
        """Queue one packet's audio, after silence for ``lost`` packets missing before it."""
        buf = self._pcm
        if 0 < lost <= MAX_FILL_LOSS:
            buf += bytes(lost * len(pcm))
        buf += pcm
        if len(buf) > MAX_BUFFER + self.slack:
            del buf[: len(buf) - PREFILL - self.slack]
            self._stats.overflows += 1

    def take(self) -> bytes:
        """The next 20 ms frame to play out (silence while filling)."""
        buf = self._pcm
        if not self._primed:
            if len(buf) < PREFILL:
                return SILENCE_PCM
            self._primed = True
        if len(buf) >= FRAME_BYTES:
            frame = bytes(buf[:FRAME_BYTES])
            del buf[:FRAME_BYTES]
            return frame
        frame = bytes(buf).ljust(FRAME_BYTES, b"\0")
        buf.clear()
        self._primed = False
        self._stats.underruns += 1
        return frame

    def take_frames(self, count: int) -> bytes:
        """``count`` frames at once: what ``count`` calls of ``take`` would give now, joined."""
        buf = self._pcm
        size = count * FRAME_BYTES
        if self._primed and len(buf) >= size:
            frames = bytes(buf[:size])
            del buf[:size]
            return frames
        return b"".join([self.take() for _ in range(count)])

    def clear(self) -> None:
        """Drop everything queued (nobody listens any more)."""
        self._pcm.clear()
        self._primed = False
