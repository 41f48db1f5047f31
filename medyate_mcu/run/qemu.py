"""Run Cortex-M firmware under qemu-system-arm: semihosting console and files, exit status,
a wall-time watchdog, hard faults, and instruction counts from the SysTick cycle counter; and the
serial firmware with the board's UART on a loopback TCP port (:func:`serial_qemu`), which
`medyate-mcu train --port socket://127.0.0.1:PORT` talks to as to a board."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from medyate_mcu.boards import Board
from medyate_mcu.errors import MedyateError

QEMU = "qemu-system-arm"
QEMU_PACKAGE = "qemu-system-arm"
FAULT_EXIT_STATUS = 3  # startup_cortexm.c's fault handler
DEFAULT_TIMEOUT_S = 300.0
STEP_LINE = re.compile(r"training step: (\d+) cycles mean, (\d+) min, (\d+) max \((\d+) steps, "
                       r"(\d+) Hz\)")


@dataclass(frozen=True)
class QemuRun:
    command: list[str]
    status: int
    output: str  # the console (semihosting and UART), stdout and stderr together

    @property
    def fault(self) -> str | None:
        """The fault report, if the firmware hard-faulted."""
        start = self.output.find("HARD FAULT")
        return self.output[start:].strip() if start >= 0 else None


def qemu_command(board: Board, image: Path, serial: str = "stdio",
                 icount: bool = True) -> list[str]:
    """The QEMU command line for an emulated board, its first UART on the chardev ``serial``.
    `-icount shift=0`: every instruction takes 1 ns of virtual time, so SysTick counts are
    deterministic and convert to instructions. Without it SysTick follows the host's clock."""
    if board.kind != "emulated" or not board.qemu_machine:
        raise MedyateError(f"{board.name} is a real board: QEMU runs only the emulated boards "
                           "(qemu-mps2-an386, qemu-mps2-an500, qemu-netduinoplus2); flash it "
                           "instead")
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise MedyateError(f"`{QEMU}` is not installed; install it, e.g. "
                           f"`apt-get install {QEMU_PACKAGE}`")
    return [qemu, "-M", board.qemu_machine, "-nographic", "-monitor", "none",
            "-serial", serial, "-semihosting-config", "enable=on,target=native",
            *(["-icount", "shift=0"] if icount else []), "-kernel", str(image.resolve())]


def run_qemu(board: Board, image: Path, cwd: Path | None = None,
             timeout: float = DEFAULT_TIMEOUT_S) -> QemuRun:
    """Run ``image`` to its semihosting exit. Semihosting file names are relative to ``cwd``.
    Past ``timeout`` seconds of wall time the emulator is killed and this raises."""
    if not image.is_file():
        raise MedyateError(f"{image} does not exist: build it first (`medyate-mcu build`)")
    command = qemu_command(board, image)
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                                errors="replace", timeout=timeout, stdin=subprocess.DEVNULL,
                                check=False)
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        last = partial.strip().splitlines()[-1:] or ["(no output)"]
        raise MedyateError(f"{image.name} on {board.qemu_machine} did not finish within "
                           f"{timeout:g} s (watchdog); last output: {last[0]}") from None
    return QemuRun(command, result.returncode, result.stdout + result.stderr)


def instructions(cycles: float, board: Board) -> float:
    """SysTick cycles -> instructions under `-icount shift=0` (1 instruction per ns; SysTick
    counts the machine's CPU clock, the board file's clock_hz)."""
    return cycles * 1e9 / board.clock_hz


def step_instructions(output: str, board: Board) -> tuple[float, float, float, int] | None:
    """(mean, min, max, steps) instructions per training step, from the trainer's last line."""
    found = STEP_LINE.search(output)
    if not found:
        return None
    mean, low, high, steps, hz = (int(v) for v in found.groups())
    if hz != board.clock_hz:
        raise MedyateError(f"the firmware was built for a {hz} Hz clock, the board file says "
                           f"{board.clock_hz} Hz: build again")
    return instructions(mean, board), instructions(low, board), instructions(high, board), steps
