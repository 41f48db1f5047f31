"""``--budget auto``: the largest engine budget a board's RAM allows.

Everything in RAM that is not the engine (the reserved stack, the application's buffers, the C
library) does not depend on the budget, so it is measured once on an image built at the smallest
feasible budget; the engine gets the board's RAM less that and a reserve. The final image is built
once more to confirm that it fits.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from medyate_mcu.boards import Board
from medyate_mcu.build.arm import build_firmware, size_report
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.costs import channel_cost
from medyate_mcu.method.planner import BudgetPlan, minimum_budget
from medyate_mcu.units import format_size

RESERVE_BYTES = 1024  # left free: alignment differences between builds, late additions

Emit = Callable[[int, Path], BudgetPlan]


def auto_budget(board: Board, graph: Graph, ranking: Sequence[str], emit: Emit,
                output: Path, say: Callable[[str], None] = print) -> int:
    """The engine budget for ``board``: its RAM - (stack + application + C library) - reserve.

    ``emit(budget, folder)`` writes a project at ``budget`` into ``folder``."""
    costs = [channel_cost(graph, graph.node(name)) for name in ranking]
    smallest, _ = minimum_budget(graph, ranking, costs)
    scratch = Path(tempfile.mkdtemp(prefix=".medyate-auto-", dir=output.parent.resolve()
                                    if output.parent.exists() else None))
    try:
        probe = scratch / "probe"
        emit(smallest, probe)
        try:
            report = size_report(build_firmware(probe), board, smallest)
        except MedyateError as exc:
            raise MedyateError(f"--budget auto: even the smallest engine "
                               f"({format_size(smallest)}) does not fit {board.name}: {exc}") \
                from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rest = report.ram_bytes - report.engine_bytes
    budget = board.ram_bytes - rest - RESERVE_BYTES
    if budget < smallest:
        raise MedyateError(f"--budget auto: {board.name}'s {format_size(board.ram_bytes)} RAM "
                           f"leaves {format_size(max(budget, 0))} for the engine after "
                           f"{format_size(rest)} of stack, application and C library and a "
                           f"{RESERVE_BYTES} B reserve; this model needs at least "
                           f"{format_size(smallest)}")
    stack = dict(report.ram).get("stack (reserved)", 0)
    say(f"--budget auto: {board.name} RAM {board.ram_bytes:,} B - stack {stack:,} B - "
        f"application and C library {rest - stack:,} B - reserve {RESERVE_BYTES:,} B = "
        f"{budget:,} B for the engine")
    return budget
