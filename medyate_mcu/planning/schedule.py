"""The training step's schedule: forward ops, the loss, then the backward ops that are needed.

Given the candidate conv layers (the only convs whose channels may be updated) and the classifier
(always trained), the backward pass runs only where an error is needed: the error of tensor ``t`` is
needed when ``t`` is the output of a candidate, or lies on a path from one to the loss. A node's
backward step propagates the error to its input only when that input needs one, and accumulates
weight gradients when the node is a candidate or the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from medyate_mcu.graph.ir import Graph, Node, OpType, classifier_node


class StepKind(StrEnum):
    FORWARD = "forward"
    LOSS = "loss"
    BACKWARD = "backward"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    node: Node | None = None
    propagate_error: bool = False  # backward: write the error of the node's input(s)
    weight_gradient: bool = False  # backward: accumulate the node's weight gradient


@dataclass(frozen=True)
class TrainingSchedule:
    graph: Graph
    candidates: tuple[str, ...]  # candidate conv names, in graph order
    classifier: str
    steps: tuple[Step, ...]
    error_tensors: frozenset[str]  # tensors whose error the backward pass computes

    def time_of(self, kind: StepKind, node_name: str | None = None) -> int:
        for index, step in enumerate(self.steps):
            if step.kind is kind and (node_name is None or
                                      (step.node is not None and step.node.name == node_name)):
                return index
        raise KeyError((kind, node_name))


def classifier_size(graph: Graph) -> int:
    """Values the classifier trains: its weight and its bias (the engine's ``mdy_classifier``)."""
    head = classifier_node(graph)
    return head.params["weight"].size + head.params["bias"].size


def build_schedule(graph: Graph, candidates: set[str] | frozenset[str]) -> TrainingSchedule:
    """The schedule of one training step with ``candidates`` trainable (besides the classifier)."""
    classifier = classifier_node(graph)
    unknown = set(candidates) - {n.name for n in graph.nodes_of(OpType.CONV)}
    assert not unknown, f"not conv layers: {sorted(unknown)}"
    needs_error: set[str] = set()
    for node in graph.nodes:  # topological order: a tensor downstream of a candidate needs one
        if node.name in candidates or any(t in needs_error for t in node.inputs):
            needs_error.add(node.output)
    needs_error.add(graph.output)  # the classifier's gradient needs the logits' error
    steps = [Step(StepKind.FORWARD, node) for node in graph.nodes]
    steps.append(Step(StepKind.LOSS))
    for node in reversed(graph.nodes):
        propagate = any(t in needs_error for t in node.inputs)
        weights = node.name in candidates or node is classifier
        if propagate or weights:
            steps.append(Step(StepKind.BACKWARD, node, propagate, weights))
    ordered = tuple(n.name for n in graph.nodes if n.name in candidates)
    return TrainingSchedule(graph, ordered, classifier.name, tuple(steps),
                            frozenset(needs_error))
