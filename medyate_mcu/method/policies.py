"""MeDyate and the baselines of docs/design.md §7, under one budget accounting.

Every budgeted policy pays the engine's ``fixed`` RAM for its candidate layers
(:func:`medyate_mcu.planning.memory.engine_memory`) and fits its channels in what is left;
a policy that cannot fit the budget is reported infeasible, not silently given more RAM.

With an int8 backbone (docs/quantization.md §5) the engine is sized as the int8 engine and
training runs the int8 region in the numpy integer reference; ``graph`` is then the
dequantized graph. Full fine-tuning trains every layer, so it has no frozen backbone to
quantize and stays float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph, OpType
from medyate_mcu.graph.reference import ReferenceNet
from medyate_mcu.method.lara import LayerRanking
from medyate_mcu.method.planner import KRule, plan_budget
from medyate_mcu.method.sgd import accuracy, sgd_step
from medyate_mcu.method.trainer import (
    EpochRecord,
    SelectionRule,
    SparseTrainer,
    TrainSettings,
    channel_table,
    epoch_batches,
    learning_rate,
)
from medyate_mcu.planning.memory import Backbone, budget_for_pool, engine_memory, pool_bytes
from medyate_mcu.quant.scheme import Quantization


class Policy(StrEnum):
    MEDYATE = "medyate"  # LaRa top-K layers, resampling ∝ gradient norms
    TRADY = "trady"  # same layers, uniform resampling
    STATIC = "static"  # same layers, LaRa's top channels chosen once
    RANDOM = "random"  # every conv layer a candidate, uniform resampling
    CLASSIFIER = "classifier"  # the classifier alone
    LAST_K = "last-k"  # every channel of the last k conv layers (biases frozen)
    FULL = "full"  # everything, no budget


class InfeasiblePolicy(MedyateError):
    """The policy cannot run within the budget."""


@dataclass(frozen=True)
class PolicySetup:
    policy: Policy
    candidates: tuple[str, ...]
    pool_bytes: int
    rule: SelectionRule
    engine_bytes: int  # fixed part + channel pool (0 for FULL: no budget)
    backbone: Backbone = Backbone.FLOAT32


def setup_policy(policy: Policy, graph: Graph, ranking: LayerRanking, budget: int,
                 alpha: float, rule: KRule = KRule.CLOSEST,
                 backbone: Backbone = Backbone.FLOAT32) -> PolicySetup:
    """Candidates, channel pool and selection rule of ``policy`` at ``budget`` bytes, the
    engine's RAM planned for ``backbone``."""
    convs = [node.name for node in graph.nodes_of(OpType.CONV)]
    if policy in (Policy.MEDYATE, Policy.TRADY, Policy.STATIC):
        plan = plan_budget(graph, ranking.ranking, budget, alpha, rule, backbone)
        rule = {
            Policy.MEDYATE: SelectionRule(resample=True, weighted=True),
            Policy.TRADY: SelectionRule(resample=True, weighted=False),
            Policy.STATIC: SelectionRule(resample=False, weighted=False,
                                         fixed=static_selection(graph, ranking, plan.candidates,
                                                                plan.pool_bytes)),
        }[policy]
        return PolicySetup(policy, plan.candidates, plan.pool_bytes, rule, plan.total_bytes,
                           backbone)
    if policy is Policy.RANDOM:
        fixed = engine_memory(graph, frozenset(convs), backbone).fixed_bytes
        cheapest = min(channel_table(graph, convs).costs)
        if pool_bytes(budget, fixed) < cheapest:
            raise InfeasiblePolicy(f"random over every layer needs "
                                   f"{budget_for_pool(fixed, cheapest)} B")
        pool = pool_bytes(budget, fixed)
        return PolicySetup(policy, tuple(convs), pool,
                           SelectionRule(resample=True, weighted=False), fixed + pool, backbone)
    if policy is Policy.CLASSIFIER:
        fixed = engine_memory(graph, frozenset(), backbone).fixed_bytes
        if fixed > budget:
            raise InfeasiblePolicy(f"classifier-only training needs {fixed} B")
        return PolicySetup(policy, (), 0, SelectionRule(False, False, fixed=[]), fixed, backbone)
    if policy is Policy.LAST_K:
        for k in range(len(convs), 0, -1):
            layers = convs[len(convs) - k:]
            table = channel_table(graph, layers)
            need = engine_memory(graph, frozenset(layers), backbone).fixed_bytes + sum(
                table.channel_costs())
            if need <= budget:
                return PolicySetup(policy, tuple(layers), sum(table.channel_costs()),
                                   SelectionRule(False, False, fixed=list(range(table.size))),
                                   need, backbone)
        raise InfeasiblePolicy("not even the last conv layer fits with all its channels")
    raise ValueError(f"{policy} has no budget setup; use full_finetune")


def static_selection(graph: Graph, ranking: LayerRanking, candidates: tuple[str, ...],
                     pool_bytes: int) -> list[int]:
    """LaRa's per-channel norms, highest first, each taken if it still fits the pool."""
    table = channel_table(graph, candidates)
    norms = np.concatenate([np.asarray(ranking.channel_norms[name], np.float64)
                            for name in table.layers])
    costs = table.channel_costs()
    chosen, left = [], pool_bytes
    for index in np.argsort(-norms, kind="stable"):
        if costs[index] <= left:
            chosen.append(int(index))
            left -= costs[index]
    return chosen


def policy_trainer(setup: PolicySetup, graph: Graph, settings: TrainSettings,
                   quantization: Quantization | None = None) -> SparseTrainer:
    """The host trainer of ``setup``; an int8 setup needs the ``quantization`` that
    ``graph`` (the dequantized graph, with the task's classifier) was made with."""
    if setup.backbone is Backbone.INT8 and quantization is None:
        raise ValueError("an int8-backbone policy needs the quantization of its backbone")
    return SparseTrainer(graph, setup.candidates, setup.pool_bytes, setup.rule, settings,
                         quantization if setup.backbone is Backbone.INT8 else None)


def train_policy(setup: PolicySetup, graph: Graph, settings: TrainSettings, x: np.ndarray,
                 y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 quantization: Quantization | None = None) -> list[EpochRecord]:
    """Train ``setup`` (see :func:`policy_trainer`); the last record holds the test accuracy."""
    trainer = policy_trainer(setup, graph, settings, quantization)
    history = trainer.fit(x, y)
    history[-1].test_accuracy = accuracy(trainer.net, x_test, y_test)
    return history


def full_finetune(graph: Graph, settings: TrainSettings, x: np.ndarray, y: np.ndarray,
                  x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Every weight and bias trained with the same SGD, schedule and sample order (no budget).

    Returns the final test accuracy."""
    net = ReferenceNet(graph)
    for epoch in range(1, settings.epochs + 1):
        lr = learning_rate(epoch, settings)
        for batch in epoch_batches(len(x), settings.batch_size, settings.seed, epoch):
            loss = F.cross_entropy(net(torch.from_numpy(x[batch])), torch.from_numpy(y[batch]))
            sgd_step(loss, list(net.parameters()), lr)
    return accuracy(net, x_test, y_test)
