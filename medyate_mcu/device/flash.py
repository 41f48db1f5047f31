"""Flashing a built firmware onto a real board with openocd or pyocd.

    openocd -f <board cfg> -c "program <elf> verify reset exit"
    pyocd flash -t <target> <elf>

The board file (``boards/*.toml``, ``[flash]``) names the openocd configuration and the pyocd
target. Emulated boards have nothing to flash: ``medyate-mcu simulate`` runs them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from medyate_mcu.boards import Board
from medyate_mcu.errors import MedyateError

TOOLS = ("openocd", "pyocd")
APPS = ("serial", "train")
NO_PROBE_HINTS = ("no device found", "unable to find", "no connected debug probes",
                  "open failed", "no probe", "libusb_open() failed", "no j-link",
                  "cannot find", "error connecting dp", "no stlink")


@dataclass(frozen=True)
class FlashCommand:
    tool: str
    argv: list[str]

    def text(self) -> str:
        import shlex

        return shlex.join(self.argv)


def default_tool(board: Board) -> str:
    if board.openocd_config:
        return "openocd"
    if board.pyocd_target:
        return "pyocd"
    raise MedyateError(f"board {board.name} names no flash tool (no [flash] openocd or "
                       f"pyocd_target in {board.source})")


def flash_command(board: Board, elf: Path, tool: str | None = None) -> FlashCommand:
    """The command that programs ``elf`` onto ``board`` (checks the board, not the tools)."""
    if board.kind == "emulated":
        raise MedyateError(f"board {board.name} is emulated (QEMU {board.qemu_machine}): there is "
                           "nothing to flash; run the firmware with `medyate-mcu simulate "
                           "BUILD_DIR`")
    tool = tool or default_tool(board)
    if tool not in TOOLS:
        raise MedyateError(f"unknown flash tool {tool!r}; use one of {', '.join(TOOLS)}")
    if tool == "openocd":
        if not board.openocd_config:
            raise MedyateError(f"board {board.name} has no openocd configuration; use --tool "
                               "pyocd")
        path = elf.as_posix()
        # openocd's command line is Tcl: braces keep a path with spaces one word
        word = f"{{{path}}}" if any(c in path for c in " \t;$[]\"") else path
        adapter: list[str] = []
        if board.openocd_config.startswith("target/"):
            # a target-only configuration names no debug adapter: the nRF52 DKs carry a J-Link
            # OB, which speaks SWD (openocd exits 0 with "unable to select a session transport"
            # without one)
            adapter = ["-f", "interface/jlink.cfg", "-c", "transport select swd"]
        return FlashCommand(tool, ["openocd", *adapter, "-f", board.openocd_config, "-c",
                                   f"program {word} verify reset exit"])
    if not board.pyocd_target:
        raise MedyateError(f"board {board.name} has no pyocd target; use --tool openocd")
    return FlashCommand(tool, ["pyocd", "flash", "-t", board.pyocd_target, str(elf)])


def check_elf(build_dir: Path, elf: Path, app: str) -> None:
    if not elf.is_file():
        raise MedyateError(f"{elf} does not exist; build it first: make -C {build_dir} arm "
                           f"FIRMWARE_APP={app}")
    with elf.open("rb") as handle:
        if handle.read(4) != b"\x7fELF":
            raise MedyateError(f"{elf} is not an ELF file")


def run_flash(command: FlashCommand, timeout: float = 120.0) -> str:
    """Run the flash command; its output. One clear error when it fails."""
    if shutil.which(command.argv[0]) is None:
        other = "pyocd" if command.tool == "openocd" else "openocd"
        raise MedyateError(f"{command.argv[0]} is not installed (e.g. `apt-get install openocd` "
                           f"or `pip install pyocd`); or try --tool {other}")
    try:
        result = subprocess.run(command.argv, capture_output=True, text=True, timeout=timeout,
                                check=False)
    except subprocess.TimeoutExpired:
        raise MedyateError(f"{command.tool} did not finish within {timeout:g} s") from None
    output = (result.stdout + result.stderr).strip()
    # openocd can exit 0 after a failed start ("Can't continue. shutdown command invoked"):
    # success is its "** Verified OK **"
    failed = result.returncode != 0 or (command.tool == "openocd"
                                        and "verified ok" not in output.lower())
    if failed:
        lines = [line for line in output.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()] or lines or ["no output"]
        if any(hint in output.lower() for hint in NO_PROBE_HINTS):
            raise MedyateError(f"no debug probe found: is the board connected over USB? "
                               f"({command.tool}: {errors[0].strip()})")
        raise MedyateError(f"{command.tool} failed (exit {result.returncode}): "
                           f"{errors[0].strip()}")
    return output
