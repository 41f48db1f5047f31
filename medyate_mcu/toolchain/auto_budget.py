"""What a board's RAM leaves for the engine: ``--budget auto``, and the refusal of a budget the
board cannot hold.

Everything in RAM that is not the engine (the reserved stack, the application's buffers, the C
library, alignment between sections) does not depend on the budget, so it is measured once on an
image built at the smallest feasible budget (:func:`measure_room`, on a probe project that
:mod:`medyate_mcu.toolchain.compile` writes). That one account serves both
uses: ``--budget auto`` gives the engine the board's RAM less that and a reserve (the final image
is then built once more to confirm that it fits), and a fixed ``--budget`` above what the board
holds is refused at `compile`, with the figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medyate_mcu.boards import Board
from medyate_mcu.codegen.folder import Project
from medyate_mcu.errors import MedyateError
from medyate_mcu.toolchain.arm import (
    ARM_GCC,
    ARM_PACKAGES,
    STACK_PART,
    build_firmware,
    require_tool,
    size_report,
)
from medyate_mcu.units import format_size

RESERVE_BYTES = 1024  # left free by --budget auto: late additions to the application


@dataclass(frozen=True)
class BoardRoom:
    """A board's RAM, measured on an image with the smallest engine: the stack and the rest of
    the image (application, C library, alignment) that any engine budget comes on top of."""

    board: Board
    stack: int
    rest: int  # application and C library (.data, .bss beyond the engine), section alignment
    smallest: int  # the smallest feasible engine budget (the measured image's)

    @property
    def engine_max(self) -> int:
        """The largest engine budget whose image fits the board's RAM."""
        return self.board.ram_bytes - self.stack - self.rest

    def account(self) -> str:
        return (f"{self.board.name} RAM {self.board.ram_bytes:,} B - stack {self.stack:,} B - "
                f"application and C library {self.rest:,} B")

    def check(self, budget: int) -> None:
        """Refuse ``budget`` if the board cannot hold its image."""
        if budget > self.engine_max:
            raise MedyateError(
                f"budget {format_size(budget)} does not fit {self.board.name}: "
                f"{self.account()} = {self.engine_max:,} B at most for the engine; use "
                f"--budget {self.engine_max} or less, or --budget auto")


def measure_room(board: Board, probe: Project) -> BoardRoom:
    """Build ``probe`` (a project written at the smallest feasible budget) and read what is not
    the engine from its image."""
    require_tool(ARM_GCC, ARM_PACKAGES)
    smallest = probe.manifest.budget
    try:
        report = size_report(build_firmware(probe), board, smallest)
    except MedyateError as exc:
        raise MedyateError(f"even the smallest engine for this model "
                           f"({format_size(smallest)}) does not fit: {exc}") from None
    stack = dict(report.ram).get(STACK_PART, 0)
    return BoardRoom(board, stack, report.ram_bytes - report.engine_bytes - stack, smallest)


def auto_budget(room: BoardRoom, say: Callable[[str], None] = print) -> int:
    """The engine budget for ``room.board``: its RAM - (stack + application + C library) -
    reserve."""
    budget = room.engine_max - RESERVE_BYTES
    if budget < room.smallest:
        raise MedyateError(f"--budget auto: {room.account()} - reserve {RESERVE_BYTES:,} B "
                           f"leaves {format_size(max(budget, 0))} for the engine; this model "
                           f"needs at least {format_size(room.smallest)}")
    say(f"--budget auto: {room.account()} - reserve {RESERVE_BYTES:,} B = {budget:,} B for the "
        "engine")
    return budget
