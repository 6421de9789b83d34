"""An RTP session's tap over real UDP: heard and sent frames in step, and a tap that says it does
not use what was sent (a stream of the caller's audio) gets the same heard frames without it."""

from __future__ import annotations

import asyncio
import random

import pytest

from ringflow.media.engine import MediaEngine
from tests.test_media_engine import dominant_hz, pair, sine


@pytest.fixture
async def engine():
    low = random.randrange(20000, 50000, 2)
    media = MediaEngine("127.0.0.1", low, low + 100)
    yield media
    await media.close()


class HeardOnly:
    wants_sent = False

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []

    def __call__(self, heard: bytes, sent: bytes) -> None:
        self.frames.append((heard, sent))


async def test_a_tap_without_sent_hears_the_same_frames(engine):
    a, b = await pair(engine)
    full: list[tuple[bytes, bytes]] = []
    heard_only = HeardOnly()
    undo_full = b.tap(lambda heard, sent: full.append((heard, sent)))
    undo_heard = b.tap(heard_only)
    await asyncio.wait_for(asyncio.gather(a.play(sine(600, 0.5)), b.play(sine(1400, 0.5))), 2)
    await asyncio.sleep(0.1)
    undo_full()
    undo_heard()
    assert len(full) == len(heard_only.frames) >= 25
    assert heard_only.frames == full  # another tap wants what was sent: both get it
    assert abs(dominant_hz(b"".join(h for h, _ in full)) - 600) < 20
    assert abs(dominant_hz(b"".join(s for _, s in full)) - 1400) < 20
    count = len(full)
    await asyncio.sleep(0.1)
    assert len(full) == count and len(heard_only.frames) == count  # undone: quiet
    assert len(b._rx) == 0  # and nothing is kept for a listener that is gone


async def test_a_heard_only_tap_decodes_nothing_sent_until_a_full_tap_joins(engine):
    a, b = await pair(engine)
    heard_only = HeardOnly()
    undo_heard = b.tap(heard_only)
    assert b._taps_sent is False
    await asyncio.wait_for(asyncio.gather(a.play(sine(600, 0.3)), b.play(sine(1400, 0.3))), 1)
    assert len(heard_only.frames) >= 10
    assert all(sent == b"" and len(heard) == 320 for heard, sent in heard_only.frames)
    assert abs(dominant_hz(b"".join(h for h, _ in heard_only.frames)) - 600) < 20
    full: list[tuple[bytes, bytes]] = []
    undo_full = b.tap(lambda heard, sent: full.append((heard, sent)))
    assert b._taps_sent is True
    await asyncio.wait_for(b.play(sine(1400, 0.2)), 1)
    undo_full()
    assert b._taps_sent is False  # the one that wanted it left
    assert full and all(len(sent) == 320 for _, sent in full)
    undo_heard()
