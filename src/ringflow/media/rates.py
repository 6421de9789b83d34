"""Streaming between 8 kHz and 16 or 24 kHz, 20 ms at a time, with no added latency to speak of.

A stream's audio crosses rates in small real-time pieces (20 ms frames to a bot, its 20-100 ms
messages back). soxr's streaming resampler, the right tool for whole files, works in blocks of
about 100 ms at its usual qualities: fed 20 ms at a time it answers nothing, nothing, nothing,
then 100 ms at once (measured: 8 -> 16 kHz in 160-sample pieces gives 0, 0, 0, 0, 0, 1660, ...),
which adds up to 100 ms of latency and turns a bot's steady speech into bursts and gaps. The
three rates a stream may use are whole multiples of 8 kHz, so a polyphase FIR does the job
exactly: a windowed-sinc low-pass (cut at 3.6 kHz, 64 taps per phase at the high rate: 2 ms of
delay at 16 kHz), applied to each piece with the previous piece's tail kept, so every sample
comes out as soon as the samples it depends on have come in.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

LINE_RATE = 8000
TAPS_PER_PHASE = 32
CUTOFF = 3600.0  # Hz: under 4 kHz (the line's Nyquist) with room for the filter's slope


def _lowpass(rate: int, factor: int) -> NDArray[np.float64]:
    """A Kaiser-windowed sinc low-pass at CUTOFF for ``rate``, its length a multiple of
    ``factor``, with a DC gain of one."""
    taps = TAPS_PER_PHASE * factor
    n = np.arange(taps) - (taps - 1) / 2
    # numpy's stubs type sinc's result and a sum as Any; both are float64.
    h: NDArray[np.float64] = np.sinc(2 * CUTOFF / rate * n) * np.kaiser(taps, 8.0)
    return h / float(h.sum())


class RateConverter:
    """16-bit PCM from one of 8, 16, 24 kHz to another, continuous across pieces."""

    def __init__(self, rate_in: int, rate_out: int):
        if rate_in == rate_out:
            self._factor, self._up = 1, False
        elif rate_in == LINE_RATE and rate_out % LINE_RATE == 0:
            self._factor, self._up = rate_out // LINE_RATE, True
        elif rate_out == LINE_RATE and rate_in % LINE_RATE == 0:
            self._factor, self._up = rate_in // LINE_RATE, False
        else:
            raise ValueError(f"cannot convert {rate_in} Hz to {rate_out} Hz")
        high = max(rate_in, rate_out)
        self._h = _lowpass(high, self._factor) if self._factor > 1 else np.ones(1)
        self._history = np.zeros(len(self._h) - 1)
        self._phase = 0  # high-rate samples seen, modulo the factor (downsampling)

    def __call__(self, pcm: bytes) -> bytes:
        """Convert one piece (any whole number of samples)."""
        if self._factor == 1 or not pcm:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        if self._up:
            high = np.zeros(len(samples) * self._factor)
            high[:: self._factor] = samples * self._factor
        else:
            high = samples
        x = np.concatenate((self._history, high))
        y = np.convolve(x, self._h, mode="valid")
        self._history = x[len(x) - len(self._history) :]
        if not self._up:
            start = (-self._phase) % self._factor
            self._phase = (self._phase + len(high)) % self._factor
            y = y[start :: self._factor]
        return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()
