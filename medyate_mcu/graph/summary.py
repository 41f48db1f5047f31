"""Per-layer facts about a graph: shapes, parameter counts, MACs, conv kinds."""

from __future__ import annotations

from dataclasses import dataclass

from medyate_mcu.graph.ir import Graph, Node, OpType, Shape


@dataclass(frozen=True)
class LayerSummary:
    name: str
    op: str  # the IR op, with the conv kind for convs, e.g. "Conv (depthwise 3x3)"
    input_shape: Shape
    output_shape: Shape
    parameters: int
    macs: int


def conv_kind(graph: Graph, node: Node) -> str:
    """'depthwise', 'pointwise', 'grouped' or 'regular'."""
    in_channels = graph.shapes[node.inputs[0]][0]
    groups = node.conv.groups
    if groups > 1 and groups == in_channels:
        return "depthwise"
    if groups > 1:
        return "grouped"
    if node.conv.window.kernel == (1, 1):
        return "pointwise"
    return "regular"


def macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates of the node's forward pass for one sample (Conv and Linear only)."""
    if node.op is OpType.CONV:
        out_channels, in_per_group, kh, kw = node.params["weight"].shape
        _, out_h, out_w = graph.shapes[node.output]
        return out_channels * out_h * out_w * in_per_group * kh * kw
    if node.op is OpType.LINEAR:
        return int(node.params["weight"].size)
    return 0


def summarize(graph: Graph) -> list[LayerSummary]:
    rows = []
    for node in graph.nodes:
        label = node.op.value
        if node.op is OpType.CONV:
            kh, kw = node.conv.window.kernel
            label = f"Conv ({conv_kind(graph, node)} {kh}x{kw}"
            stride = node.conv.window.stride
            label += f", stride {stride[0]})" if stride != (1, 1) else ")"
        rows.append(LayerSummary(
            name=node.name,
            op=label,
            input_shape=graph.shapes[node.inputs[0]],
            output_shape=graph.shapes[node.output],
            parameters=sum(int(p.size) for p in node.params.values()),
            macs=macs(graph, node),
        ))
    return rows
