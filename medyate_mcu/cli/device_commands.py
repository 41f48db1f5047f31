"""``medyate-mcu train`` (train a device over its serial port) and ``medyate-mcu flash``."""

from __future__ import annotations

from pathlib import Path

import click

from medyate_mcu.cli.common import BoardType, console
from medyate_mcu.codegen.folder import Project
from medyate_mcu.errors import MedyateError


@click.command("train")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--port", required=True,
              help="Serial device (/dev/ttyACM0, COM3) or pyserial URL "
                   "(socket://127.0.0.1:4321 for QEMU or the host build).")
@click.option("--data", "data_name", default=None,
              help="Training data: a panel data set, a folder or an .npz "
                   "[default: the build's data set].")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Epochs to train [default: the build's schedule; at most that].")
@click.option("--samples", type=click.IntRange(1), default=None,
              help="Train on N training samples, stratified by class [default: all].")
@click.option("--test-samples", type=click.IntRange(0), default=100, show_default=True,
              help="Test samples of the data (stratified) the device classifies before and "
                   "after training, for its accuracy; 0: none.")
@click.option("--baud", type=click.IntRange(1), default=None,
              help="Baud rate of a serial device [default: the board's, else 115200].")
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds to wait for each reply.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the trained model [default: BUILD_DIR/trained.onnx].")
def train_command(build_dir: Path, port: str, data_name: str | None, epochs: int | None,
                  samples: int | None, test_samples: int, baud: int | None, timeout: float,
                  output: Path | None) -> None:
    """Train the device running BUILD_DIR's serial firmware: restart it from the pre-trained
    weights, stream the training samples (each epoch in the order the host reference uses),
    show loss and accuracy live, then read the trained weights back and write them into an
    ONNX copy of the source model with the new classifier. Samples travel as the build stores
    them (`compile --sample-format`: uint8 pixels, int8 or float32 values, e.g. 490 B a frame
    for an int8 49x10 spectrogram) and the device decodes them as the host reference does."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from medyate_mcu.device.session import TrainSession

    out = console()
    session = TrainSession.open(Project.open(build_dir), port, data_name, epochs, samples, baud,
                                timeout, test_samples)
    with session:
        ready = session.ready
        out.print(f"device on {port}: board {ready.board}, protocol v{ready.version}, "
                  f"input {ready.input_size} values as {ready.describe_samples()}, "
                  f"{ready.classes} classes, "
                  f"{ready.candidates} candidate layers; training {session.epochs} epoch(s) on "
                  f"{len(session.y)} samples of {session.data_name}")
        before = session.test_accuracy()
        if before is not None:
            out.print(f"test accuracy before training: {100 * before:.1f} % "
                      f"({len(session.test_y)} test samples)")
        with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                      TextColumn("acc {task.fields[acc]:.3f}"), console=out,
                      transient=True) as progress:
            task = progress.add_task("train", total=len(session.y), epoch=1, loss=0.0, acc=0.0)

            def on_sample(epoch: int, done: int, loss: float, accuracy: float) -> None:
                progress.update(task, completed=done, epoch=epoch, loss=loss, acc=accuracy)

            for record in session.train(on_sample):
                out.print(f"epoch {record.epoch}: loss {record.loss:.4f}, train accuracy "
                          f"{record.correct / max(record.samples, 1):.3f}, "
                          f"{record.selected} channels trained")
                progress.reset(task, total=len(session.y), epoch=record.epoch + 1, loss=0.0,
                               acc=0.0)
        after = session.test_accuracy()
        if after is not None and before is not None:
            out.print(f"test accuracy after training: {100 * after:.1f} % (before: "
                      f"{100 * before:.1f} %)")
        target = output or build_dir / "trained.onnx"
        with out.status("reading the trained weights..."):
            session.save(target)
    out.print(f"wrote {target}")


@click.command("flash")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--board", type=BoardType(), default=None,
              help="The board [default: the build's `compile --board`].")
@click.option("--tool", type=click.Choice(["openocd", "pyocd"]), default=None,
              help="Flash tool [default: openocd where the board has a configuration].")
@click.option("--app", type=click.Choice(["serial", "train"]), default="serial",
              show_default=True,
              help="Which firmware: serial (talks to `medyate-mcu train`) or train (embedded "
                   "data).")
@click.option("--dry-run", is_flag=True, help="Print the command instead of running it.")
def flash_command(build_dir: Path, board: str | None, tool: str | None, app: str,
                  dry_run: bool) -> None:
    """Program BUILD_DIR's Cortex-M firmware (make -C BUILD_DIR arm FIRMWARE_APP=serial) onto a
    real board through its debug probe, with openocd or pyocd."""
    from medyate_mcu.boards import get_board
    from medyate_mcu.device.flash import check_elf, flash_command, run_flash

    project = Project.open(build_dir)
    built_for = project.manifest.board
    name = board or built_for
    if name is None:
        raise MedyateError(f"{build_dir} was compiled without --board; compile it for a board "
                           "(or give --board)")
    if built_for and board and built_for != board:
        raise MedyateError(f"{build_dir} was compiled for {built_for}, not {board}: its linker "
                           "script and UART are that board's; compile again with --board "
                           f"{board}")
    elf = project.firmware_path(app)
    command = flash_command(get_board(name), elf, tool)
    if dry_run:
        click.echo(command.text())
        return
    check_elf(build_dir, elf, app)
    run_flash(command)
    click.echo(f"flashed {elf} to {name} with {command.tool}")
