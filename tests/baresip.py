"""baresip, a real softphone, as the callee: it answers by itself, plays a WAV as its microphone,
writes what it heard to a WAV (its sndfile module) and presses keys when told over its TCP
control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port
from tests.sipp import free_udp_port

needs_baresip = pytest.mark.skipif(
    shutil.which("baresip") is None, reason="baresip not on PATH (make test installs baresip-core)"
)

CONFIG = """\
poll_method\tepoll
sip_listen\t127.0.0.1:{sip_port}
net_interface\t127.0.0.1
audio_source\taufile,{mic}
module_path\t/usr/lib/baresip/modules
module\tg711.so
module\taufile.so
module\tsndfile.so
module\taccount.so
module\tmenu.so
module\tctrl_tcp.so
ctrl_tcp_listen\t127.0.0.1:{ctrl_port}
snd_path\t{snd}
rtp_ports\t{rtp_low}-{rtp_high}
"""
ACCOUNT = "<sip:callee@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU;dtmfmode=rtpevent\n"


class Baresip:
    """A running baresip: ``uri`` reaches it; ``press`` sends keys; ``heard`` reads its WAV."""

    def __init__(self, home: Path, sip_port: int, ctrl_port: int, proc: asyncio.subprocess.Process):
        self.home = home
        self.sip_port = sip_port
        self.ctrl_port = ctrl_port
        self.proc = proc

    @property
    def uri(self) -> str:
        return f"sip:callee@127.0.0.1:{self.sip_port}"

    async def command(self, command: str, params: str = "") -> None:
        """One command over the control socket (netstring-framed JSON)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
        try:
            body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
            writer.write(str(len(body)).encode() + b":" + body + b",")
            await writer.drain()
            await asyncio.wait_for(reader.read(1024), 5)  # its answer
        finally:
            writer.close()

    async def press(self, keys: str) -> None:
        """Press ``keys`` (RFC 4733 events, as the account is configured)."""
        for key in keys:
            await self.command("sndcode", key)

    def heard(self) -> np.ndarray:
        """What baresip decoded from the call: 8 kHz mono samples."""
        dumps = sorted((self.home / "snd").glob("*-dec.wav"))
        assert dumps, "baresip recorded nothing"
        with wave.open(str(dumps[-1])) as wav:
            assert wav.getframerate() == 8000 and wav.getnchannels() == 1
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


@contextlib.asynccontextmanager
async def baresip(home: Path, mic: np.ndarray) -> AsyncIterator[Baresip]:
    """Start baresip with its config in ``home``; ``mic`` (8 kHz samples) is its voice."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "snd").mkdir(exist_ok=True)
    with wave.open(str(home / "mic.wav"), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(8000)
        wav.writeframes(mic.astype("<i2").tobytes())
    for _ in range(3):  # a port taken between choosing it and baresip binding it: try again
        sip_port, ctrl_port = free_udp_port(), free_port()  # SIP on UDP, control on TCP
        rtp_low = 40000 + (sip_port % 2000) * 10
        (home / "config").write_text(
            CONFIG.format(
                sip_port=sip_port,
                ctrl_port=ctrl_port,
                mic=home / "mic.wav",
                snd=home / "snd",
                rtp_low=rtp_low,
                rtp_high=rtp_low + 9,
            )
        )
        (home / "accounts").write_text(ACCOUNT)
        log = (home / "baresip.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            "baresip",
            "-f",
            str(home),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        if await _until_listening(ctrl_port, proc):
            break
        await _stop(proc)
        log.close()
    else:
        raise AssertionError(
            "baresip did not start:\n" + (home / "baresip.log").read_text(errors="replace")[-3000:]
        )
    phone = Baresip(home, sip_port, ctrl_port, proc)
    try:
        yield phone
    finally:
        await _stop(proc)
        log.close()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _until_listening(port: int, proc: asyncio.subprocess.Process, wait: float = 10.0) -> bool:
    """Whether baresip's control socket came up (False: it exited, or not in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while proc.returncode is None and loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return True
    return False
