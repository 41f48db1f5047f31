"""The budget recommendation of a sweep: for each task (and backbone), the smallest RAM budget
whose MeDyate accuracy, averaged over the seeds, is within a margin of full fine-tuning's; when
none is, the best reachable one with the gap. With several tasks, the overall answer is the
largest of the per-task budgets. Which boards hold that budget is `compile --board`'s own check
(:func:`compile_check`), run on the budget recommended."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medyate_mcu.boards import Board
from medyate_mcu.errors import MedyateError
from medyate_mcu.experiments.cells import RunResult, SweepConfig
from medyate_mcu.method.policies import Policy
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.units import format_size

DEFAULT_WITHIN_PP = 2.0
# Accuracies are ratios of small integers (correct / test samples) averaged in binary floating
# point: 0.90 - 0.88 is 2.0000000000000018 pp. A gap counts as within the margin up to this much
# above it, far below one test sample's worth (100 / test samples pp).
TOLERANCE_PP = 1e-9
_WITHIN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(pp)?\s*$")


def parse_within(text: str) -> float:
    """``2pp``, ``2`` or ``0.5pp``: the margin in percentage points (non-negative)."""
    match = _WITHIN.match(text)
    if not match:
        raise MedyateError(f"--within {text!r} is not a margin in percentage points; write e.g. "
                           "2pp, 0.5pp or 2 (a non-negative number)")
    return float(match.group(1))


@dataclass(frozen=True)
class TaskRecommendation:
    """One task's answer on one backbone. ``budget`` is None when MeDyate was infeasible at
    every budget; accuracies are in percent (means over the seeds)."""

    task: str
    backbone: str
    budget: int | None
    within: bool  # the budget reaches full fine-tuning's accuracy less the margin
    medyate: float | None
    full: float

    @property
    def gap_pp(self) -> float | None:
        """Full fine-tuning's mean accuracy minus MeDyate's at the budget, in pp."""
        return None if self.medyate is None else self.full - self.medyate


@dataclass(frozen=True)
class Recommendation:
    within_pp: float
    tasks: tuple[TaskRecommendation, ...]

    def overall(self, backbone: str) -> int | None:
        """The budget every task on ``backbone`` needs: the largest of theirs (None when one
        task has none)."""
        budgets = [t.budget for t in self.tasks if t.backbone == backbone]
        return None if not budgets or None in budgets else max(b for b in budgets if b)

    @property
    def backbones(self) -> list[str]:
        return list(dict.fromkeys(t.backbone for t in self.tasks))


def missing_policies(config: SweepConfig) -> str | None:
    """One line naming what the recommendation needs when ``config`` lacks it, else None."""
    needed = [p.value for p in (Policy.MEDYATE, Policy.FULL) if p not in config.policies]
    if not needed:
        return None
    return (f"no recommendation: it compares medyate with full fine-tuning; add "
            f"{' and '.join(needed)} to --policies")


def _mean_percent(results: Sequence[RunResult], task: str, budget: int | None, policy: str,
                  backbone: str) -> float | None:
    """Mean test accuracy (%) over the seeds, None if any seed was infeasible or none ran."""
    values = [r.test_accuracy for r in results if (r.task, r.budget, r.policy, r.backbone)
              == (task, budget, policy, backbone)]
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(np.array(values, dtype=float) * 100))  # as the results table


def recommend_task(results: Sequence[RunResult], task: str, budgets: Sequence[int],
                   within_pp: float, backbone: str = Backbone.FLOAT32.value
                   ) -> TaskRecommendation:
    """The smallest budget of ``budgets`` whose MeDyate mean is within ``within_pp`` of full
    fine-tuning's mean; else the best reachable (highest MeDyate mean, smallest budget among
    ties); ``budget`` None if MeDyate was infeasible at every budget."""
    full = _mean_percent(results, task, None, Policy.FULL.value, Backbone.FLOAT32.value)
    if full is None:
        raise MedyateError(f"no full fine-tuning result for task {task!r}")
    means = [(budget, _mean_percent(results, task, budget, Policy.MEDYATE.value, backbone))
             for budget in sorted(budgets)]
    feasible = [(budget, mean) for budget, mean in means if mean is not None]
    for budget, mean in feasible:
        if full - mean <= within_pp + TOLERANCE_PP:
            return TaskRecommendation(task, backbone, budget, True, mean, full)
    if not feasible:
        return TaskRecommendation(task, backbone, None, False, None, full)
    best = max(mean for _, mean in feasible)
    budget = min(b for b, mean in feasible if mean == best)
    return TaskRecommendation(task, backbone, budget, False, best, full)


def recommend(results: Sequence[RunResult], config: SweepConfig,
              within_pp: float = DEFAULT_WITHIN_PP) -> Recommendation:
    """Every task's answer on every backbone of ``config`` (see :func:`recommend_task`)."""
    problem = missing_policies(config)
    if problem:
        raise MedyateError(problem)
    return Recommendation(within_pp, tuple(
        recommend_task(results, task, config.budgets, within_pp, backbone.value)
        for backbone in config.backbones for task in config.tasks))


# raises MedyateError when the board cannot hold the budget; else a note on how it was checked
# ("" when fully)
BoardCheck = Callable[[Board, int], str]


@dataclass(frozen=True)
class BoardFit:
    board: str
    fits: bool
    reason: str  # why not; when it fits, how the check fell short ("" when it did not)


def board_fits(budget: int, boards: Sequence[Board], check: BoardCheck) -> list[BoardFit]:
    """Whether each board holds an engine of ``budget`` bytes, by ``check`` (compile's), in the
    order of ``boards``. The checks run at once, one a core: each is mostly a compiler run."""

    def fit(board: Board) -> BoardFit:
        try:
            note = check(board, budget)
        except MedyateError as exc:
            return BoardFit(board.name, False, str(exc))
        return BoardFit(board.name, True, note)

    with ThreadPoolExecutor(max(1, min(len(boards), os.cpu_count() or 1))) as pool:
        return list(pool.map(fit, boards))


def compile_check(model: Path | None, data: str, ranking: Path, backbone: str,
                  alpha: float, k_rule: str) -> BoardCheck:
    """`compile --board B --budget N` on ``data`` as the check: the budget against the board's
    RAM, and with arm-none-eabi-gcc the stack and the rest of a built image
    (:mod:`medyate_mcu.toolchain.auto_budget`); its project goes to a scratch folder."""

    def check(board: Board, budget: int) -> str:
        scratch = Path(tempfile.mkdtemp(prefix="medyate-fit-"))
        said: list[str] = []
        try:
            compile_project(CompileOptions(model=model, budget=budget, board=board.name,
                                           ranking=ranking, data=data, embed=0, alpha=alpha,
                                           k_rule=k_rule, backbone=backbone),
                            scratch / "project", say=said.append)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return " ".join(line.removeprefix("note: ") for line in said if line.startswith("note:"))

    return check


def _accuracy(value: float | None) -> str:
    return "infeasible" if value is None else f"{value:.1f}%"


def task_line(answer: TaskRecommendation, within_pp: float) -> str:
    """One task's answer in words."""
    head = f"{answer.task} ({answer.backbone})"
    if answer.budget is None:
        return (f"{head}: medyate is infeasible at every budget given; full fine-tuning "
                f"{answer.full:.1f}%; try larger --budgets")
    size = format_size(answer.budget).split(" (")[0]
    assert answer.gap_pp is not None
    if answer.within:
        gap = f"gap {answer.gap_pp:.1f} pp" if answer.gap_pp >= 0 \
            else f"medyate {-answer.gap_pp:.1f} pp above"
        return (f"{head}: {size}: medyate {_accuracy(answer.medyate)}, full fine-tuning "
                f"{answer.full:.1f}% ({gap}, within {within_pp:g} pp)")
    return (f"{head}: no budget given is within {within_pp:g} pp; best reachable {size}: "
            f"medyate {_accuracy(answer.medyate)}, full fine-tuning {answer.full:.1f}% "
            f"(gap {answer.gap_pp:.1f} pp)")


def markdown(recommendation: Recommendation,
             boards: dict[str, list[BoardFit]] | None = None) -> str:
    """The recommendation as Markdown; ``boards`` maps a backbone to its overall budget's
    board fits."""
    lines = [f"# Recommendation (medyate within {recommendation.within_pp:g} pp of full "
             "fine-tuning, means over seeds)", ""]
    lines += [f"- {task_line(t, recommendation.within_pp)}" for t in recommendation.tasks]
    for backbone in recommendation.backbones:
        overall = recommendation.overall(backbone)
        tasks = [t for t in recommendation.tasks if t.backbone == backbone]
        if overall is None:
            lines += ["", f"Overall ({backbone}): none; a task is infeasible at every budget."]
            continue
        reached = "" if all(t.within for t in tasks) else \
            f" (not within {recommendation.within_pp:g} pp for every task: the best reachable)"
        if len(tasks) > 1:
            lines += ["", f"Overall ({backbone}): {format_size(overall)}, the largest of the "
                      f"tasks' budgets{reached}."]
        else:
            lines += ["", f"Budget ({backbone}): {format_size(overall)}{reached}."]
        fits = (boards or {}).get(backbone)
        if fits is not None:
            holding = [f.board for f in fits if f.fits]
            lines.append(f"Boards that hold it (`compile --board` check): "
                         f"{', '.join(holding) if holding else 'none'}.")
            lines += [f"- {f.board}: no ({f.reason})" if not f.fits else
                      f"- {f.board}: yes, but {f.reason}" for f in fits if f.reason]
    return "\n".join(lines) + "\n"


def to_json(recommendation: Recommendation,
            boards: dict[str, list[BoardFit]] | None = None) -> str:
    """The recommendation as JSON (budgets in bytes, accuracies and gaps in percent)."""
    return json.dumps({
        "within_pp": recommendation.within_pp,
        "tasks": [{**asdict(t), "gap_pp": t.gap_pp} for t in recommendation.tasks],
        "overall": {b: recommendation.overall(b) for b in recommendation.backbones},
        "boards": {b: [asdict(f) for f in fits] for b, fits in (boards or {}).items()},
    }, indent=2) + "\n"
