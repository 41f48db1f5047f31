"""``medyate-mcu compile``: model + RAM budget + board -> C training engine."""

from __future__ import annotations

from pathlib import Path

import click

from medyate_mcu.boards import get_board
from medyate_mcu.cli.common import MODEL_ARGUMENT, BoardType, SizeType, load_model
from medyate_mcu.errors import MedyateError
from medyate_mcu.units import format_size

DEFAULT_BUDGET = "300kB"


@click.command("compile")
@MODEL_ARGUMENT
@click.option("--budget", type=SizeType(), default=DEFAULT_BUDGET, show_default=True,
              help="RAM the training engine may allocate statically: a plain number is bytes; "
                   "k/kB/KB/KiB = 1024 bytes; M/MB/MiB = 1024² bytes.")
@click.option("--board", type=BoardType(), default=None,
              help="Target board (see `medyate-mcu boards`); default: host build only.")
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False),
              default=Path("build"), show_default=True, help="Folder for the generated C project.")
def compile_command(model: Path | None, budget: int, board: str | None, output: Path) -> None:
    """Compile MODEL (default: the bundled demo model) into a C project that fine-tunes it on a
    microcontroller within --budget bytes of RAM, by MeDyate dynamic channel updates."""
    graph = load_model(model)
    target = get_board(board) if board else None
    click.echo(f"model {graph.name}: {len(graph.nodes)} ops, {graph.parameter_count():,} "
               f"parameters; budget {format_size(budget)}; "
               f"board {target.name if target else 'host'}")
    raise MedyateError(
        "code generation is not available yet in this version: nothing was written to "
        f"{output}/ (`medyate-mcu inspect` shows what the compiler sees)"
    )
