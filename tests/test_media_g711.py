"""G.711: both laws round-trip their codes, keep speech-band audio well above the quantisation
noise, transcode into each other, and split prompts into padded 20 ms payloads."""

from __future__ import annotations

import numpy as np
import pytest

from ringflow.errors import MediaError
from ringflow.media import g711

LAWS = [g711.PCMU, g711.PCMA]


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    noise = decoded.astype(float) - reference.astype(float)
    return 10 * np.log10(np.sum(reference.astype(float) ** 2) / np.sum(noise**2))


def sweep(seconds: float = 1.0, amplitude: float = 12000) -> np.ndarray:
    t = np.arange(round(seconds * g711.RATE)) / g711.RATE
    return (amplitude * np.sin(2 * np.pi * (200 + 1600 * t) * t)).astype("<i2")


@pytest.mark.parametrize("law", LAWS, ids=lambda law: law.name)
def test_every_code_survives_decode_then_encode(law):
    codes = bytes(range(256))
    back = law.encode(law.decode(codes))
    # u-law has two codes for zero (0x7F is "negative zero"); every other code is exact.
    assert [c for c in range(256) if back[c] != c] == ([0x7F] if law is g711.PCMU else [])


@pytest.mark.parametrize("law", LAWS, ids=lambda law: law.name)
def test_round_trip_keeps_audio(law):
    pcm = sweep()
    decoded = np.frombuffer(law.decode(law.encode(pcm.tobytes())), dtype="<i2")
    assert len(decoded) == len(pcm)
    assert snr_db(pcm, decoded) > 30  # G.711 gives about 38 dB on a loud signal


@pytest.mark.parametrize(
    "source, target",
    [(g711.PCMU, g711.PCMA), (g711.PCMA, g711.PCMU)],
    ids=["PCMU-PCMA", "PCMA-PCMU"],
)
def test_transcoding_keeps_audio(source, target):
    pcm = sweep()
    moved = g711.transcode(source.encode(pcm.tobytes()), source, target)
    assert len(moved) == len(pcm)
    assert snr_db(pcm, np.frombuffer(target.decode(moved), dtype="<i2")) > 28
    same = source.encode(pcm.tobytes())
    assert g711.transcode(same, source, source) is same


@pytest.mark.parametrize("law", LAWS, ids=lambda law: law.name)
def test_silence_frame_is_quiet(law):
    assert len(law.silence) == g711.FRAME_SAMPLES
    assert np.abs(np.frombuffer(law.decode(law.silence), dtype="<i2")).max() <= 8


def test_prompts_split_into_padded_frames():
    pcm = sweep(0.05).tobytes()  # 400 samples: two whole frames and half of one
    payloads = g711.payloads(g711.PCMU, pcm)
    assert [len(p) for p in payloads] == [160, 160, 160]
    assert payloads[-1][80:] == b"\xff" * 80
    assert b"".join(payloads)[:400] == g711.PCMU.encode(pcm)
    assert g711.payloads(g711.PCMU, pcm) is payloads  # encoded once, then reused
    assert g711.payloads(g711.PCMU, b"") == ()


def test_laws_by_name():
    assert g711.law("pcmu") is g711.PCMU and g711.law("PCMA") is g711.PCMA
    with pytest.raises(MediaError, match="not G.711"):
        g711.law("G729")
