"""Per-op lowering: the integer parameters each int8 op of the frozen backbone runs with
(docs/quantization.md §3-5), computed from the float graph and its :class:`Quantization`.

The field names and order of the parameter dataclasses are those of the C structs
(``mdy_q8_conv_t``, ``mdy_q8_rescale_t``, ``mdy_q8_add_t``); the code generator checks them.
Multipliers are computed in float64 from the float32 scales (``scheme.fixed_point``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph, Node, OpType, Window, classifier_node
from medyate_mcu.quant.scheme import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    INT32_MIN,
    FixedPoint,
    Quantization,
    TensorQuant,
    fixed_point,
)

ADD_LEFT_SHIFT = 20  # TFLite's left shift of the add operands (docs/quantization.md §3)
ACTIVATIONS = (OpType.RELU, OpType.RELU6)
RESCALED = (OpType.RELU, OpType.RELU6, OpType.FLATTEN, OpType.MAX_POOL)


@dataclass(frozen=True, eq=False)  # array fields: compare with np.array_equal, field by field
class QConvParams:
    """``mdy_q8_conv_t``: int32 bias and Q31 multiplier/shift per output channel."""

    bias: np.ndarray  # int32 (O,)
    multiplier: np.ndarray  # int32 (O,)
    shift: np.ndarray  # int8 (O,)
    in_zero: int
    out_zero: int
    act_min: int
    act_max: int


@dataclass(frozen=True)
class QRescaleParams:
    """``mdy_q8_rescale_t``: ``y = out_zero + requantize(x - in_zero, multiplier, shift)``."""

    in_zero: int
    out_zero: int
    multiplier: int
    shift: int
    act_min: int
    act_max: int


@dataclass(frozen=True)
class QAddParams:
    """``mdy_q8_add_t``: TFLite's int8 add with a left shift of ``ADD_LEFT_SHIFT``."""

    in1_zero: int
    in2_zero: int
    out_zero: int
    in1_multiplier: int
    in1_shift: int
    in2_multiplier: int
    in2_shift: int
    out_multiplier: int
    out_shift: int
    act_min: int
    act_max: int


QParams = QConvParams | QRescaleParams | QAddParams
NodeSet = Iterable[Node] | Iterable[str]


def node_names(nodes: NodeSet) -> set[str]:
    """Node names of a collection of nodes or names (``Node`` is not hashable)."""
    return {item if isinstance(item, str) else item.name for item in nodes}


def int8_region(graph: Graph, candidates: Iterable[str]) -> list[Node]:
    """The int8 region (§5), in graph order: every node but the classifier with no candidate
    layer at or upstream of it."""
    head = classifier_node(graph).name
    floating: set[str] = set()  # tensors at or downstream of a candidate
    region = []
    candidate_names = set(candidates)
    for node in graph.nodes:
        if node.name in candidate_names or any(t in floating for t in node.inputs):
            floating.add(node.output)
        elif node.name != head:
            region.append(node)
    return region


def fused_activation(graph: Graph, node: Node, int8_nodes: NodeSet) -> Node | None:
    """The ReLU/ReLU6 a Conv of the int8 region fuses (§4): the only reader of its output, and
    itself in the int8 region. None for other nodes."""
    names = node_names(int8_nodes)
    if node.op is not OpType.CONV or node.name not in names or node.output == graph.output:
        return None
    readers = graph.consumers(node.output)
    if len(readers) == 1 and readers[0].op in ACTIVATIONS and readers[0].name in names:
        return readers[0]
    return None


def fusing_conv(graph: Graph, node: Node, int8_nodes: NodeSet) -> Node | None:
    """The Conv a ReLU/ReLU6 is fused into (the ReLU then does nothing), or None."""
    if node.op not in ACTIVATIONS:
        return None
    producer = graph.producer(node.inputs[0])
    if producer is not None and fused_activation(graph, producer, int8_nodes) is node:
        return producer
    return None


def output_quant(graph: Graph, quantization: Quantization, node: Node,
                 int8_nodes: NodeSet) -> TensorQuant:
    """The (s, z) ``node`` writes: its fused ReLU's for a fused Conv."""
    fused = fused_activation(graph, node, int8_nodes)
    return quantization.tensors[(fused or node).output]


def _activation_range(op: OpType, quant: TensorQuant) -> tuple[int, int]:
    """The int8 clamp of an op writing ``quant``, followed by ``op`` (§4)."""
    if op is OpType.RELU:
        return quant.real_to_int(0.0), INT8_MAX
    if op is OpType.RELU6:
        return quant.real_to_int(0.0), quant.real_to_int(6.0)
    return INT8_MIN, INT8_MAX


def _multiplier(real: float) -> FixedPoint:
    return fixed_point(float(real))


def lower_conv(graph: Graph, quantization: Quantization, node: Node,
               int8_nodes: NodeSet) -> QConvParams:
    """A Conv: ``M[o] = s_x · s_w[o] / s_y``, ``bias_q = rint(bias / (s_x · s_w))`` (§1, §3)."""
    x = quantization.tensors[node.inputs[0]]
    y = output_quant(graph, quantization, node, int8_nodes)
    fused = fused_activation(graph, node, int8_nodes)
    weights = quantization.weights[node.name]
    s_w = weights.scales.astype(np.float64)
    s_x = np.float64(np.float32(x.scale))
    s_y = np.float64(np.float32(y.scale))
    bias = np.rint(node.params["bias"].astype(np.float64) / (s_x * s_w))
    fixed = [_multiplier(s_x * s / s_y) for s in s_w]
    act_min, act_max = _activation_range(fused.op if fused else node.op, y)
    return QConvParams(
        bias=np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int32),
        multiplier=np.array([f.multiplier for f in fixed], np.int32),
        shift=np.array([f.shift for f in fixed], np.int8),
        in_zero=x.zero_point, out_zero=y.zero_point, act_min=act_min, act_max=act_max)


def lower_add(graph: Graph, quantization: Quantization, node: Node,
              int8_nodes: NodeSet) -> QAddParams:
    """An Add (TFLite): both operands to ``2·max(s_a, s_b)``, left-shifted by 20, summed,
    then to ``s_y``."""
    a, b = (quantization.tensors[name] for name in node.inputs)
    y = output_quant(graph, quantization, node, int8_nodes)
    s_a, s_b, s_y = (np.float64(np.float32(q.scale)) for q in (a, b, y))
    twice = 2.0 * max(s_a, s_b)
    m_a, m_b = _multiplier(s_a / twice), _multiplier(s_b / twice)
    m_y = _multiplier(twice / ((1 << ADD_LEFT_SHIFT) * s_y))
    return QAddParams(
        in1_zero=a.zero_point, in2_zero=b.zero_point, out_zero=y.zero_point,
        in1_multiplier=m_a.multiplier, in1_shift=m_a.shift,
        in2_multiplier=m_b.multiplier, in2_shift=m_b.shift,
        out_multiplier=m_y.multiplier, out_shift=m_y.shift,
        act_min=INT8_MIN, act_max=INT8_MAX)


def _rescale(x: TensorQuant, y: TensorQuant, divisor: int, op: OpType) -> QRescaleParams:
    """``y = z_y + requantize(Σ (x - z_x), s_x / (s_y · divisor))``, clamped for ``op``."""
    fixed = _multiplier(np.float64(np.float32(x.scale))
                        / (np.float64(np.float32(y.scale)) * divisor))
    act_min, act_max = _activation_range(op, y)
    return QRescaleParams(in_zero=x.zero_point, out_zero=y.zero_point,
                          multiplier=fixed.multiplier, shift=fixed.shift,
                          act_min=act_min, act_max=act_max)


def lower_rescale(graph: Graph, quantization: Quantization, node: Node,
                  int8_nodes: NodeSet) -> QRescaleParams:
    """An unfused ReLU/ReLU6 (a clamp), a Flatten or a MaxPool (after its max): ``M = s_x / s_y``.
    """
    assert node.op in RESCALED, node.op
    y = output_quant(graph, quantization, node, int8_nodes)
    return _rescale(quantization.tensors[node.inputs[0]], y, 1, node.op)


def lower_global_avgpool(graph: Graph, quantization: Quantization, node: Node,
                         int8_nodes: NodeSet) -> QRescaleParams:
    """A global average pool over ``H·W`` cells: ``M = s_x / (s_y · H·W)``."""
    _, height, width = graph.shapes[node.inputs[0]]
    y = output_quant(graph, quantization, node, int8_nodes)
    return _rescale(quantization.tensors[node.inputs[0]], y, height * width, node.op)


def window_counts(window: Window, height: int, width: int) -> np.ndarray:
    """The number of input cells (padding excluded) in each window: (out_h, out_w)."""
    out = window.output_hw(height, width)
    axes = []
    for axis, size in enumerate((height, width)):
        start = np.arange(out[axis]) * window.stride[axis] - window.pads[axis]
        stop = start + window.kernel[axis]
        axes.append(np.minimum(stop, size) - np.maximum(start, 0))
    return np.outer(axes[0], axes[1])


def lower_avgpool(graph: Graph, quantization: Quantization, node: Node,
                  int8_nodes: NodeSet) -> QRescaleParams:
    """An average pool whose windows all divide by the same count: ``M = s_x / (s_y · count)``;
    the count is the window area when padding is counted."""
    window = node.pool.window
    _, height, width = graph.shapes[node.inputs[0]]
    counts = window_counts(window, height, width)
    if node.pool.count_include_pad:
        count = window.kernel[0] * window.kernel[1]
    elif counts.min() == counts.max():
        count = int(counts.flat[0])
    else:
        raise MedyateError(
            f"node {node.name!r} (AveragePool): its windows hold {counts.min()} to "
            f"{counts.max()} cells (padding not counted), which no single int8 multiplier "
            "divides; export it with count_include_pad=1 or without padding, or keep it float")
    y = output_quant(graph, quantization, node, int8_nodes)
    return _rescale(quantization.tensors[node.inputs[0]], y, count, node.op)


LOWERINGS: dict[OpType, Callable[[Graph, Quantization, Node, NodeSet], QParams]] = {
    OpType.CONV: lower_conv,
    OpType.ADD: lower_add,
    OpType.GLOBAL_AVG_POOL: lower_global_avgpool,
    OpType.AVG_POOL: lower_avgpool,
    **{op: lower_rescale for op in RESCALED},
}


def lower_node(graph: Graph, quantization: Quantization, node: Node,
               int8_nodes: NodeSet) -> QParams | None:
    """The integer parameters of ``node`` of the int8 region; None for a ReLU fused into the
    Conv before it (that Conv already wrote its output)."""
    if fusing_conv(graph, node, int8_nodes) is not None:
        return None
    lowering = LOWERINGS.get(node.op)
    if lowering is None:
        raise MedyateError(
            f"node {node.name!r} ({node.op.value}) lies in the int8 region (no trainable layer "
            f"at or before it) but has no int8 kernel; make a layer before it a candidate, or "
            "compile with --backbone float32")
    return lowering(graph, quantization, node, int8_nodes)
