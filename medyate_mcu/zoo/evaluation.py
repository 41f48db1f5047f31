"""Transfer evaluation of a pre-trained model on the downstream tasks: the two brackets that sparse
on-device training lands between.

- *classifier only*: a new final ``Linear`` is trained, everything else frozen;
- *full fine-tune*: every weight and bias is trained (no memory budget).

On a keyword set (``kws-newvoice``: the classes the model was pre-trained on, spoken by a new
voice), the pre-trained head is kept rather than replaced, and the model's accuracy before any
training is recorded too.

Both train the model the compiler sees (the imported ONNX graph, BatchNorm folded, run by
``ReferenceNet``) with the device's optimizer: plain SGD, no momentum, no weight decay, linear
warm-up then cosine learning rate. The learning rate of each mode is picked per task from a small
grid by accuracy on a validation fifth of the training split; the model is then retrained on the
whole training split and scored once on the test split. Everything is seeded.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import OpType, ReferenceNet, load_onnx
from medyate_mcu.method.sgd import accuracy
from medyate_mcu.zoo import datasets, speech
from medyate_mcu.zoo.samples import SampleEncoding, SampleFormat
from medyate_mcu.zoo.tasks import model_normalisation
from medyate_mcu.zoo.training import EVAL_BATCH, META_PREFIX, fit, normalise

MODES = ("classifier", "full")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of the downstream evaluation."""

    seed: int = 0
    epochs: int = 30
    batch_size: int = 16
    lr_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    validation_fraction: float = 0.2
    threads: int = 1


@dataclass
class TaskResult:
    """Accuracies of one downstream task."""

    task: str
    classes: int
    train: int
    test: int
    classifier_only: float
    full_finetune: float
    lr: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    pretrained: float | None = None  # with the pre-trained head kept: accuracy before training

    @property
    def gap(self) -> float:
        return self.full_finetune - self.classifier_only


def _with_new_classifier(base: ReferenceNet, num_classes: int, seed: int) -> ReferenceNet:
    """A copy of ``base`` whose last ``Linear`` is freshly initialised for ``num_classes``."""
    net = copy.deepcopy(base)
    last = net.graph.nodes_of(OpType.LINEAR)[-1]
    key = net.keys[last.name]
    torch.manual_seed(seed)
    head = nn.Linear(net.weights[key].shape[1], num_classes)
    net.weights[key] = nn.Parameter(head.weight.detach().clone())
    net.biases[key] = nn.Parameter(head.bias.detach().clone())
    return net


def _trainable(net: ReferenceNet, mode: str) -> list[nn.Parameter]:
    if mode == "full":
        return list(net.parameters())
    key = net.keys[net.graph.nodes_of(OpType.LINEAR)[-1].name]
    for param in net.parameters():
        param.requires_grad_(False)
    head = [net.weights[key], net.biases[key]]
    for param in head:
        param.requires_grad_(True)
    return head


def _train_score(base: ReferenceNet, mode: str, lr: float, data: tuple[torch.Tensor, ...],
                 classes: int, config: EvalConfig, progress: Progress | None,
                 label: str, new_head: bool = True) -> float:
    x_train, y_train, x_eval, y_eval = data
    net = _with_new_classifier(base, classes, config.seed) if new_head else copy.deepcopy(base)
    fit(net, _trainable(net, mode), x_train, y_train, epochs=config.epochs, lr=lr,
        batch_size=config.batch_size, seed=config.seed, warmup_epochs=1, progress=progress,
        description=label)
    return accuracy(net, x_eval, y_eval, EVAL_BATCH)


def _validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, validation) indices: ``fraction`` of each class, at least one."""
    rng = np.random.default_rng([seed, 7])
    keep, hold = [], []
    for label in np.unique(y):
        index = rng.permutation(np.flatnonzero(y == label))
        count = max(1, round(fraction * len(index)))
        hold.append(index[:count])
        keep.append(index[count:])
    return np.concatenate(keep), np.concatenate(hold)


def load_reference(model_path: Path) -> tuple[ReferenceNet, list[float], list[float]]:
    """The model as the compiler sees it, and its input normalisation from the metadata."""
    graph = load_onnx(model_path)
    meta = {key[len(META_PREFIX):]: value for key, value in graph.metadata.items()
            if key.startswith(META_PREFIX)}
    try:
        mean, std = json.loads(meta["input_mean"]), json.loads(meta["input_std"])
    except (KeyError, ValueError):
        raise MedyateError(f"{model_path}: no medyate.input_mean / medyate.input_std metadata; "
                           "pre-train it with `medyate-mcu zoo pretrain`") from None
    return ReferenceNet(graph), mean, std


def _features_as_taken(net: ReferenceNet, split: datasets.Split
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Float features as the model takes them: standardised by its ``input_mean`` /
    ``input_std`` when it records them, else as they are."""
    stated = model_normalisation(net.graph)
    if stated is None:
        return torch.from_numpy(split.train.x), torch.from_numpy(split.test.x)
    encoding = SampleEncoding(SampleFormat.FLOAT32, 1.0, tuple(stated[0]), tuple(stated[1]))
    train, test = (encoding.decode(x) for x in (split.train.x, split.test.x))
    return torch.from_numpy(train), torch.from_numpy(test)


def evaluate_task(model_path: Path, task: str, config: EvalConfig = EvalConfig(),
                  progress: Progress | None = None, **sizes: int) -> TaskResult:
    """Classifier-only and full fine-tune test accuracy of the model on downstream ``task``.

    ``sizes`` (``train_per_class``, ``test_per_class``) override the panel's split sizes."""
    if task not in datasets.DOWNSTREAM_TASKS and task not in speech.SPEECH_SETS:
        raise MedyateError(f"unknown downstream task {task!r}; choose from "
                           f"{', '.join([*datasets.DOWNSTREAM_TASKS, *speech.SPEECH_SETS])}")
    torch.set_num_threads(max(1, config.threads))
    started = time.perf_counter()
    if task in speech.SPEECH_SETS:
        base = ReferenceNet(load_onnx(model_path))
        split = speech.build_speech(task, seed=config.seed, **sizes)
        x_train, x_test = _features_as_taken(base, split)
    else:
        base, mean, std = load_reference(model_path)
        split = datasets.build(task, seed=config.seed, size=base.graph.input_shape[-1], **sizes)
        x_train, x_test = normalise(split.train.x, mean, std), normalise(split.test.x, mean, std)
    y_train, y_test = torch.from_numpy(split.train.y), torch.from_numpy(split.test.y)
    names = base.graph.metadata.get(META_PREFIX + "class_names")
    keep_head = names is not None and json.loads(names) == list(split.train.class_names)
    fit_index, val_index = _validation_split(split.train.y, config.validation_fraction,
                                             config.seed)
    tuning = (x_train[fit_index], y_train[fit_index], x_train[val_index], y_train[val_index])
    classes = split.train.num_classes
    scores: dict[str, float] = {}
    chosen: dict[str, float] = {}
    for mode in MODES:
        val = {lr: _train_score(base, mode, lr, tuning, classes, config, progress,
                                f"{task}: {mode} lr={lr:g} (validation)", not keep_head)
               for lr in config.lr_grid}
        chosen[mode] = max(config.lr_grid, key=lambda lr: (val[lr], -lr))
        scores[mode] = _train_score(base, mode, chosen[mode], (x_train, y_train, x_test, y_test),
                                    classes, config, progress, f"{task}: {mode} (final)",
                                    not keep_head)
    return TaskResult(task=task, classes=classes, train=len(split.train), test=len(split.test),
                      classifier_only=scores["classifier"], full_finetune=scores["full"],
                      lr=chosen, seconds=round(time.perf_counter() - started, 1),
                      pretrained=accuracy(base, x_test, y_test, EVAL_BATCH) if keep_head
                      else None)


def evaluate(model_path: Path, tasks: Sequence[str] = datasets.DOWNSTREAM_TASKS,
             config: EvalConfig = EvalConfig(), progress: Progress | None = None
             ) -> list[TaskResult]:
    """``evaluate_task`` for each of ``tasks``."""
    return [evaluate_task(model_path, task, config, progress) for task in tasks]


def markdown_table(results: Sequence[TaskResult]) -> str:
    """The results as a Markdown table."""
    lines = ["| task | classes | train | test | classifier only | full fine-tune | gap (pp) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.task} | {r.classes} | {r.train} | {r.test} | "
                     f"{r.classifier_only:.1%} | {r.full_finetune:.1%} | {100 * r.gap:+.1f} |")
    return "\n".join(lines) + "\n"
