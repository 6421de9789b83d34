"""Media: uploads converted to 8 kHz mono prompts, text to speech, and the prompt cache.

Inputs are made here: sines from numpy, written by the stdlib ``wave`` module or lameenc. Speech
is rendered by the real espeak-ng (the espeakng-loader wheel, a ringflow dependency).
"""

from __future__ import annotations

import asyncio
import ctypes.util
import io
import os
import stat
import struct
import sys
import threading
import time
import wave
from pathlib import Path

import lameenc
import numpy as np
import pytest

from ringflow.errors import InvalidRequest, RingflowError
from ringflow.media import (
    RATE,
    Espeak,
    Prompt,
    PromptCache,
    TextToSpeech,
    TtsError,
    TtsUnavailable,
    encode_mp3,
    load_audio,
    read_wav,
    wav_bytes,
    write_wav,
)
from ringflow.media import tts as tts_module

ENGLISH = "Thank you for calling. Your call is important to us."
HINDI = "नमस्ते, आपका कॉल हमारे लिए महत्वपूर्ण है।"


# ---- helpers -------------------------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A sine as float samples in [-1, 1]."""
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2")


def wav_file(channels: list[np.ndarray], rate: int, width: int = 2) -> bytes:
    """A WAV (8, 16 or 24-bit PCM) with one float array per channel."""
    frames = np.stack(channels, axis=1)
    if width == 1:
        raw = (np.clip(np.rint(frames * 127), -128, 127) + 128).astype(np.uint8).tobytes()
    elif width == 2:
        raw = pcm16(frames).tobytes()
    else:
        ints = np.clip(np.rint(frames * 8388607), -8388608, 8388607).astype("<i4")
        raw = b"".join(v.tobytes()[:3] for v in ints.reshape(-1))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return buf.getvalue()


def mp3_file(channels: list[np.ndarray], rate: int, bitrate: int = 128) -> bytes:
    encoder = lameenc.Encoder()
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(len(channels))
    encoder.set_bit_rate(bitrate)
    encoder.set_quality(2)
    return bytes(encoder.encode(pcm16(np.stack(channels, axis=1)).tobytes()) + encoder.flush())


def peak_hz(prompt: Prompt) -> float:
    """Frequency of the strongest component."""
    x = prompt.array().astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spectrum)])


def rms(prompt: Prompt) -> float:
    """Root mean square as a fraction of full scale."""
    x = prompt.array().astype(np.float64) / 32768
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


# ---- decoding uploads ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("nchannels", [1, 2])
def test_wav_at_any_rate_becomes_8k_mono_keeping_pitch_and_length(
    rate: int, nchannels: int
) -> None:
    x = tone(1000, 1.5, rate)
    prompt = load_audio(wav_file([x] * nchannels, rate))
    assert prompt.samples == 12000  # 1.5 s at 8 kHz, to the sample
    assert prompt.duration == pytest.approx(1.5)
    assert peak_hz(prompt) == pytest.approx(1000, abs=2)
    assert rms(prompt) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_stereo_is_averaged_to_mono() -> None:
    left, right = tone(1000, 1.0, 16000), np.zeros(16000)
    prompt = load_audio(wav_file([left, right], 16000))
    assert rms(prompt) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize("rate", [44100, 48000, 16000])
def test_tone_above_4khz_is_filtered_out_not_folded_back(rate: int) -> None:
    high = tone(5000, 1.0, rate)
    prompt = load_audio(wav_file([high], rate))
    assert prompt.duration == pytest.approx(1.0)
    # Nothing is left once the tone runs (the abrupt start and stop are clicks with energy in
    # every band, so the first and last 50 ms are not measured). With no anti-aliasing filter
    # 5 kHz would fold back to 3 kHz at full strength, as plain decimation shows.
    steady = Prompt(prompt.pcm[800:-800])
    assert rms(steady) < 0.5 / np.sqrt(2) * 10 ** (-60 / 20)
    if rate == 48000:
        naive = Prompt(pcm16(high[::6]).tobytes())
        assert peak_hz(naive) == pytest.approx(3000, abs=2)
        assert rms(naive) > 0.3


def test_a_tone_just_inside_the_band_passes() -> None:
    prompt = load_audio(wav_file([tone(3400, 1.0, 44100)], 44100))  # top of the telephone band
    assert peak_hz(prompt) == pytest.approx(3400, abs=2)
    assert rms(prompt) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize("width", [1, 3])
def test_8_and_24_bit_wav(width: int) -> None:
    prompt = load_audio(wav_file([tone(1000, 1.0, 22050)], 22050, width=width))
    assert prompt.duration == pytest.approx(1.0)
    assert peak_hz(prompt) == pytest.approx(1000, abs=2)


def test_mu_law_wav_as_telephony_tools_export_it() -> None:
    samples = pcm16(tone(1000, 1.0, 8000))
    ulaw = _mu_law(samples)
    fmt = struct.pack("<HHIIHHH", 7, 1, 8000, 8000, 1, 8, 0)  # WAVE_FORMAT_MULAW, cbSize 0
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(ulaw))
        + ulaw
    )
    prompt = load_audio(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert prompt.samples == 8000
    assert peak_hz(prompt) == pytest.approx(1000, abs=2)
    assert rms(prompt) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def _mu_law(samples: np.ndarray) -> bytes:
    """G.711 mu-law encoding (the reference algorithm, vectorised)."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


@pytest.mark.parametrize("nchannels", [1, 2])
def test_mp3_decodes_to_8k_mono(nchannels: int) -> None:
    data = mp3_file([tone(1000, 2.0, 44100)] * nchannels, 44100)
    prompt = load_audio(data)
    # MP3 adds the encoder's delay and padding: a few tens of milliseconds.
    assert prompt.duration == pytest.approx(2.0, abs=0.08)
    assert peak_hz(prompt) == pytest.approx(1000, abs=2)
    assert rms(prompt) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_mp3_with_id3_tag() -> None:
    tag = b"ID3\x03\x00\x00\x00\x00\x00\x0a" + bytes(
        10
    )  # an ID3v2.3 header and 10 bytes of padding
    prompt = load_audio(tag + mp3_file([tone(1000, 1.0, 16000)], 16000, bitrate=64))
    assert peak_hz(prompt) == pytest.approx(1000, abs=2)


def test_recordings_encode_to_mp3_that_decodes_back() -> None:
    original = load_audio(wav_file([tone(1000, 3.0, 8000)], 8000))
    data = encode_mp3(original.pcm, rate=8000, channels=1, bitrate=16)
    assert data[:2] == b"\xff\xe3"  # MPEG 2.5 layer III: the MP3 flavour for 8 kHz
    assert len(data) == pytest.approx(3.0 * 16000 / 8, rel=0.15)
    again = load_audio(data)
    assert again.duration == pytest.approx(3.0, abs=0.2)
    assert peak_hz(again) == pytest.approx(1000, abs=2)


def test_stereo_mp3_encoding_for_dual_channel_recordings() -> None:
    left, right = pcm16(tone(1000, 1.0, 8000)), pcm16(tone(500, 1.0, 8000))
    interleaved = np.stack([left, right], axis=1).tobytes()
    prompt = load_audio(encode_mp3(interleaved, rate=8000, channels=2, bitrate=32))
    assert prompt.duration == pytest.approx(1.0, abs=0.2)
    with pytest.raises(ValueError):
        encode_mp3(interleaved, rate=8000, channels=3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<html><body>Not found</body></html>", "must be WAV or MP3; got 35 bytes of text"),
        (bytes(range(256)) * 4, "must be WAV or MP3; got 1024 bytes of binary data"),
        (b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk", "looks like WAV but cannot be decoded"),
        (b"\xff\xfb\x90\xc4" + bytes(500), "looks like MP3 but cannot be decoded"),
        (b"ID3" + os.urandom(300), "looks like MP3 but cannot be decoded"),
    ],
)
def test_what_is_not_audio_is_refused_with_a_message(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        load_audio(data)


def test_a_wav_with_no_samples_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="no audio samples|cannot be decoded"):
        load_audio(wav_file([np.zeros(0)], 8000))


def test_audio_over_ten_minutes_is_refused_before_decoding() -> None:
    eleven_minutes = wav_file([np.zeros(8000 * 660)], 8000)
    started = time.perf_counter()
    with pytest.raises(InvalidRequest, match=r"660.0 s long; prompts may be at most 600 s"):
        load_audio(eleven_minutes)
    assert time.perf_counter() - started < 0.5
    with pytest.raises(InvalidRequest, match="at most 2 s"):
        load_audio(wav_file([tone(1000, 3.0, 8000)], 8000), max_seconds=2)
    with pytest.raises(InvalidRequest, match="at most 2 s"):
        load_audio(mp3_file([tone(1000, 3.0, 16000)], 16000), max_seconds=2)


def test_prompt_helpers() -> None:
    assert Prompt.silence(0.5).duration == 0.5
    joined = Prompt.join([Prompt.silence(0.25), Prompt.silence(1)])
    assert joined.duration == 1.25
    assert repr(joined) == "Prompt(1.250s)"
    with pytest.raises(ValueError):
        Prompt(b"\x00")


def test_wav_written_and_read_back(tmp_path: Path) -> None:
    prompt = load_audio(wav_file([tone(1000, 0.5, 8000)], 8000))
    write_wav(prompt, tmp_path / "a" / "prompt.wav")
    assert read_wav(tmp_path / "a" / "prompt.wav") == prompt
    assert load_audio(wav_bytes(prompt)) == prompt  # 8 kHz mono in, untouched out
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["prompt.wav"]  # no temp file left
    (tmp_path / "b.wav").write_bytes(wav_file([tone(1000, 0.5, 16000)], 16000))
    with pytest.raises(InvalidRequest, match="not an 8 kHz mono 16-bit WAV"):
        read_wav(tmp_path / "b.wav")


# ---- the prompt cache ----------------------------------------------------------------------


async def test_an_upload_is_converted_once_and_kept_on_disk(tmp_path: Path) -> None:
    data = wav_file([tone(1000, 1.0, 44100)] * 2, 44100)
    cache = PromptCache(tmp_path)
    try:
        first = await cache.audio(data)
        assert await cache.audio(data) is first  # from memory
    finally:
        cache.close()
    files = list(tmp_path.rglob("*.wav"))
    assert len(files) == 1
    again = PromptCache(tmp_path)
    try:
        assert await again.audio(data) == first  # from disk, in another "process"
        with pytest.raises(InvalidRequest, match="must be WAV or MP3"):
            await again.audio(b"not audio at all")
    finally:
        again.close()


async def test_big_upload_is_hashed_off_the_loop(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    try:
        prompt = await cache.audio(wav_file([tone(1000, 20.0, 48000)] * 2, 48000))  # 3.8 MB
        assert prompt.duration == pytest.approx(20.0)
    finally:
        cache.close()


async def test_concurrent_requests_for_one_key_share_one_piece_of_work(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    made = []
    release = threading.Event()

    def make() -> Prompt:
        made.append(1)
        release.wait(5)
        return Prompt.silence(1)

    try:
        waiters = [asyncio.ensure_future(cache.get_or_make("k" * 64, make)) for _ in range(10)]
        await asyncio.sleep(0.05)
        waiters[0].cancel()  # one caller hangs up: the others still get the prompt
        release.set()
        results = await asyncio.gather(*waiters[1:])
        assert len(made) == 1
        assert all(r is results[0] for r in results)
        assert waiters[0].cancelled()
    finally:
        cache.close()


async def test_a_failure_reaches_every_waiter_and_is_not_cached(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    calls = []

    def failing() -> Prompt:
        calls.append(1)
        time.sleep(0.05)
        raise InvalidRequest("bad")

    try:
        results = await asyncio.gather(
            *(cache.get_or_make("f" * 64, failing) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, InvalidRequest) for r in results)
        assert len(calls) == 1
        assert await cache.get_or_make("f" * 64, lambda: Prompt.silence(0.1)) == Prompt.silence(0.1)
    finally:
        cache.close()


async def test_a_torn_cache_file_is_made_again(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    try:
        key = "ab" * 32
        cache.path(key).parent.mkdir(parents=True)
        cache.path(key).write_bytes(b"RIFF\x00")
        assert await cache.get_or_make(key, lambda: Prompt.silence(0.2)) == Prompt.silence(0.2)
        assert read_wav(cache.path(key)) == Prompt.silence(0.2)
    finally:
        cache.close()


async def test_a_cached_upload_still_obeys_a_smaller_limit(tmp_path: Path) -> None:
    data = wav_file([tone(1000, 3.0, 8000)], 8000)
    cache = PromptCache(tmp_path)
    try:
        assert (await cache.audio(data)).duration == 3.0
        with pytest.raises(InvalidRequest, match="at most 2 s"):
            await cache.audio(data, max_seconds=2)
    finally:
        cache.close()


def test_prune_removes_prompts_unused_for_a_while(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    try:
        old, fresh = "0" * 64, "1" * 64
        cache.put(old, Prompt.silence(0.1))
        cache.put(fresh, Prompt.silence(0.1))
        an_hour_ago = time.time() - 3600
        for key in (old, fresh):
            os.utime(cache.path(key), (an_hour_ago, an_hour_ago))
        other = PromptCache(tmp_path)  # another process: nothing in memory
        assert other.get(fresh) is not None  # a disk hit marks the file used
        assert other.prune(max_age=600) == 1
        other.close()
        assert not cache.path(old).exists()
        assert cache.path(fresh).exists()
    finally:
        cache.close()


def test_memory_is_bounded(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, memory_bytes=40_000)  # 2.5 s of 8 kHz audio
    try:
        for i in range(5):
            cache.put(f"{i:064d}", Prompt.silence(1))  # 16,000 bytes each
        assert cache.memory_used <= 40_000
        assert cache.get(f"{0:064d}") == Prompt.silence(1)  # evicted from memory, read from disk
    finally:
        cache.close()


# ---- text to speech ------------------------------------------------------------------------


@pytest.fixture
async def tts(tmp_path: Path):
    speaker = TextToSpeech(tmp_path / "media")
    assert await speaker.ready()
    yield speaker
    speaker.close()


def assert_speech(prompt: Prompt, low: float, high: float) -> None:
    assert low < prompt.duration < high, prompt
    assert rms(prompt) > 0.02  # clearly not silence
    x = prompt.array().astype(np.float64)
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)  # 20 ms frames, as RTP carries them
    voiced = np.sqrt((frames**2).mean(axis=1)) > 0.01 * 32768
    assert voiced.mean() > 0.4  # speech most of the time, not a click and silence


async def test_english_and_hindi_are_spoken_at_8k(tts: TextToSpeech) -> None:
    english = await tts.speak(ENGLISH, "en")
    hindi = await tts.speak(HINDI, "hi")
    assert_speech(english, 2.0, 6.0)
    assert_speech(hindi, 1.5, 6.0)
    assert english.pcm != hindi.pcm
    assert {"en", "en-us", "hi"} <= set(tts.voices())


async def test_voices_per_call(tts: TextToSpeech) -> None:
    indian = await tts.speak("Press one for sales.", "en-IN")  # closest voice: en
    american = await tts.speak("Press one for sales.", "en-us")
    default = await tts.speak("Press one for sales.")
    assert_speech(indian, 0.8, 4.0)
    assert american.pcm != default.pcm
    assert tts.renders == 3


async def test_longer_text_takes_longer(tts: TextToSpeech) -> None:
    short = await tts.speak("Hello.", "en")
    longer = await tts.speak("Hello. " + ENGLISH + " Please stay on the line.", "en")
    hindi_short = await tts.speak("नमस्ते", "hi")
    hindi_long = await tts.speak(HINDI + " कृपया लाइन पर बने रहें।", "hi")
    assert longer.duration > short.duration + 2
    assert hindi_long.duration > hindi_short.duration + 1.5


async def test_a_cache_hit_returns_the_same_bytes_without_rendering(
    tts: TextToSpeech, tmp_path: Path
) -> None:
    first = await tts.speak(HINDI, "hi")
    assert tts.renders == 1
    started = time.perf_counter()
    again = await tts.speak(HINDI, "hi")
    hit_seconds = time.perf_counter() - started
    assert again.pcm == first.pcm
    assert tts.renders == 1
    assert hit_seconds < 0.01
    # Another process (a new TextToSpeech on the same directory) reads the disk, renders nothing.
    other = TextToSpeech(tmp_path / "media")
    try:
        assert (await other.speak(HINDI, "hi")).pcm == first.pcm
        assert other.renders == 0
    finally:
        other.close()


async def test_concurrent_identical_requests_render_once(tts: TextToSpeech) -> None:
    prompts = await asyncio.gather(*(tts.speak("Your order has shipped.", "en") for _ in range(20)))
    assert tts.renders == 1
    assert len({p.pcm for p in prompts}) == 1


async def test_different_texts_render_in_parallel_without_blocking_the_loop(
    tts: TextToSpeech,
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    clock = asyncio.ensure_future(ticker())
    try:
        prompts = await asyncio.gather(
            *(tts.speak(f"Your token number is {n}.", "en") for n in range(8))
        )
    finally:
        clock.cancel()
    assert tts.renders == 8
    assert all(p.duration > 1 for p in prompts)
    assert ticks >= 3  # the event loop kept running while the renders ran


@pytest.mark.parametrize(
    ("text", "voice", "message"),
    [
        ("", "en", "text to speak is empty"),
        ("  \0 ", "en", "text to speak is empty"),
        ("x" * 5001, "en", "5001 characters long; at most 5000"),
        ("Hello", "klingon", "unknown TTS voice 'klingon'"),
        ("Hello", "zz-in", "unknown TTS voice 'zz-in'"),
    ],
)
async def test_bad_text_or_voice_is_refused(
    tts: TextToSpeech, text: str, voice: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await tts.speak(text, voice)
    assert tts.renders == 0


async def test_text_is_not_read_as_markup_or_options(tts: TextToSpeech) -> None:
    plain = await tts.speak("--help <speak>one</speak> [[h@'loU]]", "en")
    assert_speech(plain, 1.0, 8.0)


async def test_missing_library_makes_tts_unavailable_with_the_install_hint(tmp_path: Path) -> None:
    engine = Espeak(library=tmp_path / "missing" / "libespeak-ng.so.1")
    speaker = TextToSpeech(tmp_path / "media", engine)
    try:
        assert not await speaker.ready()
        assert not speaker.available()
        with pytest.raises(TtsUnavailable, match=r"pip install espeakng-loader") as caught:
            await speaker.speak("Hello", "en")
        assert isinstance(caught.value, RingflowError)
        assert "libespeak-ng.so.1" in str(caught.value)
        with pytest.raises(TtsUnavailable, match="apt-get install libespeak-ng1"):
            speaker.voices()
        with pytest.raises(TtsUnavailable):
            speaker.require()
        assert speaker.renders == 0
    finally:
        speaker.close()


async def test_missing_voice_data_makes_tts_unavailable(tmp_path: Path) -> None:
    real = Espeak()
    engine = Espeak(library=real.library, data=tmp_path / "no-data")
    assert not engine.available()
    with pytest.raises(
        TtsUnavailable, match="could not read its voice data.*pip install espeakng-loader"
    ):
        engine.render("Hello", "en")


def _fake_python(tmp_path: Path, on_speak: str) -> str:
    """An interpreter that answers 'info' for real but misbehaves when asked to speak."""
    script = tmp_path / "python"
    script.write_text(
        f'#!/bin/sh\ncase "$*" in *" speak "*) {on_speak};; esac\nexec {sys.executable} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


async def test_a_crashing_render_fails_that_prompt_not_the_server(tmp_path: Path) -> None:
    engine = Espeak(python=_fake_python(tmp_path, "kill -SEGV $$"))
    speaker = TextToSpeech(tmp_path / "media", engine)
    try:
        with pytest.raises(TtsError, match=r"crashed \(signal 11\)"):
            await speaker.speak("Hello", "en")
        assert not list((tmp_path / "media").rglob("*.wav"))
    finally:
        speaker.close()


async def test_a_hanging_render_times_out(tmp_path: Path) -> None:
    engine = Espeak(python=_fake_python(tmp_path, "exec sleep 30"), timeout=0.5)
    started = time.perf_counter()
    with pytest.raises(TtsError, match="took longer than 0.5 s"):
        await asyncio.to_thread(engine.render, "Hello", "en")
    assert time.perf_counter() - started < 5


def test_module_level_helpers_use_the_default_engine() -> None:
    assert tts_module.available()
    assert "hi" in tts_module.voices()


@pytest.mark.skipif(
    ctypes.util.find_library("espeak-ng") is None, reason="Debian's libespeak-ng1 not installed"
)
async def test_debians_library_works_too(tmp_path: Path) -> None:
    engine = Espeak(library=ctypes.util.find_library("espeak-ng"))
    speaker = TextToSpeech(tmp_path, engine)
    try:
        assert engine.info().version.startswith("espeak-ng 1.5")
        assert_speech(await speaker.speak(HINDI, "hi"), 1.5, 6.0)
    finally:
        speaker.close()


def test_a_file_has_the_key_of_its_bytes(tmp_path: Path) -> None:
    """An upload spooled to disk and the same bytes in memory share one conversion."""
    from ringflow.media.cache import key_for

    data = bytes(range(256)) * 5000  # more than one hashing block
    path = tmp_path / "upload"
    path.write_bytes(data)
    assert key_for("audio-1", path) == key_for("audio-1", data)
    assert key_for("audio-1", path) != key_for("audio-1", data[:-1])
