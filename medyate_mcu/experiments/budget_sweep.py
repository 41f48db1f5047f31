"""Accuracy versus RAM budget: every policy, on every downstream task, at several budgets and
seeds, with the host reference trainer (the device's algorithm). Writes a CSV, a Markdown table
(mean ± std) and a PNG plot."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.lara import LaraSettings, LayerRanking, backbone_fingerprint, compute_lara
from medyate_mcu.method.planner import DEFAULT_ALPHA, InfeasibleBudgetError, KRule
from medyate_mcu.method.policies import (
    InfeasiblePolicy,
    Policy,
    full_finetune,
    setup_policy,
    train_policy,
)
from medyate_mcu.method.trainer import TrainSettings, replace_classifier
from medyate_mcu.units import format_size
from medyate_mcu.zoo.tasks import TaskData, load_task, proxy_task_for


@dataclass(frozen=True)
class SweepConfig:
    tasks: tuple[str, ...]
    budgets: tuple[int, ...]  # bytes
    policies: tuple[Policy, ...] = tuple(Policy)
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=15, batch_size=16,
                                                                       lr=0.1, warmup=1))
    lara: LaraSettings = field(default_factory=LaraSettings)
    alpha: float = DEFAULT_ALPHA
    k_rule: KRule = KRule.CLOSEST
    train_per_class: int | None = None  # None: the panel's size


@dataclass(frozen=True)
class RunResult:
    task: str
    budget: int | None  # None for full fine-tuning
    policy: str
    seed: int
    test_accuracy: float | None  # None: infeasible at this budget
    k: int
    pool_bytes: int
    engine_bytes: int
    seconds: float


def ranking_for(graph: Graph, proxy: TaskData, settings: LaraSettings,
                cache: Path) -> LayerRanking:
    path = cache / f"lara-{proxy.name}-{backbone_fingerprint(graph)[:12]}.json"
    if path.is_file():
        return LayerRanking.load(path, graph)
    ranking = compute_lara(graph, proxy.x_train, proxy.y_train, proxy.classes, proxy.name,
                           settings)
    ranking.save(path)
    return ranking


def run_sweep(graph: Graph, config: SweepConfig, panel: Sequence[str], output: Path,
              on_run: Callable[[RunResult, int, int], None] | None = None) -> list[RunResult]:
    """Run every (task, budget, policy, seed) and write ``results.csv``, ``results.md`` and
    ``accuracy_vs_budget.png`` into ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    budgeted = [p for p in config.policies if p is not Policy.FULL]
    total = len(config.tasks) * len(config.seeds) * (
        len(config.budgets) * len(budgeted) + (Policy.FULL in config.policies))
    results: list[RunResult] = []
    for task in config.tasks:
        proxy_name = proxy_task_for(task, tuple(panel))
        proxy = load_task(proxy_name, graph, train_per_class=config.train_per_class)
        ranking = ranking_for(graph, proxy, config.lara, output)
        for seed in config.seeds:
            data = load_task(task, graph, seed=0, train_per_class=config.train_per_class)
            headed = replace_classifier(graph, data.classes, seed)
            settings = TrainSettings(config.train.epochs, config.train.batch_size,
                                     config.train.lr, config.train.warmup, seed)
            for budget in config.budgets:
                for policy in budgeted:
                    results.append(_run_one(task, budget, policy, seed, headed, ranking,
                                            config, settings, data))
                    if on_run:
                        on_run(results[-1], len(results), total)
            if Policy.FULL in config.policies:
                start = time.perf_counter()
                accuracy = full_finetune(headed, settings, data.x_train, data.y_train,
                                         data.x_test, data.y_test)
                results.append(RunResult(task, None, Policy.FULL.value, seed, accuracy, 0, 0, 0,
                                         time.perf_counter() - start))
                if on_run:
                    on_run(results[-1], len(results), total)
    write_csv(results, output / "results.csv")
    (output / "results.md").write_text(markdown_table(results, config))
    plot(results, config, output / "accuracy_vs_budget.png")
    return results


def _run_one(task: str, budget: int, policy: Policy, seed: int, graph: Graph,
             ranking: LayerRanking, config: SweepConfig, settings: TrainSettings,
             data: TaskData) -> RunResult:
    start = time.perf_counter()
    try:
        setup = setup_policy(policy, graph, ranking, budget, config.alpha, config.k_rule)
    except (InfeasiblePolicy, InfeasibleBudgetError):
        return RunResult(task, budget, policy.value, seed, None, 0, 0, 0, 0.0)
    history = train_policy(setup, graph, settings, data.x_train, data.y_train, data.x_test,
                           data.y_test)
    return RunResult(task, budget, policy.value, seed, history[-1].test_accuracy,
                     len(setup.candidates), setup.pool_bytes, setup.engine_bytes,
                     time.perf_counter() - start)


def write_csv(results: Sequence[RunResult], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "budget_bytes", "policy", "seed", "test_accuracy", "k",
                         "pool_bytes", "engine_bytes", "seconds"])
        for r in results:
            writer.writerow([r.task, "" if r.budget is None else r.budget, r.policy, r.seed,
                             "" if r.test_accuracy is None else f"{r.test_accuracy:.4f}", r.k,
                             r.pool_bytes, r.engine_bytes, f"{r.seconds:.1f}"])


def _summary(results: Sequence[RunResult]) -> dict[tuple[str, int | None, str], list[float | None]]:
    grouped: dict[tuple[str, int | None, str], list[float | None]] = defaultdict(list)
    for r in results:
        grouped[(r.task, r.budget, r.policy)].append(r.test_accuracy)
    return grouped


def _cell(values: list[float | None]) -> str:
    if not values or any(v is None for v in values):
        return "infeasible"
    array = np.array(values, dtype=float) * 100
    return f"{array.mean():.1f} ± {array.std():.1f}"


def markdown_table(results: Sequence[RunResult], config: SweepConfig) -> str:
    grouped = _summary(results)
    budgeted = [p.value for p in config.policies if p is not Policy.FULL]
    lines = [f"Test accuracy (%), mean ± std over seeds {list(config.seeds)}; "
             f"{config.train.epochs} epochs, batch {config.train.batch_size}, "
             f"lr {config.train.lr}, alpha {config.alpha}, K rule {config.k_rule.value}.", ""]
    header = ["task", "budget", *budgeted]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in config.tasks:
        for budget in config.budgets:
            row = [task, format_size(budget).split(" (")[0]]
            row += [_cell(grouped.get((task, budget, p), [])) for p in budgeted]
            lines.append("| " + " | ".join(row) + " |")
        if Policy.FULL in config.policies:
            full = _cell(grouped.get((task, None, Policy.FULL.value), []))
            lines.append(f"| {task} | no budget | full fine-tune: {full} |"
                         + " |" * (len(budgeted) - 1))
    return "\n".join(lines) + "\n"


def plot(results: Sequence[RunResult], config: SweepConfig, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = _summary(results)
    figure, axes = plt.subplots(1, len(config.tasks), figsize=(4.5 * len(config.tasks), 3.8),
                                squeeze=False)
    budgets_kib = [b / 1024 for b in config.budgets]
    for axis, task in zip(axes[0], config.tasks, strict=True):
        for policy in config.policies:
            if policy is Policy.FULL:
                values = grouped.get((task, None, policy.value), [])
                if values and None not in values:
                    axis.axhline(100 * float(np.mean(values)), color="black", linestyle=":",
                                 label="full fine-tune")
                continue
            means = []
            for budget in config.budgets:
                values = grouped.get((task, budget, policy.value), [])
                means.append(np.nan if not values or None in values
                             else 100 * float(np.mean(values)))
            axis.plot(budgets_kib, means, marker="o", label=policy.value)
        axis.set_title(task)
        axis.set_xlabel("RAM budget (KiB)")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
