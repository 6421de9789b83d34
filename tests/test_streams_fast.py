"""The stream's fast paths give exactly what the general ones do: the playout's one-slice take,
the written-out media message, and messages handled where the socket reads them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.protocol import State

from ringflow.media import g711
from ringflow.media.playout import FRAME_BYTES, Playout
from ringflow.streams.client import MAX_MESSAGE, BotConnection
from ringflow.streams.protocol import StreamInfo, StreamProtocol


@contextlib.asynccontextmanager
async def connected_to(
    bot: Callable[[ServerConnection], Awaitable[None]],
    kind: type[BotConnection] = BotConnection,
    **options: Any,
) -> AsyncIterator[BotConnection]:
    """A ``kind`` of connection to a websockets server on loopback that runs ``bot``."""
    async with serve(bot, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/", create_connection=kind, **options
        ) as socket:
            assert isinstance(socket, kind)
            yield socket


class InFull(Playout):
    """The playout buffer with its fast path off: every take goes the general way."""

    def take(self) -> tuple[bytes | None, list[str]]:
        return self._take_in_full()


def playout_steps(seed: int, count: int = 600) -> list[tuple[str, Any]]:
    """A random run of a playout buffer's life: pushes of every size (whole frames, pieces
    across frames, odd short ones), marks, clears and takes."""
    rng = random.Random(seed)
    steps: list[tuple[str, Any]] = []
    for step in range(count):
        roll = rng.random()
        if roll < 0.25:
            size = rng.choice([2, 160, FRAME_BYTES, 1000, 1600, 3200, rng.randrange(2, 4000, 2)])
            steps.append(("push", bytes(rng.randrange(256) for _ in range(size))))
        elif roll < 0.30:
            steps.append(("mark", f"m{step}"))
        elif roll < 0.32:
            steps.append(("clear", None))
        else:
            steps.append(("take", step))
    return steps


Taken = tuple[bytes | None, list[str]]


def run_beside(
    steps: list[tuple[str, Any]],
    fast: Playout,
    full: Playout,
    take: Callable[[Playout, Playout, int], tuple[Taken, Taken]],
) -> int:
    """Run ``steps`` on both buffers, each take by ``take(fast, full, step)`` (what ``fast``
    gave, what it should have); how many frames were taken."""
    taken = 0
    for kind, value in steps:
        if kind == "push":
            fast.push(value)
            full.push(value)
        elif kind == "mark":
            fast.mark(value)
            full.mark(value)
        elif kind == "clear":
            assert fast.clear() == full.clear()
        else:
            got, expected = take(fast, full, value)
            assert got == expected
            taken += got[0] is not None
        assert len(fast) == len(full) and fast.seconds == full.seconds
    assert fast.stats == full.stats
    return taken


@pytest.mark.parametrize("seed", range(20))
def test_the_fast_take_matches_the_general_one(seed):
    clock = [0.0]

    def take(fast: Playout, full: Playout, step: int) -> tuple[Taken, Taken]:
        clock[0] += 0.02
        return fast.take(), full.take()

    fast = Playout(now=lambda: clock[0], keep_latencies=1000)
    full = InFull(now=lambda: clock[0], keep_latencies=1000)
    assert run_beside(playout_steps(seed), fast, full, take) > 100  # taking was exercised


@pytest.mark.parametrize("seed", range(10))
def test_a_payload_taken_is_the_frame_taken_encoded(seed):
    # Frames cut from a piece's one encoding equal each frame encoded on its own, through
    # marks, clears, short pieces, frames across pieces and a change of law halfway.
    def take(fast: Playout, full: Playout, step: int) -> tuple[Taken, Taken]:
        law = g711.PCMU if step < 300 else g711.PCMA
        frame, marks = full.take()
        return fast.take_payload(law), (None if frame is None else law.encode(frame), marks)

    assert run_beside(playout_steps(seed), Playout(), InFull(), take) > 100


def test_a_piece_is_encoded_once_for_all_its_frames():
    encoded: list[int] = []
    law = dataclasses.replace(
        g711.PCMU, encode=lambda pcm: encoded.append(len(pcm)) or g711.PCMU.encode(pcm)
    )
    playout = Playout()
    playout.push(bytes(range(256)) * 10)  # 2560 bytes: 8 frames in one piece
    payloads = [playout.take_payload(law)[0] for _ in range(8)]
    assert encoded == [2560]
    assert b"".join(p or b"" for p in payloads) == g711.PCMU.encode(bytes(range(256)) * 10)


def test_the_fast_take_is_the_one_taken_for_plain_audio():
    playout = Playout()
    playout.push(bytes(range(256)) * 10)  # 2560 bytes: 8 frames in one piece
    calls = []
    playout._take_in_full = lambda: calls.append(1) or (None, [])  # type: ignore[method-assign]
    frames = [playout.take()[0] for _ in range(8)]
    assert calls == []
    assert b"".join(f or b"" for f in frames) == bytes(range(256)) * 10


@pytest.mark.parametrize("sid", ["MZ0123abcd", 'MZ"odd\\sid\u00e9'])
@pytest.mark.parametrize("track", [None, "inbound", "outbound"])
def test_a_media_message_is_what_json_dumps_writes(sid, track):
    info = StreamInfo(sid, "CA1", "AC1", "1", "2", {}, 16000)
    protocol = StreamProtocol(info)
    protocol.start()
    pcm = bytes(range(256)) * 12 + b"\1\2"
    text = protocol.media(pcm, track)
    media = {"chunk": "1", "timestamp": "96", "payload": base64.b64encode(pcm).decode()}
    if track is not None:
        media["track"] = track
    expected = {"event": "media", "sequence_number": "2", "stream_sid": sid, "media": media}
    assert text == json.dumps(expected, separators=(",", ":")).encode()


async def test_whole_text_messages_are_handed_over_and_the_rest_keep_their_order():
    go = asyncio.Event()

    async def bot(ws: ServerConnection) -> None:
        await ws.send('{"n":0}')  # before the hand-over: read with recv()
        await ws.recv()
        await ws.send('{"n":1}')
        await ws.send('{"n":2}')
        await ws.send(b"\x00binary")  # queued for recv(), and what follows behind it
        await ws.send('{"n":3}')
        await ws.send(["{", '"n":4}'])  # fragmented
        await go.wait()
        await ws.send('{"n":5}')  # the queue was read: handed over again
        await ws.wait_closed()

    handed: list[str] = []
    async with connected_to(bot) as socket:
        while not socket._queued:  # the first message has been read off the wire
            await asyncio.sleep(0.01)
        socket.hand_over(handed.append)
        await socket.send("ready")
        received = [await asyncio.wait_for(socket.recv(), 5) for _ in range(4)]
        assert handed == ['{"n":1}', '{"n":2}']
        go.set()
        for _ in range(500):
            if len(handed) == 3:
                break
            await asyncio.sleep(0.01)
        socket.hand_over(None)
    assert received == ['{"n":0}', b"\x00binary", '{"n":3}', '{"n":4}']
    assert handed == ['{"n":1}', '{"n":2}', '{"n":5}']


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_chunks_are_converted_whole_as_if_frame_by_frame(rate):
    import numpy as np

    from ringflow.media.rates import RateConverter
    from ringflow.streams.audio import Chunker

    rng = np.random.default_rng(rate)
    frames = [rng.integers(-20000, 20000, 160).astype("<i2").tobytes() for _ in range(23)]
    chunker = Chunker(rate)
    per_frame = RateConverter(8000, rate)
    size = rate // 10 * 2
    expected = bytearray()
    for i, frame in enumerate(frames):
        expected += per_frame(frame)
        chunks = chunker.feed(frame)
        # A chunk comes out on the frame that completes it, never earlier or later.
        assert len(chunks) == (1 if i % 5 == 4 else 0)
        for chunk in chunks:
            assert len(chunk) == size and chunk == bytes(expected[:size])
            del expected[:size]


async def test_messages_written_straight_to_the_socket_arrive_whole_and_in_order():
    got: list[str] = []
    done = asyncio.Event()

    async def bot(ws: ServerConnection) -> None:
        async for message in ws:
            got.append(message)  # a frame masked or framed wrongly would close the connection
            if message == "last":
                done.set()

    texts = ["a", "é" * 70, "x" * 200, "y" * 70000] + [f"m{i}" for i in range(300)] + ["last"]
    async with connected_to(bot) as socket:
        for text in texts[:4]:  # each size of WebSocket length field
            assert socket.write_text(text.encode(), 1 << 20)
            await asyncio.sleep(0)
        assert not socket.write_text(b"held back", 0)  # the backlog limit is respected
        await socket.send("via send")
        for text in texts[4:]:  # past the first batch of masking keys
            assert socket.write_text(text.encode(), 1 << 20)
        await asyncio.wait_for(done.wait(), 5)
        socket.transport.close()  # the socket is going before websockets knows it
        assert not socket.write_text(b"too late", 1 << 20)
        await socket.close()
        assert not socket.write_text(b"too late", 1 << 20)
    assert got == texts[:4] + ["via send"] + texts[4:]


def test_empty_takes_count_only_after_the_first_frame():
    playout = Playout()
    assert playout.take() == (None, [])  # nothing played yet: not a gap
    playout.push(bytes(FRAME_BYTES * 2))
    assert [playout.take()[0] is not None for _ in range(4)] == [True, True, False, False]
    assert playout.stats.empty_takes == 2
    playout.push(b"\1\0" * 10)  # a short piece is held one tick (silence goes out), then padded
    assert playout.take()[0] is None and playout.take()[0] is not None
    assert playout.stats.empty_takes == 3


async def test_frames_are_cut_here_once_messages_are_handed_over():
    # websockets' parser must be found waiting for a frame, or every frame would still go
    # through it (correct, but slower): a websockets upgrade that changes it fails here.
    async def bot(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send('{"n":1}')
        await ws.wait_closed()

    handed: list[str] = []
    async with connected_to(bot) as socket:
        socket.hand_over(handed.append)
        assert socket._cutting
        await socket.send("ready")
        for _ in range(500):
            if handed:
                break
            await asyncio.sleep(0.01)
    assert handed == ['{"n":1}']


def _server_frame(first: int, payload: bytes) -> bytes:
    """A frame as a server sends it (unmasked)."""
    size = len(payload)
    if size < 126:
        return bytes([first, size]) + payload
    if size < 65536:
        return bytes([first, 126]) + size.to_bytes(2, "big") + payload
    return bytes([first, 127]) + size.to_bytes(8, "big") + payload


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 100, 1 << 20])
async def test_frames_cut_from_any_reads_come_out_whole_and_in_order(piece):
    # The bytes a bot's frames arrive as, split into reads of every size: whole text messages
    # are handed over, a ping is answered by websockets, a binary message and what follows it
    # queue for recv until it is read, and the cutting carries on across all of it.
    pongs: list[bytes] = []  # what the client wrote

    async def bot(ws: ServerConnection) -> None:
        await ws.wait_closed()

    stream = b"".join(
        [
            _server_frame(0x81, b'{"n":1}'),
            _server_frame(0x81, b"x" * 200),
            _server_frame(0x89, b"ping!"),
            _server_frame(0x81, "é".encode() * 40000),
            _server_frame(0x82, b"\x00binary"),
            _server_frame(0x81, b'{"n":2}'),
        ]
    )
    handed: list[str] = []
    async with connected_to(bot, max_size=1 << 20) as socket:
        socket.hand_over(handed.append)
        written = socket.transport.write
        socket.transport.write = lambda data: (pongs.append(data), written(data))  # type: ignore[method-assign]
        for at in range(0, len(stream), piece):
            socket.data_received(stream[at : at + piece])
        assert socket._cutting
        received = [await asyncio.wait_for(socket.recv(), 5) for _ in range(2)]
        socket.data_received(_server_frame(0x81, b'{"n":3}'))
    assert handed == ['{"n":1}', "x" * 200, "é" * 40000, '{"n":3}']
    assert received == [b"\x00binary", '{"n":2}']
    assert [data[0] for data in pongs if data[0] == 0x8A] == [0x8A]  # the ping was answered


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # A masked frame from a server breaks the protocol.
        (bytes([0x81, 0x80 | 2]) + b"\0\0\0\0" + b"hi", 1002),
        # A frame over the size limit is refused on its header, before its payload is kept.
        (bytes([0x81, 127]) + (MAX_MESSAGE + 1).to_bytes(8, "big") + b"x" * 100, 1009),
    ],
    ids=["masked", "too-big"],
)
async def test_an_unusual_frame_stops_the_cutting_and_websockets_judges_it(frame, code):
    # websockets closes the connection for it as it did before frames were cut here; the
    # message before it was handed over.
    async def bot(ws: ServerConnection) -> None:
        await ws.wait_closed()

    handed: list[str] = []
    async with connected_to(bot, max_size=MAX_MESSAGE) as socket:
        socket.hand_over(handed.append)
        socket.data_received(_server_frame(0x81, b"first") + frame)
        assert not socket._cutting and not socket._partial
        await asyncio.wait_for(socket.wait_closed(), 5)
        assert socket.protocol.close_sent is not None
        assert socket.protocol.close_sent.code == code
    assert handed == ["first"]


class Parsed(BotConnection):
    """The connection with frames never cut: websockets parses every byte, as before."""

    def _at_frame_start(self) -> bool:
        return False


def _frames() -> st.SearchStrategy[bytes]:
    """One frame (or a fragmented message) a bot might send, most of them usual."""
    text = st.text(max_size=300).map(lambda t: _server_frame(0x81, t.encode()))
    long = st.integers(126, 70_000).map(lambda n: _server_frame(0x81, b"x" * n))
    binary = st.binary(max_size=50).map(lambda b: _server_frame(0x82, b))
    ping = st.binary(max_size=20).map(lambda b: _server_frame(0x89, b))
    pong = st.binary(max_size=20).map(lambda b: _server_frame(0x8A, b))
    fragmented = st.tuples(st.text(max_size=20), st.text(max_size=20)).map(
        lambda p: _server_frame(0x01, p[0].encode()) + _server_frame(0x80, p[1].encode())
    )
    not_utf8 = st.just(_server_frame(0x81, b"\xff\xfe"))
    long_not_utf8 = st.just(_server_frame(0x81, b"x" * 200 + b"\xff"))
    return st.one_of(
        text, text, text, long, binary, ping, pong, fragmented, not_utf8, long_not_utf8
    )


_ENDINGS = [
    b"",  # nothing more
    _server_frame(0x88, (1000).to_bytes(2, "big") + b"bye"),  # the bot closes
    bytes([0x81, 0x80 | 2]) + b"\0\0\0\0hi",  # masked: a protocol error
    bytes([0xC1, 2]) + b"hi",  # a reserved bit: a protocol error
    bytes([0x81, 127]) + (MAX_MESSAGE + 1).to_bytes(8, "big"),  # too big
]


async def _outcome(kind: type[BotConnection], data: bytes, cuts: list[int]) -> tuple:
    """What a connection of ``kind`` makes of ``data`` read in pieces cut at ``cuts``: the
    messages handed over, those left for recv, the close code it sent."""

    async def bot(ws: ServerConnection) -> None:
        await ws.wait_closed()

    handed: list[str] = []
    received: list[str | bytes] = []
    async with connected_to(bot, kind, max_size=MAX_MESSAGE) as socket:
        socket.hand_over(handed.append)
        edges = [0, *sorted(set(cuts)), len(data)]
        for start, end in itertools.pairwise(edges):
            if start < end and socket.protocol.state is State.OPEN:
                socket.data_received(data[start:end])
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            while True:
                received.append(await asyncio.wait_for(socket.recv(), 0.05))
        sent = socket.protocol.close_sent
    return handed, received, None if sent is None else sent.code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(_frames(), max_size=8),
    ending=st.sampled_from(_ENDINGS),
    after=st.lists(_frames(), max_size=2),
    cuts=st.lists(st.integers(0, 200_000), max_size=6),
    one_a_read=st.booleans(),
)
# A message right behind the bot's close, or behind a frame that breaks the protocol, in the
# same read: never handed over.
@example(
    frames=[], ending=_ENDINGS[1], after=[_server_frame(0x81, b"late")], cuts=[], one_a_read=False
)
@example(
    frames=[], ending=_ENDINGS[2], after=[_server_frame(0x81, b"late")], cuts=[], one_a_read=False
)
# One message a read, as usual, behind a binary message waiting for recv, and one not UTF-8.
@example(
    frames=[
        _server_frame(0x81, b"x" * 200),
        _server_frame(0x82, b"\x00"),
        _server_frame(0x81, b"y" * 200),
        _server_frame(0x81, b"z" * 200 + b"\xff"),
    ],
    ending=b"",
    after=[],
    cuts=[],
    one_a_read=True,
)
def test_cutting_frames_changes_nothing_a_bot_can_see(frames, ending, after, cuts, one_a_read):
    # Whatever a bot sends, however the reads split it (at random, or one frame a read as a
    # bot's messages usually arrive): the same messages are handed over, the same are left for
    # recv, and the connection closes with the same code as when websockets parses every byte
    # itself.
    data = b"".join(frames) + ending + b"".join(after)  # after a close or an error: ignored
    if one_a_read:
        cuts = list(itertools.accumulate(len(frame) for frame in [*frames, ending, *after]))
    cuts = [cut % (len(data) + 1) for cut in cuts]
    cut = asyncio.run(_outcome(BotConnection, data, cuts))
    parsed = asyncio.run(_outcome(Parsed, data, cuts))
    assert cut == parsed
