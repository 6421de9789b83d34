"""The prompt cache: every prompt is converted or rendered once, then read from memory or disk.

Keys are content hashes (of the uploaded bytes, or of engine version, voice and text), so a key
never goes stale: a new engine version or conversion pipeline gives new keys, and old files are
merely unused. Files are 8 kHz mono WAVs under ``directory/ab/abcdef....wav``, written atomically,
so several ringflow processes can share one directory. A small in-memory LRU keeps the prompts
in use so a busy greeting is not re-read from disk for every call.

Work (decoding, resampling, speech synthesis, disk reads) runs on the cache's own small thread
pool, never on the event loop, and concurrent requests for one key share one piece of work.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ringflow.errors import InvalidRequest
from ringflow.media.audio import (
    MAX_SECONDS,
    Prompt,
    load_audio,
    read_wav,
    too_long,
    write_wav,
)

log = logging.getLogger(__name__)

# Bump when the conversion from an upload to a Prompt changes, so old conversions are not reused.
PIPELINE = "audio-1"
MEMORY_BYTES = 32 * 1024 * 1024  # about 35 minutes of 8 kHz prompts
WORKERS = 2  # conversions and renders at once; each is CPU-bound for a few to a few hundred ms
HASH_IN_THREAD = 1024 * 1024  # hashing a larger upload would stall the event loop
HASH_BLOCK = 1024 * 1024  # bytes of a file hashed at a time


def key_for(*parts: str | bytes | Path) -> str:
    """A cache key (hex SHA-256) for the given parts, unambiguous however they are split; a
    ``Path`` part stands for the file's bytes (the same key as those bytes in memory)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with part.open("rb") as f:
                digest.update(os.fstat(f.fileno()).st_size.to_bytes(8, "big"))
                while block := f.read(HASH_BLOCK):
                    digest.update(block)
            continue
        raw = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()


class PromptCache:
    """Prompts by key, in memory (LRU, bounded in bytes) and on disk under ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        memory_bytes: int = MEMORY_BYTES,
        workers: int = WORKERS,
    ):
        self.directory = Path(directory)
        self.memory_bytes = memory_bytes
        self._memory: collections.OrderedDict[str, Prompt] = collections.OrderedDict()
        self._memory_used = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="ringflow-media"
        )
        self._inflight: dict[str, asyncio.Future[Prompt]] = {}

    @property
    def memory_used(self) -> int:
        """Bytes of PCM held in memory."""
        return self._memory_used

    def path(self, key: str) -> Path:
        """Where the prompt with this key is (or would be) stored."""
        return self.directory / key[:2] / f"{key}.wav"

    def get(self, key: str) -> Prompt | None:
        """The prompt from memory or disk, or None. Reads a file: call it off the event loop."""
        prompt = self._remember(key)
        if prompt is not None:
            return prompt
        path = self.path(key)
        try:
            prompt = read_wav(path)
        except FileNotFoundError:
            return None
        except (InvalidRequest, OSError) as exc:
            # A torn or foreign file is a miss: the prompt is made again and the file replaced.
            log.warning("ignoring unreadable cached prompt %s: %s", path, exc)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # marks it used, for prune()
        self._keep(key, prompt)
        return prompt

    def put(self, key: str, prompt: Prompt) -> None:
        """Store a prompt on disk and in memory. Writes a file: call it off the event loop."""
        write_wav(prompt, self.path(key))
        self._keep(key, prompt)

    async def get_or_make(self, key: str, make: Callable[[], Prompt]) -> Prompt:
        """The cached prompt, or ``make()`` run once on the worker threads and stored."""
        prompt = self._remember(key)
        if prompt is not None:
            return prompt
        loop = asyncio.get_running_loop()
        future = self._inflight.get(key)
        if future is None or future.get_loop() is not loop:
            future = asyncio.ensure_future(
                loop.run_in_executor(self._executor, self._load_or_make, key, make)
            )
            self._inflight[key] = future
            future.add_done_callback(functools.partial(self._forget, key))
        # Shielded: a caller that gives up (its call hung up) leaves the work to the others and
        # to the cache, instead of cancelling it for everyone.
        return await asyncio.shield(future)

    async def audio(self, data: bytes | Path, max_seconds: float = MAX_SECONDS) -> Prompt:
        """An uploaded WAV or MP3 (its bytes, or a file) as a Prompt, converted once
        (InvalidRequest if not audio)."""
        if isinstance(data, Path) or len(data) > HASH_IN_THREAD:
            loop = asyncio.get_running_loop()
            key = await loop.run_in_executor(self._executor, key_for, PIPELINE, data)
        else:
            key = key_for(PIPELINE, data)
        prompt = await self.get_or_make(key, lambda: load_audio(data, max_seconds))
        if prompt.duration > max_seconds:  # converted earlier under a larger limit
            raise InvalidRequest(too_long(prompt.duration, max_seconds))
        return prompt

    def prune(self, max_age: float, max_bytes: int | None = None, now: float | None = None) -> int:
        """Delete files unused for ``max_age`` seconds, then the least recently used until the
        rest fit in ``max_bytes``; returns how many. Blocking: housekeeping runs it on a thread
        (unique texts, such as one-time codes, would otherwise fill the disk).

        Prompts held in memory are in use even if their file was not read lately: they stay.
        """
        cutoff = (time.time() if now is None else now) - max_age
        with self._lock:
            in_use = {f"{key}.wav" for key in self._memory}
        kept: list[tuple[float, int, Path]] = []
        removed = 0
        for path in self.directory.glob("??/*.wav"):
            try:
                info = path.stat()
                if path.name in in_use:
                    continue
                if info.st_mtime < cutoff:
                    path.unlink()
                    removed += 1
                else:
                    kept.append((info.st_mtime, info.st_size, path))
            except FileNotFoundError:
                pass  # pruned by another process at the same time
        if max_bytes is not None:
            total = sum(size for _, size, _ in kept)
            for _, size, path in sorted(kept):  # least recently used first
                if total <= max_bytes:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
                total -= size
        return removed

    def close(self) -> None:
        """Stop the worker threads once their current work is done."""
        self._executor.shutdown(wait=True)

    def _load_or_make(self, key: str, make: Callable[[], Prompt]) -> Prompt:
        prompt = self.get(key)
        if prompt is None:
            prompt = make()
            self.put(key, prompt)
        return prompt

    def _forget(self, key: str, future: asyncio.Future[Prompt]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # retrieved, so an error nobody awaited is not logged as lost

    def _remember(self, key: str) -> Prompt | None:
        with self._lock:
            prompt = self._memory.get(key)
            if prompt is not None:
                self._memory.move_to_end(key)
            return prompt

    def _keep(self, key: str, prompt: Prompt) -> None:
        size = len(prompt.pcm)
        if size > self.memory_bytes:
            return
        with self._lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._memory_used -= len(old.pcm)
            self._memory[key] = prompt
            self._memory_used += size
            while self._memory_used > self.memory_bytes:
                _, evicted = self._memory.popitem(last=False)
                self._memory_used -= len(evicted.pcm)
