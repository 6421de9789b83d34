"""A running server with a live SIP call, under tens of thousands of hostile datagrams.

``ringflow serve`` (its own process, so its memory can be read from /proc) places a call to SIPp
through its trunk on 127.0.0.1; the call waits for a key with ``TimeLimit`` set. While it is up,
``tests/sipfuzz.py`` sends mutated and random SIP datagrams to the SIP port, from the trunk's
own address and from strangers on 127.0.0.2 and 127.0.0.3 (some are the live dialog's own BYE,
INFO, re-INVITE and CANCEL, sent by a stranger), and RTP garbage to the call's RTP port from the
strangers. Not from the trunk's host: RTP from any port of the callee's host is the callee's
(asymmetric RTP), so a valid key press in its garbage would rightly be taken.
Seeded: a failure reproduces with the same ``RINGFLOW_FUZZ_SEED``.

Afterwards the server still answers the trunk (OPTIONS, and a 480 retransmitted by its timers)
and its health check; the call ends by its time limit, on time (no stranger's BYE ended it and
no stranger's key took the gather's other branch), SIPp got our BYE; RSS grew less than 50 MB.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import uuid
from pathlib import Path

import httpx
import pytest

from ringflow.sip.headers import Headers
from ringflow.sip.message import Request, Response, parse_message
from ringflow.sip.uri import SipUri
from tests import sipfuzz
from tests.processes import account_with_app, server_env
from tests.sipp import free_media_port, free_udp_port, needs_sipp, sipp
from tests.test_restart_e2e import EXOPHONE, Client, eventually, server
from tests.test_sip_transport import collect

pytestmark = [pytest.mark.e2e, needs_sipp, pytest.mark.timeout(120)]

SEED = int(os.environ.get("RINGFLOW_FUZZ_SEED", "20261126"))
SIP_DATAGRAMS = 20000
RTP_DATAGRAMS = 20000
# Seconds the call lasts from its answer: the fuzz takes about 6 s, and a loaded 2-core CI
# machine may take three times that; the gather's 60 s input timeout is far beyond either end.
TIME_LIMIT = 24
FUZZ_WITHIN = TIME_LIMIT - 4  # the fuzz must be over while the call is surely still up
LATE = 8  # seconds the end may trail the time limit (a loaded machine), still far below 60
STRANGERS = ("127.0.0.2", "127.0.0.3")
RSS_GROWTH = 50 * 1024 * 1024

WAIT_FOR_A_KEY = {
    "name": "wait",
    "start": "ask",
    "nodes": {
        "ask": {
            "applet": "gather",
            "text": "Press a key",
            "input_timeout": 60,
            "repeats": 0,
            "max_digits": 1,
            "on_input": "pressed",
            "on_no_input": "bye",
        },
        "pressed": {"applet": "hangup"},
        "bye": {"applet": "hangup"},
    },
}


def rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def dialog_of(workdir: Path) -> tuple[Request, Response]:
    """Our INVITE and SIPp's 200 for it, from SIPp's message trace."""
    log = next(workdir.glob("*_messages.log")).read_bytes()
    messages = []
    for chunk in re.split(rb"\r?\n?-{5,}[^\n]*\n", log):
        start = re.search(rb"^(INVITE |SIP/2\.0 200)", chunk, re.MULTILINE)
        if start:
            text = chunk[start.start() :].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            head, _, body = text.partition(b"\r\n\r\n")
            length = re.search(rb"Content-Length:\s*(\d+)", head, re.IGNORECASE)
            size = int(length.group(1)) if length else 0
            messages.append(parse_message(head + b"\r\n\r\n" + body[:size]))
    invite = next(m for m in messages if isinstance(m, Request) and m.method == "INVITE")
    ok = next(m for m in messages if isinstance(m, Response) and m.cseq.method == "INVITE")
    return invite, ok


def spoofed(invite: Request, ok: Response, via: tuple[str, int]) -> list[bytes]:
    """The callee's in-dialog requests (and a CANCEL), as a stranger who learnt the dialog."""
    sdp = (
        b"v=0\r\no=x 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    out = []
    for n, (method, body, ctype) in enumerate(
        [
            ("BYE", b"", None),
            ("INFO", b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"),
            ("INVITE", sdp, "application/sdp"),
            ("CANCEL", b"", None),
        ]
    ):
        h = Headers(
            [
                ("Via", f"SIP/2.0/UDP {via[0]}:{via[1]};branch=z9hG4bKspoof{n};rport"),
                ("Max-Forwards", "70"),
                ("From", ok.headers.get("To") or ""),
                ("To", invite.headers.get("From") or ""),
                ("Call-ID", invite.call_id),
                ("CSeq", f"{100 + n} {method}"),
                ("Contact", f"<sip:x@{via[0]}:{via[1]}>"),
            ]
        )
        if ctype:
            h.add("Content-Type", ctype)
        uri = invite.contacts[0].uri if invite.contacts else SipUri.parse("sip:127.0.0.1")
        out.append(bytes(Request(headers=h, body=body, method=method, uri=uri)))
    return out


async def answers_from(sip: tuple[str, int], method: str, seconds: float) -> list[Response]:
    """What the trunk's address hears back for a ``method`` request within ``seconds``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.sendto(sipfuzz.probe(method, sock.getsockname(), sip), sip)
        got = await collect(sock, seconds)
    return [m for m in map(parse_message, got) if isinstance(m, Response)]


async def test_a_live_call_survives_tens_of_thousands_of_hostile_datagrams(
    tmp_path: Path, sqlite_template: Path
) -> None:
    db = tmp_path / "ringflow.db"
    db.write_bytes(sqlite_template.read_bytes())
    sip_port, rtp_port = free_udp_port(), free_media_port()
    async with sipp(tmp_path, "callee_answer.xml", "-trace_msg") as phone:
        trunks = tmp_path / "trunks.yaml"
        trunks.write_text(f"trunks:\n  - name: sipp\n    host: 127.0.0.1\n    port: {phone.port}\n")
        env = server_env(
            f"sqlite+aiosqlite:///{db}",
            f"fuzz-{uuid.uuid4().hex[:8]}",
            RINGFLOW_CARRIER="sip",
            RINGFLOW_SIP_TRUNKS=str(trunks),
            RINGFLOW_SIP_HOST="127.0.0.1",
            RINGFLOW_SIP_PORT=str(sip_port),
            RINGFLOW_RTP_PORT_MIN=str(rtp_port),
            RINGFLOW_RTP_PORT_MAX=str(rtp_port + 1),
            # Polled every 50 ms until the time limit: not a client to throttle.
            RINGFLOW_RATE_LIMIT_PER_MINUTE="100000",
        )
        creds, app_id = await account_with_app(env, tmp_path, WAIT_FOR_A_KEY, EXOPHONE)
        sip = ("127.0.0.1", sip_port)
        async with (
            server(env, tmp_path / "server.log") as srv,
            httpx.AsyncClient(timeout=10) as http,
        ):
            await srv.start()
            assert srv.proc is not None
            api = Client(http, srv, creds)
            sid = (
                await api.connect(
                    From=phone.uri,
                    TimeLimit=str(TIME_LIMIT),
                    Url=f"http://my.exotel.com/exoml/start/{app_id}",
                )
            )["Sid"]

            async def talking() -> bool:
                return (await api.details(sid))["Status"] == "in-progress"

            await eventually(talking, "SIPp to answer", srv)
            answered = asyncio.get_running_loop().time()
            invite, ok = dialog_of(tmp_path)
            before = rss(srv.proc.pid)

            # The trunk's own address sends garbage too, but never the dialog's requests: those
            # it may send (it is the call's peer), and would rightly end the call.
            trunk_report, stranger_report, rtp_report = await asyncio.gather(
                asyncio.to_thread(
                    sipfuzz.blast,
                    sip,
                    SIP_DATAGRAMS // 2,
                    sipfuzz.sip_datagram,
                    sources=("127.0.0.1",),
                    seed=SEED,
                    rate=2000,
                ),
                asyncio.to_thread(
                    sipfuzz.blast,
                    sip,
                    SIP_DATAGRAMS // 2,
                    sipfuzz.sip_datagram,
                    sources=STRANGERS,
                    seed=SEED + 1,
                    rate=2000,
                    templates=spoofed(invite, ok, (STRANGERS[0], 5060)),
                ),
                asyncio.to_thread(
                    sipfuzz.blast,
                    ("127.0.0.1", rtp_port),
                    RTP_DATAGRAMS,
                    sipfuzz.rtp_datagram,
                    sources=STRANGERS,
                    seed=SEED + 2,
                    rate=4000,
                ),
            )
            sent = trunk_report.sent + stranger_report.sent + rtp_report.sent
            assert sent > 0.95 * (SIP_DATAGRAMS + RTP_DATAGRAMS)
            assert set(stranger_report.answers.values()) == {0}, stranger_report.answers
            assert trunk_report.answers["127.0.0.1"] > 0  # the trunk is answered as ever
            fuzzed = asyncio.get_running_loop().time() - answered
            assert fuzzed < FUZZ_WITHIN, f"fuzz too slow: {fuzzed:.1f} s"

            # Still up, still answering its trunk, its SIP timers still firing.
            details = await api.details(sid)
            assert details["Status"] == "in-progress", (details, await api.reason(sid))
            assert [r.status for r in await answers_from(sip, "OPTIONS", 1.0)] == [200]
            resent = await answers_from(sip, "INVITE", 2.0)
            assert len(resent) >= 2 and {r.status for r in resent} == {480}  # timer G fires
            assert (await http.get(f"{srv.base}/healthz")).status_code == 200

            async def over() -> bool:
                return (await api.details(sid))["Status"] not in ("in-progress", "ringing")

            await eventually(over, "the time limit to end the call", srv, TIME_LIMIT + LATE + 5)
            ended = asyncio.get_running_loop().time() - answered
            details = await api.details(sid)
            assert details["Status"] == "completed", details
            assert TIME_LIMIT - 1 <= ended <= TIME_LIMIT + LATE, ended  # by its time limit
            assert await phone.exit_code() == 0  # SIPp got our BYE, and nothing unscripted
            after = rss(srv.proc.pid)
            assert after - before < RSS_GROWTH, (before, after)
            log = srv.output()
            assert "Traceback" not in log and "sip: a step" not in log, log
