"""Whose RTP a session hears, over real UDP on loopback.

Without latching (the default), only the address the SDP announced is heard: a stranger who
finds the port, here sending from 127.0.0.2 (all of 127/8 is loopback on Linux), is neither
heard, recorded nor taken for key presses, and gets none of our media. With latching (a trunk
with ``symmetric_rtp: true``) a party behind NAT that sends from somewhere other than its SDP
is heard, and our RTP follows it there. Only hosts are compared, not ports: a carrier gateway
that sends from another port than its SDP names (asymmetric RTP) is heard without latching.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import pytest

from ringflow.media.dtmf import tone
from ringflow.media.engine import MediaEngine
from ringflow.media.g711 import FRAME_BYTES, PCMU
from ringflow.media.rtp import RtpPacket, TelephoneEvent
from tests.test_media_engine import chirp, plan, recorder, rms

STRANGER = "127.0.0.2"
BEHIND_NAT = "127.0.0.3"  # the public side of the party's NAT: another host


def udp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def audio_packets(pcm: bytes, ssrc: int, seq: int = 100) -> Iterator[bytes]:
    """``pcm`` as 20 ms PCMU packets."""
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        yield bytes(
            RtpPacket(
                0,
                (seq + i // FRAME_BYTES) & 0xFFFF,
                160 * i // FRAME_BYTES,
                ssrc,
                PCMU.encode(pcm[i : i + FRAME_BYTES]),
            )
        )


def event_packets(key: int, ssrc: int, seq: int = 5000, timestamp: int = 777) -> list[bytes]:
    """One RFC 4733 key press (payload type 101): three packets, the last marked end."""
    return [
        bytes(
            RtpPacket(
                101,
                seq + n,
                timestamp,
                ssrc,
                bytes(TelephoneEvent(key, end=n == 2, duration=160 * (n + 1))),
                marker=n == 0,
            )
        )
        for n in range(3)
    ]


async def paced(
    sock: socket.socket, packets: Iterator[bytes] | list[bytes], to: tuple[str, int]
) -> None:
    """Send at about the real rate (a burst would only overflow the receiver's buffer)."""
    for packet in packets:
        sock.sendto(packet, to)
        await asyncio.sleep(0.02)


def drain(sock: socket.socket) -> int:
    """Datagrams waiting on ``sock`` (read and dropped)."""
    count = 0
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            return count
        count += 1


@pytest.fixture
async def engine():
    low = random.randrange(20000, 50000, 2)
    media = MediaEngine("127.0.0.1", low, low + 100)
    yield media
    await media.close()


async def test_rtp_from_a_stranger_is_not_heard_recorded_or_taken_for_keys(engine) -> None:
    session = await engine.open_session()
    with udp() as peer, udp(STRANGER) as stranger:
        session.start(plan(peer.getsockname()))
        heard = recorder(session)
        # The stranger sends first and all along: speech, an in-band 5 and an RFC 4733 7.
        await asyncio.gather(
            paced(stranger, audio_packets(chirp(0.4) + tone("5", 0.2), ssrc=66), session.local),
            paced(stranger, event_packets(7, ssrc=66), session.local),
        )
        await asyncio.sleep(0.1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.next_digit(), 0.3)
        assert len(heard) > 10 * FRAME_BYTES and rms(heard) < 50  # silence, not the chirp
        assert session.stats.foreign >= 20 and session.stats.received == 0
        assert drain(stranger) == 0  # none of our media went its way
        assert drain(peer) > 0
        # The party the SDP named is heard at once, keys and all.
        await paced(peer, event_packets(3, ssrc=9), session.local)
        assert await asyncio.wait_for(session.next_digit(), 1) == "3"
        mark = len(heard)
        await paced(peer, audio_packets(chirp(0.4), ssrc=9, seq=6000), session.local)
        await asyncio.sleep(0.1)
        assert rms(heard[mark:]) > 1000


@pytest.mark.parametrize("latch", [True, False])
async def test_symmetric_rtp_latches_to_where_the_party_sends_from(engine, latch: bool) -> None:
    session = await engine.open_session(latch=latch)
    assert session.latch is latch
    with udp() as announced, udp(BEHIND_NAT) as behind_nat:
        # Behind NAT: the SDP names an address the party cannot be reached at.
        session.start(plan(announced.getsockname()))
        heard = recorder(session)
        await paced(behind_nat, audio_packets(chirp(0.4), ssrc=5), session.local)
        await asyncio.sleep(0.1)
        assert (rms(heard) > 1000) is latch
        # Our RTP follows the party to where it really is, only when latching.
        assert (drain(behind_nat) > 0) is latch


async def test_asymmetric_rtp_from_the_announced_host_is_heard_without_latching(engine) -> None:
    session = await engine.open_session()
    with udp() as announced, udp() as sender, udp(STRANGER) as stranger:
        # The SDP names one port; the gateway sends from another port of the same host.
        session.start(plan(announced.getsockname()))
        heard = recorder(session)
        await asyncio.gather(
            paced(sender, audio_packets(chirp(0.4), ssrc=5), session.local),
            paced(stranger, audio_packets(chirp(0.4), ssrc=6), session.local),
        )
        await asyncio.sleep(0.1)
        assert rms(heard) > 1000 and session.stats.received >= 15
        assert session.stats.foreign >= 15  # the other host's copy, every packet of it
        assert drain(sender) == 0 and drain(stranger) == 0  # ours still go where the SDP said
        assert drain(announced) > 0
