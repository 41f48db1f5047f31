"""``medyate-mcu simulate --serial``: the serial firmware under QEMU, its board's UART a TCP
server on 127.0.0.1 that `medyate-mcu train --port socket://127.0.0.1:PORT` talks to."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from medyate_mcu.boards import Board
from medyate_mcu.cli.common import console
from medyate_mcu.errors import MedyateError
from medyate_mcu.run.qemu_serial import serial_qemu


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: stop QEMU on the way out


def serve_serial(build_dir: Path, board: Board, image: Path, port: int) -> None:
    """Run ``image`` (the serial firmware) on ``board``'s emulator until Ctrl-C (or SIGTERM),
    or until QEMU exits; QEMU is stopped and reaped either way. The console (the guest's
    semihosting output, e.g. a hard-fault report) is echoed as it comes."""
    out = console()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with serial_qemu(board, image, port, echo=click.echo) as qemu:
            out.print(f"QEMU {board.qemu_machine} runs {image.name}; its {board.uart} is "
                      f"{qemu.url} (this machine only); the firmware starts at the first "
                      "connection and keeps its state between connections")
            click.echo(f"serial port: {qemu.url}")
            click.echo(f"train it:    medyate-mcu train {build_dir} --port {qemu.url}")
            click.echo("Ctrl-C stops QEMU")
            sys.stdout.flush()
            run = qemu.wait()
    except KeyboardInterrupt:
        click.echo("stopped QEMU")
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    if run.fault:
        raise MedyateError(f"the firmware hard-faulted on {board.qemu_machine} (registers above)")
    if run.status != 0:
        raise MedyateError(f"QEMU exited with status {run.status}")
    click.echo("the firmware returned: QEMU exited")
