"""``medyate-mcu build`` and ``simulate``: Cortex-M firmware for the board of a `compile` output,
its flash and RAM part by part, and a run under QEMU for the emulated boards."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from medyate_mcu.cli.common import SizeType, console
from medyate_mcu.codegen.folder import Project
from medyate_mcu.codegen.project import DEFAULT_STACK_BYTES
from medyate_mcu.errors import MedyateError

BUILD_DIR = click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False,
                                                        exists=True), default=Path("build"))
STACK_OPTION = click.option("--stack", type=SizeType(), default=None,
                            help="Stack reserved after .bss [default: "
                                 f"{DEFAULT_STACK_BYTES:,} B]; not part of the budget, but the "
                                 "image and the stack must fit the board's RAM.")


def build_and_report(build_dir: Path, app: str, stack: int | None) -> tuple[Path, object]:
    from medyate_mcu.toolchain.arm import (
        build_firmware,
        embedded_samples,
        size_report,
        stack_bound,
    )

    project = Project.open(build_dir)
    manifest, board = project.manifest, project.require_board()
    out = console()
    with out.status(f"building the {app} firmware for {board.name}..."):
        image = build_firmware(project, app, stack)
    report = size_report(image, board, manifest.budget)
    bound = stack_bound(build_dir, image)
    report = type(report)(**{**report.__dict__, "stack": bound})
    table = Table(title=f"{image} on {board.name} ({board.description})")
    for column in ("region", "part", "bytes"):
        table.add_column(column, justify="right" if column == "bytes" else "left")
    for region, parts, total, size in (("flash", report.flash, report.flash_bytes,
                                        board.flash_bytes),
                                       ("RAM", report.ram, report.ram_bytes, board.ram_bytes)):
        for name, value in parts:
            table.add_row(region, name, f"{value:,}")
        table.add_row(region, f"[bold]total, of {size:,} ({100 * total / size:.1f} %)[/]",
                      f"[bold]{total:,}[/]")
    out.print(table)
    out.print(f"engine RAM (mdy_ symbols): {report.engine_bytes:,} B of the "
              f"{manifest.budget:,} B budget")
    samples = embedded_samples(project, image)
    if samples:
        out.print(samples.describe())
    elif app == "serial":
        out.print("embedded samples: none (the serial firmware receives them over the link)")
    if bound.bytes is None:
        out.print(f"stack of {bound.root}: unbounded ({'; '.join(bound.notes)})")
    else:
        out.print(f"stack of {bound.root}: at most {bound.bytes:,} B (deepest chain: "
                  f"{' > '.join(bound.chain)}; {'; '.join(bound.notes)})")
    problems = report.problems()
    if problems:
        raise MedyateError(f"{image.name} does not fit {board.name}: " + "; ".join(problems))
    return image, report


@click.command("build")
@BUILD_DIR
@click.option("--app", type=click.Choice(["train", "verify", "serial"]), default="train",
              show_default=True, help="Firmware: the embedded-data trainer, the QEMU "
                                      "verification firmware, or the serial-protocol firmware.")
@STACK_OPTION
def build_command(build_dir: Path, app: str, stack: int | None) -> None:
    """Build BUILD_DIR (a `compile --board` output) for its board with arm-none-eabi-gcc (ELF,
    .bin and .hex in BUILD_DIR/arm/) and report flash and RAM part by part, read from the ELF, the
    flash the embedded samples take in the build's sample format (compile --sample-format), and
    a bound on the training step's stack. Exits 1 if the image does not fit the board or the
    engine's RAM exceeds the budget."""
    build_and_report(build_dir, app, stack)


@click.command("simulate")
@BUILD_DIR
@STACK_OPTION
@click.option("--timeout", type=click.FloatRange(1), default=600, show_default=True,
              help="Wall-time watchdog, seconds (not with --serial).")
@click.option("--serial", is_flag=True,
              help="Run the serial firmware instead, its UART on a 127.0.0.1 TCP port for "
                   "`medyate-mcu train --port socket://...`, until Ctrl-C or QEMU exits.")
@click.option("--port-number", type=click.IntRange(0, 65535), default=0,
              help="With --serial: the TCP port [default: a free one].")
def simulate_command(build_dir: Path, stack: int | None, timeout: float, serial: bool,
                     port_number: int) -> None:
    """Build BUILD_DIR for its emulated board and run the embedded-data trainer under
    qemu-system-arm (semihosting console, `-icount shift=0`): prints its epoch table and the
    instructions per training step. Exits 1 on a fault, a non-zero exit or the watchdog.
    With --serial: the serial firmware, served on a loopback TCP port (see `train`)."""
    from medyate_mcu.cli.simulate_serial import serve_serial
    from medyate_mcu.run.qemu import run_qemu, step_instructions
    board = Project.open(build_dir).require_board()
    if board.kind != "emulated":
        raise MedyateError(f"{board.name} is a real board; simulate runs the emulated boards "
                           "only (compile with --board qemu-mps2-an386, qemu-mps2-an500 or "
                           "qemu-netduinoplus2)")
    image, _ = build_and_report(build_dir, "serial" if serial else "train", stack)
    if serial:
        serve_serial(build_dir, board, image, port_number)
        return
    out = console()
    with out.status(f"running {image.name} on qemu {board.qemu_machine}..."):
        run = run_qemu(board, image, cwd=build_dir, timeout=timeout)
    click.echo(run.output.rstrip())
    if run.fault:
        raise MedyateError(f"the firmware hard-faulted on {board.qemu_machine} (registers above)")
    if run.status != 0:
        raise MedyateError(f"the firmware exited with status {run.status}")
    steps = step_instructions(run.output, board)
    if steps is not None:
        mean, low, high, count = steps
        out.print(f"instructions per training step (mdy_train_sample, QEMU -icount): "
                  f"{mean:,.0f} mean, {low:,.0f} min, {high:,.0f} max over {count} steps")
    sys.stdout.flush()
