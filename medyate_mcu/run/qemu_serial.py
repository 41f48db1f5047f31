"""The serial firmware under qemu-system-arm with the board's UART on a TCP server bound to
127.0.0.1: what `medyate-mcu simulate --serial` runs and `medyate-mcu train --port
socket://127.0.0.1:PORT` talks to as it would to a board's serial port.

QEMU opens the port before it starts the guest (``server=on,wait=on``) and reports it on
stderr, with the number it picked when asked for port 0. The firmware starts when the first
client connects; when a client hangs up QEMU waits for the next one, the engine's state intact,
as a powered board keeps it. Real time (no ``-icount``): SysTick then follows the host's clock,
so the UART's 250 ms idle timeout (firmware/hal/uart.h) is 250 ms of wall time, as the host's
link expects. Under ``-icount shift=0`` the 250 ms would be 250 M polling instructions, measured
to take 2 to 8 s of wall time, far beyond the host's 0.5 s of silence before its HELLO.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medyate_mcu.boards import Board
from medyate_mcu.errors import MedyateError
from medyate_mcu.run.qemu import QemuRun, qemu_command

HOST = "127.0.0.1"  # never another interface: the protocol has no authentication
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
TAIL_LINES = 4
LISTENING = re.compile(r"waiting for connection on: disconnected:tcp:[^:,]+:(\d+)")


class SerialQemu:
    """A running QEMU whose board UART is a TCP server on 127.0.0.1 (see the module)."""

    def __init__(self, command: list[str], process: subprocess.Popen[str],
                 echo: Callable[[str], None] | None) -> None:
        self.command = command
        self.process = process
        self.port = 0
        self._lines: list[str] = []
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(echo,), daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        """The pyserial URL of the board's UART."""
        return f"socket://{HOST}:{self.port}"

    @property
    def output(self) -> str:
        """QEMU's messages and the guest's semihosting console so far."""
        return "".join(self._lines)

    def _read(self, echo: Callable[[str], None] | None) -> None:
        stream = self.process.stdout
        if stream is None:
            return
        for line in stream:
            self._lines.append(line)
            found = LISTENING.search(line)
            if found and not self._listening.is_set():
                self.port = int(found.group(1))
                self._listening.set()
            elif echo is not None:
                echo(line.rstrip("\n"))

    def _tail(self) -> str:
        lines = [line.strip() for line in self._lines if line.strip()][-TAIL_LINES:]
        return " | ".join(lines) or "(no output)"

    def wait_listening(self, timeout: float) -> None:
        """Until QEMU listens on its port; one line naming the cause if it exits first or takes
        longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            status = self.process.poll()
            if status is not None:
                self._reader.join(1.0)
                raise MedyateError(f"QEMU exited with status {status} before opening its serial "
                                   f"port: {self._tail()}")
            if time.monotonic() >= deadline:
                raise MedyateError(f"QEMU did not open its serial port within {timeout:g} s: "
                                   f"{self._tail()}")
        if self.port == 0:
            raise MedyateError("this QEMU does not say which port it picked; give a port number")

    def wait(self, timeout: float | None = None) -> QemuRun:
        """Until QEMU exits (the firmware returned or faulted, or QEMU was stopped)."""
        status = self.process.wait(timeout)
        self._reader.join(1.0)
        return QemuRun(self.command, status, self.output)

    def stop(self) -> None:
        """Terminate QEMU (killed if it lingers) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(1.0)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def serial_qemu(board: Board, image: Path, port: int = 0,
                timeout: float = STARTUP_TIMEOUT_S,
                echo: Callable[[str], None] | None = None) -> Iterator[SerialQemu]:
    """QEMU running the serial firmware ``image`` for ``board``, its UART on 127.0.0.1:``port``
    (0: a free port), once it listens; stopped on exit. ``echo`` receives the console's lines
    (the guest's semihosting output, QEMU's messages) as they come."""
    if not image.is_file():
        raise MedyateError(f"{image} does not exist: build the serial firmware first "
                           f"(`medyate-mcu build {image.parent.parent} --app serial`)")
    if not 0 <= port <= 65535:
        raise MedyateError(f"port {port}: a TCP port is 0..65535 (0: any free port)")
    command = qemu_command(board, image, f"tcp:{HOST}:{port},server=on,wait=on", icount=False)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
    qemu = SerialQemu(command, process, echo)
    try:
        qemu.wait_listening(timeout)
        yield qemu
    finally:
        qemu.stop()
