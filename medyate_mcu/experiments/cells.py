"""The unit of a sweep: one cell = (task, budget, policy, backbone, seed), run with a pinned
thread count so that its result does not depend on the process (or machine) that runs it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from threadpoolctl import threadpool_limits

from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.lara import LaraSettings, LayerRanking
from medyate_mcu.method.planner import DEFAULT_ALPHA, InfeasibleBudgetError, KRule
from medyate_mcu.method.policies import (
    InfeasiblePolicy,
    Policy,
    full_finetune,
    setup_policy,
    train_policy,
)
from medyate_mcu.method.trainer import TrainSettings, replace_classifier
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.quant.lowering import int8_region
from medyate_mcu.quant.scheme import Quantization
from medyate_mcu.toolchain.compile import DEFAULT_CALIBRATION_SAMPLES
from medyate_mcu.zoo.tasks import TaskData


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
    seconds: float  # wall clock of the cell (timings.csv only: not a result)
    backbone: str = Backbone.FLOAT32.value  # full fine-tuning is always float32
    int8_nodes: int = 0  # nodes of the int8 region (run in the integer reference)


@dataclass(frozen=True)
class Cell:
    """One run of a sweep; full fine-tuning is (task, None, "full", "float32", seed)."""

    task: str
    budget: int | None
    policy: str
    backbone: str
    seed: int


def cells_of(config: SweepConfig) -> list[Cell]:
    """Every cell of ``config`` in the canonical order of the results: task, seed, budget,
    policy, backbone, then full fine-tuning of the task and seed."""
    budgeted = [p for p in config.policies if p is not Policy.FULL]
    cells = []
    for task in config.tasks:
        for seed in config.seeds:
            cells += [Cell(task, budget, policy.value, backbone.value, seed)
                      for budget in config.budgets for policy in budgeted
                      for backbone in config.backbones]
            if Policy.FULL in config.policies:  # every layer trains: no frozen int8 part
                cells.append(Cell(task, None, Policy.FULL.value, Backbone.FLOAT32.value, seed))
    return cells


@dataclass(frozen=True)
class TaskBackbone:
    """The graph a backbone trains on (the dequantized one for int8) and its quantization."""

    graph: Graph
    quantization: Quantization | None = None

    def headed(self, classes: int, seed: int, keep: bool = False) -> TaskBackbone:
        return TaskBackbone(replace_classifier(self.graph, classes, seed, keep),
                            self.quantization)


@dataclass(frozen=True)
class PreparedTask:
    """What every cell of a task needs: the graph, the task's data, the LaRa ranking (from the
    task's proxy), each backbone, and whether the pre-trained classifier is kept."""

    graph: Graph
    data: TaskData
    ranking: LayerRanking
    backbones: dict[Backbone, TaskBackbone]
    keep: bool


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` threads in torch and in numpy's BLAS (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def run_cell(prepared: PreparedTask, cell: Cell, config: SweepConfig,
             threads: int = 1) -> RunResult:
    """Train ``cell`` with ``threads`` threads; every random draw is seeded by the cell."""
    start = time.perf_counter()
    with pinned_threads(threads):
        torch.manual_seed(cell.seed)  # the trainer draws from its own seeded generators
        result = _train(prepared, cell, config)
    seconds = 0.0 if result.test_accuracy is None else time.perf_counter() - start
    return RunResult(result.task, result.budget, result.policy, result.seed,
                     result.test_accuracy, result.k, result.pool_bytes, result.engine_bytes,
                     seconds, result.backbone, result.int8_nodes)


def _train(prepared: PreparedTask, cell: Cell, config: SweepConfig) -> RunResult:
    data = prepared.data
    settings = TrainSettings(config.train.epochs, config.train.batch_size, config.train.lr,
                             config.train.warmup, cell.seed)
    if cell.policy == Policy.FULL.value:
        accuracy = full_finetune(
            replace_classifier(prepared.graph, data.classes, cell.seed, prepared.keep),
            settings, data.x_train, data.y_train, data.x_test, data.y_test)
        return RunResult(cell.task, None, cell.policy, cell.seed, accuracy, 0, 0, 0, 0.0)
    assert cell.budget is not None
    backbone = Backbone(cell.backbone)
    model = prepared.backbones[backbone].headed(data.classes, cell.seed, prepared.keep)
    try:
        setup = setup_policy(Policy(cell.policy), model.graph, prepared.ranking, cell.budget,
                             config.alpha, config.k_rule, backbone)
    except (InfeasiblePolicy, InfeasibleBudgetError):
        return RunResult(cell.task, cell.budget, cell.policy, cell.seed, None, 0, 0, 0, 0.0,
                         cell.backbone)
    history = train_policy(setup, model.graph, settings, data.x_train, data.y_train,
                           data.x_test, data.y_test, model.quantization)
    int8_nodes = len(int8_region(model.graph, setup.candidates)) \
        if backbone is Backbone.INT8 else 0
    return RunResult(cell.task, cell.budget, cell.policy, cell.seed,
                     history[-1].test_accuracy, len(setup.candidates), setup.pool_bytes,
                     setup.engine_bytes, 0.0, cell.backbone, int8_nodes)

