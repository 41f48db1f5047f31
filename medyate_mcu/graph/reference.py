"""The reference forward pass: a ``torch.nn.Module`` that executes a graph IR.

This module is the numerical ground truth on the host: later stages train it as the reference
simulator and compare the C engine with it. Conv and Linear weights are ``nn.Parameter``s.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medyate_mcu.graph.ir import Graph, Node, OpType, Window


def parameter_key(node_name: str) -> str:
    """A ``ParameterDict``-safe key for a node name."""
    return re.sub(r"\W", "_", node_name)


FrozenPrefix = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class ReferenceNet(nn.Module):
    """Runs ``graph`` on a batch ``(N, *graph.input_shape)``.

    ``prefix`` (with ``prefix_nodes``) computes part of the network elsewhere: given the batch it
    returns the values of the tensors those nodes write that other nodes read (the int8 region
    of docs/quantization.md, run by the integer reference), and those nodes are skipped."""

    def __init__(self, graph: Graph, prefix: FrozenPrefix | None = None,
                 prefix_nodes: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.graph = graph
        self.prefix = prefix
        self.prefix_nodes = prefix_nodes
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        self.keys: dict[str, str] = {}
        # Decisions given from outside (the verifier forces the C engine's): ReLU/ReLU6 node ->
        # its gradient mask (bool, the output's shape), max-pool node -> the window cell each
        # output takes (int64, row-major tap index in the padded window).
        self.forced: dict[str, torch.Tensor] = {}
        for node in graph.nodes:
            if node.op not in (OpType.CONV, OpType.LINEAR):
                continue
            key = parameter_key(node.name)
            assert key not in self.weights, f"two nodes map to parameter key {key!r}"
            self.keys[node.name] = key
            self.weights[key] = nn.Parameter(torch.from_numpy(node.params["weight"].copy()))
            self.biases[key] = nn.Parameter(torch.from_numpy(node.params["bias"].copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_taps(x, frozenset())[0]

    def forward_with_taps(self, x: torch.Tensor, taps: frozenset[str] | set[str]
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                     dict[str, torch.Tensor]]:
        """Forward pass that also returns the input and output of each node named in ``taps``.

        Tapped outputs take part in autograd (their ``.grad`` is the error dL/dY after
        ``backward()``), even when nothing upstream requires a gradient.
        """
        values = {self.graph.input: x}
        if self.prefix is not None:
            values.update(self.prefix(x))
        inputs: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}
        for node in self.graph.nodes:
            if node.name in self.prefix_nodes:
                continue
            args = [values[name] for name in node.inputs]
            result = self._run(node, args)
            if node.name in taps:
                inputs[node.name] = args[0]
                if torch.is_grad_enabled():
                    if not result.requires_grad:
                        result.requires_grad_(True)
                    result.retain_grad()
                outputs[node.name] = result
            values[node.output] = result
        return values[self.graph.output], inputs, outputs

    def _run(self, node: Node, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = inputs[0]
        op = node.op
        if op is OpType.CONV:
            key = self.keys[node.name]
            window = node.conv.window
            return F.conv2d(_pad(x, window, 0.0), self.weights[key], self.biases[key],
                            stride=window.stride, groups=node.conv.groups)
        if op is OpType.LINEAR:
            key = self.keys[node.name]
            return F.linear(x, self.weights[key], self.biases[key])
        if op in (OpType.RELU, OpType.RELU6) and node.name in self.forced:
            return _ForcedClamp.apply(x, self.forced[node.name], op is OpType.RELU6)
        if op is OpType.RELU:
            return F.relu(x)
        if op is OpType.RELU6:
            return F.relu6(x)
        if op is OpType.MAX_POOL and node.name in self.forced:
            return pick_window_cells(x, node.pool.window, self.forced[node.name])
        if op is OpType.ADD:
            return x + inputs[1]
        if op is OpType.GLOBAL_AVG_POOL:
            return x.mean(dim=(2, 3), keepdim=True)
        if op is OpType.FLATTEN:
            return x.flatten(1)
        if op is OpType.MAX_POOL:
            window = node.pool.window
            return F.max_pool2d(_pad(x, window, float("-inf")), window.kernel, window.stride)
        if op is OpType.AVG_POOL:
            return _average_pool(x, node)
        raise NotImplementedError(f"{op.value} should have been removed by the passes")


def _pad(x: torch.Tensor, window: Window, value: float) -> torch.Tensor:
    top, left, bottom, right = window.pads
    if not any(window.pads):
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _average_pool(x: torch.Tensor, node: Node) -> torch.Tensor:
    """Average pool with any (asymmetric) padding; padded cells count only if asked."""
    window = node.pool.window
    area = window.kernel[0] * window.kernel[1]
    sums = F.avg_pool2d(_pad(x, window, 0.0), window.kernel, window.stride) * area
    if node.pool.count_include_pad or not any(window.pads):
        return sums / area
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    counts = F.avg_pool2d(_pad(ones, window, 0.0), window.kernel, window.stride) * area
    return sums / counts


class _ForcedClamp(torch.autograd.Function):
    """``clamp(x, 0, 6 or ∞)`` forward; backward passes the error only where ``mask`` is set
    (a gradient mask decided elsewhere, e.g. by the C engine)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, six: bool) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x.clamp(0.0, 6.0) if six else x.clamp(min=0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad, torch.zeros_like(grad)), None, None


def window_cells(x: torch.Tensor, window: Window) -> torch.Tensor:
    """Every pooling window's cells: (N, C, kh·kw, out_h·out_w), padding as -inf."""
    n, c = x.shape[:2]
    cells = F.unfold(_pad(x, window, float("-inf")), window.kernel, stride=window.stride)
    return cells.view(n, c, window.kernel[0] * window.kernel[1], -1)


def pick_window_cells(x: torch.Tensor, window: Window, cell: torch.Tensor) -> torch.Tensor:
    """Max pool whose outputs take the given window ``cell`` (N, C, out_h, out_w) instead of
    their own maxima; the error flows back to those cells."""
    picked = window_cells(x, window).gather(2, cell.reshape(*cell.shape[:2], 1, -1))
    return picked.reshape(cell.shape)
