"""How a stored training sample becomes the network's input: one formula, everywhere.

A sample is stored as float32, uint8 or int8 values in the model's input layout (CHW, or C×L for
a 1-D model) and enters the network as

    x[i] = ((float)stored[i] * scale - mean[c]) / std[c]      (c: the channel of element i)

computed in float32, each operation rounded once. The host reference (:meth:`SampleEncoding.
decode`), the C engine's decoder (``firmware/runtime/sample.c``, used by the generated ``main.c``
and by the serial firmware) and the verifiers all apply it, so the device and the reference train
on the same bits. A build records its encoding in its manifest (``samples``).

- uint8 pixels: ``scale = 1/255`` and the model's ``medyate.input_mean``/``input_std``;
- int8/uint8 with a stated scale and zero point ``z``: ``mean[c] = z * scale (+ the model's mean)``;
- float features: ``scale = 1`` (and no normalisation unless stated): ``x = stored``, exactly;
- compact int8 (``compile --sample-format int8``): per channel ``scale = 1``, ``mean[c] = z_c``,
  ``std[c] = 1 / s_c``, quantized from the range of the training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from medyate_mcu.errors import MedyateError

PIXEL_SCALE = 1.0 / 255.0  # uint8 pixels p enter as p / 255 before the model's mean/std


class SampleFormat(StrEnum):
    """The element type of stored samples (embedded data, serial SAMPLE frames)."""

    FLOAT32 = "float32"
    UINT8 = "uint8"
    INT8 = "int8"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def bytes(self) -> int:
        return self.dtype.itemsize


@dataclass(frozen=True)
class SampleEncoding:
    """A stored sample's format and the affine map, per channel, onto the network's input."""

    format: SampleFormat
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise MedyateError(f"sample encoding: {len(self.mean)} means for {len(self.std)} "
                               "standard deviations")
        values = (self.scale, *self.mean, *self.std)
        if not all(np.isfinite(values)) or self.scale == 0 or 0 in self.std:
            raise MedyateError(f"sample encoding: scale and std must be finite and non-zero "
                               f"(scale {self.scale}, std {list(self.std)})")

    @classmethod
    def identity(cls, channels: int) -> SampleEncoding:
        """float32 samples that are the network's input as they are."""
        return cls(SampleFormat.FLOAT32, 1.0, (0.0,) * channels, (1.0,) * channels)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def _constants(self, ndim: int) -> tuple[np.float32, np.ndarray, np.ndarray]:
        shape = (1, -1) + (1,) * (ndim - 2)
        return (np.float32(self.scale), np.asarray(self.mean, np.float32).reshape(shape),
                np.asarray(self.std, np.float32).reshape(shape))

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """Stored samples (N×C×…, this format) -> the network's float32 input, as the C
        decoder computes it, bit for bit."""
        if stored.dtype != self.format.dtype:
            raise MedyateError(f"samples are {stored.dtype}, the encoding stores "
                               f"{self.format.value}")
        scale, mean, std = self._constants(stored.ndim)
        return (stored.astype(np.float32) * scale - mean) / std

    def encode(self, x: np.ndarray) -> np.ndarray:
        """The network's input -> stored samples of this format (rounded to the nearest, clamped
        to the type's range); ``decode(encode(x))`` is what a device given ``x`` trains on."""
        scale, mean, std = self._constants(x.ndim)
        values = (np.asarray(x, np.float64) * std + mean) / scale
        if self.format is SampleFormat.FLOAT32:
            return values.astype(np.float32)
        info = np.iinfo(self.format.dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(self.format.dtype)

    def record(self) -> dict:
        """The manifest's ``samples`` entry."""
        return {"format": self.format.value, "scale": float(self.scale),
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_record(cls, record: dict) -> SampleEncoding:
        try:
            return cls(SampleFormat(record["format"]), float(record["scale"]),
                       tuple(float(v) for v in record["mean"]),
                       tuple(float(v) for v in record["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MedyateError(f"a build manifest's samples entry is damaged ({exc})") from None

    def describe(self) -> str:
        """One line for reports: the format and the formula with its constants."""
        def numbers(values: tuple[float, ...]) -> str:
            shown = ", ".join(f"{v:.6g}" for v in values[:4])
            return f"[{shown}{', …' if len(values) > 4 else ''}]"
        return (f"{self.format.value} samples, x = (s * {self.scale:.6g} - mean[c]) / std[c], "
                f"mean {numbers(self.mean)}, std {numbers(self.std)}")


def pixel_encoding(mean: tuple[float, ...], std: tuple[float, ...]) -> SampleEncoding:
    """uint8 pixels normalised by per-channel ``mean`` and ``std`` (on the [0, 1] scale)."""
    return SampleEncoding(SampleFormat.UINT8, PIXEL_SCALE, tuple(map(float, mean)),
                          tuple(map(float, std)))


def int8_encoding(x_train: np.ndarray) -> SampleEncoding:
    """Compact int8 samples for network inputs like ``x_train`` (N×C×…): per channel, the
    training split's range [lo, hi] (widened to hold 0) onto -128..127, asymmetric."""
    channels = x_train.shape[1]
    axes = (0, *range(2, x_train.ndim))
    lo = np.minimum(x_train.min(axis=axes).astype(np.float64), 0.0)
    hi = np.maximum(x_train.max(axis=axes).astype(np.float64), 0.0)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    zero = np.clip(np.rint(-128.0 - lo / step), -128, 127)
    return SampleEncoding(SampleFormat.INT8, 1.0, tuple(float(z) for z in zero),
                          tuple(float(np.float32(1.0 / s)) for s in step[:channels]))
