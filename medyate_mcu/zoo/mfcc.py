"""A small numpy MFCC front-end: the classic keyword-spotting features (49×10 per second).

A 1 s clip at 16 kHz is cut into 49 frames of 40 ms (640 samples) every 20 ms (320 samples),
each weighted by a periodic Hann window; the power spectrum ``|rfft|²`` of each frame (321 bins,
no scaling) is pooled by 40 triangular mel filters between 20 Hz and 4 kHz (HTK mel scale
``2595·log10(1 + f/700)``, triangles whose feet are the neighbouring centres, so that the filters
sum to 1 between the first and the last centre); the natural log of each band, floored at
``log_floor``, goes through an orthonormal DCT-II of which the first 10 coefficients are kept.
The features have any sign (the first coefficient is a scaled log-energy).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class MfccConfig:
    """The front-end's settings; the defaults are the classic DS-CNN ones."""

    sample_rate: int = 16000
    window: int = 640  # samples per frame (40 ms)
    hop: int = 320  # samples between frame starts (20 ms)
    mel_bands: int = 40
    coefficients: int = 10
    low_hz: float = 20.0
    high_hz: float = 4000.0
    log_floor: float = 1e-6  # on the mel-band power, before the log

    def frame_count(self, samples: int) -> int:
        """Frames of a signal of ``samples`` samples (no padding: 49 for 1 s)."""
        return 1 + (samples - self.window) // self.hop


MFCC = MfccConfig()


def hann(length: int) -> np.ndarray:
    """The periodic Hann window ``0.5 - 0.5·cos(2πn / length)``."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def frames(signal: np.ndarray, config: MfccConfig = MFCC) -> np.ndarray:
    """The signal's frames, ``(frame_count, window)``, unwindowed."""
    count = config.frame_count(len(signal))
    index = np.arange(config.window)[None, :] + config.hop * np.arange(count)[:, None]
    return np.asarray(signal, np.float64)[index]


def power_spectrum(signal: np.ndarray, config: MfccConfig = MFCC) -> np.ndarray:
    """``|rfft(hann · frame)|²`` of every frame, ``(frame_count, window // 2 + 1)``."""
    return np.abs(np.fft.rfft(frames(signal, config) * hann(config.window), axis=1)) ** 2


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_centres(config: MfccConfig = MFCC) -> np.ndarray:
    """Frequencies (Hz) of the band edges: ``mel_bands + 2`` points evenly spaced in mel; band
    ``b`` rises from point ``b`` to its centre ``b + 1`` and falls to ``b + 2``."""
    mels = np.linspace(hz_to_mel(config.low_hz), hz_to_mel(config.high_hz), config.mel_bands + 2)
    return mel_to_hz(mels)


def mel_filterbank(config: MfccConfig = MFCC) -> np.ndarray:
    """Triangular filters ``(mel_bands, window // 2 + 1)`` evaluated at the FFT bins' frequencies
    (peak 1 at the centre, 0 at and beyond the neighbouring centres)."""
    bins = np.arange(config.window // 2 + 1) * config.sample_rate / config.window
    points = mel_centres(config)
    low, centre, high = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins[None, :] - low) / (centre - low)
    falling = (high - bins[None, :]) / (high - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def dct_matrix(size: int, keep: int) -> np.ndarray:
    """The first ``keep`` rows of the orthonormal DCT-II of length ``size``: ``(keep, size)``."""
    k = np.arange(keep)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.sqrt(2.0 / size) * np.cos(np.pi * k * (2 * n + 1) / (2 * size))
    matrix[0] /= np.sqrt(2.0)
    return matrix


@lru_cache(maxsize=8)
def _projections(config: MfccConfig) -> tuple[np.ndarray, np.ndarray]:
    """The filterbank and DCT of ``config``, transposed for right-multiplication, read-only."""
    fbank = mel_filterbank(config).T
    dct = dct_matrix(config.mel_bands, config.coefficients).T
    fbank.flags.writeable = dct.flags.writeable = False
    return fbank, dct


def mfcc(signal: np.ndarray, config: MfccConfig = MFCC) -> np.ndarray:
    """MFCCs of one clip: float32 ``(frame_count, coefficients)``."""
    fbank, dct = _projections(config)
    log_bands = np.log(np.maximum(power_spectrum(signal, config) @ fbank, config.log_floor))
    return (log_bands @ dct).astype(np.float32)
