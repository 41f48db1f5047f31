"""Calibration (docs/quantization.md §6): int8 weights per output channel, and each activation's
affine int8 scale from its min/max over samples of the task's data run through the float model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from medyate_mcu.graph.ir import Graph, Node, OpType, classifier_node
from medyate_mcu.graph.reference import ReferenceNet
from medyate_mcu.quant.int_reference import run_int8
from medyate_mcu.quant.lowering import int8_region, output_quant
from medyate_mcu.quant.scheme import (
    INT8_MAX,
    INT8_MIN,
    WEIGHT_MAX,
    Quantization,
    TensorQuant,
    WeightQuant,
)

Progress = Callable[[int, int], None]
DEFAULT_BATCH = 32


def quantize_weights(weight: np.ndarray) -> WeightQuant:
    """Symmetric per-output-channel (axis 0) int8: ``s[o] = max|w[o]| / 127`` (1 for an all-zero
    channel), ``q = clip(rint(w / s), ±127)`` with the division in float32 (ties to even)."""
    w = np.asarray(weight, np.float32)
    peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    scales = np.where(peak > 0, peak / WEIGHT_MAX, 1.0).astype(np.float32)
    scales[scales == 0] = 1.0  # a peak so small that peak / 127 underflows float32
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.rint(w / scales.reshape(shape))
    return WeightQuant(np.clip(q, -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8), scales)


def tensor_quant(lo: float, hi: float) -> TensorQuant:
    """The activation quantization of a range: widened to contain 0, ``s = (hi - lo) / 255`` as
    float32, ``z = clamp(rint(-128 - lo / s))``; an all-zero range gets ``s = 1``."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = float(np.float32((hi - lo) / (INT8_MAX - INT8_MIN)))
    if scale == 0.0:
        scale = 1.0
    zero = int(np.clip(np.rint(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return TensorQuant(scale, zero)


def quantized_layers(graph: Graph) -> list[Node]:
    """The Conv and Linear nodes that get int8 weights: all but the classifier."""
    head = classifier_node(graph)
    return [node for node in graph.nodes_of(OpType.CONV, OpType.LINEAR) if node is not head]


def tensor_ranges(graph: Graph, samples: np.ndarray, progress: Progress | None = None,
                  batch_size: int = DEFAULT_BATCH) -> dict[str, tuple[float, float]]:
    """The min and max of the graph input and of every node output over ``samples``, from the
    float reference run in batches without gradients."""
    samples = np.asarray(samples, np.float32)
    assert samples.shape[1:] == graph.input_shape, (samples.shape, graph.input_shape)
    assert len(samples) > 0, "calibration needs at least one sample"
    net = ReferenceNet(graph).eval()
    taps = frozenset(node.name for node in graph.nodes)
    ranges: dict[str, tuple[float, float]] = {}
    total = -(-len(samples) // batch_size)
    for done, start in enumerate(range(0, len(samples), batch_size), start=1):
        x = torch.from_numpy(samples[start:start + batch_size])
        with torch.no_grad():
            _, _, outputs = net.forward_with_taps(x, taps)
        values = {graph.input: x} | {graph.node(name).output: y for name, y in outputs.items()}
        for tensor, value in values.items():
            lo, hi = float(value.min()), float(value.max())
            old = ranges.get(tensor, (lo, hi))
            ranges[tensor] = (min(old[0], lo), max(old[1], hi))
        if progress is not None:
            progress(done, total)
    return ranges


def calibrate(graph: Graph, samples: np.ndarray, progress: Progress | None = None,
              batch_size: int = DEFAULT_BATCH) -> Quantization:
    """The int8 parameters of ``graph`` calibrated on ``samples`` (N, *input_shape) float32:
    every activation tensor's range and every Conv/Linear's weights but the classifier's.
    ``progress(done, total)`` is called after each batch."""
    ranges = tensor_ranges(graph, samples, progress, batch_size)
    tensors = {tensor: tensor_quant(lo, hi) for tensor, (lo, hi) in ranges.items()}
    weights = {node.name: quantize_weights(node.params["weight"])
               for node in quantized_layers(graph)}
    return Quantization(tensors, weights, f"calibrated on {len(samples)} samples")


def dequantized_graph(graph: Graph, quantization: Quantization) -> Graph:
    """A deep copy of ``graph`` whose quantized layers hold their dequantized weights
    ``s[o] · q`` (biases unchanged): the float model the trainable part and the reference use."""
    result = copy.deepcopy(graph)
    for node in result.nodes:
        if node.name in quantization.weights:
            node.params["weight"] = quantization.weights[node.name].dequantize()
    return result


@dataclass(frozen=True)
class LayerQuant:
    """One row of the report: a node's weight scale range (Conv/Linear) and the (s, z) it
    writes (a Conv fused with its ReLU writes the ReLU's)."""

    name: str
    op: str
    weight_scale_min: float | None
    weight_scale_max: float | None
    output_scale: float
    output_zero_point: int


@dataclass(frozen=True)
class QuantReport:
    """Per-layer scales, and the float-vs-int8 error of the backbone's output (the classifier's
    input) over the samples, the int8 region covering everything but the classifier."""

    layers: list[LayerQuant]
    samples: int
    max_abs_error: float
    relative_rms_error: float  # RMS(int8 - float) / RMS(float)
    argmax_agreement: float  # share of samples whose classifier argmax is unchanged
    source: str

    def lines(self) -> list[str]:
        """The report as text: one line per layer, then the error summary."""
        rows = [f"{'layer':<32} {'op':<18} {'weight scale (min..max)':<24} output (s, z)"]
        for layer in self.layers:
            weights = "" if layer.weight_scale_min is None else \
                f"{layer.weight_scale_min:.3g}..{layer.weight_scale_max:.3g}"
            rows.append(f"{layer.name:<32} {layer.op:<18} {weights:<24} "
                        f"({layer.output_scale:.4g}, {layer.output_zero_point})")
        rows.append(f"int8 backbone vs float on {self.samples} samples ({self.source}): "
                    f"max |error| {self.max_abs_error:.4g}, relative RMS error "
                    f"{self.relative_rms_error:.2%}, classifier argmax agrees on "
                    f"{self.argmax_agreement:.1%}")
        return rows


def quantization_report(graph: Graph, quantization: Quantization, samples: np.ndarray,
                        progress: Progress | None = None) -> QuantReport:
    """The per-layer scales of ``quantization`` and the error of the int8 backbone (the numpy
    integer reference, dequantized) against ``graph`` in float on ``samples``."""
    samples = np.asarray(samples, np.float32)
    head = classifier_node(graph)
    region = int8_region(graph, [])
    layers = []
    for node in region:
        weights = quantization.weights.get(node.name)
        out = output_quant(graph, quantization, node, region)
        layers.append(LayerQuant(
            node.name, node.op.value,
            None if weights is None else float(weights.scales.min()),
            None if weights is None else float(weights.scales.max()),
            out.scale, out.zero_point))
    feature = head.inputs[0]
    with torch.no_grad():
        logits, inputs, _ = ReferenceNet(graph).forward_with_taps(
            torch.from_numpy(samples), frozenset({head.name}))
    floats = inputs[head.name].numpy()
    ints = np.empty_like(floats)
    for index, sample in enumerate(samples):
        values = run_int8(graph, quantization, region, sample)
        ints[index] = quantization.tensors[feature].dequantize(values[feature])
        if progress is not None:
            progress(index + 1, len(samples))
    error = ints.astype(np.float64) - floats
    float_rms = float(np.sqrt(np.mean(np.square(floats, dtype=np.float64))))
    int_logits = ints @ head.params["weight"].T + head.params["bias"]
    agree = np.argmax(int_logits, axis=1) == logits.numpy().argmax(axis=1)
    return QuantReport(layers, len(samples), float(np.abs(error).max()),
                       float(np.sqrt(np.mean(np.square(error)))) / max(float_rms, 1e-30),
                       float(agree.mean()), quantization.source)
