"""Audio an app plays: files an account uploaded, and audio URLs fetched while a call runs.

An upload (WAV or MP3, any rate and channel count) is spooled to ``data_dir/uploads/`` as it
arrives (never held whole in memory), converted once to 8 kHz mono and stored as
``data_dir/audio/{account_sid}/{audio_id}.wav``; its id is a hash of the uploaded bytes, so the
same file uploaded twice is one audio. Apps name it as a greeting's ``audio``; the engine plays
it as the URL ``audio:{audio_id}`` and reads the file straight from disk (no HTTP), only from the
directory of the account the call belongs to, so another account's id is simply not found.

An ``http(s)`` audio URL is fetched through the guarded outbound client (private addresses
refused unless allowed, body capped at ``MAX_AUDIO_BYTES``) and converted through the prompt
cache, keyed by content, so a busy greeting is decoded once.

Errors::

    RingflowError
    └── AudioUnavailable    the audio cannot be played (not found, fetch failed, not audio)
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ringflow.clock import Clock
from ringflow.config import Settings
from ringflow.errors import InvalidRequest, RingflowError
from ringflow.flows.actions import HttpGet, HttpResult
from ringflow.flows.applets.greeting import STORED_SCHEME, check_audio_id
from ringflow.media.audio import Prompt, read_wav, write_wav
from ringflow.media.cache import PromptCache, key_for
from ringflow.storage.accounts import account_by_id
from ringflow.storage.db import Database
from ringflow.webhooks.http import FetchError, OutboundHttp

MAX_AUDIO_BYTES = 16 * 1024 * 1024  # about 100 s of 44.1 kHz stereo WAV; minutes of MP3
AUDIO_TIMEOUT = 10.0  # seconds to fetch one audio URL


class AudioUnavailable(RingflowError):
    """An audio cannot be played; the message says why (for the call's timeline)."""


class AudioStore:
    """Uploaded audio files by account, and audio URLs fetched for calls."""

    def __init__(
        self, settings: Settings, db: Database, cache: PromptCache, http: OutboundHttp, clock: Clock
    ):
        self.root = Path(settings.data_dir) / "audio"
        self.spool_dir = Path(settings.data_dir) / "uploads"
        self.db = db
        self.cache = cache
        self.http = http
        self.clock = clock

    def path(self, account_sid: str, audio_id: str) -> Path:
        """Where an account's uploaded audio is stored."""
        return self.root / account_sid / f"{audio_id}.wav"

    @contextlib.contextmanager
    def spool(self) -> Iterator[BinaryIO]:
        """A temporary file for an upload as it arrives (owner-only, removed afterwards)."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.spool_dir, prefix="upload-") as file:
            yield file  # type: ignore[misc]

    async def save(self, account_sid: str, data: bytes | Path) -> tuple[str, Prompt]:
        """Convert and store an upload (its bytes, or the file it was spooled to); returns its id
        and the prompt (InvalidRequest: not audio)."""
        prompt = await self.cache.audio(data)
        audio_id = (await asyncio.to_thread(key_for, "upload", data))[:24]
        path = self.path(account_sid, audio_id)
        if not path.exists():
            await asyncio.to_thread(write_wav, prompt, path)
        return audio_id, prompt

    async def stored(self, account_sid: str, audio_id: str) -> Prompt:
        """An uploaded audio of this account (AudioUnavailable if it has none by that id)."""
        if check_audio_id(audio_id) is not None:
            raise AudioUnavailable(f"{audio_id!r} is not an uploaded audio id")
        path = self.path(account_sid, audio_id)
        try:
            return await asyncio.to_thread(read_wav, path)
        except FileNotFoundError:
            raise AudioUnavailable(
                f"audio {audio_id!r} is not an uploaded audio of this account"
            ) from None
        except InvalidRequest as exc:
            raise AudioUnavailable(f"audio {audio_id!r} is unreadable: {exc}") from exc

    async def fetch(self, url: str) -> Prompt:
        """The audio at an http(s) URL, converted (once per content) to a prompt."""
        try:
            result = await self.http.get(url, timeout=AUDIO_TIMEOUT, field="audio URL")
        except (InvalidRequest, FetchError) as exc:
            raise AudioUnavailable(f"cannot fetch {url}: {exc}") from exc
        if result.status_code != 200:
            raise AudioUnavailable(f"{url} answered {result.status_code}, not 200")
        if result.truncated:
            raise AudioUnavailable(f"{url} is larger than {MAX_AUDIO_BYTES} bytes")
        try:
            return await self.cache.audio(result.body)
        except InvalidRequest as exc:
            raise AudioUnavailable(f"{url}: {exc}") from exc

    async def audio(self, url: str, account_id: int) -> Prompt:
        """What a Play of ``url`` in a call of ``account_id`` sounds like."""
        # Reading and decoding take real time; a test clock must wait for them.
        with self.clock.busy():
            if url.startswith(STORED_SCHEME):
                return await self.stored(await self._sid(account_id), url[len(STORED_SCHEME) :])
            return await self.fetch(url)

    async def _sid(self, account_id: int) -> str:
        # Files go by SID, not row id: ids restart with a new database, SIDs never repeat.
        async with self.db.session() as session:
            account = await account_by_id(session, account_id)
        if account is None:
            raise AudioUnavailable(f"account {account_id} does not exist")
        return account.sid


class FlowHttp:
    """What the flow engine uses to reach the outside: GET (and HEAD) of customer URLs for
    applets, and ``audio(url, account_id)`` for Play."""

    def __init__(self, http: OutboundHttp, store: AudioStore):
        self.http = http
        self.store = store

    async def __call__(self, action: HttpGet) -> HttpResult:
        try:
            result = await self.http.request(
                action.method,
                action.url,
                params=action.params,
                headers=action.headers,
                timeout=action.timeout,
                field="url",
            )
        except (InvalidRequest, FetchError) as exc:
            return HttpResult(status=None, error=str(exc))
        return HttpResult(
            status=result.status_code,
            content_type=result.headers.get("content-type", ""),
            text=result.body.decode("utf-8", "replace"),
        )

    async def audio(self, url: str, account_id: int) -> Prompt:
        """The prompt a Play of ``url`` plays (AudioUnavailable when it cannot be played)."""
        return await self.store.audio(url, account_id)
