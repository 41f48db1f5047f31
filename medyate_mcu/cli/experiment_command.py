"""``medyate-mcu experiment``: accuracy versus RAM budget on any model and data, cell by cell
(serially or on Ray), resumable, with the budget recommendation."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from medyate_mcu.boards import Board, all_boards, get_board
from medyate_mcu.cli.common import MODEL_ARGUMENT, console, load_model
from medyate_mcu.cli.method_commands import K_RULE_OPTION, progress_bar
from medyate_mcu.errors import MedyateError
from medyate_mcu.experiments import recommend as rec
from medyate_mcu.experiments.cells import RunResult, SweepConfig
from medyate_mcu.experiments.prepare import load_inputs
from medyate_mcu.graph import Graph
from medyate_mcu.method.lara import LaraSettings
from medyate_mcu.method.planner import KRule
from medyate_mcu.method.policies import Policy
from medyate_mcu.method.trainer import TrainSettings
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.toolchain.compile import DEFAULT_CALIBRATION_SAMPLES, default_ranking_path
from medyate_mcu.units import parse_size
from medyate_mcu.zoo import DOWNSTREAM_TASKS, SPECS
from medyate_mcu.zoo.speech import SPEECH_SETS
from medyate_mcu.zoo.tasks import default_tasks

if TYPE_CHECKING:  # the executors import Ray, which the other commands need not load
    from medyate_mcu.experiments.cells import Cell
    from medyate_mcu.experiments.executors import Executor, OnRanking, TaskJob

CELLS = "cells"  # OUTPUT/cells: the finished cells, one file each (the cache)
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-]+:(\d{1,5})$")


@dataclass(frozen=True)
class Where:
    """Where the cells run: serially in this process, or on Ray (local or a cluster)."""

    serial: bool
    address: str | None
    cpus: int | None
    threads_per_cell: int


def parse_address(address: str | None, source: str = "--address") -> str | None:
    """A Ray cluster's ``host:port`` (as ``ray start --head`` prints it), checked."""
    if address is None or address == "":
        return None
    match = _ADDRESS.match(address.strip())
    if not match or not 0 < int(match.group(1)) < 65536:
        raise MedyateError(f"{source} {address!r} is not host:port (e.g. 127.0.0.1:6379, as "
                           "`ray start --head` prints it)")
    return address.strip()


def check_tasks(tasks: tuple[str, ...]) -> None:
    """Every task a named data set, a folder or an .npz: what `compile --data` takes."""
    unknown = [t for t in tasks if t not in (*SPECS, *SPEECH_SETS) and not Path(t).exists()]
    if unknown:
        raise MedyateError(f"unknown data {', '.join(unknown)}: give panel data sets "
                           f"({', '.join(SPECS)}), keyword sets ({', '.join(SPEECH_SETS)}), "
                           "folders of class sub-folders or .npz files")


@click.command("experiment")
@MODEL_ARGUMENT
@click.option("--data", "--tasks", "tasks", default=None,
              help="Comma-separated target data: panel data sets, keyword sets, folders of class "
                   "sub-folders or .npz files (x, y), as `compile --data` [default: every "
                   "downstream panel task; kws-newvoice for a model pre-trained on kws]. LaRa "
                   "ranks the layers on a proxy chosen as `compile` does.")
@click.option("--budgets", default="150kB,225kB,300kB", show_default=True,
              help="Comma-separated RAM budgets.")
@click.option("--seeds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=15, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True,
              help="Peak learning rate of every policy (warm-up 1 epoch, then cosine).")
@click.option("--policies", default=None,
              help="Comma-separated policies [default: every one]: "
                   "medyate, trady, static, random, classifier, last-k, full. The "
                   "recommendation needs medyate and full.")
@click.option("--backbone", "backbones", default="float32", show_default=True,
              help="Comma-separated backbones to compare at equal budget: float32 and/or int8. "
                   "int8 plans the int8 engine's RAM and trains with the frozen part in int8 "
                   "(the numpy integer reference, what the C engine computes), calibrated on "
                   f"{DEFAULT_CALIBRATION_SAMPLES} training samples of each task. Full "
                   "fine-tuning runs in float32 only.")
@click.option("--train-per-class", type=click.IntRange(1), default=None,
              help="Training samples per class [default: the panel's size].")
@click.option("--within", default="2pp", show_default=True,
              help="Recommendation margin: the smallest budget whose medyate accuracy (mean "
                   "over seeds) is within this many percentage points of full fine-tuning's.")
@click.option("--boards", default=None,
              help="Comma-separated boards the recommended budget is checked against, by "
                   "`compile --board`'s check (an image built per board, a board a core at "
                   "once) [default: every board; 'none' skips the check].")
@click.option("--serial", is_flag=True,
              help="Run the cells one after another in this process, without Ray (debugging).")
@click.option("--address", envvar="RAY_ADDRESS", default=None,
              help="host:port of a running Ray cluster (`ray start --head` prints it) "
                   "[default: $RAY_ADDRESS, else a local Ray on this machine's cores].")
@click.option("--cpus", type=click.IntRange(1), default=None,
              help="CPUs of the local Ray [default: every core]; not with --address.")
@click.option("--threads-per-cell", type=click.IntRange(1), default=1, show_default=True,
              help="Threads each cell's training uses (one Ray CPU each).")
@click.option("--fresh", is_flag=True,
              help="Delete OUTPUT/cells first: recompute every cell.")
@click.option("--quick", is_flag=True,
              help="A smoke run for CI: 2 tasks, 2 budgets, 1 seed, 2 epochs, 10 samples per "
                   "class.")
@K_RULE_OPTION
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False),
              default=Path("build/experiment"), show_default=True)
def experiment_command(model: Path | None, tasks: str | None, budgets: str, seeds: int,
                       epochs: int, lr: float, policies: str | None, backbones: str,
                       train_per_class: int | None, within: str, boards: str | None,
                       serial: bool, address: str | None, cpus: int | None,
                       threads_per_cell: int, fresh: bool, quick: bool, k_rule: str,
                       output: Path) -> None:
    """Accuracy versus RAM budget of MeDyate and the baselines (TraDy, static LaRa channels,
    random channels, classifier only, last-k layers, full fine-tune) with the host reference
    trainer, on MODEL and your data, then the smallest budget within --within of full
    fine-tuning and the boards that hold it.

    Writes results.csv, results.md, accuracy_vs_budget.png, recommendation.md and
    recommendation.json to OUTPUT.

    \b
    Each cell (task x budget x policy x backbone x seed) is seeded on its own: the CSV is the
    same bytes serial or on Ray, local or on a cluster. By default the cells run on a local Ray
    using every core (--cpus to use fewer); --address HOST:PORT (or RAY_ADDRESS) sends them to
    a cluster started with `ray start --head`; --serial runs them here, one by one.

    \b
    Cache: every finished cell is a file in OUTPUT/cells, keyed by the model's and the data's
    hashes and every setting of the cell. Run the same command again (after a crash or Ctrl-C,
    or with more budgets, seeds or tasks) and the cached cells are reused; a changed model,
    data set or setting misses the cache and is recomputed. To start afresh, pass --fresh or
    delete OUTPUT/cells.
    """
    # every value is checked before anything is written
    margin = rec.parse_within(within)
    given = click.get_current_context().get_parameter_source("address")
    from_env = given is click.core.ParameterSource.ENVIRONMENT
    if serial:  # a RAY_ADDRESS in the environment does not stop a debugging run
        if (address and not from_env) or cpus:
            raise MedyateError("--serial runs without Ray: drop --address and --cpus")
        address = None
    where = Where(serial, parse_address(address, "RAY_ADDRESS" if from_env else "--address"),
                  cpus, threads_per_cell)
    if where.address and cpus:
        raise MedyateError("--cpus sizes a local Ray; a cluster (--address) has its own CPUs")
    graph = load_model(model)
    task_list = tuple(t.strip() for t in tasks.split(",")) if tasks else default_tasks(graph)
    check_tasks(task_list)
    budget_list = tuple(parse_size(b, "budget") for b in budgets.split(","))
    policy_list = tuple(_choices(policies, Policy, "policy")) if policies else tuple(Policy)
    backbone_list = tuple(_choices(backbones, Backbone, "backbone"))
    board_list = _boards(boards)
    config = SweepConfig(task_list, budget_list, policy_list, seeds=tuple(range(seeds)),
                         train=TrainSettings(epochs=epochs, batch_size=16, lr=lr, warmup=1),
                         k_rule=KRule(k_rule), train_per_class=train_per_class,
                         backbones=backbone_list)
    if quick:
        config = SweepConfig(task_list[:2], budget_list[-2:], policy_list, seeds=(0,),
                             train=TrainSettings(epochs=2, batch_size=16, lr=0.05, warmup=1),
                             lara=LaraSettings(epochs=1), k_rule=KRule(k_rule),
                             train_per_class=10, backbones=backbone_list)
    if fresh:
        shutil.rmtree(output / CELLS, ignore_errors=True)
    results = _run(graph, config, output, where)
    out = console()
    out.print((output / "results.md").read_text())
    out.print(f"wrote {output}/results.csv, results.md, accuracy_vs_budget.png")
    _recommendation(model, graph, results, config, margin, board_list, output,
                    where.threads_per_cell)


def _boards(names: str | None) -> list[Board]:
    if names is None:
        return list(all_boards().values())
    if names.strip() == "none":
        return []
    return [get_board(name.strip()) for name in names.split(",")]


def _run(graph: Graph, config: SweepConfig, output: Path, where: Where) -> list[RunResult]:
    """The sweep on ``where`` with one progress bar (cells done / total, ETA) and a line
    telling how many cells come from the cache."""
    from medyate_mcu.experiments.budget_sweep import run_sweep  # Ray: imported when used
    from medyate_mcu.experiments.executors import RayExecutor, SerialExecutor

    inner: Executor = SerialExecutor(where.threads_per_cell) if where.serial else \
        RayExecutor(where.address, where.cpus, where.threads_per_cell)
    with progress_bar() as bar:
        task = bar.add_task("cells", total=None, status="")
        cached: list[int] = [0, 0]  # cells from the cache, cells in all
        running: list[bool] = []  # set once the cached cells are reported

        def on_run(result: RunResult, done: int, total: int) -> None:
            accuracy = "infeasible" if result.test_accuracy is None \
                else f"{100 * result.test_accuracy:.1f}%"
            status = f"{result.task} {result.policy} {result.backbone} {accuracy}"
            bar.update(task, completed=done, total=total, status=status)
            if running and not bar.console.is_terminal:  # logs get one line per computed cell
                bar.console.print(f"[{done}/{total}] {status} budget {result.budget} "
                                  f"seed {result.seed}")
            cached[:] = [done, total]

        def announce() -> None:  # run_sweep reports the cached cells before it runs the rest
            running.append(True)
            if cached[0]:
                bar.console.print(f"resuming: {cached[0]} of {cached[1]} cells cached in "
                                  f"{output / CELLS}")
                bar.reset(task, total=cached[1], completed=cached[0], status="")

        return run_sweep(graph, config, DOWNSTREAM_TASKS, output, on_run,
                         _Announcing(inner, announce))


@dataclass(frozen=True)
class _Announcing:
    """``inner``, calling ``announce`` when the sweep hands it the cells left to run."""

    inner: Executor
    announce: Callable[[], None]

    @property
    def threads(self) -> int:
        return self.inner.threads

    def session(self) -> AbstractContextManager[None]:
        return self.inner.session()

    def run(self, graph: Graph, config: SweepConfig, jobs: Sequence[TaskJob],
            on_ranking: OnRanking) -> Iterator[tuple[Cell, RunResult]]:
        self.announce()
        return self.inner.run(graph, config, jobs, on_ranking)


def _recommendation(model: Path | None, graph: Graph, results: list[RunResult],
                    config: SweepConfig, margin: float, boards: list[Board], output: Path,
                    threads: int) -> None:
    """Print the recommendation and write it to OUTPUT/recommendation.md and .json; one line
    instead when the policies lack medyate or full fine-tuning."""
    out = console()
    problem = rec.missing_policies(config)
    if problem:
        for stale in ("recommendation.md", "recommendation.json"):
            (output / stale).unlink(missing_ok=True)
        out.print(problem)
        return
    answer = rec.recommend(results, config, margin)
    fits: dict[str, list[rec.BoardFit]] = {}
    for backbone in answer.backbones:
        overall = answer.overall(backbone)
        if overall is None or not boards:
            continue
        task = next(t.task for t in answer.tasks
                    if t.backbone == backbone and t.budget == overall)
        ranking = _ranking_file(model, graph, task, config, output, threads)
        check = rec.compile_check(model, task, ranking, backbone, config.alpha,
                                  config.k_rule.value)
        fits[backbone] = rec.board_fits(overall, boards, check)
    text = rec.markdown(answer, fits)
    (output / "recommendation.md").write_text(text)
    (output / "recommendation.json").write_text(rec.to_json(answer, fits))
    out.print(text, markup=False, soft_wrap=True)
    out.print(f"wrote {output}/recommendation.md, recommendation.json")


def _ranking_file(model: Path | None, graph: Graph, task: str, config: SweepConfig,
                  output: Path, threads: int) -> Path:
    """The ranking `compile` would use: the model's own beside it, else the one the sweep
    computed for ``task`` (LaRa on compile's proxy)."""
    path = default_ranking_path(model)
    if path.is_file():
        return path
    path = load_inputs(graph, config, DOWNSTREAM_TASKS, task, output, threads).ranking_path
    if not path.is_file():
        raise MedyateError(f"no LaRa ranking for {task} at {path} to check the boards with")
    return path


E = TypeVar("E", bound=StrEnum)


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
