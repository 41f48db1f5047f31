"""``medyate-mcu lara``, ``plan`` and ``experiment``: the MeDyate method on the host."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TypeVar

import click
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from medyate_mcu.cli.common import MODEL_ARGUMENT, SizeType, console, load_model
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import Graph
from medyate_mcu.method.costs import BYTES_PER_ELEMENT
from medyate_mcu.method.lara import LaraSettings, LayerRanking
from medyate_mcu.method.planner import DEFAULT_ALPHA, BudgetPlan, KRule, plan_budget
from medyate_mcu.method.trainer import replace_classifier
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.toolchain.compile import (
    DEFAULT_CALIBRATION_SAMPLES,
    default_ranking_path,
    rank_layers,
)
from medyate_mcu.units import format_size, parse_size

K_RULE_OPTION = click.option(
    "--k-rule", type=click.Choice([rule.value for rule in KRule]), default=KRule.CLOSEST.value,
    show_default=True,
    help="How many top-ranked layers become candidates: 'closest' takes the K whose pool / "
         "search-space ratio is nearest alpha; 'design' the smallest K at or under alpha "
         "(docs/design.md §3), which can leave an almost empty pool on a device.")

ALPHA_OPTION = click.option("--alpha", type=click.FloatRange(0, 1, min_open=True),
                            default=DEFAULT_ALPHA, show_default=True,
                            help="alpha_opt: the largest channel pool / search space ratio.")


E = TypeVar("E", bound=StrEnum)


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                    console=console())


def load_ranking(model: Path | None, ranking: Path | None, graph: Graph) -> LayerRanking:
    """The ranking given, or the one beside the model (the bundled model ships with its own)."""
    path = ranking or default_ranking_path(model)
    if not path.is_file():
        shown = model or "MODEL"
        raise MedyateError(f"no LaRa ranking at {path}; compute one with `medyate-mcu lara "
                           f"{shown} --data PROXY_TASK -o {path}` or pass --ranking")
    return LayerRanking.load(path, graph)


def run_lara(graph: Graph, proxy: str, settings: LaraSettings, path: Path) -> LayerRanking:
    """LaRa on the proxy task with a progress bar; the ranking is saved to ``path``."""
    with progress_bar() as bar:
        task = bar.add_task(f"LaRa on {proxy}", total=None, status="")

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, status=f"loss {loss:.3f}")

        return rank_layers(graph, proxy, settings, path, on_step)


@click.command("lara")
@MODEL_ARGUMENT
@click.option("--data", "proxy", required=True,
              help="Proxy task: a panel or keyword data set name (see `medyate-mcu zoo "
                   "datasets`), a folder of class sub-folders, or an .npz with x and y in the "
                   "model's input shape. Not the target task, where another exists.")
@click.option("--epochs", type=click.IntRange(1), default=LaraSettings.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=LaraSettings.batch_size,
              show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=LaraSettings.lr,
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Ranking file to write [default: MODEL.lara.json beside the model].")
def lara_command(model: Path | None, proxy: str, epochs: int, batch_size: int, lr: float,
                 seed: int, output: Path | None) -> None:
    """Rank MODEL's conv layers by LaRa: fine-tune the whole network for a few epochs on a proxy
    task and score each layer by its gradient norm per unit of memory (summed over steps).

    The ranking (JSON, tied to the model's weights) is what `plan` and `compile` read."""
    graph = load_model(model)
    path = output or default_ranking_path(model)
    ranking = run_lara(graph, proxy, LaraSettings(epochs, batch_size, lr, seed), path)
    out = console()
    out.print(f"wrote {path}: {len(ranking.scores)} conv layers, top 5:")
    for name in ranking.ranking[:5]:
        out.print(f"  {name}: {ranking.scores[name]:.3e}")


@click.command("plan")
@MODEL_ARGUMENT
@click.option("--budget", type=SizeType(), default="300kB", show_default=True,
              help="RAM for the training engine (see `compile --help` for units).")
@click.option("--ranking", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="LaRa ranking file [default: MODEL.lara.json beside the model].")
@click.option("--classes", type=click.IntRange(2), default=None,
              help="Classes of the target task: the classifier is re-created with this size "
                   "[default: the model's own].")
@click.option("--backbone", type=click.Choice([b.value for b in Backbone]),
              default=Backbone.FLOAT32.value, show_default=True,
              help="Plan the engine with the frozen part in float32 or int8 (its RAM depends "
                   "only on shapes: no calibration needed; docs/quantization.md).")
@ALPHA_OPTION
@K_RULE_OPTION
def plan_command(model: Path | None, budget: int, ranking: Path | None, classes: int | None,
                 backbone: str, alpha: float, k_rule: str) -> None:
    """Show how the budget is spent: candidate layers (top-K by LaRa), the fixed RAM of the
    engine part by part, and the channel pool, with the paper's memory units beside bytes."""
    graph = load_model(model)
    layer_ranking = load_ranking(model, ranking, graph)
    if classes is not None:
        graph = replace_classifier(graph, classes, seed=0)
    print_plan(plan_budget(graph, layer_ranking.ranking, budget, alpha, KRule(k_rule),
                           Backbone(backbone)), layer_ranking)


def print_plan(plan: BudgetPlan, ranking: LayerRanking) -> None:
    out = console()
    out.print(f"budget {format_size(plan.budget)}; K = {plan.k} candidate layer(s) "
              f"({plan.reason})")
    table = Table(title="candidate layers (rank order)")
    for column in ("rank", "layer", "LaRa", "C_in", "C_W", "C_A", "channel", "layer units",
                   "RAM weights"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for cost in plan.costs:
        weights = cost.in_channels * cost.weight_units * BYTES_PER_ELEMENT
        rank = ranking.ranking.index(cost.layer) + 1  # skipped layers keep their place
        table.add_row(str(rank), cost.layer, f"{ranking.scores[cost.layer]:.3e}",
                      str(cost.in_channels), str(cost.weight_units), str(cost.activation_units),
                      f"{cost.channel_bytes} B", f"{cost.layer_units:,}", f"{weights:,} B")
    out.print(table)
    parts = Table(title="engine RAM")
    parts.add_column("part")
    parts.add_column("bytes", justify="right")
    parts.add_column("units (4 B)", justify="right")
    for name, size in plan.memory.parts().items():
        parts.add_row(name.replace("_", " "), f"{size:,}", f"{size / 4:,.0f}")
    parts.add_row("channel pool (B)", f"{plan.pool_bytes:,}", f"{plan.pool_bytes / 4:,.0f}")
    parts.add_section()
    parts.add_row("total", f"{plan.total_bytes:,}", f"{plan.total_bytes / 4:,.0f}")
    out.print(parts)
    out.print(f"search space M_K = {plan.search_space_bytes:,} B "
              f"({plan.search_space_bytes // BYTES_PER_ELEMENT:,} units); "
              f"alpha_K = B / M_K = {plan.alpha_k:.3f} (alpha_opt {plan.alpha}); "
              f"arena {plan.memory.arena.size:,} B (lower bound "
              f"{plan.memory.arena.lower_bound:,} B)")


@click.command("experiment")
@MODEL_ARGUMENT
@click.option("--tasks", default=None,
              help="Comma-separated target tasks: downstream panel tasks, keyword sets, folders "
                   "or .npz files [default: every downstream task; kws-newvoice for a model "
                   "pre-trained on kws].")
@click.option("--budgets", default="150kB,225kB,300kB", show_default=True,
              help="Comma-separated RAM budgets.")
@click.option("--seeds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=15, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True,
              help="Peak learning rate of every policy (warm-up 1 epoch, then cosine).")
@click.option("--policies", default=None,
              help="Comma-separated policies [default: every one]: "
                   "medyate, trady, static, random, classifier, last-k, full.")
@click.option("--backbone", "backbones", default="float32", show_default=True,
              help="Comma-separated backbones to compare at equal budget: float32 and/or int8. "
                   "int8 plans the int8 engine's RAM and trains with the frozen part in int8 "
                   "(the numpy integer reference, what the C engine computes), calibrated on "
                   f"{DEFAULT_CALIBRATION_SAMPLES} training samples of each task. Full "
                   "fine-tuning runs in float32 only.")
@click.option("--train-per-class", type=click.IntRange(1), default=None,
              help="Training samples per class [default: the panel's size].")
@click.option("--quick", is_flag=True,
              help="A smoke run for CI: 2 tasks, 2 budgets, 1 seed, 2 epochs, 10 samples per "
                   "class.")
@K_RULE_OPTION
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False),
              default=Path("build/experiment"), show_default=True)
def experiment_command(model: Path | None, tasks: str | None, budgets: str, seeds: int,
                       epochs: int, lr: float, policies: str | None, backbones: str,
                       train_per_class: int | None, quick: bool, k_rule: str,
                       output: Path) -> None:
    """Accuracy versus RAM budget of MeDyate and the baselines (TraDy, static LaRa channels,
    random channels, classifier only, last-k layers, full fine-tune) with the host reference
    trainer, with a float32 and/or an int8 frozen backbone. Writes results.csv, results.md and
    accuracy_vs_budget.png to OUTPUT."""
    from medyate_mcu.experiments.budget_sweep import SweepConfig, run_sweep
    from medyate_mcu.method.policies import Policy
    from medyate_mcu.method.trainer import TrainSettings
    from medyate_mcu.zoo import DOWNSTREAM_TASKS
    from medyate_mcu.zoo.speech import SPEECH_SETS
    from medyate_mcu.zoo.tasks import default_tasks

    torch.set_num_threads(max(1, torch.get_num_threads()))
    graph = load_model(model)
    task_list = tuple(tasks.split(",")) if tasks else default_tasks(graph)
    unknown = [t for t in task_list if t not in (*DOWNSTREAM_TASKS, *SPEECH_SETS)
               and not Path(t).exists()]
    if unknown:
        raise MedyateError(f"unknown task(s) {unknown}; give downstream tasks "
                           f"({', '.join(DOWNSTREAM_TASKS)}), keyword sets "
                           f"({', '.join(SPEECH_SETS)}), folders or .npz files")
    budget_list = tuple(parse_size(b, "budget") for b in budgets.split(","))
    policy_list = tuple(_choices(policies, Policy, "policy")) if policies else tuple(Policy)
    backbone_list = tuple(_choices(backbones, Backbone, "backbone"))
    config = SweepConfig(task_list, budget_list, policy_list, seeds=tuple(range(seeds)),
                         train=TrainSettings(epochs=epochs, batch_size=16, lr=lr, warmup=1),
                         k_rule=KRule(k_rule), train_per_class=train_per_class,
                         backbones=backbone_list)
    if quick:
        config = SweepConfig(task_list[:2], budget_list[-2:], policy_list, seeds=(0,),
                             train=TrainSettings(epochs=2, batch_size=16, lr=0.05, warmup=1),
                             lara=LaraSettings(epochs=1), k_rule=KRule(k_rule),
                             train_per_class=10, backbones=backbone_list)
    with progress_bar() as bar:
        task = bar.add_task("experiment", total=None, status="")

        def on_run(result, done: int, total: int) -> None:
            accuracy = "infeasible" if result.test_accuracy is None \
                else f"{100 * result.test_accuracy:.1f}%"
            status = f"{result.task} {result.policy} {result.backbone} {accuracy}"
            bar.update(task, completed=done, total=total, status=status)
            if not bar.console.is_terminal:  # logs get one line per run
                bar.console.print(f"[{done}/{total}] {status} budget {result.budget} "
                                  f"seed {result.seed}")

        run_sweep(graph, config, DOWNSTREAM_TASKS, output, on_run)
    console().print((output / "results.md").read_text())
    console().print(f"wrote {output}/results.csv, results.md, accuracy_vs_budget.png")


def _choices(values: str, kind: type[E], what: str) -> list[E]:
    """A comma-separated list of ``kind``'s values, each once, in the order given."""
    chosen: list[E] = []
    for value in (v.strip() for v in values.split(",")):
        if value not in {member.value for member in kind}:
            raise MedyateError(f"unknown {what} {value!r}; choose among "
                               f"{', '.join(member.value for member in kind)}")
        if kind(value) not in chosen:
            chosen.append(kind(value))
    return chosen
