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

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph, OpType
from medyate_mcu.planning.arena import ArenaPlan, Buffer, align, align_down, plan_arena
from medyate_mcu.planning.schedule import (
    StepKind,
    TrainingSchedule,
    build_schedule,
    classifier_size,
)

FLOAT_BYTES = 4
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


def activation_storage(graph: Graph) -> dict[str, str]:
    """Tensor -> the tensor whose buffer holds it. ReLU, ReLU6, Add and Flatten write their
    output over an input that no other op reads (the first such input for Add); the graph input
    lives outside the arena and is never overwritten."""
    storage: dict[str, str] = {}
    for node in graph.nodes:
        storage[node.output] = node.output
        if node.op not in IN_PLACE_OPS:
            continue
        for tensor in node.inputs:
            if tensor != graph.input and len(graph.consumers(tensor)) == 1 \
                    and tensor != graph.output:
                storage[node.output] = storage[tensor]
                break
    return storage


def arena_buffers(schedule: TrainingSchedule) -> list[Buffer]:
    """Every per-sample buffer of the training step with its lifetime in schedule steps.

    Activations that share storage (see :func:`activation_storage`) form one buffer, live from
    the first write to the last read of any of them."""
    graph = schedule.graph
    forward = {step.node.name: t for t, step in enumerate(schedule.steps)
               if step.kind is StepKind.FORWARD and step.node is not None}
    backward = {step.node.name: t for t, step in enumerate(schedule.steps)
                if step.kind is StepKind.BACKWARD and step.node is not None}
    propagating = {step.node.name for step in schedule.steps
                   if step.kind is StepKind.BACKWARD and step.propagate_error and step.node}
    loss_time = schedule.time_of(StepKind.LOSS)
    storage = activation_storage(graph)
    spans: dict[str, tuple[int, int, int]] = {}  # storage root -> (bytes, first, last)
    buffers = []
    for node in graph.nodes:
        tensor = node.output
        readers = [forward[c.name] for c in graph.consumers(tensor)]
        if tensor == graph.output:
            readers.append(loss_time)
        for consumer in graph.consumers(tensor):
            if consumer.name == schedule.classifier and consumer.name in backward:
                readers.append(backward[consumer.name])  # the classifier's input, for its gradient
        root = storage[tensor]
        size, first, last = spans.get(root, (0, forward[node.name], 0))
        spans[root] = (max(size, _numel(graph, tensor) * FLOAT_BYTES), first,
                       max(last, *readers))
        if node.name in propagating and node.op in (OpType.RELU, OpType.RELU6):
            buffers.append(Buffer(f"mask:{node.name}", math.ceil(_numel(graph, tensor) / 8),
                                  forward[node.name], backward[node.name]))
        if node.name in propagating and node.op is OpType.MAX_POOL:
            buffers.append(Buffer(f"argmax:{node.name}", _numel(graph, tensor),
                                  forward[node.name], backward[node.name]))
    buffers.extend(Buffer(f"act:{root}", *span) for root, span in spans.items())
    for tensor in sorted(schedule.error_tensors):
        producer = graph.producer(tensor)
        assert producer is not None
        writers = [backward[c.name] for c in graph.consumers(tensor) if c.name in propagating]
        if tensor == graph.output:
            writers.append(loss_time)
        buffers.append(Buffer(f"err:{tensor}", _numel(graph, tensor) * FLOAT_BYTES,
                              min(writers), backward[producer.name]))
    return buffers


@dataclass(frozen=True)
class EngineMemory:
    """The static RAM of the engine for one candidate layer set, before the channel pool."""

    schedule: TrainingSchedule
    arena: ArenaPlan
    candidate_weights: int  # the mdy_w_<layer> symbols, each aligned
    candidate_channels: int
    classifier_values: int  # weight and bias of the classifier, floats
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


def engine_memory(graph: Graph, candidates: set[str] | frozenset[str]) -> EngineMemory:
    """Plan the engine's static RAM for ``candidates`` (conv layer names) plus the classifier."""
    schedule = build_schedule(graph, candidates)
    plan = plan_arena(arena_buffers(schedule))
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
    return memory.arena.offset_of(f"act:{activation_storage(memory.schedule.graph)[tensor]}")
