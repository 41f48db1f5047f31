"""Executing the int8 region at a smaller RAM peak (docs/quantization.md §10).

- **Fused inverted residual**: ``[1×1 expand + ReLU(6)] → depthwise + ReLU(6) → 1×1 project``
  computed one hidden channel at a time (``mdy_q8_block_forward``): the expansion and the
  depthwise output are never whole in RAM; the projection sums into int32 accumulators. Chosen
  where that lowers the block's peak (at high resolution, where the expansion is large).
- **In-place depthwise**: a depthwise conv of the int8 region whose input nothing else reads
  writes its output over its input, channel by channel, through a one-channel scratch
  (``mdy_q8_depthwise_inplace_forward``).

Both give the same bits as the layer-by-layer kernels (integer sums are exact), so the numpy
integer reference is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medyate_mcu.graph.ir import Graph, Node, OpType
from medyate_mcu.quant.lowering import ACTIVATIONS, NodeSet, node_names

ACCUMULATOR_BYTES = 4  # int32


@dataclass(frozen=True)
class InvertedResidual:
    """A fused block: each conv with the ReLU/ReLU6 it fuses (the projection's may be None)."""

    expand: Node | None
    expand_act: Node | None
    depthwise: Node
    depthwise_act: Node
    project: Node

    @property
    def absorbed(self) -> list[Node]:
        """The nodes whose outputs the fused kernel never writes (all but the projection)."""
        return [n for n in (self.expand, self.expand_act, self.depthwise, self.depthwise_act)
                if n is not None]

    @property
    def first(self) -> Node:
        return self.expand or self.depthwise


def is_pointwise(graph: Graph, node: Node) -> bool:
    """A 1×1 conv, stride 1, no padding, no groups."""
    window = node.conv.window
    return (node.op is OpType.CONV and window.kernel == (1, 1) and window.stride == (1, 1)
            and not any(window.pads) and node.conv.groups == 1)


def is_depthwise(graph: Graph, node: Node) -> bool:
    """One output channel per input channel (groups = in_c = out_c)."""
    channels = graph.shapes[node.inputs[0]][0]
    return (node.op is OpType.CONV and node.conv.groups == channels
            and graph.shapes[node.output][0] == channels)


def _sole_reader(graph: Graph, node: Node, names: set[str]) -> Node | None:
    readers = graph.consumers(node.output)
    if len(readers) == 1 and readers[0].name in names and node.output != graph.output:
        return readers[0]
    return None


def _activation_after(graph: Graph, conv: Node, names: set[str]) -> Node | None:
    reader = _sole_reader(graph, conv, names)
    return reader if reader is not None and reader.op in ACTIVATIONS else None


def _bytes(graph: Graph, tensor: str) -> int:
    return math.prod(graph.shapes[tensor])


def block_buffers(graph: Graph, block: InvertedResidual) -> tuple[int, int]:
    """(scratch bytes, accumulator bytes) of the fused kernel: one expanded channel and one
    depthwise channel; the projection's output in int32."""
    _, in_h, in_w = graph.shapes[block.depthwise.inputs[0]]
    _, out_h, out_w = graph.shapes[block.depthwise.output]
    scratch = (in_h * in_w if block.expand is not None else 0) + out_h * out_w
    return scratch, _bytes(graph, block.project.output) * ACCUMULATOR_BYTES


def _worth_fusing(graph: Graph, block: InvertedResidual) -> bool:
    """The fused peak (input, scratch, accumulators, output) is below the layer-by-layer one
    (the depthwise in place): at high resolution with an expansion, not without one."""
    source = block.first.inputs[0]
    hidden = _bytes(graph, block.depthwise.inputs[0])
    dw_out = _bytes(graph, block.depthwise.output)
    out = _bytes(graph, block.project.output)
    scratch, acc = block_buffers(graph, block)
    unfused = max(_bytes(graph, source) + hidden, hidden, dw_out + out)
    fused = _bytes(graph, source) + scratch + acc + out
    return fused < unfused


def fused_blocks(graph: Graph, int8_nodes: NodeSet) -> list[InvertedResidual]:
    """The inverted-residual blocks of the int8 region that run fused, in graph order."""
    names = node_names(int8_nodes)
    blocks = []
    for node in graph.nodes:
        if node.name not in names or not is_depthwise(graph, node):
            continue
        depthwise_act = _activation_after(graph, node, names)
        project = _sole_reader(graph, depthwise_act, names) if depthwise_act else None
        if depthwise_act is None or project is None or not is_pointwise(graph, project):
            continue
        expand = expand_act = None
        feeder = graph.producer(node.inputs[0])
        if feeder is not None and feeder.op in ACTIVATIONS and feeder.name in names:
            conv = graph.producer(feeder.inputs[0])
            if conv is not None and conv.name in names and is_pointwise(graph, conv) \
                    and _activation_after(graph, conv, names) is feeder \
                    and _sole_reader(graph, feeder, names) is node:
                expand, expand_act = conv, feeder
        block = InvertedResidual(expand, expand_act, node, depthwise_act, project)
        if expand is not None and _worth_fusing(graph, block):
            blocks.append(block)
    return blocks


def in_place_depthwise(graph: Graph, int8_nodes: NodeSet,
                       blocks: list[InvertedResidual]) -> list[Node]:
    """Depthwise convs of the int8 region, outside fused blocks, that overwrite their input:
    nothing else reads it, it is not the sample, and the output is no larger."""
    names = node_names(int8_nodes)
    absorbed = {n.name for block in blocks for n in block.absorbed}
    found = []
    for node in graph.nodes:
        if node.name not in names or node.name in absorbed or not is_depthwise(graph, node):
            continue
        source = node.inputs[0]
        producer = graph.producer(source)
        if producer is None or producer.name not in names or len(graph.consumers(source)) != 1:
            continue
        if _bytes(graph, node.output) <= _bytes(graph, source):
            found.append(node)
    return found


def depthwise_scratch(graph: Graph, node: Node) -> int:
    """Bytes of the in-place depthwise's scratch: one input channel."""
    _, height, width = graph.shapes[node.inputs[0]]
    return height * width
