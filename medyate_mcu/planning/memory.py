"""The training engine's static RAM, part by part: the one place its numbers are computed.

The budget planner uses :func:`engine_memory` to find what a candidate layer set costs before any
channel is selected (``fixed(K)`` in docs/design.md §3), and the C code generator declares
exactly these buffers, so the built image is held to the same numbers.

Parts:
- ``arena``: every per-sample buffer of one training step, placed by lifetime (activations, errors,
  ReLU masks as bits, max-pool argmax bytes): see :func:`arena_buffers`.
- ``candidate_weights``: RAM copies of the candidate conv weights (their biases stay in flash).
- ``classifier``: RAM copy of the classifier's weight and bias, and their gradient accumulators.
- ``channel_state``: per candidate channel, the norm vector (f32), the epoch's norm sums (f32), the
  sampler's integer weights (u32), the in-pool flags (u8), the selection list (u16) and each
  selected channel's offset in the pool (u32).
- ``engine_state``: the engine's scalars (PCG32 state, epoch and step counters, learning rate...).
- the channel pool itself (the paper's B) is what the budget has left after these, rounded down
  to the alignment (:func:`pool_bytes`).

With an int8 backbone (docs/quantization.md §5) the arena also holds the int8 region's
activations at one byte an element (the sample quantized, each int8 node's output), the float
copies of int8 tensors a float node reads (``deq:<tensor>``) and one output channel's dequantized
weights for the float region's frozen layers (``scratch:w8``).

Every part is one or more C symbols (:meth:`EngineMemory.symbols`, and one ``mdy_w_<layer>`` per
candidate layer), each placed by the linker at an ``ALIGNMENT``-aligned address: a symbol of ``n``
bytes occupies ``align(n)``. Every part above is counted that way, and :func:`measured_parts`
groups a built image's symbols into the same parts, so verify and the ELF size report read the
plan's account back rather than keep their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph, Node, OpType
from medyate_mcu.planning.arena import ArenaPlan, Buffer, align, align_down, plan_arena
from medyate_mcu.planning.schedule import (
    StepKind,
    TrainingSchedule,
    build_schedule,
    classifier_size,
)
from medyate_mcu.quant.blocks import (
    InvertedResidual,
    block_buffers,
    depthwise_scratch,
    fused_blocks,
    in_place_depthwise,
)
from medyate_mcu.quant.lowering import int8_region

FLOAT_BYTES = 4
INT8_BYTES = 1
W8_SCRATCH = "scratch:w8"  # the arena buffer of the float region's int8-weight kernels


class Backbone(StrEnum):
    """How the frozen part of the network runs (docs/quantization.md)."""

    FLOAT32 = "float32"
    INT8 = "int8"  # the int8 region in int8, frozen float-region layers with int8 weights
ENGINE_STATE_BYTES = 64
# Per candidate channel arrays (element bytes), each its own aligned buffer.
CHANNEL_ARRAYS = {"norms": ("float", 4), "norm_sums": ("float", 4),
                  "sampler_weights": ("uint32_t", 4), "in_pool": ("uint8_t", 1),
                  "selected": ("uint16_t", 2), "pool_offsets": ("uint32_t", 4)}
MAX_CANDIDATE_CHANNELS = 65535  # the selection list holds u16 indices
# The engine's RAM symbols (C names), by part; candidate weights are WEIGHT_PREFIX + layer.
ARENA_SYMBOL = "mdy_arena"
POOL_SYMBOL = "mdy_pool"
STATE_SYMBOL = "mdy_state"
CLASSIFIER_SYMBOLS = ("mdy_classifier", "mdy_classifier_grad")  # values, gradient accumulators
WEIGHT_PREFIX = "mdy_w_"
POOL_PART = "pool"
OTHER_PART = "other"  # an mdy_ RAM symbol the plan does not know (none in a correct build)


def _numel(graph: Graph, tensor: str) -> int:
    return math.prod(graph.shapes[tensor])


IN_PLACE_OPS = (OpType.RELU, OpType.RELU6, OpType.ADD, OpType.FLATTEN)


def activation_storage(graph: Graph, int8_nodes: frozenset[str] = frozenset(),
                       layout: Int8Layout | None = None) -> dict[str, str]:
    """Tensor -> the tensor whose buffer holds it. ReLU, ReLU6, Add and Flatten write their
    output over an input that no other op reads (the first such input for Add) and that is of
    their own region (int8 or float: ``int8_nodes``); the graph input is never overwritten."""
    storage: dict[str, str] = {}
    layout = layout or int8_layout(graph, int8_nodes)
    in_place_convs = {node.name for node in layout.in_place}
    for node in graph.nodes:
        storage[node.output] = node.output
        if node.op not in IN_PLACE_OPS and node.name not in in_place_convs:
            continue
        int8 = node.name in int8_nodes
        for tensor in node.inputs:
            producer = graph.producer(tensor)
            same_region = producer is not None and (producer.name in int8_nodes) == int8
            if same_region and len(graph.consumers(tensor)) == 1 and tensor != graph.output:
                storage[node.output] = storage[tensor]
                break
    return storage


IN_PLACE_BACKWARD_OPS = (OpType.RELU, OpType.RELU6, OpType.FLATTEN, OpType.ADD)


def error_storage(schedule: TrainingSchedule) -> dict[str, str]:
    """Error tensor -> the error tensor whose buffer holds it. ReLU, ReLU6, Flatten and Add
    pass the error back element by element, so the error of an input that no other op reads is
    written over the output's error (the first such input for Add): the kernels take ``dx == dy``
    when they overwrite (``accumulate`` 0, which a single reader guarantees)."""
    graph = schedule.graph
    propagating = {step.node.name for step in schedule.steps
                   if step.kind is StepKind.BACKWARD and step.propagate_error and step.node}
    storage = {tensor: tensor for tensor in schedule.error_tensors}
    for node in reversed(graph.nodes):
        if node.op not in IN_PLACE_BACKWARD_OPS or node.name not in propagating:
            continue
        for tensor in node.inputs:
            if tensor in storage and tensor != graph.output \
                    and len(graph.consumers(tensor)) == 1:
                storage[tensor] = storage[node.output]
                break
    return storage


@dataclass(frozen=True)
class Int8Layout:
    """How the int8 region runs at its smallest peak (medyate_mcu/quant/blocks.py)."""

    blocks: tuple[InvertedResidual, ...]  # fused inverted residuals
    in_place: tuple[Node, ...]  # depthwise convs writing over their input

    def block_of(self, node: Node) -> InvertedResidual | None:
        """The fused block that absorbs ``node`` (not its projection, which runs it)."""
        return next((b for b in self.blocks if any(n is node for n in b.absorbed)), None)


def int8_layout(graph: Graph, int8_nodes: frozenset[str]) -> Int8Layout:
    blocks = fused_blocks(graph, int8_nodes) if int8_nodes else []
    in_place = in_place_depthwise(graph, int8_nodes, blocks) if int8_nodes else []
    return Int8Layout(tuple(blocks), tuple(in_place))


def int8_tensors(graph: Graph, int8_nodes: frozenset[str]) -> set[str]:
    """The tensors held in int8: the outputs of the int8 region, and the graph input when an
    int8 node reads it (the sample, quantized into the arena)."""
    held = {node.output for node in graph.nodes if node.name in int8_nodes}
    if any(graph.input in node.inputs for node in graph.nodes if node.name in int8_nodes):
        held.add(graph.input)
    return held


def dequantized_tensors(graph: Graph, int8_nodes: frozenset[str]) -> list[str]:
    """int8 tensors a float node reads: each gets a float copy (``deq:<tensor>``) written right
    after its producer runs. The graph input is not one: float nodes read the float sample."""
    return [node.output for node in graph.nodes if node.name in int8_nodes
            and any(c.name not in int8_nodes for c in graph.consumers(node.output))]


def w8_layers(graph: Graph, schedule: TrainingSchedule, int8_nodes: frozenset[str]) -> list[Node]:
    """The frozen Conv and Linear layers of the float region: with an int8 backbone their
    weights stay int8 in flash and are dequantized an output channel at a time."""
    trained = {*schedule.candidates, schedule.classifier}
    return [node for node in graph.nodes_of(OpType.CONV, OpType.LINEAR)
            if node.name not in trained and node.name not in int8_nodes]


def w8_scratch_floats(node: Node) -> int:
    """One output channel's weights of ``node``: (in_c/groups)·k_h·k_w, or in_f for Linear."""
    return int(node.params["weight"][0].size)


def arena_buffers(schedule: TrainingSchedule, int8_nodes: frozenset[str] = frozenset(),
                  w8: bool = False) -> list[Buffer]:
    """Every per-sample buffer of the training step with its lifetime in schedule steps.

    Activations that share storage (see :func:`activation_storage`) form one buffer, live from
    the first write to the last read of any of them. ``int8_nodes``: the int8 region, whose
    tensors take a byte an element; ``w8``: the frozen float-region layers keep int8 weights
    (docs/quantization.md §5)."""
    graph = schedule.graph
    forward = {step.node.name: t for t, step in enumerate(schedule.steps)
               if step.kind is StepKind.FORWARD and step.node is not None}
    backward = {step.node.name: t for t, step in enumerate(schedule.steps)
                if step.kind is StepKind.BACKWARD and step.node is not None}
    propagating = {step.node.name for step in schedule.steps
                   if step.kind is StepKind.BACKWARD and step.propagate_error and step.node}
    loss_time = schedule.time_of(StepKind.LOSS)
    layout = int8_layout(graph, int8_nodes)
    storage = activation_storage(graph, int8_nodes, layout)
    held_int8 = int8_tensors(graph, int8_nodes)
    absorbed = {n.output for block in layout.blocks for n in block.absorbed}
    for block in layout.blocks:  # a fused block runs at its projection's step
        for node in block.absorbed:
            forward[node.name] = forward[block.project.name]

    def element_bytes(tensor: str) -> int:
        return INT8_BYTES if tensor in held_int8 else FLOAT_BYTES

    def read_times(tensor: str, readers: list[Node]) -> list[int]:
        times = [forward[c.name] for c in readers]
        if tensor == graph.output:
            times.append(loss_time)
        for consumer in readers:
            if consumer.name == schedule.classifier and consumer.name in backward:
                times.append(backward[consumer.name])  # the classifier's input, for its gradient
        return times

    spans: dict[str, tuple[int, int, int]] = {}  # storage root -> (bytes, first, last)
    buffers = []
    if graph.input in held_int8:
        readers = [c for c in graph.consumers(graph.input) if c.name in int8_nodes]
        buffers.append(Buffer(f"act:{graph.input}", _numel(graph, graph.input) * INT8_BYTES,
                              0, max(forward[c.name] for c in readers)))
    for block in layout.blocks:
        scratch, accumulators = block_buffers(graph, block)
        time = forward[block.project.name]
        buffers.append(Buffer(f"acc:{block.project.name}", accumulators, time, time))
        buffers.append(Buffer(f"scratch:{block.project.name}", scratch, time, time))
    for node in layout.in_place:
        time = forward[node.name]
        buffers.append(Buffer(f"scratch:{node.name}", depthwise_scratch(graph, node), time, time))
    for node in graph.nodes:
        tensor = node.output
        if tensor in absorbed:
            continue
        consumers = graph.consumers(tensor)
        if node.name in int8_nodes:  # float readers read the float copy
            consumers = [c for c in consumers if c.name in int8_nodes]
        readers = read_times(tensor, consumers) or [forward[node.name]]
        root = storage[tensor]
        size, first, last = spans.get(root, (0, forward[node.name], 0))
        spans[root] = (max(size, _numel(graph, tensor) * element_bytes(tensor)), first,
                       max(last, *readers))
        if node.name in propagating and node.op in (OpType.RELU, OpType.RELU6):
            buffers.append(Buffer(f"mask:{node.name}", math.ceil(_numel(graph, tensor) / 8),
                                  forward[node.name], backward[node.name]))
        if node.name in propagating and node.op is OpType.MAX_POOL:
            buffers.append(Buffer(f"argmax:{node.name}", _numel(graph, tensor),
                                  forward[node.name], backward[node.name]))
    buffers.extend(Buffer(f"act:{root}", *span) for root, span in spans.items())
    for tensor in dequantized_tensors(graph, int8_nodes):
        producer = graph.producer(tensor)
        assert producer is not None
        floats = [c for c in graph.consumers(tensor) if c.name not in int8_nodes]
        buffers.append(Buffer(f"deq:{tensor}", _numel(graph, tensor) * FLOAT_BYTES,
                              forward[producer.name], max(read_times(tensor, floats))))
    if w8:
        layers = w8_layers(graph, schedule, int8_nodes)
        if layers:
            times = [t for n in layers for t in (forward[n.name], backward.get(n.name, 0))]
            buffers.append(Buffer(W8_SCRATCH,
                                  max(map(w8_scratch_floats, layers)) * FLOAT_BYTES,
                                  min(times), max(times)))
    errors: dict[str, tuple[int, int, int]] = {}  # storage root -> (bytes, first, last)
    error_roots = error_storage(schedule)
    for tensor in sorted(schedule.error_tensors):
        producer = graph.producer(tensor)
        assert producer is not None
        writers = [backward[c.name] for c in graph.consumers(tensor) if c.name in propagating]
        if tensor == graph.output:
            writers.append(loss_time)
        root = error_roots[tensor]
        size, first, last = errors.get(root, (0, min(writers), backward[producer.name]))
        errors[root] = (max(size, _numel(graph, tensor) * FLOAT_BYTES), min(first, *writers),
                        max(last, backward[producer.name]))
    buffers.extend(Buffer(f"err:{root}", *span) for root, span in errors.items())
    return buffers


@dataclass(frozen=True)
class EngineMemory:
    """The static RAM of the engine for one candidate layer set, before the channel pool."""

    schedule: TrainingSchedule
    arena: ArenaPlan
    candidate_weights: int  # the mdy_w_<layer> symbols, each aligned
    candidate_channels: int
    classifier_values: int  # weight and bias of the classifier, floats
    backbone: Backbone = Backbone.FLOAT32
    int8_nodes: frozenset[str] = frozenset()  # the int8 region (int8 backbone only)
    engine_state: int = ENGINE_STATE_BYTES

    @property
    def fixed_bytes(self) -> int:
        """Everything but the channel pool: ``fixed(K)`` of docs/design.md §3."""
        return sum(self.parts().values())

    @property
    def classifier(self) -> int:
        return self.parts()["classifier"]

    @property
    def channel_state(self) -> int:
        return self.parts()["channel_state"]

    def parts(self) -> dict[str, int]:
        """Bytes per part (the module doc's list), from :meth:`symbols`; the pool is not one."""
        parts = measured_parts(self.symbols(0))
        parts["candidate_weights"] = self.candidate_weights
        del parts[POOL_PART]
        return parts

    def symbols(self, pool_bytes: int) -> dict[str, int]:
        """The engine's RAM symbols but the candidate weights, with their sizes in bytes (before
        alignment), for a channel pool of ``pool_bytes``: what the generated engine must declare
        (verify reads the built library back against it)."""
        classifier = self.classifier_values * FLOAT_BYTES
        return {
            ARENA_SYMBOL: self.arena.size,
            POOL_SYMBOL: max(pool_bytes // FLOAT_BYTES, 1) * FLOAT_BYTES,
            CLASSIFIER_SYMBOLS[0]: classifier,
            CLASSIFIER_SYMBOLS[1]: classifier,
            STATE_SYMBOL: self.engine_state,
            **{f"mdy_{name}": max(self.candidate_channels, 1) * size
               for name, (_, size) in CHANNEL_ARRAYS.items()},
        }


def symbol_part(symbol: str) -> str:
    """The part of the engine's RAM (a key of :meth:`EngineMemory.parts`, ``POOL_PART`` or
    ``OTHER_PART``) that the RAM symbol ``symbol`` belongs to."""
    if symbol == ARENA_SYMBOL:
        return "arena"
    if symbol == POOL_SYMBOL:
        return POOL_PART
    if symbol == STATE_SYMBOL:
        return "engine_state"
    if symbol in CLASSIFIER_SYMBOLS:
        return "classifier"
    if symbol.startswith(WEIGHT_PREFIX):
        return "candidate_weights"
    if symbol.removeprefix("mdy_") in CHANNEL_ARRAYS:
        return "channel_state"
    return OTHER_PART


def measured_parts(sizes: Mapping[str, int]) -> dict[str, int]:
    """A built image's engine RAM symbols (name -> bytes) as the plan's parts, each symbol in its
    aligned slot: the plan's parts, then ``POOL_PART``, then ``OTHER_PART`` if any."""
    parts = dict.fromkeys(["arena", "candidate_weights", "classifier", "channel_state",
                           "engine_state", POOL_PART], 0)
    for name, size in sizes.items():
        part = symbol_part(name)
        parts[part] = parts.get(part, 0) + align(size)
    return parts


def engine_memory(graph: Graph, candidates: set[str] | frozenset[str],
                  backbone: Backbone = Backbone.FLOAT32) -> EngineMemory:
    """Plan the engine's static RAM for ``candidates`` (conv layer names) plus the classifier,
    the frozen part run as ``backbone`` says."""
    schedule = build_schedule(graph, candidates)
    int8_nodes = frozenset(node.name for node in int8_region(graph, schedule.candidates)) \
        if backbone is Backbone.INT8 else frozenset()
    plan = plan_arena(arena_buffers(schedule, int8_nodes, w8=backbone is Backbone.INT8))
    weights = sum(align(graph.node(name).params["weight"].size * FLOAT_BYTES)
                  for name in schedule.candidates)
    channels = sum(graph.shapes[graph.node(name).inputs[0]][0] for name in schedule.candidates)
    if channels > MAX_CANDIDATE_CHANNELS:
        raise MedyateError(f"{channels} candidate channels exceed the engine's limit of "
                           f"{MAX_CANDIDATE_CHANNELS}; use a smaller network or fewer layers")
    return EngineMemory(
        schedule=schedule,
        arena=plan,
        candidate_weights=weights,
        candidate_channels=channels,
        classifier_values=classifier_size(graph),
        backbone=backbone,
        int8_nodes=int8_nodes,
    )


def pool_bytes(budget: int, fixed_bytes: int) -> int:
    """The channel pool ``budget`` leaves after the ``fixed_bytes`` part: rounded down to the
    alignment, since the linker gives the pool, like every engine symbol, an aligned slot (a
    pool of 8n + 4 bytes would occupy 8n + 8). Not positive: no pool."""
    return align_down(budget - fixed_bytes)


def budget_for_pool(fixed_bytes: int, pool: int) -> int:
    """The smallest budget whose :func:`pool_bytes` is at least ``pool`` (> 0)."""
    return fixed_bytes + align(pool)


def linked_bytes(sizes: Iterable[int]) -> int:
    """RAM that symbols of these sizes occupy in the linked image, each in an aligned slot."""
    return sum(align(size) for size in sizes)


def activation_offset(memory: EngineMemory, tensor: str) -> int:
    """Arena byte offset of ``tensor``'s activation (tensors computed in place share one)."""
    storage = activation_storage(memory.schedule.graph, memory.int8_nodes)
    return memory.arena.offset_of(f"act:{storage[tensor]}")
