"""Board descriptions: one TOML file per board in ``boards/``, loaded and validated here."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from medyate_mcu.errors import MedyateError
from medyate_mcu.resources import data_dir

CORES = ("cortex-m4", "cortex-m7")
FPUS = ("fpv4-sp-d16", "fpv5-sp-d16", "fpv5-d16")
KINDS = ("real", "emulated")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    kind: str  # "real" or "emulated"
    core: str
    fpu: str
    clock_hz: int
    ram_origin: int
    ram_bytes: int
    flash_origin: int
    flash_bytes: int
    uart: str
    baud: int
    qemu_machine: str | None = None
    stands_in_for: str | None = None
    openocd_config: str | None = None
    pyocd_target: str | None = None
    source: Path | None = None


def _board_from_toml(path: Path) -> Board:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
        memory, uart, flash = data["memory"], data["uart"], data.get("flash", {})
        board = Board(
            name=data["name"], description=data["description"], kind=data["kind"],
            core=data["core"], fpu=data["fpu"], clock_hz=int(data["clock_hz"]),
            ram_origin=int(memory["ram_origin"]), ram_bytes=int(memory["ram_kib"]) * 1024,
            flash_origin=int(memory["flash_origin"]), flash_bytes=int(memory["flash_kib"]) * 1024,
            uart=uart["peripheral"], baud=int(uart["baud"]),
            qemu_machine=data.get("qemu_machine"), stands_in_for=data.get("stands_in_for"),
            openocd_config=flash.get("openocd"), pyocd_target=flash.get("pyocd_target"),
            source=path,
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MedyateError(f"board file {path}: {type(exc).__name__}: {exc}") from None
    problems = []
    if board.name != path.stem:
        problems.append(f"name {board.name!r} differs from the file name")
    if board.kind not in KINDS:
        problems.append(f"kind {board.kind!r} is not one of {KINDS}")
    if board.core not in CORES:
        problems.append(f"core {board.core!r} is not one of {CORES}")
    if board.fpu not in FPUS:
        problems.append(f"fpu {board.fpu!r} is not one of {FPUS}")
    if board.kind == "emulated" and not board.qemu_machine:
        problems.append("an emulated board needs qemu_machine")
    if board.ram_bytes <= 0 or board.flash_bytes <= 0:
        problems.append("RAM and flash sizes must be positive")
    if problems:
        raise MedyateError(f"board file {path}: {'; '.join(problems)}")
    return board


@cache
def all_boards(folder: Path | None = None) -> dict[str, Board]:
    """Every board in ``folder`` (default: the project's ``boards/``), by name."""
    folder = folder or data_dir("boards")
    return {path.stem: _board_from_toml(path) for path in sorted(folder.glob("*.toml"))}


def get_board(name: str) -> Board:
    boards = all_boards()
    if name not in boards:
        raise MedyateError(f"unknown board {name!r}; valid boards: {', '.join(boards)} "
                           "(see `medyate-mcu boards`)")
    return boards[name]
