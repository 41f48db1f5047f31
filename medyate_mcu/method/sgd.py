"""What every training loop of the project shares: the learning-rate schedule (docs/design.md
§6), the plain SGD step and top-1 accuracy.

Used by the reference trainer and the baselines (``method/trainer.py``, ``method/policies.py``),
LaRa (``method/lara.py``) and the panel's pre-training (``zoo/training.py``, which steps a
momentum optimizer instead of :func:`sgd_step` but takes its schedule from here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn


def warmup_cosine(index: int, count: int, warmup: int, peak: float = 1.0) -> float:
    """The rate of step (or epoch) ``index`` of ``count``, counted from 1: linear warm-up over
    the first ``warmup`` (``peak·index/warmup``), then cosine from ``peak`` towards 0:
    ``peak·(1 + cos(π·(index - warmup - 1)/(count - warmup)))/2``, so the first cosine step has
    the full rate and the last one a small positive rate."""
    if index <= warmup:
        return peak * index / warmup
    progress = (index - warmup - 1) / max(count - warmup, 1)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def sgd_step(loss: torch.Tensor, params: Iterable[torch.Tensor], lr: float,
             before_update: Callable[[], None] | None = None) -> None:
    """Back-propagate ``loss``, then ``p -= lr·p.grad`` for each of ``params`` (plain SGD: no
    momentum, no weight decay) and clear their gradients. ``before_update`` runs under
    ``torch.no_grad`` after the backward pass, while the gradients are still there."""
    loss.backward()
    with torch.no_grad():
        if before_update is not None:
            before_update()
        for parameter in params:
            parameter -= lr * parameter.grad
            parameter.grad = None


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
             batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on inputs ``x`` (as the model takes them), in eval mode; the
    model's mode is restored afterwards."""
    inputs, labels = torch.as_tensor(x), torch.as_tensor(y)
    training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start:start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start:start + batch_size]).sum())
    model.train(training)
    return correct / max(len(inputs), 1)
