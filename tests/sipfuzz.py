"""Hostile SIP and RTP datagrams, seeded so a failure reproduces, sent over real UDP.

For the fuzz tests and the soak benchmark::

    report = blast(("127.0.0.1", 5060), 20000, sip_datagram, sources=("127.0.0.1", "127.0.0.2"),
                   seed=1, templates=(bye_for_the_live_call,))
    report = blast(("127.0.0.1", 16384), 20000, rtp_datagram, sources=("127.0.0.2",), seed=2)

``sip_datagram`` mixes the golden messages of ``tests/fixtures/sip`` (and any ``templates``, such
as requests aimed at a live dialog) mutated byte by byte, plausible requests with random methods
and headers, random bytes, and now and then an oversized datagram. ``rtp_datagram`` mixes
well-formed RTP of every payload type we handle (and some we do not), RFC 4733 key presses,
headers with padding, CSRCs and extensions that lie about their lengths, and random bytes.
Requests name their sending socket in Via (with ``rport``), so answers come back to the sender
and never wander to another program on loopback. Every choice comes from one ``random.Random``
seeded by ``seed``.
"""

from __future__ import annotations

import dataclasses
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

GOLDEN = tuple(
    p.read_bytes() for p in sorted((Path(__file__).parent / "fixtures" / "sip").glob("*.sip"))
)
METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "INFO",
    "REGISTER",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "UPDATE",
    "PRACK",
    "MESSAGE",
    "FOO",
)
ODD = [c.encode() for c in ':;,<>"=\r\n @/?\\\x00 0²٣%[]']
_VIA = re.compile(rb"^(Via|v)[ \t]*:[^\r\n]*", re.IGNORECASE | re.MULTILINE)
MAX_DATAGRAM = 65507

Address = tuple[str, int]
Maker = Callable[[random.Random, Address, Address, Sequence[bytes]], bytes]


@dataclasses.dataclass
class Report:
    """What ``blast`` did: datagrams sent, answers each source got back, seconds taken."""

    sent: int = 0
    answers: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


def mutate(rng: random.Random, base: bytes, rounds: int | None = None) -> bytes:
    """``base`` with a few byte-level mutations: flips, cuts, insertions, odd characters."""
    data = bytearray(base)
    for _ in range(rounds or rng.randint(1, 4)):
        at = rng.randrange(max(len(data), 1))
        kind = rng.randrange(8)
        if kind == 0 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del data[at : at + rng.randint(1, 40)]
        elif kind == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 12))
        elif kind == 3:
            del data[at:]
        elif kind == 4 and data:
            data[at : at + 1] = rng.choice(ODD)
        elif kind == 5:
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines[i:i] = [lines[i]] * rng.randint(1, 30)  # repeated headers, many Vias
            data = bytearray(b"\r\n".join(lines))
        elif kind == 6 and (digits := [i for i, b in enumerate(data) if 48 <= b <= 57]):
            i = rng.choice(digits)  # a number that str.isdigit accepts and int() does not
            data[i : i + 1] = rng.choice(["²", "٣", "①", "99999999999999999999"]).encode()
        elif kind == 7:
            data[at:at] = b"\r\n" if rng.random() < 0.5 else b"\r\n\r\n"
    return bytes(data)


def with_via(message: bytes, via: Address, rng: random.Random) -> bytes:
    """``message`` with its top Via naming ``via`` (answers come back there)."""
    host, port = via
    branch = f"z9hG4bK{rng.getrandbits(64):016x}"
    value = f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport".encode()
    return _VIA.sub(lambda _: value, message, count=1)


def plausible_request(rng: random.Random, source: Address, target: Address) -> bytes:
    """A request with a random method and header values, well formed more often than not."""
    method = rng.choice(METHODS)
    user = rng.choice(["100", "+919876543210", "ringflow", "a" * rng.randint(1, 300), ""])
    uri = f"sip:{user}@{target[0]}:{target[1]}"
    tag, call_id = rng.getrandbits(32), f"{rng.getrandbits(64):x}"
    via = f"SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bK{rng.getrandbits(40):x};rport"
    headers = [
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <sip:fuzz@{source[0]}>;tag={tag:x}",
        f"To: <{uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {rng.choice([1, 2, 4294967295, 0, 99999999999])} {method}",
        f"Contact: <sip:fuzz@{source[0]}:{source[1]}>",
    ]
    body = b""
    if rng.random() < 0.4:
        sdp = (
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n"
            b"t=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\n"
        )
        body = rng.choice([sdp, b"Signal=5\r\nDuration=160", rng.randbytes(rng.randint(0, 300))])
        headers.append(f"Content-Type: {rng.choice(['application/sdp', 'application/dtmf-relay'])}")
    length = len(body) if rng.random() < 0.8 else rng.choice([0, 10**9, -1, len(body) + 50])
    headers += [f"X-Pad: {'x' * rng.randint(0, 2000)}"] * rng.randint(0, 3)
    headers.append(f"Content-Length: {length}")
    rest = headers[1:]
    rng.shuffle(rest)  # Via stays on top, so answers still find the sender
    headers = headers[:1] + rest
    start = f"{method} {uri} SIP/2.0"
    return ("\r\n".join([start, *headers]) + "\r\n\r\n").encode() + body


def probe(method: str, source: Address, target: Address) -> bytes:
    """A well-formed request outside any dialog, to see whether and how ``target`` answers."""
    host, port = source
    return (
        f"{method} sip:100@{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKprobe{method}{port};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag=p{port}\r\n"
        f"To: <sip:100@{target[0]}>\r\nCall-ID: probe-{method}-{host}-{port}\r\n"
        f"CSeq: 1 {method}\r\nContact: <sip:probe@{host}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sip_datagram(
    rng: random.Random, source: Address, target: Address, templates: Sequence[bytes] = ()
) -> bytes:
    """One hostile SIP datagram from ``source`` to ``target``."""
    roll = rng.random()
    if roll < 0.35:
        base = rng.choice(GOLDEN)
        via = source if not base.startswith(b"SIP/2.0") else target  # a response names us
        return mutate(rng, with_via(base, via, rng))
    if roll < 0.50 and templates:
        return mutate(rng, rng.choice(templates))
    if roll < 0.60 and templates:
        return rng.choice(templates)  # intact: the stranger knows the dialog's identifiers
    if roll < 0.80:
        request = plausible_request(rng, source, target)
        return mutate(rng, request) if rng.random() < 0.5 else request
    if roll < 0.99:
        return rng.randbytes(rng.randint(0, 1400))
    return rng.randbytes(rng.randint(4000, MAX_DATAGRAM))  # far past any message of ours


def rtp_datagram(
    rng: random.Random, source: Address, target: Address, templates: Sequence[bytes] = ()
) -> bytes:
    """One hostile RTP datagram."""
    roll = rng.random()
    pt = rng.choice([0, 8, 101, 96, 13, 18, 127, rng.randrange(128)])
    header = struct.pack(
        "!BBHII",
        0x80,
        pt | (rng.random() < 0.1) << 7,
        rng.getrandbits(16),
        rng.getrandbits(32),
        rng.getrandbits(32),
    )
    if roll < 0.40:
        return header + rng.randbytes(rng.choice([0, 1, 4, 80, 160, 161, 320, 1400]))
    if roll < 0.55:  # a key press, start to end
        event = struct.pack(
            "!BBH", rng.randrange(20), rng.choice([0x0A, 0x8A]), rng.getrandbits(16)
        )
        return (
            struct.pack(
                "!BBHII", 0x80, 101, rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32)
            )
            + event
        )
    if roll < 0.75:  # padding, CSRCs and extension bits whose lengths lie
        first = 0x80 | rng.getrandbits(6)
        return bytes([first]) + header[1:] + rng.randbytes(rng.randint(0, 80))
    if roll < 0.85:
        return header[: rng.randrange(12)]
    if templates and roll < 0.90:
        return mutate(rng, rng.choice(templates))
    return rng.randbytes(rng.randint(0, 400))


def blast(
    target: Address,
    count: int,
    make: Maker = sip_datagram,
    *,
    sources: Sequence[str] = ("127.0.0.1",),
    seed: int = 0,
    rate: float = 5000.0,
    templates: Sequence[bytes] = (),
    targets: Sequence[Address] = (),
) -> Report:
    """Send ``count`` datagrams from sockets on each of ``sources`` (blocking; run it in a
    thread from async code), paced at about ``rate`` per second so the receiver's socket buffer
    is not simply overrun; ``targets`` spreads them over more ports. Answers are counted."""
    rng = random.Random(seed)
    socks = []
    for host in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        sock.setblocking(False)
        socks.append(sock)
    report = Report(answers={host: 0 for host in sources})
    every = max(1, int(rate / 100))  # a pause each 10 ms worth of datagrams
    started = time.monotonic()
    try:
        for n in range(count):
            sock = rng.choice(socks)
            to = rng.choice(targets) if targets else target
            data = make(rng, sock.getsockname(), to, templates)[:MAX_DATAGRAM]
            try:
                sock.sendto(data, to)
                report.sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                pass  # a full buffer, or an ICMP error from an earlier datagram
            if n % every == every - 1:
                _count_answers(socks, report)
                pause = started + (n + 1) / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        _count_answers(socks, report)
    finally:
        for sock in socks:
            sock.close()
    report.seconds = time.monotonic() - started
    return report


def _count_answers(socks: list[socket.socket], report: Report) -> None:
    for sock in socks:
        host = sock.getsockname()[0]
        while True:
            try:
                sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, ConnectionRefusedError):
                break
            report.answers[host] += 1
