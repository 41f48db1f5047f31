"""Calibration (docs/quantization.md §6): weight quantization and activation ranges worked by
hand, ranges against PyTorch's own activations, the dequantized graph, and the report's error
(exactly 0 on a model whose values are all representable, large under an injected scale error).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from model_builders import INPUT_SHAPE, build_test_model
from torch import nn

from medyate_mcu.graph import Graph, OpType, import_torch
from medyate_mcu.quant.calibrate import (
    calibrate,
    dequantized_graph,
    quantization_report,
    quantize_weights,
    tensor_quant,
    tensor_ranges,
)
from medyate_mcu.quant.scheme import Quantization, TensorQuant, WeightQuant

# ---- weights ---------------------------------------------------------------------------------


def test_weights_by_hand_ties_to_even_and_an_all_zero_channel() -> None:
    weight = np.array([[127.0, 0.5, 1.5, -2.5],  # s = 1: ties 0.5 -> 0, 1.5 -> 2, -2.5 -> -2
                       [0.0, 0.0, 0.0, 0.0],  # all zero: s = 1, q = 0
                       [-254.0, 3.0, 5.0, 1.0]], np.float32)  # s = 2: 1.5 -> 2, 2.5 -> 2
    quant = quantize_weights(weight)
    assert quant.scales.dtype == np.float32
    assert quant.scales.tolist() == [1.0, 1.0, 2.0]
    assert quant.values.tolist() == [[127, 0, 2, -2], [0, 0, 0, 0], [-127, 2, 2, 0]]


def test_conv_weights_per_output_channel_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((6, 3, 3, 3)) * rng.uniform(0.01, 2, (6, 1, 1, 1))
              ).astype(np.float32)
    quant = quantize_weights(weight)
    peaks = np.abs(weight).reshape(6, -1).max(axis=1)
    assert np.array_equal(quant.scales, (peaks.astype(np.float64) / 127).astype(np.float32))
    assert np.all(np.abs(quant.values).reshape(6, -1).max(axis=1) == 127)
    error = np.abs(quant.dequantize() - weight)
    assert np.all(error <= quant.scales.reshape(-1, 1, 1, 1) * (0.5 + 2.0**-20))


# ---- activation ranges -----------------------------------------------------------------------


@pytest.mark.parametrize(("lo", "hi", "scale", "zero"), [
    (-1.0, 3.0, 4 / 255, -64),  # z = rint(-128 + 1 / (4/255)) = rint(-64.25) = -64
    (0.5, 2.0, 2 / 255, -128),  # widened to [0, 2]: 0 is q = -128 exactly
    (-3.0, -1.0, 3 / 255, 127),  # widened to [-3, 0]: z = rint(-128 + 255) = 127
    (0.0, 0.0, 1.0, -128),  # an all-zero tensor
])
def test_tensor_quant_by_hand(lo: float, hi: float, scale: float, zero: int) -> None:
    quant = tensor_quant(lo, hi)
    assert quant == TensorQuant(float(np.float32(scale)), zero)


def test_tensor_quant_maps_the_range_ends_to_the_int8_ends() -> None:
    quant = tensor_quant(-1.0, 3.0)
    ends = quant.dequantize(np.array([-128, 127], np.int8))
    assert np.all(np.abs(ends - [-1.0, 3.0]) <= quant.scale / 2)
    assert quant.dequantize(quant.quantize(np.float32(0.0))) == 0.0  # zero is exact


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


def test_ranges_are_the_min_and_max_of_torchs_activations() -> None:
    module = tiny_model()
    samples = np.random.default_rng(1).standard_normal((10, 2, 6, 6)).astype(np.float32)
    graph = import_torch(module, torch.zeros(1, 2, 6, 6))
    assert [n.op for n in graph.nodes] == [OpType.CONV, OpType.RELU, OpType.MAX_POOL,
                                           OpType.FLATTEN, OpType.LINEAR, OpType.RELU,
                                           OpType.LINEAR]
    seen = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: seen.append(out.numpy()))
             for layer in module]
    with torch.no_grad():
        module(torch.from_numpy(samples))
    for hook in hooks:
        hook.remove()
    calls: list[tuple[int, int]] = []
    ranges = tensor_ranges(graph, samples, lambda done, total: calls.append((done, total)),
                           batch_size=4)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    expected = [samples, *seen]
    tensors = [graph.input] + [n.output for n in graph.nodes]
    for tensor, values in zip(tensors, expected, strict=True):
        assert ranges[tensor] == pytest.approx((values.min(), values.max()), rel=1e-6), tensor
    quantization = calibrate(graph, samples, batch_size=4)
    assert set(quantization.tensors) == set(tensors)
    for tensor, (lo, hi) in ranges.items():
        assert quantization.tensors[tensor] == tensor_quant(lo, hi)
    assert quantization.source == "calibrated on 10 samples"
    classifier = graph.nodes[-1]
    assert set(quantization.weights) == {graph.nodes[0].name, graph.nodes[4].name}
    assert classifier.name not in quantization.weights


def test_dequantized_graph_holds_the_int8_weights_and_leaves_the_rest() -> None:
    graph = import_torch(tiny_model(), torch.zeros(1, 2, 6, 6))
    samples = np.random.default_rng(2).standard_normal((4, 2, 6, 6)).astype(np.float32)
    quantization = calibrate(graph, samples)
    copy = dequantized_graph(graph, quantization)
    for before, after in zip(graph.nodes, copy.nodes, strict=True):
        if before.name in quantization.weights:
            assert np.array_equal(after.params["weight"],
                                  quantization.weights[before.name].dequantize())
            assert not np.array_equal(after.params["weight"], before.params["weight"])
        for key, value in before.params.items():
            if key != "weight" or before.name not in quantization.weights:
                assert np.array_equal(after.params[key], value), (before.name, key)
    assert graph.nodes[0].params["weight"] is not copy.nodes[0].params["weight"]


# ---- the report ------------------------------------------------------------------------------


@functools.cache
def exact_model() -> tuple[Graph, np.ndarray]:
    """Conv 1x1 (weights 127) -> global pool over one cell -> classifier, on integer inputs
    that span [-128, 127]: input s = 1, z = 0; weight s = 1, q = 127; conv output s = 127,
    z = 0 with every value 127 · x on the grid. The int8 backbone is then exact."""
    module = nn.Sequential(nn.Conv2d(1, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(2, 3)).eval()
    with torch.no_grad():
        module[0].weight.copy_(torch.full((2, 1, 1, 1), 127.0))
        module[0].bias.zero_()
        module[3].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.5, 0.5]]))
    samples = np.arange(-128, 128, 15, dtype=np.float32)
    samples = np.concatenate([samples, [127.0]]).reshape(-1, 1, 1, 1)
    return import_torch(module, torch.zeros(1, 1, 1, 1)), samples


def test_report_error_is_zero_when_every_value_is_representable() -> None:
    graph, samples = exact_model()
    quantization = calibrate(graph, samples)
    conv = graph.nodes[0]
    assert quantization.tensors[graph.input] == TensorQuant(1.0, 0)
    assert quantization.tensors[conv.output] == TensorQuant(127.0, 0)
    assert quantization.tensors[graph.output] != quantization.tensors[conv.output]  # classifier
    report = quantization_report(graph, quantization, samples)
    assert report.max_abs_error == 0.0 and report.relative_rms_error == 0.0
    assert report.argmax_agreement == 1.0 and report.samples == len(samples)
    assert [row.name for row in report.layers] == [n.name for n in graph.nodes[:-1]]
    assert (report.layers[0].weight_scale_min, report.layers[0].weight_scale_max) == (1.0, 1.0)
    assert report.layers[1].weight_scale_min is None


def test_report_catches_a_weight_scale_error() -> None:
    """The conv's weight scale 1% too large: the conv writes code rint(1.01 · x) instead of x,
    one output LSB (127) off wherever 50 <= |x| < 127 (the ends saturate back to ±127/-128)."""
    graph, samples = exact_model()
    right = calibrate(graph, samples)
    conv = graph.nodes[0].name
    weights = right.weights[conv]
    off = WeightQuant(weights.values, weights.scales * np.float32(1.01))
    wrong = Quantization(right.tensors, {conv: off}, "injected")
    assert quantization_report(graph, wrong, samples).max_abs_error == 127.0


def test_report_catches_a_range_too_narrow() -> None:
    """The conv output's scale halved: outputs beyond ±127 · 63.5 saturate, so the largest
    sample (127 · 127 = 16129) comes back as at most 127 · 63.5 = 8065.5."""
    graph, samples = exact_model()
    right = calibrate(graph, samples)
    conv = graph.nodes[0].output
    narrow = TensorQuant(right.tensors[conv].scale / 2, 0)
    tensors = {t: narrow if q == right.tensors[conv] else q for t, q in right.tensors.items()}
    report = quantization_report(graph, Quantization(tensors, right.weights, "narrow"), samples)
    assert report.max_abs_error >= 16129 - 8065.5
    assert report.relative_rms_error > 0.1


@functools.cache
def mobilenet() -> Graph:
    return import_torch(build_test_model("mobilenetv2"), torch.zeros(1, *INPUT_SHAPE))


def test_report_on_a_real_network() -> None:
    """A calibrated MobileNetV2-style network: a small error (a few % RMS), rows for every layer
    of the backbone, and text the CLI can print."""
    graph = mobilenet()
    samples = np.random.default_rng(3).standard_normal((24, *INPUT_SHAPE)).astype(np.float32)
    quantization = calibrate(graph, samples)
    calls: list[tuple[int, int]] = []
    report = quantization_report(graph, quantization, samples,
                                 lambda done, total: calls.append((done, total)))
    assert calls[-1] == (24, 24)
    assert 0 < report.relative_rms_error < 0.1 and report.argmax_agreement >= 0.75
    fused = [row for row in report.layers if row.op == "Conv"]
    assert all(row.weight_scale_min <= row.weight_scale_max for row in fused)
    lines = report.lines()
    assert len(lines) == len(report.layers) + 2
    assert "calibrated on 24 samples" in lines[-1] and "argmax agrees" in lines[-1]
