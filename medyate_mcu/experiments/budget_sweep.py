"""Accuracy versus RAM budget: every policy, on every downstream task, at several budgets and
seeds, with the host reference trainer (the device's algorithm), with a float32 and/or an int8
backbone (docs/quantization.md; calibrated once per task). Cells run on an executor (serial or
Ray, identical results), finished cells are cached in the output folder (a killed sweep
resumes), then the CSV, Markdown table and PNG plot are written (see report)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing, nullcontext
from pathlib import Path

from medyate_mcu.experiments.cache import CellCache, cell_key, graph_fingerprint
from medyate_mcu.experiments.cells import (
    Cell,
    RunResult,
    SweepConfig,
    TaskBackbone,
    cells_of,
)
from medyate_mcu.experiments.executors import Executor, SerialExecutor, TaskJob
from medyate_mcu.experiments.prepare import load_inputs, task_backbones
from medyate_mcu.experiments.report import markdown_table, plot, write_csv, write_timings
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.lara import LayerRanking

__all__ = ["RunResult", "SweepConfig", "TaskBackbone", "run_sweep", "task_backbones"]

OnRun = Callable[[RunResult, int, int], None]


def run_sweep(graph: Graph, config: SweepConfig, panel: Sequence[str], output: Path,
              on_run: OnRun | None = None, executor: Executor | None = None
              ) -> list[RunResult]:
    """Run every cell of ``config`` (on ``executor``, default :class:`SerialExecutor`) and write
    ``results.csv``, ``timings.csv``, ``results.md`` and ``accuracy_vs_budget.png`` into
    ``output``; returns the results in the canonical order (:func:`cells_of`).

    ``on_run(result, done, total)`` is called once per cell: first for every cell found in the
    cache (in the canonical order, ``done`` counting them), then for each computed cell as it
    finishes. Cells are cached in ``output/cells`` as they finish."""
    executor = executor or SerialExecutor()
    output.mkdir(parents=True, exist_ok=True)
    cache = CellCache(output / "cells")
    cells = cells_of(config)
    results: dict[Cell, RunResult] = {}
    model = graph_fingerprint(graph)
    inputs = {task: load_inputs(graph, config, panel, task, output, executor.threads)
              for task in config.tasks}
    keys = {cell: cell_key(model, inputs[cell.task], config, cell, executor.threads)
            for cell in cells}
    for cell in cells:
        cached = cache.load(keys[cell])
        if cached is not None:
            results[cell] = cached
            if on_run:
                on_run(cached, len(results), len(cells))
    jobs = [TaskJob(inputs[task], tuple(c for c in cells if c.task == task and c not in results))
            for task in config.tasks]
    jobs = [job for job in jobs if job.cells]
    # Ray starts only with cells to compute (a finished sweep run again does not wait 10 s for
    # it), while the driver prepares the first tasks
    with executor.session() if jobs else nullcontext(), \
            closing(executor.run(graph, config, jobs, _save_ranking)) as finished:
        for cell, result in finished:
            cache.store(keys[cell], result)
            results[cell] = result
            if on_run:
                on_run(result, len(results), len(cells))
    ordered = [results[cell] for cell in cells]
    write_csv(ordered, output / "results.csv")
    write_timings(ordered, output / "timings.csv")
    (output / "results.md").write_text(markdown_table(ordered, config))
    plot(ordered, config, output / "accuracy_vs_budget.png")
    return ordered


def _save_ranking(job: TaskJob, ranking: LayerRanking) -> None:
    """Keep a newly computed ranking for the next sweep (its file name is its key)."""
    if job.inputs.ranking is None and not job.inputs.ranking_path.is_file():
        ranking.save(job.inputs.ranking_path)

