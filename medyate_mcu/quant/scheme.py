"""The int8 scheme (docs/quantization.md §1-2): what a quantized tensor is, and the fixed-point
multipliers that requantize an int32 accumulator.

- Activations: one affine int8 scale per tensor, ``real = scale · (q - zero_point)``, q in
  [-128, 127].
- Weights of conv and linear layers: symmetric int8 per output channel, ``real = scale[o] · q``,
  q in [-127, 127], zero point 0.
- A real multiplier ``M > 0`` is applied to an int32 as ``m0 · 2^shift / 2^31`` with ``m0`` a
  Q31 integer in [2^30, 2^31) (gemmlowp / TFLite Micro's ``QuantizeMultiplier``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # symmetric weights use [-127, 127]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class TensorQuant:
    """Per-tensor affine int8 quantization of an activation."""

    scale: float  # a float32 value, > 0
    zero_point: int  # in [INT8_MIN, INT8_MAX]

    def __post_init__(self) -> None:
        assert self.scale > 0 and math.isfinite(self.scale), self.scale
        assert INT8_MIN <= self.zero_point <= INT8_MAX, self.zero_point

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """float32 -> int8: ``clamp(round_half_even(x / scale) + zero_point)`` in float32, as
        ONNX QuantizeLinear and the C ``mdy_quantize`` compute it."""
        q = np.rint(np.asarray(x, np.float32) / np.float32(self.scale))
        return np.clip(q + self.zero_point, INT8_MIN, INT8_MAX).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """int8 -> float32: ``scale · (q - zero_point)`` in float32 (the C ``mdy_dequantize``)."""
        diff = (np.asarray(q, np.int32) - self.zero_point).astype(np.float32)
        return (np.float32(self.scale) * diff).astype(np.float32)

    def real_to_int(self, value: float) -> int:
        """The int8 code of a real value for a ReLU/ReLU6 clamp bound: ``z + round(value / s)``
        rounded half away from zero (TFLite's ``CalculateActivationRangeQuantized``),
        saturated."""
        ratio = value / self.scale
        rounded = math.floor(abs(ratio) + 0.5) * (1 if ratio >= 0 else -1)
        return int(np.clip(rounded + self.zero_point, INT8_MIN, INT8_MAX))


@dataclass(frozen=True)
class WeightQuant:
    """Symmetric per-output-channel int8 weights of a conv (axis 0) or linear (axis 0) layer."""

    values: np.ndarray = field(repr=False)  # int8, the layer's weight shape, in [-127, 127]
    scales: np.ndarray = field(repr=False)  # float32, one per output channel, > 0

    def __post_init__(self) -> None:
        assert self.values.dtype == np.int8 and self.scales.dtype == np.float32
        assert self.scales.shape == (self.values.shape[0],)
        assert int(self.values.min(initial=0)) >= -WEIGHT_MAX

    def dequantize(self) -> np.ndarray:
        """``scale[o] · q`` in float32: the weights every float kernel and the reference use."""
        shape = (-1,) + (1,) * (self.values.ndim - 1)
        return (self.scales.reshape(shape) * self.values.astype(np.float32)).astype(np.float32)


@dataclass(frozen=True)
class FixedPoint:
    """A real multiplier as ``multiplier · 2^shift / 2^31`` (multiplier in [2^30, 2^31))."""

    multiplier: int
    shift: int


def fixed_point(real: float) -> FixedPoint:
    """TFLite Micro's ``QuantizeMultiplier``: frexp, round the mantissa to Q31 (half away from
    zero), renormalise a mantissa that rounds up to 2^31. ``real`` must be positive; multipliers
    below 2^-31 (shift < -31) flush to zero, as the C cannot shift further."""
    assert real > 0 and math.isfinite(real), real
    mantissa, shift = math.frexp(real)
    q = math.floor(mantissa * (1 << 31) + 0.5)
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return FixedPoint(0, 0)
    assert shift <= 30, f"multiplier {real} too large for int32 requantization"
    return FixedPoint(q, shift)


@dataclass
class Quantization:
    """A network's int8 parameters: every activation tensor's and every conv/linear layer's.

    ``tensors`` covers the graph input and every node output the int8 region may hold;
    ``weights`` every Conv and Linear node but the classifier (always float32, re-initialised
    for the task). ``source`` says where the numbers come from (calibration or a QDQ file)."""

    tensors: dict[str, TensorQuant]
    weights: dict[str, WeightQuant]
    source: str

    def save(self, path: Path) -> None:
        """Write to ``path`` (.npz): every scale, zero point, int8 weight and the source."""
        arrays: dict[str, np.ndarray] = {
            "source": np.array(self.source),
            "tensor_names": np.array(list(self.tensors), dtype=str),
            "tensor_scales": np.array([t.scale for t in self.tensors.values()], np.float32),
            "tensor_zero_points": np.array([t.zero_point for t in self.tensors.values()],
                                           np.int32),
            "weight_names": np.array(list(self.weights), dtype=str),
        }
        for index, quant in enumerate(self.weights.values()):
            arrays[f"weight_values_{index}"] = quant.values
            arrays[f"weight_scales_{index}"] = quant.scales
        with path.open("wb") as file:
            np.savez(file, **arrays)

    @classmethod
    def load(cls, path: Path) -> Quantization:
        """Read what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as data:
            tensors = {str(name): TensorQuant(float(scale), int(zero))
                       for name, scale, zero in zip(data["tensor_names"], data["tensor_scales"],
                                                    data["tensor_zero_points"], strict=True)}
            weights = {str(name): WeightQuant(data[f"weight_values_{i}"],
                                              data[f"weight_scales_{i}"])
                       for i, name in enumerate(data["weight_names"])}
            return cls(tensors, weights, str(data["source"]))
