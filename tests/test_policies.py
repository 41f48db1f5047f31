"""The baselines under one budget accounting, and the method commands end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from model_builders import INPUT_SHAPE, build_test_model

from medyate_mcu.cli.main import main
from medyate_mcu.graph import OpType, import_torch
from medyate_mcu.method.lara import LaraSettings, compute_lara
from medyate_mcu.method.policies import (
    InfeasiblePolicy,
    Policy,
    setup_policy,
    static_selection,
    train_policy,
)
from medyate_mcu.method.trainer import TrainSettings, channel_table, replace_classifier
from medyate_mcu.planning.memory import engine_memory


@pytest.fixture(scope="module")
def setting():
    graph = replace_classifier(
        import_torch(build_test_model("mobilenetv2"), torch.zeros(1, *INPUT_SHAPE)), 4, 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, *INPUT_SHAPE)).astype(np.float32)
    y = np.arange(24) % 4
    ranking = compute_lara(graph, x, y, 4, "toy", LaraSettings(epochs=1, batch_size=8))
    return graph, ranking, x, y


@pytest.mark.parametrize("policy", [p for p in Policy if p is not Policy.FULL])
def test_every_policy_stays_within_the_budget(setting, policy: Policy) -> None:
    graph, ranking, x, y = setting
    budget = 40_000
    convs = [n.name for n in graph.nodes_of(OpType.CONV)]
    if policy is Policy.RANDOM:  # every layer a candidate (its infeasibility: the next test)
        budget = engine_memory(graph, frozenset(convs)).fixed_bytes + 20_000
    setup = setup_policy(policy, graph, ranking, budget, alpha=0.2)
    fixed = engine_memory(graph, frozenset(setup.candidates)).fixed_bytes
    assert fixed + setup.pool_bytes <= budget
    history = train_policy(setup, graph, TrainSettings(epochs=2, batch_size=8), x, y, x, y)
    costs = channel_table(graph, setup.candidates).channel_costs()
    for record in history:
        assert sum(costs[c] for c in record.selected) <= setup.pool_bytes
    assert 0 <= history[-1].test_accuracy <= 1


def test_random_over_every_layer_pays_for_every_layer(setting) -> None:
    graph, ranking, _, _ = setting
    convs = [n.name for n in graph.nodes_of(OpType.CONV)]
    everything = engine_memory(graph, frozenset(convs)).fixed_bytes
    with pytest.raises(InfeasiblePolicy):
        setup_policy(Policy.RANDOM, graph, ranking, everything, alpha=0.2)
    setup = setup_policy(Policy.RANDOM, graph, ranking, everything + 10_000, alpha=0.2)
    assert setup.candidates == tuple(convs) and setup.pool_bytes == 10_000


def test_static_takes_the_highest_norm_channels_that_fit(setting) -> None:
    graph, ranking, _, _ = setting
    candidates = tuple(ranking.ranking[:3])
    table = channel_table(graph, candidates)
    norms = np.concatenate([ranking.channel_norms[name] for name in table.layers])
    costs = table.channel_costs()
    pool = sum(costs) // 4
    chosen = static_selection(graph, ranking, candidates, pool)
    assert sum(costs[c] for c in chosen) <= pool
    unchosen = [c for c in range(table.size) if c not in chosen]
    best_left_out = max((norms[c] for c in unchosen if costs[c] <= pool - sum(
        costs[k] for k in chosen)), default=-1)
    assert best_left_out == -1  # nothing that still fits was left out
    assert norms[chosen[0]] == norms.max() or costs[int(np.argmax(norms))] > pool


def test_last_k_takes_whole_layers(setting) -> None:
    graph, ranking, _, _ = setting
    setup = setup_policy(Policy.LAST_K, graph, ranking, 60_000, alpha=0.2)
    convs = [n.name for n in graph.nodes_of(OpType.CONV)]
    assert setup.candidates == tuple(convs[len(convs) - len(setup.candidates):])
    assert setup.rule.fixed == list(range(channel_table(graph, setup.candidates).size))


def test_plan_command_on_the_bundled_model() -> None:
    result = CliRunner().invoke(main, ["plan", "--budget", "300kB", "--classes", "10"])
    assert result.exit_code == 0, result.output
    assert "K = " in result.output and "channel pool (B)" in result.output
    total = next(line for line in result.output.splitlines() if "total" in line)
    assert "307,200" in total


def test_plan_command_infeasible_budget() -> None:
    result = CliRunner().invoke(main, ["plan", "--budget", "50kB"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: budget 50.0 KiB (51200 B) is too small")
    assert "smallest feasible budget is" in result.stderr


def test_plan_without_ranking_explains_how_to_get_one(tmp_path: Path) -> None:
    import onnx

    from medyate_mcu.graph import export_onnx
    path = tmp_path / "m.onnx"
    onnx.save(export_onnx(build_test_model("resnet"), torch.zeros(1, *INPUT_SHAPE)), path)
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 1
    assert "medyate-mcu lara" in result.stderr and "m.lara.json" in result.stderr


def test_experiment_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDYATE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, ["experiment", "--quick", "--tasks", "shapes,digits",
                                       "--budgets", "250kB,300kB", "--boards", "none", "--serial",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    policies = {row["policy"] for row in rows}
    assert policies == {p.value for p in Policy}
    assert {row["task"] for row in rows} == {"shapes", "digits"}
    for row in rows:
        if row["test_accuracy"] and row["budget_bytes"]:
            assert int(row["engine_bytes"]) <= int(row["budget_bytes"])
    assert (out / "accuracy_vs_budget.png").stat().st_size > 1000
    assert "| shapes |" in (out / "results.md").read_text()
    assert "# Recommendation" in (out / "recommendation.md").read_text()
