"""Compiling a model into a C project, as a library call: what `medyate-mcu compile` does.

It sits at the toolchain level because a board build is checked with the Cortex-M toolchain:
``--budget auto`` and the refusal of a budget the board cannot hold both measure, once, what
is not the engine in an image built at the smallest feasible budget (:mod:`auto_budget`); the
rest is arithmetic.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medyate_mcu.boards import Board, get_board
from medyate_mcu.codegen.folder import Project, Reference
from medyate_mcu.codegen.project import (
    HEAD_KEPT,
    HEAD_NEW,
    BuildManifest,
    EmbeddedData,
    write_project,
)
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.costs import channel_cost
from medyate_mcu.method.lara import LaraSettings, LayerRanking, compute_lara
from medyate_mcu.method.planner import DEFAULT_ALPHA, KRule, minimum_budget, plan_budget
from medyate_mcu.method.trainer import TrainSettings, pretrained_for, replace_classifier
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.planning.schedule import classifier_size
from medyate_mcu.quant.calibrate import calibrate, dequantized_graph, quantization_report
from medyate_mcu.quant.qdq import load_quantized
from medyate_mcu.quant.scheme import Quantization
from medyate_mcu.toolchain.arm import ARM_GCC, ARM_PACKAGES, build_firmware, require_tool
from medyate_mcu.toolchain.auto_budget import BoardRoom, auto_budget, measure_room
from medyate_mcu.units import format_size
from medyate_mcu.zoo import default_model_path
from medyate_mcu.zoo.tasks import TaskData, load_task, proxy_task_for, stratified_sample

AUTO = "auto"  # CompileOptions.budget: the board's RAM less the rest of the image
DEFAULT_BUDGET = 300 * 1024
DEMO_DATA = "digits"  # what the bundled demo model trains on when no data is given
RANKING_SUFFIX = ".lara.json"
AUTO_BACKBONE = "auto"  # CompileOptions.backbone: int8 when float32 does not fit
DEFAULT_CALIBRATION_SAMPLES = 64
QUANT_REPORT = "quantization.txt"  # the calibration report, in the project folder

Say = Callable[[str], None]
LaraProgress = Callable[[int, int, float], None]  # step, steps, loss
Progress = Callable[[int, int], None]  # done, total


@dataclass(frozen=True)
class CompileOptions:
    """What `compile` takes besides the output folder (the CLI's options, same defaults)."""

    model: Path | None = None  # None: the bundled demo model
    budget: int | str = DEFAULT_BUDGET  # bytes, or AUTO (needs a board)
    board: str | None = None
    ranking: Path | None = None  # default: MODEL.lara.json beside the model
    data: str | None = None  # target task; the bundled model's default: DEMO_DATA
    proxy: str | None = None  # LaRa proxy task when the model has no ranking yet
    classes: int | None = None
    embed: int | None = None  # training samples embedded; default 256, 64 with a board
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.1
    warmup: int = 1
    seed: int = 0
    alpha: float = DEFAULT_ALPHA
    k_rule: str = KRule.CLOSEST.value
    backbone: str = AUTO_BACKBONE  # float32 | int8 | auto (docs/quantization.md)
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    sample_format: str = "stored"  # stored | float32 | int8 (zoo/samples.py)

    @property
    def settings(self) -> TrainSettings:
        return TrainSettings(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                             warmup=self.warmup, seed=self.seed)


def model_path(model: Path | None) -> Path:
    """``model``, or the bundled demo model."""
    if model is not None:
        return model
    path = default_model_path()
    if not path.is_file():
        raise MedyateError(f"the bundled demo model is missing ({path}); give a MODEL path")
    return path


def default_ranking_path(model: Path | None) -> Path:
    """Where a model's LaRa ranking lives: MODEL.lara.json beside it."""
    path = model_path(model)
    return path.with_name(path.name.removesuffix(".onnx") + RANKING_SUFFIX)


def target_classes(data_classes: int | None, data: str | None, classes: int | None,
                   model_outputs: int) -> int:
    """The class count: the data's (``classes`` must agree), else ``classes``, else the
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


def compile_project(options: CompileOptions, output: Path, say: Say = print,
                    lara_progress: LaraProgress | None = None,
                    calibration_progress: Progress | None = None) -> Project:
    """Compile ``options.model`` into a C project in ``output``; the written project.

    ``say`` gets the lines worth telling (a LaRa run, the backbone chosen and its calibration,
    the --budget auto account, a board check skipped); ``lara_progress`` follows LaRa when the
    model has no ranking yet, ``calibration_progress`` the int8 calibration."""
    source = model_path(options.model)
    graph, file_quantization = load_quantized(source)
    data = options.data if options.data is not None or options.model is not None else DEMO_DATA
    task = load_task(data, graph, seed=0).in_format(options.sample_format) if data \
        else None  # bad data fails before LaRa runs
    classes = target_classes(task.classes if task else None, data, options.classes,
                             graph.output_shape[0])
    ranking_file = options.ranking or default_ranking_path(options.model)
    ranking = _ranking(options, graph, data, ranking_file, say, lara_progress)
    board = get_board(options.board) if options.board else None
    backbone = choose_backbone(options, graph, ranking, classes, board, file_quantization, say)
    quantization, report = None, []
    if backbone is Backbone.INT8:
        samples = calibration_samples(task, options)
        quantization = file_quantization or _calibrate(graph, samples, task, say,
                                                       calibration_progress)
        report = quantization_lines(graph, quantization, samples)
        graph = dequantized_graph(graph, quantization)
    keep = task is not None and pretrained_for(graph, task.class_names)
    if keep:
        say(f"the data's {classes} classes are the ones {graph.name} was pre-trained on: "
            "fine-tuning starts from its own classifier")
    headed = replace_classifier(graph, classes, options.seed, keep)
    embed = options.embed if options.embed is not None else \
        default_embed(board, headed, backbone, say,
                      task.encoding.format.bytes if task else 1)
    embedded = _embedded(task, embed, options.seed)

    def write(budget: int, folder: Path) -> Project:
        plan = plan_budget(headed, ranking.ranking, budget, options.alpha, KRule(options.k_rule),
                           backbone)
        settings = options.settings
        manifest = BuildManifest(
            model_path=str(source.resolve()),
            model_sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
            classes=classes, budget=budget, alpha=options.alpha, k_rule=options.k_rule,
            ranking_path=str(ranking_file.resolve()),
            settings=asdict(settings), data_source=task.name if task else None,
            candidates=list(plan.memory.schedule.candidates), pool_bytes=plan.pool_bytes,
            fixed_bytes=plan.memory.fixed_bytes, parts=plan.memory.parts(),
            board=board.name if board else None, backbone=backbone.value,
            samples=task.encoding.record() if task else None, head=HEAD_KEPT if keep else HEAD_NEW,
            sample_format=options.sample_format,
        )
        write_project(folder, headed, plan, settings, classes, graph.metadata, manifest,
                      embedded, board=board, quantization=quantization)
        if report:
            (folder / QUANT_REPORT).write_text("\n".join(report) + "\n")
        opened = Project.open(folder)
        return Project(folder, opened.manifest, opened.manifest_text,
                       Reference(headed, plan, settings, quantization),
                       0 if embedded is None else len(embedded.train_y))

    budget = options.budget
    if budget == AUTO:
        if board is None:
            raise MedyateError("--budget auto needs --board: it sizes the engine to that "
                               "board's RAM")
        budget = auto_budget(_board_room(board, headed, ranking, write, backbone), say=say)
        project = write(budget, output)
        build_firmware(project)  # confirms that the whole image fits the board
        return project
    assert isinstance(budget, int)
    if board and budget > board.ram_bytes:
        raise MedyateError(f"budget {format_size(budget)} exceeds {board.name}'s RAM "
                           f"({format_size(board.ram_bytes)})")
    if board and shutil.which(ARM_GCC):
        _board_room(board, headed, ranking, write, backbone).check(budget)
    elif board:
        say(f"note: {ARM_GCC} is not installed, so whether {board.name}'s RAM holds this "
            "budget with the stack and the application is checked only by `medyate-mcu build`")
    return write(budget, output)


FLASH_RESERVE = 128 * 1024  # code, constants and shapes besides the weights, with margin


def default_embed(board: Board | None, graph: Graph, backbone: Backbone, say: Say,
                  sample_bytes: int = 1) -> int:
    """Training samples embedded when --embed-data is not given: 256 on the host, 64 for a
    board, fewer when the board's flash cannot hold them beside the weights (one byte a
    parameter in int8, four in float32 and for the classifier; each sample ``sample_bytes`` a
    value, and a quarter more for the test samples)."""
    if board is None:
        return 256
    head = classifier_size(graph)  # float32 in either backbone
    weights = (graph.parameter_count() - head) * (1 if backbone is Backbone.INT8 else 4) \
        + 4 * head
    sample = math.prod(graph.input_shape) * sample_bytes
    fits = max(0, (board.flash_bytes - weights - FLASH_RESERVE) * 4 // (5 * sample))
    if fits < 64:
        say(f"embedding {fits} training samples (not 64): {board.name}'s "
            f"{format_size(board.flash_bytes)} of flash holds no more beside "
            f"{format_size(weights)} of weights; train on more over the serial link")
    return min(64, fits)


def choose_backbone(options: CompileOptions, graph: Graph, ranking: LayerRanking, classes: int,
                    board: Board | None, file_quantization: Quantization | None,
                    say: Say) -> Backbone:
    """``--backbone``: as given, or (auto) int8 when float32 does not fit: its smallest engine
    exceeds the budget (or the board's RAM), or its weights the board's flash."""
    if options.backbone != AUTO_BACKBONE:
        return Backbone(options.backbone)
    headed = replace_classifier(graph, classes, options.seed)
    costs = [channel_cost(headed, headed.node(name)) for name in ranking.ranking]
    smallest, _ = minimum_budget(headed, ranking.ranking, costs, Backbone.FLOAT32)
    ram = options.budget if isinstance(options.budget, int) else \
        board.ram_bytes if board else None
    flash = 4 * headed.parameter_count()
    reasons = []
    if ram is not None and smallest > ram:
        reasons.append(f"its smallest engine needs {format_size(smallest)} of RAM, more than "
                       f"{format_size(ram)}")
    if board is not None and flash > board.flash_bytes // 2:
        reasons.append(f"its weights take {format_size(flash)} of flash, more than half of "
                       f"{board.name}'s {format_size(board.flash_bytes)}")
    if not reasons:
        return Backbone.FLOAT32
    if file_quantization is None and options.data is None and options.model is not None:
        raise MedyateError(f"a float32 backbone does not fit ({'; '.join(reasons)}), and an int8 "
                           "one needs --data to calibrate on (or a QDQ-quantized model)")
    say(f"backbone: int8, since in float32 {'; '.join(reasons)}")
    return Backbone.INT8


def calibration_samples(task: TaskData | None, options: CompileOptions) -> np.ndarray | None:
    """``--calibration-samples`` training samples of ``task``, stratified with the build's
    seed: what calibration and its report run on."""
    if task is None:
        return None
    return task.x_train[stratified_sample(task.y_train, options.calibration_samples,
                                          options.seed)]


def _calibrate(graph: Graph, samples: np.ndarray | None, task: TaskData | None, say: Say,
               progress: Progress | None) -> Quantization:
    """The int8 quantization of ``graph`` calibrated on ``samples`` of ``task``
    (docs/quantization.md §6)."""
    if samples is None or task is None:
        raise MedyateError("--backbone int8 calibrates on the task's data: give --data (or a "
                           "model quantized as QDQ ONNX)")
    say(f"int8 backbone: calibrating on {len(samples)} samples of {task.name}")
    return calibrate(graph, samples, progress)


def quantization_lines(graph: Graph, quantization: Quantization,
                       samples: np.ndarray | None) -> list[str]:
    """The calibration report (per-layer scales, the int8-vs-float error) on the calibration
    ``samples``; without data, only the scales' source."""
    if samples is None:
        return [f"int8 backbone: {quantization.source}"]
    try:
        return quantization_report(graph, quantization, samples).lines()
    except MedyateError as exc:  # an op with no int8 kernel: it stays in the float region
        return [f"int8 backbone: {quantization.source}; the whole backbone cannot run in int8 "
                f"to measure its error ({exc})"]


def _ranking(options: CompileOptions, graph: Graph, data: str | None, path: Path, say: Say,
             progress: LaraProgress | None) -> LayerRanking:
    """The ranking given or beside the model; without either, LaRa on the proxy task (saved
    beside the model)."""
    if options.ranking is not None or path.is_file():
        if not path.is_file():
            raise MedyateError(f"no LaRa ranking at {path}; pass --ranking")
        return LayerRanking.load(path, graph)
    proxy = options.proxy or proxy_task_for(data, graph)
    say(f"no LaRa ranking for {model_path(options.model).name}: ranking its layers on the proxy "
        f"task {proxy} (saved to {path})")
    return rank_layers(graph, proxy, LaraSettings(), path, progress)


def rank_layers(graph: Graph, proxy: str, settings: LaraSettings, path: Path,
                progress: LaraProgress | None = None) -> LayerRanking:
    """LaRa on the ``proxy`` task; the ranking, saved to ``path``."""
    task = load_task(proxy, graph, seed=settings.seed)
    ranking = compute_lara(graph, task.x_train, task.y_train, task.classes, proxy, settings,
                           progress)
    try:
        ranking.save(path)
    except OSError as exc:
        raise MedyateError(f"cannot write the LaRa ranking to {path}: {exc.strerror}") from None
    return ranking


def _embedded(task: TaskData | None, embed: int, seed: int) -> EmbeddedData | None:
    """``embed`` training samples of ``task`` (and a quarter as many test samples, at most 200),
    stratified."""
    if task is None or embed == 0:
        return None
    train = stratified_sample(task.y_train, embed, seed)
    test = stratified_sample(task.y_test, min(200, max(1, embed // 4)), seed)
    return EmbeddedData(task.name, task.stored_train[train], task.y_train[train],
                        task.stored_test[test], task.y_test[test], task.encoding)


def _board_room(board: Board, graph: Graph, ranking: LayerRanking,
                write: Callable[[int, Path], Project], backbone: Backbone) -> BoardRoom:
    """What ``board``'s RAM leaves for the engine, measured on a probe project written at the
    smallest feasible budget in a temporary folder."""
    require_tool(ARM_GCC, ARM_PACKAGES)
    costs = [channel_cost(graph, graph.node(name)) for name in ranking.ranking]
    smallest, _ = minimum_budget(graph, ranking.ranking, costs, backbone)
    scratch = Path(tempfile.mkdtemp(prefix="medyate-room-"))
    try:
        return measure_room(board, write(smallest, scratch / "probe"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
