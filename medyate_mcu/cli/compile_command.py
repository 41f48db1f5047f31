"""``medyate-mcu compile``: model + RAM budget + board -> C training engine."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict
from pathlib import Path

import click

from medyate_mcu.boards import get_board
from medyate_mcu.cli.common import (
    AUTO,
    MODEL_ARGUMENT,
    BoardType,
    SizeType,
    bundled_model_path,
    console,
    load_model,
)
from medyate_mcu.cli.method_commands import (
    ALPHA_OPTION,
    K_RULE_OPTION,
    default_ranking_path,
    load_ranking,
    run_lara,
)
from medyate_mcu.errors import MedyateError
from medyate_mcu.method.lara import LaraSettings
from medyate_mcu.method.planner import BudgetPlan, KRule, plan_budget
from medyate_mcu.method.trainer import TrainSettings, replace_classifier
from medyate_mcu.toolchain.arm import ARM_GCC, build_firmware
from medyate_mcu.toolchain.auto_budget import RESERVE_BYTES, auto_budget, measure_room
from medyate_mcu.units import format_size

DEFAULT_BUDGET = "300kB"
DEMO_DATA = "digits"  # what the bundled demo model trains on when no --data is given


@click.command("compile")
@MODEL_ARGUMENT
@click.option("--budget", type=SizeType(allow_auto=True), default=DEFAULT_BUDGET,
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
@ALPHA_OPTION
@K_RULE_OPTION
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False),
              default=Path("build"), show_default=True, help="Folder for the generated C project.")
def compile_command(model: Path | None, budget: int | str, board: str | None,
                    ranking: Path | None, data: str | None, proxy: str | None,
                    classes: int | None, embed: int | None, epochs: int,
                    batch_size: int, lr: float, warmup: int, seed: int, alpha: float,
                    k_rule: str, output: Path) -> None:
    """Compile MODEL (default: the bundled demo model) into a C project that fine-tunes it on a
    microcontroller within --budget bytes of RAM, by MeDyate dynamic channel updates.

    \b
    Then:  make -C OUTPUT host && OUTPUT/medyate_train    (trains on the embedded data)
           medyate-mcu verify OUTPUT                      (checks the C against the host reference)
    """
    from medyate_mcu.codegen.project import BuildManifest, EmbeddedData, write_project
    from medyate_mcu.zoo.tasks import load_task, proxy_task_for, stratified_sample

    model_path = model if model is not None else bundled_model_path()
    graph = load_model(model_path)
    if data is None and model is None:
        data = DEMO_DATA
    task = load_task(data, graph, seed=0) if data else None  # bad data fails before LaRa runs
    target_classes = _target_classes(task.classes if task else None, data, classes,
                                     graph.output_shape[0])
    ranking_file = ranking or default_ranking_path(model)
    if ranking is None and not ranking_file.is_file():
        proxy = proxy or proxy_task_for(data)
        console().print(f"no LaRa ranking for {model_path.name}: ranking its layers on the "
                        f"proxy task {proxy} (saved to {ranking_file})")
        layer_ranking = run_lara(graph, proxy, LaraSettings(), ranking_file)
    else:
        layer_ranking = load_ranking(model, ranking, graph)
    headed = replace_classifier(graph, target_classes, seed)
    target = get_board(board) if board else None
    if embed is None:
        embed = 64 if target else 256
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup,
                             seed=seed)
    embedded = None
    if task is not None and embed > 0:
        train = stratified_sample(task.y_train, embed, seed)
        test = stratified_sample(task.y_test, min(200, max(1, embed // 4)), seed)
        embedded = EmbeddedData(task.name, task.raw_train[train], task.y_train[train],
                                task.raw_test[test], task.y_test[test], task.mean, task.std)

    def emit(engine_budget: int, folder: Path) -> BudgetPlan:
        plan = plan_budget(headed, layer_ranking.ranking, engine_budget, alpha, KRule(k_rule))
        manifest = BuildManifest(
            model_path=str(model_path.resolve()),
            model_sha256=hashlib.sha256(model_path.read_bytes()).hexdigest(),
            classes=target_classes, budget=engine_budget, alpha=alpha, k_rule=k_rule,
            ranking_path=str((ranking or default_ranking_path(model)).resolve()),
            settings=asdict(settings), data_source=task.name if task else None,
            candidates=list(plan.memory.schedule.candidates), pool_bytes=plan.pool_bytes,
            fixed_bytes=plan.memory.fixed_bytes, parts=plan.memory.parts(),
            board=target.name if target else None,
        )
        write_project(folder, headed, plan, settings, target_classes, graph.metadata, manifest,
                      embedded, board=target)
        return plan

    if budget == AUTO:
        if target is None:
            raise MedyateError("--budget auto needs --board: it sizes the engine to that "
                               "board's RAM")
        budget = auto_budget(measure_room(target, headed, layer_ranking.ranking, emit),
                             say=console().print)
        plan = emit(budget, output)
        build_firmware(output)  # confirms that the whole image fits the board
    else:
        assert isinstance(budget, int)
        if target and budget > target.ram_bytes:
            raise MedyateError(f"budget {format_size(budget)} exceeds {target.name}'s RAM "
                               f"({format_size(target.ram_bytes)})")
        if target and shutil.which(ARM_GCC):
            measure_room(target, headed, layer_ranking.ranking, emit).check(budget)
        elif target:
            console().print(f"note: {ARM_GCC} is not installed, so whether {target.name}'s RAM "
                            "holds this budget with the stack and the application is checked "
                            "only by `medyate-mcu build`")
        plan = emit(budget, output)
    out = console()
    out.print(f"{graph.name}: {target_classes} classes, K = {plan.k} candidate layers, channel "
              f"pool {format_size(plan.pool_bytes)}, engine {format_size(plan.total_bytes)} of "
              f"{format_size(budget)}")
    samples = 0 if embedded is None else len(embedded.train_y)
    following = (f"medyate-mcu build {output}, then "
                 + (f"medyate-mcu simulate {output}" if target.kind == "emulated"
                    else f"medyate-mcu flash {output}")) if target else \
        f"make -C {output} host && {output}/medyate_train"
    if samples == 0:  # nothing embedded: only the serial firmware trains
        following = f"medyate-mcu train {output} --port PORT --data DATA (serial firmware)"
    out.print(f"wrote {output}/ ({samples} embedded training samples"
              f"{' from ' + task.name if task else ''}); next: {following}")


def _target_classes(data_classes: int | None, data: str | None, classes: int | None,
                    model_outputs: int) -> int:
    """The class count: the data's (``--classes`` must agree), else ``--classes``, else the
    model's outputs (at least 2)."""
    if data_classes is not None:
        if classes is not None and classes != data_classes:
            raise MedyateError(f"--classes {classes} contradicts --data {data}, which has "
                               f"{data_classes} classes; drop --classes (the data sets it)")
        return data_classes
    if classes is not None:
        return classes
    if model_outputs < 2:
        raise MedyateError(f"the model's classifier has {model_outputs} output; give --classes "
                           "N (at least 2) or --data")
    return model_outputs
