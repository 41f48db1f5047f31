"""LaRa: offline ranking of conv layers by gradient norm per unit of memory (docs/design.md §2).

A few epochs of full fine-tuning on a proxy task (any task but the target); at every step, each
conv layer adds ``||dL/dW_i||_2 / Σ_c (C_W + C_A)`` to its score. Higher first. The same run also
records each input channel's mean gradient-slice norm, which the static baseline selects from.
The ranking is saved as JSON with the model's fingerprint, the proxy task and the settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph, OpType
from medyate_mcu.graph.reference import ReferenceNet
from medyate_mcu.method.costs import channel_cost
from medyate_mcu.method.sgd import sgd_step
from medyate_mcu.method.trainer import epoch_batches, replace_classifier
from medyate_mcu.outputs import write_text_atomic

FORMAT = "medyate-lara/1"


def backbone_fingerprint(graph: Graph) -> str:
    """SHA-256 over the conv layers' names, shapes and weights (the classifier is excluded: the
    ranking is reused whatever head the target task gets)."""
    digest = hashlib.sha256()
    for node in graph.nodes_of(OpType.CONV):
        digest.update(node.name.encode())
        for key in ("weight", "bias"):
            array = np.ascontiguousarray(node.params[key], np.float32)
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class LaraSettings:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.02
    seed: int = 0


@dataclass
class LayerRanking:
    fingerprint: str
    proxy_task: str
    settings: LaraSettings
    scores: dict[str, float]  # conv layer -> LaRa score, in graph order
    channel_norms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ranking(self) -> list[str]:
        """Layers by decreasing score (ties keep graph order)."""
        order = list(self.scores)
        return sorted(order, key=lambda name: (-self.scores[name], order.index(name)))

    def save(self, path: Path) -> None:
        data = {"format": FORMAT, "fingerprint": self.fingerprint, "proxy_task": self.proxy_task,
                "settings": asdict(self.settings), "ranking": self.ranking,
                "scores": self.scores, "channel_norms": self.channel_norms}
        write_text_atomic(path, json.dumps(data, indent=1))  # never a half-written ranking

    @classmethod
    def load(cls, path: Path, graph: Graph | None = None) -> LayerRanking:
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            ranking = cls(data["fingerprint"], data["proxy_task"],
                          LaraSettings(**data["settings"]),
                          {k: float(v) for k, v in data["scores"].items()},
                          {k: [float(x) for x in v] for k, v in data["channel_norms"].items()})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MedyateError(f"{path}: not a LaRa ranking file ({exc})") from None
        if graph is not None and ranking.fingerprint != backbone_fingerprint(graph):
            raise MedyateError(f"{path}: this ranking was computed for another model; recompute "
                               "it with `medyate-mcu lara`")
        return ranking


def compute_lara(graph: Graph, x: np.ndarray, y: np.ndarray, classes: int, proxy_task: str,
                 settings: LaraSettings = LaraSettings(),
                 on_step: Callable[[int, int, float], None] | None = None) -> LayerRanking:
    """Rank ``graph``'s conv layers by fine-tuning everything on the proxy data ``(x, y)``.

    ``x`` is float32 N×C×H×W as the model takes it; ``classes`` sizes the proxy task's new head.
    ``on_step(step, total, loss)`` reports progress.
    """
    if len(x) == 0:
        raise MedyateError("the proxy data set is empty")
    graph = replace_classifier(graph, classes, settings.seed)
    net = ReferenceNet(graph)
    convs = graph.nodes_of(OpType.CONV)
    units = {node.name: channel_cost(graph, node).layer_units for node in convs}
    scores = dict.fromkeys(units, 0.0)
    channel_sums = {node.name: torch.zeros(graph.shapes[node.inputs[0]][0]) for node in convs}
    steps_per_epoch = -(-len(x) // settings.batch_size)
    total = settings.epochs * steps_per_epoch
    step = 0

    def score_layers() -> None:  # the gradients of this step, before the update
        for node in convs:
            grad = net.weights[net.keys[node.name]].grad
            scores[node.name] += float(grad.norm()) / units[node.name]
            channel_sums[node.name] += input_channel_norms(grad, node.conv.groups)

    for epoch in range(1, settings.epochs + 1):
        for batch in epoch_batches(len(x), settings.batch_size, settings.seed, epoch):
            loss = F.cross_entropy(net(torch.from_numpy(x[batch])), torch.from_numpy(y[batch]))
            sgd_step(loss, list(net.parameters()), settings.lr, score_layers)
            step += 1
            if on_step:
                on_step(step, total, loss.item())
    return LayerRanking(
        backbone_fingerprint(graph), proxy_task, settings, scores,
        {name: (sums / step).tolist() for name, sums in channel_sums.items()},
    )


def input_channel_norms(grad: torch.Tensor, groups: int) -> torch.Tensor:
    """L2 norm of each input channel's gradient slice of a conv weight (C_out, C_in/G, kh, kw)."""
    out_channels, in_per_group = grad.shape[:2]
    per_group = grad.reshape(groups, out_channels // groups, in_per_group, -1)
    return per_group.pow(2).sum(dim=(1, 3)).sqrt().reshape(-1)
