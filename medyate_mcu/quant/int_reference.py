"""The numpy integer reference of the int8 backbone (docs/quantization.md §2-4).

Every kernel computes in int64 exactly what the C int8 kernels compute in int32/int64; the C is
held to it element for element. ``run_int8`` runs the whole int8 region of a graph on one
sample.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from medyate_mcu.graph.ir import Graph, Node, OpType, Window
from medyate_mcu.quant.lowering import (
    QAddParams,
    QConvParams,
    QParams,
    QRescaleParams,
    fusing_conv,
    lower_node,
)
from medyate_mcu.quant.scheme import INT32_MAX, INT32_MIN, Quantization

ArrayLike = np.ndarray | int


def _i64(value: ArrayLike) -> np.ndarray:
    return np.asarray(value, dtype=np.int64)


def srdhm(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Saturating rounding doubling high multiply of int32 values: ``(a·b + nudge) / 2^31``
    truncated, the nudge ``2^30`` or ``1 - 2^30`` by the product's sign; INT32_MIN² saturates."""
    a, b = _i64(a), _i64(b)
    product = a * b  # |a·b| <= 2^62: exact in int64
    total = product + np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    quotient = np.where(total >= 0, total >> 31, -((-total) >> 31))  # truncating division
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, quotient)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """``x / 2^exponent`` rounded half away from zero (exponent in [0, 31])."""
    x, exponent = _i64(x), _i64(exponent)
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def requantize(acc: ArrayLike, multiplier: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """``acc · multiplier · 2^shift / 2^31`` rounded (§2); the arrays broadcast (per channel)."""
    shift = _i64(shift)
    scaled = np.clip(_i64(acc) << np.maximum(shift, 0), INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(srdhm(scaled, multiplier), np.maximum(-shift, 0))


def _to_int8(y: np.ndarray, act_min: int, act_max: int) -> np.ndarray:
    return np.clip(y, act_min, act_max).astype(np.int8)


def _windows(x: np.ndarray, window: Window, fill: int) -> np.ndarray:
    """Every window of a (C, H, W) int64 map padded with ``fill``: (C, out_h, out_w, kh, kw)."""
    top, left, bottom, right = window.pads
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right)), constant_values=fill)
    views = sliding_window_view(padded, window.kernel, axis=(1, 2))
    out_h, out_w = window.output_hw(*x.shape[1:])
    return views[:, ::window.stride[0], ::window.stride[1]][:, :out_h, :out_w]


def conv2d(x: np.ndarray, w: np.ndarray, p: QConvParams, window: Window,
           groups: int = 1) -> np.ndarray:
    """int8 conv (§3): x (C, H, W), w (O, C/G, kh, kw) -> int8 (O, out_h, out_w). Padding is a
    real 0 (``x - in_zero = 0``): it contributes nothing."""
    cells = _windows(_i64(x) - p.in_zero, window, 0)
    channels, out_h, out_w, kh, kw = cells.shape
    outputs = w.shape[0]
    cells = cells.reshape(groups, channels // groups, out_h, out_w, kh, kw)
    # Products and sums are integers below 2^53 (|x - z| <= 255, |w| <= 127, fewer than 2^30
    # taps), so the float64 matmul is exact and much faster than an int64 one.
    assert channels // groups * kh * kw < 1 << 30
    taps = cells.transpose(0, 2, 3, 1, 4, 5).reshape(groups, out_h * out_w, -1)
    kernels = w.astype(np.float64).reshape(groups, outputs // groups, -1)
    acc = np.matmul(taps.astype(np.float64), kernels.transpose(0, 2, 1))  # (G, HW, O/G)
    acc = acc.transpose(0, 2, 1).reshape(outputs, out_h, out_w).astype(np.int64)
    acc += _i64(p.bias)[:, None, None]
    per_channel = (slice(None), None, None)
    y = p.out_zero + requantize(acc, p.multiplier[per_channel], p.shift[per_channel])
    return _to_int8(y, p.act_min, p.act_max)


def add(a: np.ndarray, b: np.ndarray, p: QAddParams) -> np.ndarray:
    """int8 add (§3, TFLite): operands scaled to a common ``2·max(s)`` with 20 bits of headroom."""
    a1 = requantize((_i64(a) - p.in1_zero) << 20, p.in1_multiplier, p.in1_shift)
    b1 = requantize((_i64(b) - p.in2_zero) << 20, p.in2_multiplier, p.in2_shift)
    y = p.out_zero + requantize(a1 + b1, p.out_multiplier, p.out_shift)
    return _to_int8(y, p.act_min, p.act_max)


def rescale(x: np.ndarray, p: QRescaleParams) -> np.ndarray:
    """``y = out_zero + requantize(x - in_zero)`` clamped (an unfused ReLU/ReLU6, a Flatten)."""
    y = p.out_zero + requantize(_i64(x) - p.in_zero, p.multiplier, p.shift)
    return _to_int8(y, p.act_min, p.act_max)


def global_avgpool(x: np.ndarray, p: QRescaleParams) -> np.ndarray:
    """(C, H, W) -> (C, 1, 1): the sum of ``x - in_zero`` times ``s_x / (s_y · H·W)``."""
    total = (_i64(x) - p.in_zero).sum(axis=(1, 2), keepdims=True)
    y = p.out_zero + requantize(total, p.multiplier, p.shift)
    return _to_int8(y, p.act_min, p.act_max)


def avgpool(x: np.ndarray, p: QRescaleParams, window: Window) -> np.ndarray:
    """Average pool whose windows share one cell count (baked into the multiplier): the sum of
    ``x - in_zero`` over each window, padding a real 0."""
    total = _windows(_i64(x) - p.in_zero, window, 0).sum(axis=(3, 4))
    y = p.out_zero + requantize(total, p.multiplier, p.shift)
    return _to_int8(y, p.act_min, p.act_max)


def maxpool(x: np.ndarray, p: QRescaleParams, window: Window) -> np.ndarray:
    """Max pool (padding never wins), then rescaled like a ReLU."""
    largest = _windows(_i64(x), window, np.iinfo(np.int64).min).max(axis=(3, 4))
    return rescale(largest, p)


def run_node(node: Node, p: QParams | None, args: list[np.ndarray],
             w: np.ndarray | None) -> np.ndarray:
    """One int8 node (not a fused ReLU) on its int8 inputs, with its lowered parameters and, for
    a Conv, its int8 weights."""
    op = node.op
    if op is OpType.CONV:
        assert isinstance(p, QConvParams) and w is not None
        return conv2d(args[0], w, p, node.conv.window, node.conv.groups)
    if op is OpType.ADD:
        assert isinstance(p, QAddParams)
        return add(args[0], args[1], p)
    assert isinstance(p, QRescaleParams), (node.name, p)
    if op is OpType.GLOBAL_AVG_POOL:
        return global_avgpool(args[0], p)
    if op is OpType.AVG_POOL:
        return avgpool(args[0], p, node.pool.window)
    if op is OpType.MAX_POOL:
        return maxpool(args[0], p, node.pool.window)
    if op is OpType.FLATTEN:
        return rescale(args[0].reshape(-1), p)
    return rescale(args[0], p)  # unfused ReLU / ReLU6


def run_int8(graph: Graph, quantization: Quantization, int8_nodes: Iterable[Node],
             x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the int8 region on one float32 sample: every tensor it holds (the quantized input,
    each node's output; a fused Conv's output is its ReLU's) as an int8 array."""
    region = list(int8_nodes)
    assert x.shape == graph.input_shape, (x.shape, graph.input_shape)
    values = {graph.input: quantization.tensors[graph.input].quantize(x)}
    for node in region:
        conv = fusing_conv(graph, node, region)
        if conv is not None:
            values[node.output] = values[conv.output]
            continue
        params = lower_node(graph, quantization, node, region)
        weights = quantization.weights[node.name].values if node.op is OpType.CONV else None
        values[node.output] = run_node(node, params, [values[t] for t in node.inputs], weights)
        assert values[node.output].shape == graph.shapes[node.output], node.name
    return values
