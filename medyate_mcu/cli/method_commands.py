"""``medyate-mcu lara``, ``plan`` and ``experiment``: the MeDyate method on the host."""

from __future__ import annotations

from pathlib import Path

import click
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
    default_ranking_path,
    rank_layers,
)
from medyate_mcu.units import format_size

K_RULE_OPTION = click.option(
    "--k-rule", type=click.Choice([rule.value for rule in KRule]), default=KRule.CLOSEST.value,
    show_default=True,
    help="How many top-ranked layers become candidates: 'closest' takes the K whose pool / "
         "search-space ratio is nearest alpha; 'design' the smallest K at or under alpha "
         "(docs/design.md §3), which can leave an almost empty pool on a device.")

ALPHA_OPTION = click.option("--alpha", type=click.FloatRange(0, 1, min_open=True),
                            default=DEFAULT_ALPHA, show_default=True,
                            help="alpha_opt: the largest channel pool / search space ratio.")



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
