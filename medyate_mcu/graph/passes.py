"""Graph passes: identity removal, BatchNorm folding, dead-node removal, shape inference."""

from __future__ import annotations

import math

import numpy as np

from medyate_mcu.errors import ModelError
from medyate_mcu.graph.ir import ConvAttrs, Graph, Node, OpType, Shape, Window


def _rename_tensor(graph: Graph, old: str, new: str) -> None:
    for node in graph.nodes:
        node.inputs = [new if tensor == old else tensor for tensor in node.inputs]
    if graph.output == old:
        graph.output = new


def remove_identities(graph: Graph) -> None:
    """Drop Identity nodes (ONNX Identity and Dropout), rewiring their readers to their input."""
    for node in list(graph.nodes):
        if node.op is not OpType.IDENTITY:
            continue
        graph.nodes.remove(node)
        source = node.inputs[0]
        if graph.output == node.output and source == graph.input:
            raise ModelError("the model computes nothing: its output is its input")
        _rename_tensor(graph, node.output, source)


def fold_batch_norm(graph: Graph) -> None:
    """Fold each BatchNorm into the Conv that feeds it; a BatchNorm with no such Conv
    becomes a 1x1 depthwise Conv (the same per-channel affine map)."""
    for bn in graph.nodes_of(OpType.BATCH_NORM):
        stats = {key: value.astype(np.float64) for key, value in bn.params.items()}
        scale = stats["scale"] / np.sqrt(stats["var"] + bn.attrs.epsilon)
        shift = stats["bias"] - stats["mean"] * scale
        producer = graph.producer(bn.inputs[0])
        foldable = (
            producer is not None
            and producer.op is OpType.CONV
            and len(graph.consumers(producer.output)) == 1
            and producer.output != graph.output
        )
        if foldable:
            assert producer is not None
            producer.params["weight"] = producer.params["weight"] * scale[:, None, None, None]
            producer.params["bias"] = producer.params["bias"] * scale + shift
            graph.nodes.remove(bn)
            producer.output = bn.output  # the Conv's own output had the BatchNorm as sole reader
        else:
            channels = scale.shape[0]
            bn.op = OpType.CONV
            bn.attrs = ConvAttrs(window=Window(kernel=(1, 1)), groups=channels)
            bn.params = {
                "weight": scale.reshape(channels, 1, 1, 1),
                "bias": shift,
            }
    for node in graph.nodes:
        for key, value in node.params.items():
            node.params[key] = np.asarray(value, dtype=np.float32)


def remove_dead_nodes(graph: Graph) -> None:
    """Drop nodes whose output does not reach the graph output."""
    live = {graph.output}
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        if node.output in live:
            kept.append(node)
            live.update(node.inputs)
    graph.nodes = list(reversed(kept))


def infer_shapes(graph: Graph) -> None:
    """Compute the per-sample shape of every tensor from the input shape, checking each op."""
    shapes: dict[str, Shape] = {graph.input: graph.shapes[graph.input]}
    for node in graph.nodes:
        shapes[node.output] = output_shape(node, [shapes[name] for name in node.inputs])
    graph.shapes = shapes


def _fail(node: Node, message: str) -> ModelError:
    return ModelError(f"node {node.name!r} ({node.op.value}): {message}")


def output_shape(node: Node, inputs: list[Shape]) -> Shape:
    """The per-sample output shape of ``node`` for inputs of the given shapes."""
    first = inputs[0]
    op = node.op
    spatial = (OpType.CONV, OpType.AVG_POOL, OpType.MAX_POOL, OpType.GLOBAL_AVG_POOL)
    if op in spatial and len(first) != 3:
        raise _fail(node, f"needs a (C, H, W) feature map, got shape {first}")
    if op is OpType.CONV:
        weight = node.params["weight"]
        groups = node.conv.groups
        channels, height, width = first
        if channels != weight.shape[1] * groups:
            raise _fail(
                node,
                f"weight {tuple(weight.shape)} with {groups} group(s) expects "
                f"{weight.shape[1] * groups} input channels, got {channels}",
            )
        out_h, out_w = node.conv.window.output_hw(height, width)
        return _checked(node, (weight.shape[0], out_h, out_w))
    if op in (OpType.AVG_POOL, OpType.MAX_POOL):
        out_h, out_w = node.pool.window.output_hw(first[1], first[2])
        return _checked(node, (first[0], out_h, out_w))
    if op is OpType.GLOBAL_AVG_POOL:
        return (first[0], 1, 1)
    if op is OpType.FLATTEN:
        return (math.prod(first),)
    if op is OpType.LINEAR:
        weight = node.params["weight"]
        if first != (weight.shape[1],):
            raise _fail(node, f"weight {tuple(weight.shape)} expects ({weight.shape[1]},), "
                        f"got {first}")
        return (weight.shape[0],)
    if op is OpType.ADD:
        if inputs[0] != inputs[1]:
            raise _fail(node, f"operands differ in shape: {inputs[0]} vs {inputs[1]} "
                        "(only same-shape residual adds are supported)")
        return first
    if op is OpType.BATCH_NORM and first[0] != node.params["scale"].shape[0]:
        raise _fail(node, f"has {node.params['scale'].shape[0]} channels, input {first}")
    return first


def _checked(node: Node, shape: Shape) -> Shape:
    if min(shape) <= 0:
        raise _fail(node, f"output shape {shape} is empty: the input is too small for its window")
    return shape


def run_default_passes(graph: Graph) -> Graph:
    """The pipeline every imported graph goes through."""
    remove_identities(graph)
    fold_batch_norm(graph)
    remove_dead_nodes(graph)
    infer_shapes(graph)
    graph.check()
    return graph
