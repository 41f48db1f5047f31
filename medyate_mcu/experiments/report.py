"""The sweep's outputs: results.csv (canonical order, no timings), timings.csv, the Markdown
table (mean ± std over seeds, int8 − float32 in pp) and the accuracy-vs-budget PNG plot."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medyate_mcu.experiments.cells import RunResult, SweepConfig
from medyate_mcu.method.policies import Policy
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.units import format_size

RESULT_COLUMNS = ["task", "budget_bytes", "policy", "backbone", "seed", "test_accuracy", "k",
                  "int8_nodes", "pool_bytes", "engine_bytes"]


def write_csv(results: Sequence[RunResult], path: Path) -> None:
    """The results in the order given (the canonical order), without timings: the same bytes
    whichever executor ran the cells."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RESULT_COLUMNS)
        for r in results:
            writer.writerow([r.task, _budget(r), r.policy, r.backbone, r.seed,
                             "" if r.test_accuracy is None else f"{r.test_accuracy:.4f}",
                             r.k, r.int8_nodes, r.pool_bytes, r.engine_bytes])


def write_timings(results: Sequence[RunResult], path: Path) -> None:
    """Each cell's wall-clock seconds (when it was computed; cached cells keep theirs)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "budget_bytes", "policy", "backbone", "seed", "seconds"])
        for r in results:
            writer.writerow([r.task, _budget(r), r.policy, r.backbone, r.seed,
                             f"{r.seconds:.1f}"])


def _budget(result: RunResult) -> str | int:
    return "" if result.budget is None else result.budget

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
