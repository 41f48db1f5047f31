"""The graph IR: a small, typed, topologically ordered graph of ops with static shapes.

Shapes are per sample (no batch axis): ``(C, H, W)`` for feature maps, ``(F,)`` for vectors.
Every node has exactly one output tensor, named after the node's output in the source model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from medyate_mcu.errors import ModelError

Shape = tuple[int, ...]


class OpType(StrEnum):
    """The operators of the IR (after import; BatchNorm and Identity disappear in passes)."""

    CONV = "Conv"
    BATCH_NORM = "BatchNorm"
    RELU = "Relu"
    RELU6 = "Relu6"
    ADD = "Add"
    GLOBAL_AVG_POOL = "GlobalAveragePool"
    AVG_POOL = "AveragePool"
    MAX_POOL = "MaxPool"
    FLATTEN = "Flatten"
    LINEAR = "Linear"
    IDENTITY = "Identity"


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window: kernel, stride and padding ``(top, left, bottom, right)``."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Output spatial size for an input of ``height`` x ``width`` (floor mode)."""
        top, left, bottom, right = self.pads
        out_h = (height + top + bottom - self.kernel[0]) // self.stride[0] + 1
        out_w = (width + left + right - self.kernel[1]) // self.stride[1] + 1
        return out_h, out_w


@dataclass(frozen=True)
class ConvAttrs:
    window: Window
    groups: int = 1


@dataclass(frozen=True)
class PoolAttrs:
    window: Window
    count_include_pad: bool = False


@dataclass(frozen=True)
class BatchNormAttrs:
    epsilon: float = 1e-5


Attrs = ConvAttrs | PoolAttrs | BatchNormAttrs | None


@dataclass
class Node:
    """One op. ``params`` holds its constant tensors.

    Conv: ``weight`` (C_out, C_in/G, kh, kw) and ``bias`` (C_out,).
    Linear: ``weight`` (out, in) and ``bias`` (out,).
    BatchNorm: ``scale``, ``bias``, ``mean``, ``var`` (C,).
    """

    name: str
    op: OpType
    inputs: list[str]
    output: str
    attrs: Attrs = None
    params: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def conv(self) -> ConvAttrs:
        assert isinstance(self.attrs, ConvAttrs), f"{self.name} is not a Conv"
        return self.attrs

    @property
    def pool(self) -> PoolAttrs:
        assert isinstance(self.attrs, PoolAttrs), f"{self.name} is not a pool"
        return self.attrs


@dataclass
class Graph:
    """A single-input, single-output network."""

    name: str
    input: str
    output: str
    nodes: list[Node]
    shapes: dict[str, Shape] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def input_shape(self) -> Shape:
        return self.shapes[self.input]

    @property
    def output_shape(self) -> Shape:
        return self.shapes[self.output]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def producer(self, tensor: str) -> Node | None:
        """The node that writes ``tensor`` (None for the graph input)."""
        for node in self.nodes:
            if node.output == tensor:
                return node
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [node for node in self.nodes if tensor in node.inputs]

    def nodes_of(self, *ops: OpType) -> list[Node]:
        return [node for node in self.nodes if node.op in ops]

    def parameter_count(self) -> int:
        return sum(int(array.size) for node in self.nodes for array in node.params.values())

    def check(self) -> None:
        """Assert the structural invariants: unique names, topological order, one producer each."""
        defined = {self.input}
        names: set[str] = set()
        for node in self.nodes:
            assert node.name not in names, f"duplicate node name {node.name!r}"
            names.add(node.name)
            for tensor in node.inputs:
                assert tensor in defined, f"{node.name} reads {tensor!r} before it is written"
            assert node.output not in defined, f"{node.output!r} is written twice"
            defined.add(node.output)
        assert self.output in defined, f"graph output {self.output!r} is never written"


def classifier_node(graph: Graph) -> Node:
    """The final Linear layer, the one that writes the graph output: the classifier the device
    trains (float32 in every backbone, re-initialised for the task)."""
    node = graph.producer(graph.output)
    if node is None or node.op is not OpType.LINEAR:
        raise ModelError(f"the model's output {graph.output!r} must come from a Linear layer "
                         "(the classifier trained on the device); found "
                         f"{node.op.value if node else 'the input'}")
    return node
