"""``medyate-mcu verify``: the generated C engine against the host reference trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from medyate_mcu.cli.common import console
from medyate_mcu.codegen.folder import Project

HOST_EPOCHS = 3  # epochs compared with the reference unless --epochs says otherwise


@click.command("verify")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
                default=Path("build"))
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Epochs to compare (the compiled schedule's first epochs) [default: 3; with "
                   "--qemu, the build's whole run byte for byte, 3 against the reference].")
@click.option("--samples", type=click.IntRange(1), default=96, show_default=True,
              help="Training samples of the build's data set to use.")
@click.option("--qemu", is_flag=True,
              help="Check the Cortex-M build too: build the verification firmware for the "
                   "build's emulated board (compile --board qemu-...), run it under QEMU and "
                   "compare the engine's whole RAM after every epoch byte for byte with the "
                   "host build; then check the host build against the reference.")
@click.option("--timeout", type=click.FloatRange(1), default=600, show_default=True,
              help="With --qemu: wall-time watchdog for the emulator, seconds.")
def verify_command(build_dir: Path, epochs: int | None, samples: int, qemu: bool,
                   timeout: float) -> None:
    """Build BUILD_DIR (a `compile` output) for the host and check it against the host reference:
    RAM symbol sizes against the plan, the forward pass, one sample's gradients, the initial
    state (bit for bit), and for each epoch the sampler weights and channel selection
    (identical), the weights step by step, norms, loss and accuracy (within tolerance). A step
    may differ only where a ReLU/max-pool decision differs within its float32 rounding bound,
    and is then replayed with the C decisions (docs/verification.md). With --qemu, first the
    Cortex-M build under QEMU (tensors through semihosting files) against the host build of the
    same sources: every byte of the engine's RAM after mdy_init and after each epoch, no
    tolerance (the first difference is named: tensor, index, both values); plus the image's RAM
    symbols and instructions per training step. Prints a table; exits 1 on any mismatch."""
    from medyate_mcu.run.verify import verify_build

    project = Project.open(build_dir)
    out = console()
    figures = None
    if qemu:
        from medyate_mcu.run.verify_qemu import verify_qemu
        with out.status("building the verification firmware and running it under QEMU..."):
            checks, figures = verify_qemu(project, epochs=epochs, samples=samples,
                                          timeout=timeout,
                                          reference_epochs=epochs or HOST_EPOCHS)
    else:
        with out.status("building and running the C engine..."):
            build_epochs = int(project.manifest.settings["epochs"])
            checks = verify_build(project, epochs=epochs or min(HOST_EPOCHS, build_epochs),
                                  samples=samples)
    table = Table(title=f"verify {build_dir}")
    for column in ("check", "measured", "limit", "result"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.name, check.measured, check.limit,
                      "[green]ok[/]" if check.ok else "[red]MISMATCH[/]")
    out.print(table)
    if figures is not None:
        out.print(f"instructions per training step (QEMU -icount): "
                  f"{figures.instructions_mean:,.0f} mean, {figures.instructions_min:,.0f} min, "
                  f"{figures.instructions_max:,.0f} max over {figures.steps} steps; stack used "
                  f"{figures.stack_used:,} of {figures.stack_reserved:,} B")
    failed = [check for check in checks if not check.ok]
    if failed:
        click.echo(f"error: {len(failed)} of {len(checks)} checks failed", err=True)
        sys.exit(1)
    out.print(f"all {len(checks)} checks passed")
