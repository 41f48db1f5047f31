"""Activation decisions of the C engine and of the reference, and the float32 rounding bound
within which they may differ (the derivation is in docs/verification.md).

A decision is what the backward pass reads from the forward pass and what no small change of a
value can change smoothly: a ReLU/ReLU6 gradient-mask bit (``0 < x < 6``) and a max-pool argmax.
The C engine keeps them in the arena (``mask:`` and ``argmax:`` buffers of the memory plan) for
exactly the activations the backward pass crosses; every other ReLU or max-pool is only a
continuous function of its input (clamp, max) and cannot make the two sides jump apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medyate_mcu.graph.ir import Graph, Node, OpType
from medyate_mcu.graph.reference import ReferenceNet, window_cells
from medyate_mcu.planning.arena import ArenaPlan
from medyate_mcu.planning.memory import EngineMemory, activation_offset, int8_layout
from medyate_mcu.quant.lowering import fusing_conv
from medyate_mcu.run.engine_lib import EngineLibrary

UNIT_ROUNDOFF = 2.0 ** -24  # u: float32, round to nearest
RELU6_TOP = 6.0


def gamma(n: int) -> float:
    """Higham's γ_n = n·u / (1 − n·u): the relative error bound of n float32 roundings."""
    return n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)


def decision_nodes(graph: Graph, arena: ArenaPlan) -> list[Node]:
    """The ReLU/ReLU6/max-pool nodes whose mask or argmax the plan keeps for the backward pass."""
    names = {p.buffer.name for p in arena.placements}
    return [node for node in graph.nodes
            if node.op in (OpType.RELU, OpType.RELU6, OpType.MAX_POOL)
            and _buffer_name(node) in names]


class DecisionRecorder:
    """Reads the C engine's decisions, and the outputs of the nodes that make them, from its
    arena each time the library's debug export calls (right after the kernel wrote them), at the
    plan's offsets; one record per sample."""

    def __init__(self, engine: EngineLibrary, memory: EngineMemory) -> None:
        graph = self.graph = memory.schedule.graph
        self.nodes = {graph.nodes.index(node): node
                      for node in decision_nodes(graph, memory.arena)}
        self.offsets = {node.name: memory.arena.offset_of(_buffer_name(node))
                        for node in self.nodes.values()}
        self.values = {node.name: activation_offset(memory, node.output) // 4
                       for node in self.nodes.values()}
        # the int8 region's ops (docs/quantization.md: the generated code calls the hook after
        # each but a fused ReLU), and where their int8 outputs lie
        layout = int8_layout(graph, memory.int8_nodes)
        self.int8_nodes = {graph.nodes.index(node): node for node in graph.nodes
                           if node.name in memory.int8_nodes and layout.block_of(node) is None
                           and fusing_conv(graph, node, memory.int8_nodes) is None}
        self.int8_offsets = {node.name: activation_offset(memory, node.output)
                             for node in self.int8_nodes.values()}
        self.arena = engine.array("mdy_arena", np.uint8, memory.arena.size)
        self.floats = self.arena.view(np.float32)
        # per sample: decisions by node, outputs by tensor, int8 outputs by tensor
        self.samples: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                 dict[str, np.ndarray]]] | None = None
        self.last_int8: list[dict[str, np.ndarray]] = []  # per sample of the last recording
        engine.on_decisions(self._read)

    def start(self) -> None:
        self.samples = []

    def next_sample(self) -> None:
        assert self.samples is not None
        self.samples.append(({}, {}, {}))

    def stop(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The recorded samples' decisions (by node) and output values (by tensor), stacked in
        the batch's order."""
        samples, self.samples = self.samples or [], None
        self.last_int8 = [sample[2] for sample in samples]
        if not samples:
            return {}, {}
        decisions = {node.name: torch.from_numpy(np.stack([s[0][node.name] for s in samples]))
                     for node in self.nodes.values()}
        values = {node.output: torch.from_numpy(np.stack([s[1][node.output] for s in samples]))
                  for node in self.nodes.values()}
        return decisions, values

    def _read(self, index: int) -> None:
        if not self.samples:
            return
        if index in self.int8_nodes:
            node = self.int8_nodes[index]
            offset, n = self.int8_offsets[node.name], math.prod(self.graph.shapes[node.output])
            self.samples[-1][2][node.output] = self.arena[offset:offset + n].view(np.int8) \
                .reshape(self.graph.shapes[node.output]).copy()
            return
        node = self.nodes[index]
        shape = self.graph.shapes[node.output]
        n, offset = math.prod(shape), self.offsets[node.name]
        if node.op is OpType.MAX_POOL:
            value = self.arena[offset:offset + n].astype(np.int64).reshape(shape)
        else:
            bits = np.unpackbits(self.arena[offset:offset + (n + 7) // 8], bitorder="little")
            value = bits[:n].astype(bool).reshape(shape)
        start = self.values[node.name]
        decisions, outputs, _ = self.samples[-1]
        decisions[node.name] = value
        outputs[node.output] = self.floats[start:start + n].reshape(shape).copy()


def _buffer_name(node: Node) -> str:
    return f"argmax:{node.name}" if node.op is OpType.MAX_POOL else f"mask:{node.name}"


def forward_values(net: ReferenceNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor of the reference's own float32 forward pass over the batch ``x``."""
    values = {net.graph.input: x}
    with torch.no_grad():
        if net.prefix is not None:
            values.update(net.prefix(x))
        for node in net.graph.nodes:
            if node.name not in net.prefix_nodes:
                values[node.output] = net._run(node, [values[t] for t in node.inputs])
    return values


def own_decisions(net: ReferenceNet, nodes: list[Node], values: dict[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """The reference's decisions, by the C kernels' rules: mask = 0 < x (< 6); argmax = the
    first window cell holding the maximum."""
    decisions = {}
    for node in nodes:
        x = values[node.inputs[0]]
        if node.op is OpType.MAX_POOL:
            cells = window_cells(x, node.pool.window)
            decisions[node.name] = cells.argmax(2).reshape(values[node.output].shape)
        else:
            top = RELU6_TOP if node.op is OpType.RELU6 else math.inf
            decisions[node.name] = (x > 0) & (x < top)
    return decisions


def rounding_bounds(net: ReferenceNet, values: dict[str, torch.Tensor],
                    known: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per element of every tensor, a bound on |C value − reference value| when both run the
    same float32 forward pass from the same input and weights, each summing in its own order
    (float64; docs/verification.md derives each rule). ``known``: the C's own values of some
    tensors; there the difference is known exactly, with its sign, and carried on as such."""
    graph = net.graph
    known = known or {}
    bounds = {graph.input: torch.zeros_like(values[graph.input], dtype=torch.float64)}
    exact: dict[str, torch.Tensor] = {}  # signed C − reference differences, where known
    with torch.no_grad():
        for node in graph.nodes:
            if node.name in net.prefix_nodes:
                # the int8 region: the C engine and the integer reference agree bit for bit
                # (verify checks it), and so do the float copies a float node reads
                if node.output in values:
                    bounds[node.output] = torch.zeros_like(values[node.output],
                                                           dtype=torch.float64)
                continue
            a = [values[t].double() for t in node.inputs]
            e = [bounds[t] for t in node.inputs]
            bounds[node.output] = _bound(net, node, a, e, exact.get(node.inputs[0]))
            if node.output in known:
                exact[node.output] = known[node.output].double() - values[node.output].double()
                bounds[node.output] = exact[node.output].abs()
    return bounds


def _bound(net: ReferenceNet, node: Node, a: list[torch.Tensor], e: list[torch.Tensor],
           difference: torch.Tensor | None) -> torch.Tensor:
    op = node.op
    if op in (OpType.CONV, OpType.LINEAR):
        key = net.keys[node.name]
        weight = net.weights[key].detach().double().abs()
        bias = net.biases[key].detach().double().abs()
        terms = weight[0].numel() + 1  # products of one output, and the bias
        if op is OpType.CONV:
            window = node.conv.window
            top, left, bottom, right = window.pads

            def spread(v: torch.Tensor) -> torch.Tensor:
                return F.conv2d(F.pad(v, (left, right, top, bottom)), weight, None,
                                stride=window.stride, groups=node.conv.groups)
            bias = bias[:, None, None]
        else:
            def spread(v: torch.Tensor) -> torch.Tensor:
                return F.linear(v, weight)
        magnitude, spread_bound = spread(a[0].abs()), spread(e[0])
        carried = spread_bound if difference is None else _signed(node, net, difference)
        return carried + gamma(terms) * (2 * magnitude + spread_bound + 2 * bias)
    if op in (OpType.RELU, OpType.RELU6):
        return e[0]
    if op is OpType.FLATTEN:
        return e[0].flatten(1)
    if op is OpType.ADD:
        carried = e[0] + e[1]
        return carried + UNIT_ROUNDOFF * (2 * (a[0] + a[1]).abs() + carried)
    if op is OpType.MAX_POOL:
        return net._run(node, [e[0]])
    if op in (OpType.AVG_POOL, OpType.GLOBAL_AVG_POOL):
        shape = a[0].shape
        cells = shape[2] * shape[3] if op is OpType.GLOBAL_AVG_POOL \
            else node.pool.window.kernel[0] * node.pool.window.kernel[1]
        carried, magnitude = net._run(node, [e[0]]), net._run(node, [a[0].abs()])
        return carried + gamma(cells + 4) * (2 * magnitude + carried)
    raise AssertionError(f"no rounding bound for {op.value}")


def _signed(node: Node, net: ReferenceNet, difference: torch.Tensor) -> torch.Tensor:
    """|W · d| for a known input difference d (float64, signs kept; no bias)."""
    weight = net.weights[net.keys[node.name]].detach().double()
    if node.op is OpType.LINEAR:
        return F.linear(difference, weight).abs()
    window = node.conv.window
    top, left, bottom, right = window.pads
    return F.conv2d(F.pad(difference, (left, right, top, bottom)), weight, None,
                    stride=window.stride, groups=node.conv.groups).abs()


@dataclass
class DecisionComparison:
    """One mini-batch's decisions, C against reference."""

    flips: int  # decisions that differ
    unexplained: int  # ... of which lie outside the rounding bound
    closest: float  # the largest (distance to the threshold / bound) over the flips (<= 1: ok)


def compare_decisions(net: ReferenceNet, nodes: list[Node], x: torch.Tensor,
                      ours: dict[str, torch.Tensor],
                      c_values: dict[str, torch.Tensor] | None = None) -> DecisionComparison:
    """Compare the C engine's decisions ``ours`` on the batch ``x`` with the reference's; each
    differing decision is explained only if its pre-activation (ReLU: distance to 0 or 6;
    max-pool: the gap between the two cells) lies within the rounding bound, computed with the
    C's own values ``c_values`` (by tensor) where known."""
    values = forward_values(net, x)
    theirs = own_decisions(net, nodes, values)
    differ = {name: ours[name] != theirs[name] for name in theirs}
    flips = sum(int(d.sum()) for d in differ.values())
    if not flips:
        return DecisionComparison(0, 0, 0.0)
    bounds = rounding_bounds(net, values, c_values)
    unexplained, closest = 0, 0.0
    for node in nodes:
        if not differ[node.name].any():
            continue
        pre, bound = values[node.inputs[0]].double(), bounds[node.inputs[0]]
        if node.op is OpType.MAX_POOL:
            distance, bound = _cell_gap(node, pre, bound, ours[node.name], theirs[node.name])
        else:
            distance = pre.abs()
            if node.op is OpType.RELU6:
                distance = torch.minimum(distance, (pre - RELU6_TOP).abs())
        mask = differ[node.name]
        distance, bound = distance[mask], bound[mask]
        unexplained += int((distance > bound).sum())
        ratio = torch.where(distance > 0, distance / bound, torch.zeros_like(distance))
        closest = max(closest, float(ratio.max()))
    return DecisionComparison(flips, unexplained, closest)


def _cell_gap(node: Node, pre: torch.Tensor, bound: torch.Tensor, ours: torch.Tensor,
              theirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each max-pool output: the reference's value gap between its own cell and the C's
    cell, and the sum of the two cells' bounds (a cell outside the window: infinite gap)."""
    window = node.pool.window
    cells, cell_bounds = window_cells(pre, window), window_cells(bound, window)
    count = cells.shape[2]
    valid = (ours >= 0) & (ours < count)
    picked = ours.clamp(0, count - 1)

    def at(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return v.gather(2, index.reshape(*index.shape[:2], 1, -1)).reshape(index.shape)

    gap = at(cells, theirs) - at(cells, picked)
    gap = torch.where(valid & torch.isfinite(gap), gap, torch.full_like(gap, math.inf))
    return gap, at(cell_bounds, theirs) + at(cell_bounds, picked)
