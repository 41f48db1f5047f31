"""The training schedule, the arena placement and the budget planner."""

from __future__ import annotations

import pytest
import torch
from model_builders import INPUT_SHAPE, TEST_MODELS, build_test_model

from medyate_mcu.graph import Graph, OpType, import_torch
from medyate_mcu.method.costs import channel_cost
from medyate_mcu.method.planner import InfeasibleBudgetError, KRule, feasible_plans, plan_budget
from medyate_mcu.planning.arena import Buffer, align, align_down, plan_arena
from medyate_mcu.planning.memory import engine_memory
from medyate_mcu.planning.schedule import StepKind, build_schedule


@pytest.fixture(scope="module", params=sorted(TEST_MODELS))
def graph(request: pytest.FixtureRequest) -> Graph:
    return import_torch(build_test_model(request.param), torch.zeros(1, *INPUT_SHAPE))


def convs(graph: Graph) -> list[str]:
    return [node.name for node in graph.nodes_of(OpType.CONV)]


def test_backward_stops_at_the_deepest_candidate(graph: Graph) -> None:
    names = convs(graph)
    last = names[-1]
    schedule = build_schedule(graph, {last})
    backward = [s for s in schedule.steps if s.kind is StepKind.BACKWARD]
    assert backward[0].node.name == schedule.classifier and backward[0].weight_gradient
    assert backward[-1].node.name == last and backward[-1].weight_gradient
    assert not backward[-1].propagate_error  # nothing below the candidate needs an error
    touched = {s.node.name for s in backward}
    assert not touched & set(names[:-1])
    # with every conv a candidate, the backward pass reaches the first conv
    full = build_schedule(graph, set(names))
    assert [s.node.name for s in full.steps if s.kind is StepKind.BACKWARD][-1] == names[0]


def test_classifier_only_schedule(graph: Graph) -> None:
    schedule = build_schedule(graph, set())
    backward = [s for s in schedule.steps if s.kind is StepKind.BACKWARD]
    assert [s.node.name for s in backward] == [schedule.classifier]
    assert not backward[0].propagate_error


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_arena_has_no_overlap_and_respects_the_lower_bound(graph: Graph, share: float) -> None:
    names = convs(graph)
    candidates = set(names[len(names) - round(share * len(names)):])
    plan = engine_memory(graph, candidates).arena
    assert plan.overlaps() == []
    assert plan.size >= plan.lower_bound > 0
    assert all(p.offset % 8 == 0 for p in plan.placements)


def test_arena_placement_by_hand() -> None:
    # a (64 B, steps 0-1), b (32 B, 1-2), c (64 B, 2-3): a and c can share offset 0.
    plan = plan_arena([Buffer("a", 64, 0, 1), Buffer("b", 32, 1, 2), Buffer("c", 64, 2, 3)])
    assert (plan.offset_of("a"), plan.offset_of("c"), plan.offset_of("b")) == (0, 0, 64)
    assert plan.size == plan.lower_bound == 96
    assert plan.overlaps() == []


def test_arena_finds_a_gap_between_buffers() -> None:
    buffers = [Buffer("big1", 100, 0, 5), Buffer("gap", 40, 0, 0), Buffer("big2", 100, 0, 5),
               Buffer("late", 40, 2, 3)]
    plan = plan_arena(buffers)
    assert plan.overlaps() == []
    assert plan.size == align(100) * 2 + align(40)  # "late" reuses "gap"'s bytes
    assert plan.offset_of("late") == plan.offset_of("gap")


def test_fixed_bytes_is_the_sum_of_parts(graph: Graph) -> None:
    memory = engine_memory(graph, set(convs(graph)[-2:]))
    parts = memory.parts()
    assert memory.fixed_bytes == sum(parts.values())
    candidate_weights = sum(graph.node(n).params["weight"].size * 4 for n in convs(graph)[-2:])
    assert parts["candidate_weights"] >= candidate_weights
    assert parts["candidate_weights"] - candidate_weights < 16


def test_plan_never_exceeds_the_budget_and_adds_up(graph: Graph) -> None:
    ranking = convs(graph)[::-1]
    smallest = None
    for budget in (12_000, 20_000, 40_000, 80_000, 400_000):
        try:
            plan = plan_budget(graph, ranking, budget)
        except InfeasibleBudgetError as exc:
            smallest = exc.minimum
            continue
        assert plan.total_bytes == plan.memory.fixed_bytes + plan.pool_bytes
        assert plan.total_bytes == align_down(budget)  # the pool rounds down to whole slots
        assert plan.memory.fixed_bytes == sum(plan.memory.parts().values())
        assert plan.pool_bytes >= min(cost.channel_bytes for cost in plan.costs)
        assert list(plan.candidates) == ranking[:plan.k]
        if "alpha" in plan.reason and "smallest" in plan.reason:
            assert plan.alpha_k <= 0.2
    assert smallest is None or smallest > 12_000


def test_k_is_the_smallest_meeting_alpha(graph: Graph) -> None:
    ranking = convs(graph)[::-1]
    budget = 30_000
    plan = plan_budget(graph, ranking, budget, alpha=0.2, rule=KRule.DESIGN)
    for k in range(1, plan.k):
        fixed = engine_memory(graph, frozenset(ranking[:k])).fixed_bytes
        costs = [channel_cost(graph, graph.node(n)) for n in ranking[:k]]
        pool = align_down(budget - fixed)
        space = 4 * sum(c.layer_units for c in costs)
        assert pool < min(c.channel_bytes for c in costs) or pool / space > 0.2


def test_minimum_budget_is_exactly_the_feasibility_boundary(graph: Graph) -> None:
    ranking = convs(graph)[::-1]
    with pytest.raises(InfeasibleBudgetError) as info:
        plan_budget(graph, ranking, 1000)
    minimum = info.value.minimum
    assert "smallest feasible budget is" in str(info.value) and "\n" not in str(info.value)
    plan_budget(graph, ranking, minimum)  # feasible
    with pytest.raises(InfeasibleBudgetError):
        plan_budget(graph, ranking, minimum - 1)


def test_ranking_must_match_the_model(graph: Graph) -> None:
    from medyate_mcu.errors import MedyateError
    with pytest.raises(MedyateError, match="does not match the model"):
        plan_budget(graph, convs(graph)[1:], 100_000)


def test_closest_rule_picks_the_ratio_nearest_alpha(graph: Graph) -> None:
    import math
    ranking = convs(graph)[::-1]
    for budget in (30_000, 40_000, 80_000):
        plans = feasible_plans(graph, ranking, budget, 0.2)
        chosen = plan_budget(graph, ranking, budget, 0.2, KRule.CLOSEST)
        distance = abs(math.log(chosen.alpha_k / 0.2))
        assert all(distance <= abs(math.log(p.alpha_k / 0.2)) for p in plans)
        assert chosen.k in [p.k for p in plans]
