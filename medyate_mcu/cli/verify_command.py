"""``medyate-mcu verify``: the generated C engine against the host reference trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from medyate_mcu.cli.common import console


@click.command("verify")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
                default=Path("build"))
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True,
              help="Epochs to compare (the compiled schedule's first epochs).")
@click.option("--samples", type=click.IntRange(1), default=96, show_default=True,
              help="Training samples of the build's data set to use.")
def verify_command(build_dir: Path, epochs: int, samples: int) -> None:
    """Build BUILD_DIR (a `compile` output) for the host and check it against the host reference:
    RAM symbol sizes against the plan, the forward pass, one sample's gradients, and for each
    epoch the channel selection (identical), weights, norms, loss and accuracy (within
    tolerance). Prints a table; exits 1 on any mismatch."""
    from medyate_mcu.run.verify import verify_build

    out = console()
    with out.status("building and running the C engine..."):
        checks = verify_build(build_dir, epochs=epochs, samples=samples)
    table = Table(title=f"verify {build_dir}")
    for column in ("check", "measured", "limit", "result"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.name, check.measured, check.limit,
                      "[green]ok[/]" if check.ok else "[red]MISMATCH[/]")
    out.print(table)
    failed = [check for check in checks if not check.ok]
    if failed:
        click.echo(f"error: {len(failed)} of {len(checks)} checks failed", err=True)
        sys.exit(1)
    out.print(f"all {len(checks)} checks passed")
