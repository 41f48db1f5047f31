"""The host reference trainer: the on-device training algorithm, in PyTorch.

Per epoch: select channels (the policy's rule), then for each mini-batch: forward, cross-entropy,
errors back to the deepest candidate, the weight gradient of **only the selected input channels**
computed from their saved input maps (as the device does), SGD on those slices and on the
classifier, and the per-channel gradient norms accumulated for the next selection. Conv biases and
every unselected weight stay as they are.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from medyate_mcu.graph.ir import Graph, OpType, classifier_node
from medyate_mcu.graph.reference import ReferenceNet
from medyate_mcu.method.costs import channel_cost
from medyate_mcu.method.sampler import Pcg32, select_channels, update_norm_vector
from medyate_mcu.method.sgd import accuracy, sgd_step, warmup_cosine
from medyate_mcu.quant.prefix import Int8Prefix
from medyate_mcu.quant.scheme import Quantization

SHUFFLE_STREAM = 0x5348554646  # PCG32 sequence of the sample order ("SHUFF"), distinct from epochs


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.05
    warmup: int = 1
    seed: int = 0


def learning_rate(epoch: int, settings: TrainSettings) -> float:
    """The rate of ``epoch`` (from 1): :func:`warmup_cosine` over epochs, constant within one."""
    return warmup_cosine(epoch, settings.epochs, settings.warmup, settings.lr)


def epoch_order(samples: int, seed: int, epoch: int) -> list[int]:
    """The sample order of an epoch: Fisher-Yates driven by PCG32 seeded (seed, stream + epoch),
    with bounded draws ``(u32 · (i + 1)) >> 32`` (simple to reproduce in C)."""
    rng = Pcg32(seed, SHUFFLE_STREAM + epoch)
    order = list(range(samples))
    for i in range(samples - 1, 0, -1):
        j = (rng.next_u32() * (i + 1)) >> 32
        order[i], order[j] = order[j], order[i]
    return order


def epoch_batches(samples: int, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    """The mini-batches of an epoch: :func:`epoch_order` cut into ``batch_size`` samples (the
    last one shorter)."""
    order = epoch_order(samples, seed, epoch)
    for start in range(0, samples, batch_size):
        yield order[start:start + batch_size]


def replace_classifier(graph: Graph, classes: int, seed: int, keep: bool = False) -> Graph:
    """A copy of ``graph`` whose classifier is re-initialised for ``classes`` classes, or (with
    ``keep``, for the classes the model was pre-trained on) kept as pre-trained.

    Weights ~ U(-1/√F, 1/√F) from a seeded generator (PyTorch's Linear default range), bias 0.
    """
    new = copy.deepcopy(graph)
    head = classifier_node(new)
    if keep:
        if head.params["weight"].shape[0] != classes:
            raise ValueError(f"the pre-trained classifier has {head.params['weight'].shape[0]} "
                             f"outputs, not {classes}")
        return new
    features = head.params["weight"].shape[1]
    bound = 1.0 / math.sqrt(features)
    rng = np.random.default_rng(seed)
    head.params["weight"] = rng.uniform(-bound, bound, (classes, features)).astype(np.float32)
    head.params["bias"] = np.zeros(classes, np.float32)
    new.shapes[head.output] = (classes,)
    return new


def pretrained_for(graph: Graph, class_names: Sequence[str]) -> bool:
    """Whether ``graph``'s classifier was pre-trained on exactly ``class_names`` (its
    ``medyate.class_names`` metadata, in order): then fine-tuning starts from it."""
    try:
        names = json.loads(graph.metadata["medyate.class_names"])
    except (KeyError, ValueError):
        return False
    return list(names) == list(class_names) and \
        classifier_node(graph).params["weight"].shape[0] == len(names)


@dataclass(frozen=True)
class ChannelTable:
    """Candidate channels in canonical order: layer (graph order), then input channel."""

    layers: tuple[str, ...]
    channels: tuple[int, ...]  # input channels per layer
    costs: tuple[int, ...]  # bytes per channel, per layer

    @property
    def size(self) -> int:
        return sum(self.channels)

    def layer_offsets(self) -> list[int]:
        return [sum(self.channels[:i]) for i in range(len(self.layers) + 1)]

    def channel_costs(self) -> list[int]:
        return [cost for cost, count in zip(self.costs, self.channels, strict=True)
                for _ in range(count)]

    def split(self, selected: Sequence[int]) -> dict[str, list[int]]:
        """Selected canonical indices -> sorted local input channels per layer."""
        offsets = self.layer_offsets()
        per_layer: dict[str, list[int]] = {name: [] for name in self.layers}
        for index in sorted(selected):
            layer = next(i for i in range(len(self.layers)) if index < offsets[i + 1])
            per_layer[self.layers[layer]].append(index - offsets[layer])
        return per_layer


def channel_table(graph: Graph, candidates: Sequence[str]) -> ChannelTable:
    names = [node.name for node in graph.nodes_of(OpType.CONV) if node.name in set(candidates)]
    costs = [channel_cost(graph, graph.node(name)) for name in names]
    return ChannelTable(tuple(names), tuple(c.in_channels for c in costs),
                        tuple(c.channel_bytes for c in costs))


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    loss: float
    train_accuracy: float
    selected: list[int]  # canonical candidate-channel indices, in draw order
    test_accuracy: float | None = None


@dataclass
class SelectionRule:
    """How a policy picks channels each epoch."""

    resample: bool  # a new draw every epoch (else the first selection stays)
    weighted: bool  # weights from gradient norms (MeDyate) or uniform (TraDy, random)
    fixed: list[int] | None = None  # a selection decided offline (static policies)


@dataclass
class SparseTrainer:
    """Train ``graph`` on the host exactly as the device engine does."""

    graph: Graph
    candidates: Sequence[str]
    pool_bytes: int
    rule: SelectionRule
    settings: TrainSettings = field(default_factory=TrainSettings)
    # an int8 backbone (docs/quantization.md §5): ``graph`` is the dequantized graph and the int8
    # region runs in the numpy integer reference
    quantization: Quantization | None = None

    def __post_init__(self) -> None:
        self.int8: Int8Prefix | None = None
        if self.quantization is not None:
            self.int8 = Int8Prefix(self.graph, self.quantization, list(self.candidates))
            self.net = ReferenceNet(self.graph, self.int8, self.int8.nodes)
        else:
            self.net = ReferenceNet(self.graph)
        self.classifier = classifier_node(self.graph).name
        for name, weight in self.net.weights.items():
            weight.requires_grad_(name == self.net.keys[self.classifier])
        for name, bias in self.net.biases.items():
            bias.requires_grad_(name == self.net.keys[self.classifier])
        self.table = channel_table(self.graph, self.candidates)
        self.norms = np.zeros(self.table.size, np.float32)
        self.selected: list[int] = []
        self.history: list[EpochRecord] = []

    # ---- selection ------------------------------------------------------------------------
    def select(self, epoch: int) -> list[int]:
        if self.rule.fixed is not None:
            return list(self.rule.fixed)
        if epoch > 1 and not self.rule.resample:
            return self.selected
        norms = self.norms if self.rule.weighted else None
        return select_channels(self.settings.seed, epoch, self.table.channel_costs(),
                               self.pool_bytes, norms)

    # ---- one optimizer step -----------------------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float,
             per_layer: dict[str, list[int]]) -> tuple[float, int, dict[str, torch.Tensor]]:
        """One mini-batch: returns (mean loss, correct predictions, per-layer channel norms)."""
        taps = frozenset(name for name, chans in per_layer.items() if chans)
        logits, inputs, outputs = self.net.forward_with_taps(x, taps)
        norms: dict[str, torch.Tensor] = {}

        def update_selected_channels() -> None:
            for name in taps:
                grads = selected_channel_gradients(self.graph, name, per_layer[name],
                                                   inputs[name], outputs[name].grad)
                apply_channel_update(self.graph, self.net, name, per_layer[name], grads, lr)
                norms[name] = grads.flatten(1).norm(dim=1)

        loss = F.cross_entropy(logits, y)
        key = self.net.keys[self.classifier]
        sgd_step(loss, (self.net.weights[key], self.net.biases[key]), lr,
                 update_selected_channels)
        correct = int((logits.argmax(1) == y).sum())
        return loss.item(), correct, norms

    # ---- one epoch ---------------------------------------------------------------------------
    def train_epoch(self, x: np.ndarray, y: np.ndarray, epoch: int,
                    before_step: Callable[[list[int]], None] | None = None,
                    after_step: Callable[[list[int]], None] | None = None) -> EpochRecord:
        """One epoch. ``before_step``/``after_step`` see each mini-batch's sample indices (the
        verifier uses them to share state with the C engine step by step)."""
        self.selected = self.select(epoch)
        per_layer = self.table.split(self.selected)
        lr = learning_rate(epoch, self.settings)
        offsets = dict(zip(self.table.layers, self.table.layer_offsets(), strict=False))
        sums = np.zeros(self.table.size, np.float64)
        total_loss, correct, steps = 0.0, 0, 0
        for batch in epoch_batches(len(x), self.settings.batch_size, self.settings.seed, epoch):
            xb, yb = torch.from_numpy(x[batch]), torch.from_numpy(y[batch])
            if before_step:
                before_step(batch)
            loss, hits, norms = self.step(xb, yb, lr, per_layer)
            if after_step:
                after_step(batch)
            total_loss += loss * len(batch)
            correct += hits
            steps += 1
            for name, values in norms.items():
                sums[[offsets[name] + c for c in per_layer[name]]] += values.numpy()
        if self.selected and self.rule.weighted:
            self.norms = update_norm_vector(self.norms, self.selected,
                                            sums[self.selected].astype(np.float32), steps, epoch)
        record = EpochRecord(epoch, lr, total_loss / len(x), correct / len(x),
                             list(self.selected))
        self.history.append(record)
        return record

    def fit(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray | None = None,
            y_test: np.ndarray | None = None,
            on_epoch: Callable[[EpochRecord], None] | None = None) -> list[EpochRecord]:
        for epoch in range(1, self.settings.epochs + 1):
            record = self.train_epoch(x, y, epoch)
            if x_test is not None and y_test is not None:
                record.test_accuracy = accuracy(self.net, x_test, y_test)
            if on_epoch:
                on_epoch(record)
        return self.history


def selected_channel_gradients(graph: Graph, layer: str, channels: Sequence[int],
                               layer_input: torch.Tensor, output_error: torch.Tensor
                               ) -> torch.Tensor:
    """dL/dW slices of the selected input ``channels`` of conv ``layer``: (|S|, C_out/G, kh, kw).

    Uses only the selected channels of the saved input map and the layer's output error, as the
    device does: one grouped weight-gradient with a group per selected channel.
    """
    node = graph.node(layer)
    out_channels, in_per_group, kh, kw = node.params["weight"].shape
    per_group_out = out_channels // node.conv.groups
    index = torch.tensor(channels, dtype=torch.long)
    group = index // in_per_group
    rows = (group[:, None] * per_group_out + torch.arange(per_group_out)).reshape(-1)
    window = node.conv.window
    top, left, bottom, right = window.pads
    saved = F.pad(layer_input[:, index], (left, right, top, bottom))
    grads = torch.nn.grad.conv2d_weight(saved, (len(channels) * per_group_out, 1, kh, kw),
                                        output_error[:, rows], stride=window.stride,
                                        groups=len(channels))
    return grads.reshape(len(channels), per_group_out, kh, kw)


def apply_channel_update(graph: Graph, net: ReferenceNet, layer: str, channels: Sequence[int],
                         grads: torch.Tensor, lr: float) -> None:
    """W[rows of channel c's group, c mod C_in/G] -= lr · grad slice, for each selected c."""
    node = graph.node(layer)
    out_channels, in_per_group, _, _ = node.params["weight"].shape
    per_group_out = out_channels // node.conv.groups
    index = torch.tensor(channels, dtype=torch.long)
    rows = ((index // in_per_group)[:, None] * per_group_out
            + torch.arange(per_group_out)).reshape(-1)
    cols = (index % in_per_group).repeat_interleave(per_group_out)
    weight = net.weights[net.keys[layer]]
    weight[rows, cols] -= lr * grads.reshape(len(channels) * per_group_out, *grads.shape[2:])

