"""Accuracy versus RAM budget: every policy, on every downstream task, at several budgets and
seeds, with the host reference trainer (the device's algorithm), with a float32 and/or an int8
backbone (docs/quantization.md; calibrated once per task). Writes a CSV, a Markdown table
(mean ± std, int8 − float32 in pp) and a PNG plot."""

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
from medyate_mcu.method.trainer import TrainSettings, pretrained_for, replace_classifier
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.quant.calibrate import calibrate, dequantized_graph
from medyate_mcu.quant.lowering import int8_region
from medyate_mcu.quant.scheme import Quantization
from medyate_mcu.toolchain.compile import DEFAULT_CALIBRATION_SAMPLES
from medyate_mcu.units import format_size
from medyate_mcu.zoo.tasks import TaskData, load_task, proxy_task_for, stratified_sample


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
    backbones: tuple[Backbone, ...] = (Backbone.FLOAT32,)
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES  # int8: stratified training samples


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
    backbone: str = Backbone.FLOAT32.value  # full fine-tuning is always float32
    int8_nodes: int = 0  # nodes of the int8 region (run in the integer reference)


@dataclass(frozen=True)
class TaskBackbone:
    """The graph a backbone trains on (the dequantized one for int8) and its quantization."""

    graph: Graph
    quantization: Quantization | None = None

    def headed(self, classes: int, seed: int, keep: bool = False) -> TaskBackbone:
        return TaskBackbone(replace_classifier(self.graph, classes, seed, keep),
                            self.quantization)


def task_backbones(graph: Graph, data: TaskData, config: SweepConfig
                   ) -> dict[Backbone, TaskBackbone]:
    """Each backbone of ``config`` for ``data``'s task; int8 is calibrated on
    ``config.calibration_samples`` stratified training samples (seed 0, as `compile`)."""
    backbones = {}
    for backbone in config.backbones:
        if backbone is Backbone.INT8:
            picked = stratified_sample(data.y_train, config.calibration_samples, 0)
            quantization = calibrate(graph, data.x_train[picked])
            backbones[backbone] = TaskBackbone(dequantized_graph(graph, quantization),
                                               quantization)
        else:
            backbones[backbone] = TaskBackbone(graph)
    return backbones


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
        len(config.budgets) * len(budgeted) * len(config.backbones)
        + (Policy.FULL in config.policies))
    results: list[RunResult] = []
    for task in config.tasks:
        proxy_name = proxy_task_for(task, graph, tuple(panel))
        proxy = load_task(proxy_name, graph, train_per_class=config.train_per_class)
        ranking = ranking_for(graph, proxy, config.lara, output)
        data = load_task(task, graph, seed=0, train_per_class=config.train_per_class)
        backbones = task_backbones(graph, data, config)
        keep = pretrained_for(graph, data.class_names)  # the same classes: its own classifier
        for seed in config.seeds:
            headed = {b: backbone.headed(data.classes, seed, keep)
                      for b, backbone in backbones.items()}
            settings = TrainSettings(config.train.epochs, config.train.batch_size,
                                     config.train.lr, config.train.warmup, seed)
            for budget in config.budgets:
                for policy in budgeted:
                    for backbone in config.backbones:
                        results.append(_run_one(task, budget, policy, seed, headed[backbone],
                                                backbone, ranking, config, settings, data))
                        if on_run:
                            on_run(results[-1], len(results), total)
            if Policy.FULL in config.policies:  # every layer trains: no frozen int8 part
                start = time.perf_counter()
                accuracy = full_finetune(replace_classifier(graph, data.classes, seed, keep),
                                         settings,
                                         data.x_train, data.y_train,
                                         data.x_test, data.y_test)
                results.append(RunResult(task, None, Policy.FULL.value, seed, accuracy, 0, 0, 0,
                                         time.perf_counter() - start))
                if on_run:
                    on_run(results[-1], len(results), total)
    write_csv(results, output / "results.csv")
    (output / "results.md").write_text(markdown_table(results, config))
    plot(results, config, output / "accuracy_vs_budget.png")
    return results


def _run_one(task: str, budget: int, policy: Policy, seed: int, model: TaskBackbone,
             backbone: Backbone, ranking: LayerRanking, config: SweepConfig,
             settings: TrainSettings, data: TaskData) -> RunResult:
    start = time.perf_counter()
    try:
        setup = setup_policy(policy, model.graph, ranking, budget, config.alpha, config.k_rule,
                             backbone)
    except (InfeasiblePolicy, InfeasibleBudgetError):
        return RunResult(task, budget, policy.value, seed, None, 0, 0, 0, 0.0, backbone.value)
    history = train_policy(setup, model.graph, settings, data.x_train, data.y_train,
                           data.x_test, data.y_test, model.quantization)
    int8_nodes = len(int8_region(model.graph, setup.candidates)) \
        if backbone is Backbone.INT8 else 0
    return RunResult(task, budget, policy.value, seed, history[-1].test_accuracy,
                     len(setup.candidates), setup.pool_bytes, setup.engine_bytes,
                     time.perf_counter() - start, backbone.value, int8_nodes)


def write_csv(results: Sequence[RunResult], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "budget_bytes", "policy", "backbone", "seed", "test_accuracy",
                         "k", "int8_nodes", "pool_bytes", "engine_bytes", "seconds"])
        for r in results:
            writer.writerow([r.task, "" if r.budget is None else r.budget, r.policy, r.backbone,
                             r.seed, "" if r.test_accuracy is None else f"{r.test_accuracy:.4f}",
                             r.k, r.int8_nodes, r.pool_bytes, r.engine_bytes,
                             f"{r.seconds:.1f}"])


Key = tuple[str, int | None, str, str]  # task, budget (None: no budget), policy, backbone
FLOAT32, INT8 = Backbone.FLOAT32.value, Backbone.INT8.value


def _summary(results: Sequence[RunResult]) -> dict[Key, dict[int, float | None]]:
    """Test accuracy per seed of each (task, budget, policy, backbone)."""
    grouped: dict[Key, dict[int, float | None]] = defaultdict(dict)
    for r in results:
        grouped[(r.task, r.budget, r.policy, r.backbone)][r.seed] = r.test_accuracy
    return grouped


def _feasible(values: dict[int, float | None]) -> bool:
    return bool(values) and all(v is not None for v in values.values())


def _cell(values: dict[int, float | None]) -> str:
    if not _feasible(values):
        return "infeasible"
    array = np.array(list(values.values()), dtype=float) * 100
    return f"{array.mean():.1f} ± {array.std():.1f}"


def _difference(int8: dict[int, float | None], float32: dict[int, float | None]) -> str:
    """int8 − float32 in pp, mean ± std over the seeds both ran (paired by seed)."""
    if not (_feasible(int8) and _feasible(float32)) or int8.keys() != float32.keys():
        return "n/a"
    seeds = sorted(int8)
    pairs = 100 * (np.array([int8[s] for s in seeds], dtype=float)
                   - np.array([float32[s] for s in seeds], dtype=float))
    return f"{pairs.mean():+.1f} ± {pairs.std():.1f}"


def _columns(config: SweepConfig) -> list[tuple[str, str, str | None]]:
    """The table's accuracy columns: (title, policy, backbone or None for the difference)."""
    backbones = [b.value for b in config.backbones]
    both = FLOAT32 in backbones and INT8 in backbones
    columns: list[tuple[str, str, str | None]] = []
    for policy in (p.value for p in config.policies if p is not Policy.FULL):
        columns += [(f"{policy} {b}" if len(backbones) > 1 else f"{policy} ({b})", policy, b)
                    for b in backbones]
        if both:
            columns.append((f"{policy} Δ pp", policy, None))
    return columns


def markdown_table(results: Sequence[RunResult], config: SweepConfig) -> str:
    """Accuracy per task and budget, each policy per backbone and, with both, int8 − float32;
    with int8, a second table gives each run's int8 region."""
    grouped = _summary(results)
    columns = _columns(config)
    lines = [f"Test accuracy (%), mean ± std over seeds {list(config.seeds)}; "
             f"{config.train.epochs} epochs, batch {config.train.batch_size}, "
             f"lr {config.train.lr}, alpha {config.alpha}, K rule {config.k_rule.value}."]
    if Backbone.INT8 in config.backbones:
        difference = "Δ = int8 − float32 in pp (mean ± std over seeds, paired); " \
            if Backbone.FLOAT32 in config.backbones else ""
        lines.append(f"int8 backbone calibrated on {config.calibration_samples} training "
                     f"samples per task; {difference}full fine-tuning trains every layer, in "
                     "float32.")
    header = ["task", "budget", *(title for title, _, _ in columns)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in config.tasks:
        for budget in config.budgets:
            row = [task, format_size(budget).split(" (")[0]]
            for _, policy, backbone in columns:
                if backbone is None:
                    row.append(_difference(grouped.get((task, budget, policy, INT8), {}),
                                           grouped.get((task, budget, policy, FLOAT32), {})))
                else:
                    row.append(_cell(grouped.get((task, budget, policy, backbone), {})))
            lines.append("| " + " | ".join(row) + " |")
        if Policy.FULL in config.policies:
            full = _cell(grouped.get((task, None, Policy.FULL.value, FLOAT32), {}))
            lines.append(f"| {task} | no budget | full fine-tune (float32): {full} |"
                         + " |" * (len(columns) - 1))
    if Backbone.INT8 in config.backbones:
        lines += ["", *int8_region_table(results, config)]
    return "\n".join(lines) + "\n"


def int8_region_table(results: Sequence[RunResult], config: SweepConfig) -> list[str]:
    """K and the int8 region's node count of each int8 run (the same for every seed)."""
    region = {(r.task, r.budget, r.policy): (r.k, r.int8_nodes, r.test_accuracy is not None)
              for r in results if r.backbone == INT8}
    policies = [p.value for p in config.policies if p is not Policy.FULL]
    lines = ["int8 region per run: K candidate layers, nodes run in int8", "",
             "| task | budget | " + " | ".join(policies) + " |",
             "|" + "---|" * (len(policies) + 2)]
    for task in config.tasks:
        for budget in config.budgets:
            cells = []
            for policy in policies:
                k, nodes, feasible = region.get((task, budget, policy), (0, 0, False))
                cells.append(f"K={k}, {nodes} int8 nodes" if feasible else "infeasible")
            lines.append(f"| {task} | {format_size(budget).split(' (')[0]} | "
                         + " | ".join(cells) + " |")
    return lines


def plot(results: Sequence[RunResult], config: SweepConfig, path: Path) -> None:
    """Accuracy against budget per task: a colour per policy, solid float32, dashed int8."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = _summary(results)
    figure, axes = plt.subplots(1, len(config.tasks), figsize=(4.5 * len(config.tasks), 3.8),
                                squeeze=False)
    budgets_kib = [b / 1024 for b in config.budgets]
    styles = {FLOAT32: "-", INT8: "--"}
    for axis, task in zip(axes[0], config.tasks, strict=True):
        for index, policy in enumerate(config.policies):
            if policy is Policy.FULL:
                values = grouped.get((task, None, policy.value, FLOAT32), {})
                if _feasible(values):
                    axis.axhline(100 * float(np.mean(list(values.values()))), color="black",
                                 linestyle=":", label="full fine-tune")
                continue
            for backbone in (b.value for b in config.backbones):
                means = []
                for budget in config.budgets:
                    values = grouped.get((task, budget, policy.value, backbone), {})
                    means.append(100 * float(np.mean(list(values.values())))
                                 if _feasible(values) else np.nan)
                label = policy.value if len(config.backbones) == 1 \
                    else f"{policy.value} ({backbone})"
                axis.plot(budgets_kib, means, marker="o", color=f"C{index}",
                          linestyle=styles[backbone], label=label)
        axis.set_title(task)
        axis.set_xlabel("RAM budget (KiB)")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
