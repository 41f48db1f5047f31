"""The budget planner: from a RAM budget and a LaRa ranking to the candidate layers and the
channel pool (docs/design.md §3 and §9).

``fixed(K)`` is the engine's RAM with the top-K ranked layers as candidates, before any channel is
selected (:func:`medyate_mcu.planning.memory.engine_memory`); the channel pool gets
``B(K) = budget - fixed(K)``. The planner takes the smallest K with ``B(K) / M_K <= alpha``, where
``M_K`` is the total channel cost of the top-K layers (in bytes, like B).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph, OpType
from medyate_mcu.method.costs import BYTES_PER_ELEMENT, ChannelCost, channel_cost
from medyate_mcu.planning.arena import align
from medyate_mcu.planning.memory import (
    Backbone,
    EngineMemory,
    budget_for_pool,
    engine_memory,
    pool_bytes,
)
from medyate_mcu.units import format_size

DEFAULT_ALPHA = 0.2


class InfeasibleBudgetError(MedyateError):
    """The budget cannot hold the engine plus a single channel of any candidate layer set."""

    def __init__(self, budget: int, minimum: int, detail: str) -> None:
        self.budget, self.minimum = budget, minimum
        super().__init__(f"budget {format_size(budget)} is too small for this model; the "
                         f"smallest feasible budget is {format_size(minimum)} ({detail})")


@dataclass(frozen=True)
class BudgetPlan:
    budget: int  # bytes
    alpha: float
    candidates: tuple[str, ...]  # the top-K layers, in rank order
    costs: tuple[ChannelCost, ...]  # their channel costs, in rank order
    memory: EngineMemory  # fixed(K), part by part
    pool_bytes: int  # B(K)
    reason: str  # why this K
    skipped: tuple[str, ...] = ()  # ranked layers that do not fit the budget even alone

    @property
    def k(self) -> int:
        return len(self.candidates)

    @property
    def search_space_bytes(self) -> int:
        """M_K: every channel of the candidate layers, in bytes."""
        return sum(cost.layer_units for cost in self.costs) * BYTES_PER_ELEMENT

    @property
    def alpha_k(self) -> float:
        return self.pool_bytes / self.search_space_bytes if self.costs else 0.0

    @property
    def total_bytes(self) -> int:
        return self.memory.fixed_bytes + self.pool_bytes


def ranked_conv_layers(graph: Graph, ranking: Sequence[str]) -> list[str]:
    """Check that ``ranking`` names each conv layer of ``graph`` exactly once."""
    convs = [node.name for node in graph.nodes_of(OpType.CONV)]
    if sorted(ranking) != sorted(convs):
        missing = sorted(set(convs) - set(ranking))
        extra = sorted(set(ranking) - set(convs))
        raise MedyateError(f"the layer ranking does not match the model (missing: {missing}, "
                           f"unknown: {extra}); recompute it with `medyate-mcu lara`")
    return list(ranking)


class KRule(StrEnum):
    """How K is chosen among the feasible candidate-layer counts."""

    CLOSEST = "closest"  # B(K)/M_K nearest alpha (log scale): the default, see docs/decisions.md
    DESIGN = "design"  # docs/design.md §3: the smallest K with B(K)/M_K <= alpha


def feasible_plans(graph: Graph, ranking: Sequence[str], budget: int,
                   alpha: float = DEFAULT_ALPHA,
                   backbone: Backbone = Backbone.FLOAT32) -> list[BudgetPlan]:
    """Every K the scan reaches (each smaller K left a positive pool) whose pool holds its
    cheapest channel, in increasing K."""
    if not 0 < alpha <= 1:
        raise MedyateError(f"alpha {alpha} must be in (0, 1]")
    ranking = ranked_conv_layers(graph, ranking)
    if not ranking:
        raise MedyateError("the model has no conv layer to train; MeDyate needs at least one")
    usable = [name for name in ranking if alone_budget(graph, name, backbone) <= budget]
    if not usable:
        costs = [channel_cost(graph, graph.node(name)) for name in ranking]
        raise InfeasibleBudgetError(budget, *minimum_budget(graph, ranking, costs, backbone))
    skipped = tuple(name for name in ranking if name not in usable)
    costs = [channel_cost(graph, graph.node(name)) for name in usable]
    plans = []
    for k in range(1, len(usable) + 1):
        memory = engine_memory(graph, frozenset(usable[:k]), backbone)
        pool = pool_bytes(budget, memory.fixed_bytes)
        if pool <= 0:
            break
        if pool >= min(cost.channel_bytes for cost in costs[:k]):
            plans.append(BudgetPlan(budget, alpha, tuple(usable[:k]), tuple(costs[:k]), memory,
                                    pool, reason="", skipped=skipped))
    assert plans, "the first usable layer fits alone"
    return plans


def alone_budget(graph: Graph, layer: str, backbone: Backbone = Backbone.FLOAT32) -> int:
    """The smallest budget with ``layer`` the only candidate and a pool for one of its channels;
    a ranked layer that needs more than the budget is skipped (docs/decisions.md, issue 11)."""
    fixed = engine_memory(graph, frozenset({layer}), backbone).fixed_bytes
    return budget_for_pool(fixed, channel_cost(graph, graph.node(layer)).channel_bytes)


def plan_budget(graph: Graph, ranking: Sequence[str], budget: int,
                alpha: float = DEFAULT_ALPHA, rule: KRule = KRule.CLOSEST,
                backbone: Backbone = Backbone.FLOAT32) -> BudgetPlan:
    """Choose K and the channel pool for ``budget`` bytes (docs/design.md §3).

    ``KRule.DESIGN``: the smallest K with ``B(K)/M_K <= alpha``; when none, every layer if the
    scan reached them all, else the largest feasible K. ``KRule.CLOSEST``: the K whose ratio is
    nearest alpha in log scale (ties: the smaller K). On the device B(K) falls by a whole layer's
    weights for each added layer, so the first K under alpha can leave an almost empty pool.
    """
    plans = feasible_plans(graph, ranking, budget, alpha, backbone)
    if rule is KRule.CLOSEST:
        best = min(plans, key=lambda p: (abs(math.log(p.alpha_k / alpha)), p.k))
        return _with_reason(best, f"K whose B/M_K is closest to alpha = {alpha}")
    for plan in plans:
        if plan.alpha_k <= alpha:
            return _with_reason(plan, f"smallest K with B/M_K <= alpha = {alpha}")
    last = plans[-1]
    if last.k == len(ranking) - len(last.skipped):
        return _with_reason(last, f"every layer: B/M_K stays above alpha = {alpha}")
    return _with_reason(last, "largest K whose pool still holds a channel (B(K) runs out "
                              "before B/M_K reaches alpha)")


def minimum_budget(graph: Graph, ranking: Sequence[str], costs: Sequence[ChannelCost],
                   backbone: Backbone = Backbone.FLOAT32) -> tuple[int, str]:
    """The smallest budget the planner accepts, and how it is made up: the smallest
    :func:`alone_budget` of the ranked layers (a layer that does not fit alone is skipped, so
    one layer and one of its channels is always the cheapest plan); for most models the top
    ranked layer's, docs/design.md's ``fixed(1)`` + its channel (aligned)."""
    best: tuple[int, str] | None = None
    for name, cost in zip(ranking, costs, strict=True):
        need = alone_budget(graph, name, backbone)
        if best is None or need < best[0]:
            fixed = need - align(cost.channel_bytes)
            best = (need, f"engine {format_size(fixed)} with {name} as the one candidate layer "
                          f"+ one of its channels, {cost.channel_bytes} B")
    assert best is not None
    return best


def _with_reason(plan: BudgetPlan, reason: str) -> BudgetPlan:
    if plan.skipped:
        reason += (f"; {len(plan.skipped)} ranked layer(s) skipped, too large for the budget "
                   f"even alone: {', '.join(plan.skipped)}")
    return BudgetPlan(plan.budget, plan.alpha, plan.candidates, plan.costs, plan.memory,
                      plan.pool_bytes, reason, plan.skipped)
