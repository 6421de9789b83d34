"""Recordings: the audio files of calls (voicemails, recorded conversations) and the signed,
expiring links that let someone without the account's API credentials fetch one.

A recording is written once, atomically, to ``data_dir/recordings/{account_sid}/{sid}.{ext}``
in the call's ``RecordingFormat`` (``mp3``: 32 kbit/s mono, ``mp3-hq``: 64 kbit/s, the most
MPEG-2.5 carries at 8 kHz; ``wav``: 8 kHz 16-bit PCM), with a row in ``recordings``; the call's
``RecordingUrl`` names the latest one. A conversation is ``single`` (both parties mixed into
one channel) or ``dual`` (caller on the left channel, callee on the right).

It is served at ``{base_url}/v1/Accounts/{account_sid}/Recordings/{sid}.{ext}`` to the
account's Basic credentials, or to a link carrying ``?Expires=<unix seconds>&Signature=<hex>``:
an HMAC-SHA256 of ``"{account_sid}/{sid}\\n{expires}"`` under a key derived from the server's
secret (``RINGFLOW_SECRET_KEY``, else one generated once into ``data_dir/secret_key``, mode 600).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import io
import logging
import os
import secrets
import tempfile
import time
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ringflow.calls.sids import new_recording_sid
from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import ConfigError, Forbidden, InvalidRequest
from ringflow.media.audio import RATE, SAMPLE_WIDTH, encode_mp3
from ringflow.numeric import whole_number
from ringflow.storage.db import Database
from ringflow.storage.models import Account, Call, Recording
from ringflow.storage.recordings import add_recording, recording_of

log = logging.getLogger(__name__)

FORMATS = ("mp3", "mp3-hq", "wav")
CHANNELS = ("single", "dual")
# kbit/s by (format, channels in the file). MPEG-2.5 Layer III at 8 kHz stops at 64 kbit/s.
BITRATES = {("mp3", 1): 32, ("mp3", 2): 48, ("mp3-hq", 1): 64, ("mp3-hq", 2): 64}
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}
SECRET_FILE = "secret_key"
MAX_LINK_TTL = 7 * 86400  # a signed link lives a week at most
MAX_EXPIRES = 10**12 - 1  # unix seconds: far beyond any link we sign
LINK_PURPOSE = b"ringflow recording links v1"


def extension(fmt: str) -> str:
    """The file extension (and URL suffix) of a recording format."""
    return "wav" if fmt == "wav" else "mp3"


def mix(a: bytes, b: bytes) -> bytes:
    """Two 16-bit tracks of one length summed into one, clipped rather than wrapped."""
    total = np.frombuffer(a, "<i2").astype(np.int32) + np.frombuffer(b, "<i2").astype(np.int32)
    return np.clip(total, -32768, 32767).astype("<i2").tobytes()


def interleave(left: bytes, right: bytes) -> bytes:
    """Two 16-bit tracks of one length as one stereo stream."""
    return np.column_stack((np.frombuffer(left, "<i2"), np.frombuffer(right, "<i2"))).tobytes()


def encode(tracks: Sequence[bytes], fmt: str, channels: str = "single") -> bytes:
    """One track (a voicemail) or two aligned tracks (caller, callee) as a file's bytes."""
    if fmt not in FORMATS or channels not in CHANNELS:
        raise ValueError(f"no recording format {fmt!r} with {channels!r} channels")
    if len(tracks) == 1:
        pcm, count = tracks[0], 1
    elif channels == "dual":
        pcm, count = interleave(*tracks), 2
    else:
        pcm, count = mix(*tracks), 1
    if fmt == "wav":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(count)
            w.setsampwidth(SAMPLE_WIDTH)
            w.setframerate(RATE)
            w.writeframes(pcm)
        return buf.getvalue()
    return encode_mp3(pcm, RATE, count, BITRATES[(fmt, count)])


def load_secret(settings: Settings) -> bytes:
    """The server's secret: RINGFLOW_SECRET_KEY, else the one in data_dir (made once)."""
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    path = Path(settings.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when several processes start at once, exactly one writes the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        log.info("generated a secret key in %s", path)
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    for _ in range(100):
        secret = path.read_text().strip()
        if secret:
            return secret.encode("utf-8")
        time.sleep(0.01)  # another process has created the file and is about to write it
    raise ConfigError(f"{path} is empty; delete it to have a new secret generated")


class LinkSigner:
    """Signs and checks expiring links to recordings."""

    def __init__(self, secret: bytes):
        # A key for this purpose only, so the server secret can sign other things later.
        self._key = hmac.new(secret, LINK_PURPOSE, hashlib.sha256).digest()

    def signature(self, account_sid: str, recording_sid: str, expires: int) -> str:
        """The hex signature of a link to this recording valid until ``expires`` (unix s)."""
        message = f"{account_sid.lower()}/{recording_sid.lower()}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def check(
        self, account_sid: str, recording_sid: str, expires: str, signature: str, now: float
    ) -> None:
        """Forbidden unless the link is signed by us for this recording and not expired."""
        when = whole_number(
            expires,
            "link is malformed: Expires (unix seconds)",
            low=0,
            high=MAX_EXPIRES,
            error=Forbidden,
        )
        expected = self.signature(account_sid, recording_sid, when)
        given = signature.lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected.encode(), given):
            raise Forbidden("link signature does not match")
        if when <= now:
            raise Forbidden("link has expired")


@dataclasses.dataclass(frozen=True)
class Stored:
    """A recording just kept."""

    sid: str
    url: str
    duration: float
    size: int


class RecordingStore:
    """Writes recordings, keeps their rows, names their URLs and signs links to them."""

    def __init__(
        self, settings: Settings, db: Database, clock: Clock, signer: LinkSigner | None = None
    ):
        self.db = db
        self.clock = clock
        self.base_url = settings.base_url
        self.directory = Path(settings.data_dir) / "recordings"
        self.signer = signer or LinkSigner(load_secret(settings))

    def url(self, account_sid: str, sid: str, fmt: str) -> str:
        """Where the recording is fetched (with credentials, or signed)."""
        return f"{self.base_url}/v1/Accounts/{account_sid}/Recordings/{sid}.{extension(fmt)}"

    def signed_url(self, account_sid: str, row: Recording, ttl: float) -> tuple[str, int]:
        """A link that opens the recording without credentials for ``ttl`` seconds."""
        if not 1 <= ttl <= MAX_LINK_TTL:
            raise InvalidRequest(f"ttl must be from 1 to {MAX_LINK_TTL} seconds")
        expires = int(self.clock.wall().timestamp() + ttl)
        signature = self.signer.signature(account_sid, row.sid, expires)
        url = self.url(account_sid, row.sid, row.format)
        return f"{url}?Expires={expires}&Signature={signature}", expires

    def check_link(self, account_sid: str, sid: str, expires: str, signature: str) -> None:
        """Forbidden unless this signed link is good now."""
        self.signer.check(account_sid, sid, expires, signature, self.clock.wall().timestamp())

    def file(self, row: Recording) -> Path:
        """The recording's file on disk."""
        return self.directory / row.path

    async def find(self, account_id: int, sid: str) -> Recording | None:
        """The account's recording with this sid, or None."""
        async with self.db.session() as session:
            return await recording_of(session, account_id, sid)

    async def save(
        self,
        account: Account,
        call: Call,
        tracks: Sequence[bytes],
        fmt: str | None = None,
        channels: str | None = None,
    ) -> Stored:
        """Encode and write ``tracks`` (one, or caller and callee), add the row, and make it
        the call's RecordingUrl. Format and channels default to the call's own."""
        fmt = fmt or call.recording_format
        channels = channels or call.recording_channels
        sid = new_recording_sid()
        relative = f"{account.sid}/{sid}.{extension(fmt)}"
        with self.clock.busy():  # encoding takes real time; a test clock must wait for it
            size = await asyncio.to_thread(
                self._write, self.directory / relative, tracks, fmt, channels
            )
        duration = len(tracks[0]) / (RATE * SAMPLE_WIDTH)
        url = self.url(account.sid, sid, fmt)
        async with self.db.session() as session:
            await add_recording(
                session,
                sid=sid,
                account_id=account.id,
                call_id=call.id,
                path=relative,
                fmt=fmt,
                channels=channels if len(tracks) > 1 else "single",
                duration=duration,
                size=size,
                url=url,
                now=self.clock.wall(),
            )
        # The call's latest recording is its RecordingUrl: on the row, and on the call held by
        # the process carrying it (its callbacks are built from that).
        call.recording_url = url
        log.info("call %s: recording %s (%s, %.1f s, %d bytes)", call.sid, sid, fmt, duration, size)
        return Stored(sid, url, duration, size)

    @staticmethod
    def _write(path: Path, tracks: Sequence[bytes], fmt: str, channels: str) -> int:
        data = encode(tracks, fmt, channels)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(data)
