"""The media engine: one per process, owning the RTP port range and the shared pacer.

::

    engine = MediaEngine("192.0.2.10", 16384, 32766)
    session = await engine.open_session()     # session.local goes into our SDP offer
    session.start(plan)                        # after offer/answer (again on a re-INVITE)
    await session.play(prompt.pcm)             # paced in real time; cancel to stop
    key = await asyncio.wait_for(session.next_digit(), 5)
    undo = session.bridge(other, tap)          # both ways, PCMU<->PCMA as needed
    session.close()
    await engine.close()

Each session binds its own plain (unconnected) UDP socket on an even port, as RFC 3550 asks of
RTP; we send no RTCP, so the odd port above is left alone. Unconnected, because a connected
socket would make the kernel drop a NAT'd peer's packets from an address other than its SDP's,
which is exactly what latching is for (a session opened with ``latch``, for a trunk with
symmetric RTP), and a re-INVITE may move the remote. Without latching a session hears only the
address its SDP answer announced (see ``session.py``). Ports are handed out
round-robin through the range so a port just closed is not reused at once, where late packets
of the old call would land in a new one.

Everything runs on one event loop, stdlib asyncio or uvloop alike, and nothing here waits on
anything but sockets and the clock. A process uses one core; more legs want more processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket

from ringflow.errors import MediaError
from ringflow.media.dtmf import ToneBatch
from ringflow.media.pacer import Pacer
from ringflow.media.session import RtpSession, SessionClosed
from ringflow.media.stats import EngineStats, SessionStats

DSCP_EF = 46 << 2  # "expedited forwarding", the usual marking for voice packets


class MediaEngine:
    """One per process: the shared paced sender and the RTP port allocation."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port_min: int = 16384,
        port_max: int = 32766,
        *,
        latch: bool = False,
    ) -> None:
        if not 0 < port_min <= port_max < 65536:
            raise MediaError(f"bad RTP port range {port_min}-{port_max}")
        self.host = host
        self.port_min = port_min + port_min % 2
        self.port_max = port_max
        if self.port_min > self.port_max:
            raise MediaError(f"RTP port range {port_min}-{port_max} holds no even port")
        self.latch = latch  # sessions' default: hear and answer the first source, not the SDP's
        self.tones = ToneBatch()  # in-band DTMF of every session, classified once per tick
        self.pacer = Pacer(every_frame=self.tones.flush)
        self._sessions: set[RtpSession] = set()
        self._totals = SessionStats()  # of sessions already closed
        self._next = self.port_min
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET

    async def open_session(self, *, latch: bool | None = None) -> RtpSession:
        """A new session bound to a free even port of the range on ``host``; ``latch`` for a
        party behind NAT (symmetric RTP), else the engine's default."""
        sock, port = self._bind()
        session = RtpSession(self, (self.host, port), latch=self.latch if latch is None else latch)
        try:
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: session, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._sessions.add(session)
        return session

    def _bind(self) -> tuple[socket.socket, int]:
        span = (self.port_max - self.port_min) // 2 + 1
        for _ in range(span):
            port = self._next
            self._next = port + 2 if port + 2 <= self.port_max else self.port_min
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, port))
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise MediaError(f"cannot bind RTP to {self.host}:{port}: {exc}") from exc
            sock.setblocking(False)
            if self._family == socket.AF_INET:
                # Marking is a hint to routers; a host that refuses it still carries the call.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_EF)
            return sock, port
        raise MediaError(f"no free RTP port in {self.port_min}-{self.port_max} on {self.host}")

    def forget(self, session: RtpSession) -> None:
        """A session closed: stop ticking it and keep its counts (called by the session)."""
        self.pacer.remove(session)
        if session in self._sessions:
            self._sessions.discard(session)
            self._totals.add(session.stats)

    async def close(self) -> None:
        """Close every session and stop the pacer."""
        for session in list(self._sessions):
            session.close()
        self.pacer.stop()
        await asyncio.sleep(0)  # let the transports run their close callbacks (ports freed)

    @property
    def sessions(self) -> int:
        """Sessions open now."""
        return len(self._sessions)

    @property
    def stats(self) -> EngineStats:
        """Totals over every session opened since the last reset, and send lateness."""
        totals = SessionStats()
        totals.add(self._totals)
        for session in self._sessions:
            totals.add(session.stats)
        lateness = self.pacer.lateness
        return EngineStats(
            len(self._sessions),
            totals,
            lateness.percentile(0.5),
            lateness.percentile(0.99),
            self.pacer.ticks,
            self.pacer.stalls,
        )

    def reset_stats(self) -> None:
        """Start counting afresh (a benchmark's warm-up is over)."""
        self._totals = SessionStats()
        for session in self._sessions:
            session.stats.clear()
        self.pacer.lateness.clear()
        self.pacer.ticks = self.pacer.stalls = 0


__all__ = ["MediaEngine", "RtpSession", "SessionClosed"]
