"""``medyate-mcu boards``: the boards the compiler can target."""

from __future__ import annotations

import click
from rich.table import Table

from medyate_mcu.boards import all_boards
from medyate_mcu.cli.common import console


@click.command("boards")
def boards_command() -> None:
    """List the supported boards with their core, FPU, RAM and flash.

    Real boards are flashed with openocd or pyocd; emulated boards run under qemu-system-arm
    (with RAM and flash limited to the real part they stand in for).
    """
    table = Table()
    for column in ("board", "kind", "core", "FPU", "RAM", "flash", "description"):
        table.add_column(column, justify="right" if column in ("RAM", "flash") else "left")
    for board in all_boards().values():
        table.add_row(board.name, board.kind, board.core, board.fpu,
                      f"{board.ram_bytes // 1024} KiB", f"{board.flash_bytes // 1024} KiB",
                      board.description)
    console().print(table)
