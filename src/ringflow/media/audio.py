"""Prompts: audio converted once to what a phone line carries (8 kHz mono 16-bit PCM).

Uploads arrive as WAV or MP3 at any rate and channel count. ``miniaudio`` decodes them at their
own rate, channels are averaged to mono, and ``soxr`` resamples to 8 kHz with a proper
anti-aliasing filter (``audioop.ratecv`` has none, so a 5 kHz whistle in a 44.1 kHz upload would
fold back to 3 kHz and be heard). ``lameenc`` encodes recordings to MP3.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import wave
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lameenc
import miniaudio
import numpy as np
import soxr

from ringflow.errors import InvalidRequest

RATE = 8000  # samples a second on a phone line (G.711)
SAMPLE_WIDTH = 2  # bytes a sample: 16-bit signed, little-endian
MAX_SECONDS = 600.0  # longest prompt accepted: ten minutes
# soxr's "very high quality": passband to 95% of 4 kHz and a steep stopband; the extra cost over
# "HQ" is paid once per upload, never per call.
RESAMPLE_QUALITY = "VHQ"


@dataclasses.dataclass(frozen=True, slots=True)
class Prompt:
    """Audio ready for a phone line: 8 kHz mono 16-bit little-endian PCM."""

    pcm: bytes

    def __post_init__(self) -> None:
        if len(self.pcm) % SAMPLE_WIDTH:
            raise ValueError("PCM length must be a whole number of 16-bit samples")

    @property
    def samples(self) -> int:
        """Number of samples (at 8 kHz)."""
        return len(self.pcm) // SAMPLE_WIDTH

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples / RATE

    def array(self) -> np.ndarray:
        """The samples as a read-only int16 numpy array (no copy)."""
        return np.frombuffer(self.pcm, dtype="<i2")

    @classmethod
    def silence(cls, seconds: float) -> Prompt:
        """Silence of the given length."""
        return cls(bytes(SAMPLE_WIDTH * round(seconds * RATE)))

    @classmethod
    def join(cls, prompts: Iterable[Prompt]) -> Prompt:
        """Prompts played one after the other, as one prompt."""
        return cls(b"".join(p.pcm for p in prompts))

    def __repr__(self) -> str:
        return f"Prompt({self.duration:.3f}s)"


# miniaudio's readers: (header info, decode to 16-bit) for a file in memory and one on disk.
# The in-memory ones take bytes, the on-disk ones a file name: the key says which, hence Any.
_DECODERS: dict[
    tuple[str, bool],
    tuple[Callable[[Any], miniaudio.SoundFileInfo], Callable[[Any], miniaudio.DecodedSoundFile]],
] = {
    ("WAV", False): (miniaudio.wav_get_info, miniaudio.wav_read_s16),
    ("MP3", False): (miniaudio.mp3_get_info, miniaudio.mp3_read_s16),
    ("WAV", True): (miniaudio.wav_get_file_info, miniaudio.wav_read_file_s16),
    ("MP3", True): (miniaudio.mp3_get_file_info, miniaudio.mp3_read_file_s16),
}


def load_audio(source: bytes | Path, max_seconds: float = MAX_SECONDS) -> Prompt:
    """Decode a WAV or MP3 file (any rate, any channels), in memory or on disk, into an 8 kHz
    mono Prompt."""
    arg: str | bytes  # what miniaudio reads: a file name, or the bytes themselves
    if isinstance(source, Path):
        on_disk, arg = True, str(source)
        with source.open("rb") as f:
            head, size = f.read(16), os.fstat(f.fileno()).st_size
    else:
        on_disk, arg = False, source
        head, size = source[:16], len(source)
    if not head:
        raise InvalidRequest("audio file is empty")
    kind = _sniff(head, size)
    info_fn, read_fn = _DECODERS[kind, on_disk]
    try:
        # The header (or dr_mp3's frame scan) gives the length before anything is decoded, so an
        # hour-long upload is refused without holding its decoded samples in memory.
        info = info_fn(arg)
        if info.duration > max_seconds:
            raise InvalidRequest(too_long(info.duration, max_seconds))
        decoded = read_fn(arg)
    except miniaudio.MiniaudioError as exc:
        raise InvalidRequest(f"audio file looks like {kind} but cannot be decoded") from exc
    if decoded.num_frames == 0 or decoded.nchannels < 1 or decoded.sample_rate <= 0:
        raise InvalidRequest(f"{kind} file holds no audio samples")
    samples = np.frombuffer(decoded.samples, dtype=np.int16)
    prompt = from_pcm(samples, decoded.sample_rate, decoded.nchannels)
    if prompt.samples == 0:
        raise InvalidRequest(f"{kind} file is too short to hold a single 8 kHz sample")
    if prompt.duration > max_seconds:
        raise InvalidRequest(too_long(prompt.duration, max_seconds))
    return prompt


def _sniff(data: bytes, size: int) -> str:
    """'WAV' or 'MP3' from the first 16 bytes of a ``size``-byte file; anything else is refused with what it looked like."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "WAV"
    # An MP3 starts with an ID3v2 tag or straight with a frame: 11 sync bits, then an MPEG
    # version that is not "reserved" and a layer that is not "reserved".
    if data[:3] == b"ID3":
        return "MP3"
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        version, layer = (data[1] >> 3) & 0x3, (data[1] >> 1) & 0x3
        if version != 0x1 and layer != 0x0:
            return "MP3"
    head = data[:16]
    looks = "text" if _is_text(head) else "binary data"
    raise InvalidRequest(
        f"audio file must be WAV or MP3; got {size} bytes of {looks} starting {head!r}"
    )


def _is_text(head: bytes) -> bool:
    try:
        return head.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False


def too_long(seconds: float, limit: float) -> str:
    """The message for audio longer than the limit."""
    return f"audio is {seconds:.1f} s long; prompts may be at most {limit:.0f} s"


def from_pcm(samples: np.ndarray, rate: int, channels: int = 1) -> Prompt:
    """Interleaved int16 samples at any rate and channel count, as an 8 kHz mono Prompt."""
    frames = samples.reshape(-1, channels)
    # Averaged straight from int16, so a long stereo upload is not first copied as floats.
    mono = (
        frames.mean(axis=1, dtype=np.float32) if channels > 1 else frames[:, 0].astype(np.float32)
    )
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE, quality=RESAMPLE_QUALITY)
    # The anti-aliasing filter rings, so full-scale input may overshoot a little: clip, not wrap.
    pcm = np.clip(np.rint(mono), -32768, 32767).astype("<i2")
    return Prompt(pcm.tobytes())


def write_wav(prompt: Prompt, path: str | os.PathLike[str]) -> None:
    """Write a prompt as an 8 kHz mono 16-bit WAV file, atomically (readers never see half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(wav_bytes(prompt))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def wav_bytes(prompt: Prompt) -> bytes:
    """The prompt as the bytes of an 8 kHz mono 16-bit WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(RATE)
        w.writeframes(prompt.pcm)
    return buf.getvalue()


def read_wav(path: str | os.PathLike[str]) -> Prompt:
    """Read a WAV written by ``write_wav``; anything but 8 kHz mono 16-bit is refused."""
    try:
        with wave.open(str(path), "rb") as w:
            shape = (w.getframerate(), w.getnchannels(), w.getsampwidth())
            if shape != (RATE, 1, SAMPLE_WIDTH):
                raise InvalidRequest(
                    f"{path}: not an 8 kHz mono 16-bit WAV (rate, channels, width {shape})"
                )
            return Prompt(w.readframes(w.getnframes()))
    except (wave.Error, EOFError) as exc:
        raise InvalidRequest(f"{path}: not a readable WAV file: {exc}") from exc


# Sound louder than this RMS (about -44 dBFS) in a 20 ms frame counts as someone speaking: above
# line hiss and comfort noise, well below any voice. A recording with less than MIN_VOICED
# seconds of such frames holds no message.
SILENCE_RMS = 200.0
FRAME_SAMPLES = RATE // 50
MIN_VOICED = 0.1


def frame_rms(pcm: bytes) -> np.ndarray:
    """The RMS level of each whole 20 ms frame of 8 kHz 16-bit PCM."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH], dtype="<i2")
    whole = len(samples) - len(samples) % FRAME_SAMPLES
    frames = samples[:whole].astype(np.float32).reshape(-1, FRAME_SAMPLES)
    return np.sqrt(np.mean(frames * frames, axis=1)) if whole else np.zeros(0, np.float32)


def voiced_seconds(pcm: bytes, threshold: float = SILENCE_RMS) -> float:
    """Seconds of ``pcm`` (8 kHz 16-bit) louder than ``threshold``: how much was said."""
    return float(np.count_nonzero(frame_rms(pcm) > threshold)) * FRAME_SAMPLES / RATE


def is_silence(pcm: bytes) -> bool:
    """True when ``pcm`` holds no speech (nothing, or too little sound to be a message)."""
    return voiced_seconds(pcm) < MIN_VOICED


def encode_mp3(pcm: bytes, rate: int = RATE, channels: int = 1, bitrate: int = 32) -> bytes:
    """Encode interleaved 16-bit PCM as MP3 (``bitrate`` in kbit/s), e.g. for recordings."""
    if channels not in (1, 2):
        raise ValueError("MP3 carries one or two channels")
    encoder = lameenc.Encoder()
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(channels)
    encoder.set_bit_rate(bitrate)
    encoder.set_quality(2)  # 2 = high quality, still far faster than real time
    return bytes(encoder.encode(pcm) + encoder.flush())
