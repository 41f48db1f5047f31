"""The training schedule, the arena placement and the budget planner."""

from __future__ import annotations

import pytest
import torch
from model_builders import INPUT_SHAPE, TEST_MODELS, build_test_model
from torch import nn

from medyate_mcu.graph import Graph, OpType, import_torch
from medyate_mcu.method.planner import InfeasibleBudgetError, KRule, feasible_plans, plan_budget
from medyate_mcu.planning.arena import Buffer, align, align_down, plan_arena
from medyate_mcu.planning.memory import engine_memory, measured_parts
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


def _tiny_graph() -> Graph:
    """conv '0' (2 -> 3, 3x3, pad 1), ReLU, conv '2' (3 -> 5, 1x1), ReLU, mean, Linear(5, 4)."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 5, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4)).eval()
    return import_torch(model, torch.zeros(1, 2, 4, 4))


def test_fixed_parts_worked_by_hand() -> None:
    graph = _tiny_graph()
    # Symbols take 8-byte slots. Classifier: (5·4 + 4) floats = 96 B, values and gradients: 192.
    # Engine scalars: 64. conv '2': 15 weights = 60 B -> 64; 3 channels: norms, norm sums,
    # sampler weights 12 -> 16 each, in-pool 3 -> 8, selection (u16) 6 -> 8, pool offsets 16: 80.
    assert engine_memory(graph, {"2"}).parts() | {"arena": 0} == {
        "arena": 0, "candidate_weights": 64, "classifier": 192, "channel_state": 80,
        "engine_state": 64}
    # Both convs: conv '0' adds 54 weights = 216 B; 5 channels: 3 x (20 -> 24) + 8 + 16 + 24.
    both = engine_memory(graph, {"0", "2"})
    assert both.parts() | {"arena": 0} == {
        "arena": 0, "candidate_weights": 280, "classifier": 192, "channel_state": 120,
        "engine_state": 64}
    # Classifier only: conv '0' out (3·16 floats, ReLU in place) and conv '2' out (5·16) are
    # both live while conv '2' runs: 192 + 320 B, and nothing later is larger.
    assert engine_memory(graph, set()).arena.size == 512
    assert both.fixed_bytes == both.arena.size + 280 + 192 + 120 + 64


def test_symbol_table_worked_by_hand() -> None:
    memory = engine_memory(_tiny_graph(), {"2"})
    symbols = memory.symbols(96)
    # Sizes before alignment: 24 classifier floats; 3 channels x 4, 4, 4, 1, 2, 4 bytes.
    assert symbols == {
        "mdy_arena": 512, "mdy_pool": 96, "mdy_classifier": 96, "mdy_classifier_grad": 96,
        "mdy_state": 64, "mdy_norms": 12, "mdy_norm_sums": 12, "mdy_sampler_weights": 12,
        "mdy_in_pool": 3, "mdy_selected": 6, "mdy_pool_offsets": 12}
    # An image with these symbols, conv '2''s 60-byte weight copy and one stray symbol.
    image = {**symbols, "mdy_w_2": 60, "mdy_debug": 5}
    assert measured_parts(image) == {
        "arena": 512, "candidate_weights": 64, "classifier": 192, "channel_state": 80,
        "engine_state": 64, "pool": 96, "other": 8}


def test_plan_never_exceeds_the_budget_and_adds_up(graph: Graph) -> None:
    ranking = convs(graph)[::-1]
    smallest = None
    for budget in (12_000, 20_000, 40_000, 80_000, 400_000):
        try:
            plan = plan_budget(graph, ranking, budget)
        except InfeasibleBudgetError as exc:
            smallest = exc.minimum
            continue
        assert plan.total_bytes == align_down(budget)  # the pool rounds down to whole slots
        assert plan.pool_bytes >= min(cost.channel_bytes for cost in plan.costs)
        assert list(plan.candidates) == ranking[:plan.k]
        design = plan_budget(graph, ranking, budget, rule=KRule.DESIGN)
        below = [p.k for p in feasible_plans(graph, ranking, budget) if p.alpha_k <= 0.2]
        if below:
            assert design.reason.startswith("smallest K") and design.k == min(below)
            assert design.alpha_k <= 0.2
        else:
            assert design.alpha_k > 0.2 and not design.reason.startswith("smallest K")
    assert smallest is None or smallest > 12_000


def test_k_rule_worked_by_hand() -> None:
    graph = _tiny_graph()
    ranking = ["2", "0"]
    # Arena, K = 1: the forward peak, conv '0' out (192 B) and conv '2' out (320 B) while conv
    # '2' runs; backward, the ReLU errors are written over their outputs' errors (320 + 24 +
    # the 16-byte mask): 512. K = 2 adds conv '0''s ReLU mask (48 bits -> 8 B), live from the
    # forward on: 520. fixed(1) = 512 + 64 + 192 + 80 + 64 = 912; fixed(2) = 520 + 280 + 192 +
    # 120 + 64 = 1176 (parts: test above). Channel costs: conv '2' (5·1·1 + 4·4) · 4 = 84 B,
    # 3 channels, M_1 = 252; conv '0' (3·3·3 + 4·4) · 4 = 172 B, 2 channels, M_2 = 596.
    assert [engine_memory(graph, set(ranking[:k])).arena.size for k in (1, 2)] == [512, 520]
    # 1272: B(1) = 360, 360/252 > 0.2; B(2) = 96 >= 84 and 96/596 = 0.161 <= 0.2 -> K = 2.
    plan = plan_budget(graph, ranking, 1272, alpha=0.2, rule=KRule.DESIGN)
    assert (plan.k, plan.pool_bytes) == (2, 96) and plan.reason.startswith("smallest K")
    assert plan.alpha_k == pytest.approx(96 / 596)
    # 1376: B(2) = 200, 200/596 = 0.34: no K meets alpha -> every layer.
    plan = plan_budget(graph, ranking, 1376, alpha=0.2, rule=KRule.DESIGN)
    assert (plan.k, plan.pool_bytes) == (2, 200) and plan.reason.startswith("every layer")
    # 1240: B(1) = 328; B(2) = 64 < 84, no channel fits -> the largest K that was reached, 1.
    plan = plan_budget(graph, ranking, 1240, alpha=0.2, rule=KRule.DESIGN)
    assert (plan.k, plan.pool_bytes) == (1, 328) and plan.reason.startswith("largest K")
    # 1112: conv '0' alone needs fixed({'0'}) = arena 520 + 216 + 192 + channel state for 2
    # channels 48 + 64 = 1040, and its 172-B channel in a 176-B slot: 1216 > 1112, so it is
    # skipped; K = 1 with B(1) = 200 is every layer that can be a candidate.
    plan = plan_budget(graph, ranking, 1112, alpha=0.2, rule=KRule.DESIGN)
    assert (plan.k, plan.pool_bytes, plan.skipped) == (1, 200, ("0",))
    assert plan.reason.startswith("every layer") and "skipped" in plan.reason
    # The smallest budget: fixed(1) + conv '2''s channel in an aligned slot, 912 + 88.
    with pytest.raises(InfeasibleBudgetError) as info:
        plan_budget(graph, ranking, 999)
    assert info.value.minimum == 1000
    assert plan_budget(graph, ranking, 1000).pool_bytes == 88


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
