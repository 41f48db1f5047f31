"""``medyate-mcu compile``: model + RAM budget + board -> C training engine."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import TaskID

from medyate_mcu.cli.common import MODEL_ARGUMENT, BoardType, SizeType, console
from medyate_mcu.cli.method_commands import ALPHA_OPTION, K_RULE_OPTION, progress_bar
from medyate_mcu.toolchain.auto_budget import RESERVE_BYTES
from medyate_mcu.toolchain.compile import (
    AUTO_BACKBONE,
    DEFAULT_BUDGET,
    DEFAULT_CALIBRATION_SAMPLES,
    DEMO_DATA,
    QUANT_REPORT,
    CompileOptions,
    compile_project,
)
from medyate_mcu.units import format_size
from medyate_mcu.zoo.tasks import SAMPLE_FORMATS


@click.command("compile")
@MODEL_ARGUMENT
@click.option("--budget", type=SizeType(allow_auto=True), default=f"{DEFAULT_BUDGET // 1024}kB",
              show_default=True,
              help="RAM the training engine may allocate statically: a plain number is bytes; "
                   "k/kB/KB/KiB = 1024 bytes; M/MB/MiB = 1024² bytes. 'auto' (needs --board): "
                   "the board's RAM less the stack, the rest of the image and a "
                   f"{RESERVE_BYTES:,} B reserve. With --board, a budget whose image the "
                   "board's RAM cannot hold is refused.")
@click.option("--board", type=BoardType(), default=None,
              help="Target board (see `medyate-mcu boards`); default: host build only.")
@click.option("--ranking", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="LaRa ranking [default: MODEL.lara.json beside the model].")
@click.option("--data", default=None,
              help="Target task: a panel data set name, a folder of class sub-folders or an "
                   ".npz. Sets the class count and the embedded samples [default for the "
                   f"bundled model: {DEMO_DATA}].")
@click.option("--proxy", default=None,
              help="LaRa proxy task, used only when the model has no ranking yet: a panel data "
                   "set name, a folder or an .npz; never the target [default: the next panel "
                   "task after --data].")
@click.option("--classes", type=click.IntRange(2, 65535), default=None,
              help="Classes of the target task when no --data is given [default: the model's].")
@click.option("--embed-data", "embed", type=click.IntRange(0), default=None,
              help="Training samples from --data embedded in the image (plus a quarter as many "
                   "test samples, at most 200) [default: 256; 64 with --board, for flash].")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True,
              help="Base learning rate (linear warm-up, then cosine to 0).")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True,
              help="Warm-up epochs.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seeds the channel sampler, the sample order and the new classifier.")
@click.option("--backbone", type=click.Choice(["auto", "int8", "float32"]),
              default=AUTO_BACKBONE, show_default=True,
              help="How the frozen part of the network runs: float32, or int8 (per-channel int8 "
                   "weights, per-tensor int8 activations calibrated on --data; the trained layers "
                   "stay float32, docs/quantization.md). auto: int8 when float32 does not fit "
                   "the budget, the board's RAM or half its flash.")
@click.option("--calibration-samples", type=click.IntRange(1), show_default=True,
              default=DEFAULT_CALIBRATION_SAMPLES,
              help="Training samples of --data the int8 activation ranges are measured on "
                   "(stratified by class).")
@click.option("--sample-format", type=click.Choice(SAMPLE_FORMATS), default="stored",
              show_default=True,
              help="How embedded samples (and the serial link's SAMPLE frames) are stored: as "
                   "--data stores them (uint8 pixels, int8/uint8 with a scale, float32), float32 "
                   "(the network's input), or int8 (compact float features: a quarter of the "
                   "flash, per-channel ranges of the training split). Recorded in the build.")
@ALPHA_OPTION
@K_RULE_OPTION
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False),
              default=Path("build"), show_default=True, help="Folder for the generated C project.")
def compile_command(model: Path | None, budget: int | str, board: str | None,
                    ranking: Path | None, data: str | None, proxy: str | None,
                    classes: int | None, embed: int | None, epochs: int,
                    batch_size: int, lr: float, warmup: int, seed: int, backbone: str,
                    calibration_samples: int, sample_format: str, alpha: float, k_rule: str,
                    output: Path) -> None:
    """Compile MODEL (default: the bundled demo model) into a C project that fine-tunes it on a
    microcontroller within --budget bytes of RAM, by MeDyate dynamic channel updates.

    \b
    Then:  make -C OUTPUT host && OUTPUT/medyate_train    (trains on the embedded data)
           medyate-mcu verify OUTPUT                      (checks the C against the host reference)
    """
    options = CompileOptions(model=model, budget=budget, board=board, ranking=ranking, data=data,
                             proxy=proxy, classes=classes, embed=embed, epochs=epochs,
                             batch_size=batch_size, lr=lr, warmup=warmup, seed=seed, alpha=alpha,
                             k_rule=k_rule, backbone=backbone,
                             calibration_samples=calibration_samples,
                             sample_format=sample_format)
    out = console()
    bar = progress_bar()  # shown only while LaRa runs (a model without a ranking)
    lara: list[TaskID] = []

    def on_lara_step(step: int, total: int, loss: float) -> None:
        if not lara:
            bar.start()
            lara.append(bar.add_task("LaRa", total=None, status=""))
        bar.update(lara[0], completed=step, total=total, status=f"loss {loss:.3f}")

    def on_calibration(done: int, total: int) -> None:
        if not calibration:
            bar.start()
            calibration.append(bar.add_task("calibrating int8", total=total, status=""))
        bar.update(calibration[0], completed=done, total=total)

    calibration: list[TaskID] = []
    try:
        project = compile_project(options, output, say=out.print, lara_progress=on_lara_step,
                                  calibration_progress=on_calibration)
    finally:
        if lara or calibration:
            bar.stop()
    graph, plan, _, _ = project.reference()
    manifest = project.manifest
    out.print(f"{graph.name}: {manifest.classes} classes, K = {plan.k} candidate layers, channel "
              f"pool {format_size(plan.pool_bytes)}, engine {format_size(plan.total_bytes)} of "
              f"{format_size(manifest.budget)}")
    if manifest.backbone == "int8":
        report = (output / QUANT_REPORT).read_text().splitlines()
        out.print(f"int8 backbone, {len(plan.memory.int8_nodes)} ops in int8; "
                  + (report[-1] if report else "") + f" (per layer: {output / QUANT_REPORT})")
    samples = project.embedded_samples
    target = project.board
    following = (f"medyate-mcu build {output}, then "
                 + (f"medyate-mcu simulate {output}" if target.kind == "emulated"
                    else f"medyate-mcu flash {output}")) if target else \
        f"make -C {output} host && {output}/medyate_train"
    if samples == 0:  # nothing embedded: only the serial firmware trains
        following = f"medyate-mcu train {output} --port PORT --data DATA (serial firmware)"
    source = manifest.data_source
    encoding = manifest.encoding
    if encoding is not None:
        out.print(f"input: {encoding.describe()}", markup=False)
    out.print(f"wrote {output}/ ({samples} embedded training samples"
              f"{' from ' + source if source else ''}); next: {following}")
