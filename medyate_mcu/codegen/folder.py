"""A compiled project, opened from its folder: the one reader of its manifest.

``Project.open(folder)`` loads and validates ``medyate_build.json`` once; the project then gives
the board it was compiled for, where ``make arm`` puts each firmware ELF, and the graph, plan and
training settings `compile` used, recomputed and checked against the build. The toolchain, `run`
and `device` layers take a ``Project`` instead of reading the folder themselves.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

from medyate_mcu.boards import Board, get_board
from medyate_mcu.codegen.project import HEAD_KEPT, MANIFEST, QUANTIZATION_FILE, BuildManifest
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.lara import LayerRanking
from medyate_mcu.method.planner import BudgetPlan, KRule, plan_budget
from medyate_mcu.method.trainer import TrainSettings, replace_classifier
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.quant.calibrate import dequantized_graph
from medyate_mcu.quant.qdq import load_quantized
from medyate_mcu.quant.scheme import Quantization
from medyate_mcu.zoo.samples import SampleEncoding
from medyate_mcu.zoo.tasks import TaskData, load_task

ARM_DIR = "arm"  # the Makefile's folder for Cortex-M objects and ELFs (Makefile.j2)


class Reference(NamedTuple):
    """What `compile` planned: the graph with the target's classifier (with an int8 backbone:
    the dequantized graph), the plan, the settings, and an int8 backbone's quantization."""

    graph: Graph
    plan: BudgetPlan
    settings: TrainSettings
    quantization: Quantization | None = None


class Project:
    """A `medyate-mcu compile` output folder and its validated manifest."""

    def __init__(self, folder: Path, manifest: BuildManifest, manifest_text: str,
                 reference: Reference | None = None,
                 embedded_samples: int | None = None) -> None:
        self.folder = folder
        self.manifest = manifest
        self.manifest_text = manifest_text  # the exact bytes READY's build hash is taken of
        self._reference = reference
        self.embedded_samples = embedded_samples  # known when just compiled, else None

    @classmethod
    def open(cls, folder: Path) -> Project:
        path = folder / MANIFEST
        if not path.is_file():
            raise MedyateError(f"{folder} has no {MANIFEST}: is it a `medyate-mcu compile` "
                               "output?")
        text = path.read_text()
        try:
            manifest = BuildManifest(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise MedyateError(f"{path} is damaged ({exc}); compile again") from None
        return cls(folder, manifest, text)

    @property
    def board(self) -> Board | None:
        """The board of `compile --board`; None for a host-only build."""
        return get_board(self.manifest.board) if self.manifest.board else None

    def require_board(self) -> Board:
        board = self.board
        if board is None:
            raise MedyateError(f"{self.folder} was compiled without --board; compile again with "
                               "--board NAME (see `medyate-mcu boards`)")
        return board

    def firmware_path(self, app: str = "train") -> Path:
        """Where ``make arm FIRMWARE_APP=<app>`` puts the ELF."""
        return firmware_path(self.folder, app)

    def task(self, source: str | None = None) -> TaskData:
        """The build's data set (or ``source``, e.g. `train --data`) with its samples stored as
        the build stores them: what the device decodes is what the reference trains on."""
        manifest = self.manifest
        source = source or manifest.data_source
        if source is None:
            raise MedyateError("the build names no data set; give --data")
        task = load_task(source, self.reference().graph, seed=0, num_classes=manifest.classes)
        if source == manifest.data_source:
            task = task.in_format(manifest.sample_format)
            if manifest.encoding is not None and task.encoding != manifest.encoding:
                raise MedyateError(f"data {source!r} changed since the build (its samples now "
                                   f"decode as {task.encoding.describe()}); compile again")
        encoding = manifest.encoding or SampleEncoding.identity(task.encoding.channels)
        return task.stored_as(encoding)

    def reference(self) -> Reference:
        """The graph, plan and settings `compile` used, recomputed (once) and checked against
        the build."""
        if self._reference is None:
            self._reference = rebuild_reference(self.manifest, self.folder)
        return self._reference


def firmware_path(folder: Path, app: str = "train") -> Path:
    """Where ``make arm FIRMWARE_APP=<app>`` puts the ELF in the project ``folder``."""
    return folder / ARM_DIR / f"medyate_{app}.elf"


def rebuild_reference(manifest: BuildManifest, folder: Path) -> Reference:
    """The graph, plan and settings of ``manifest``'s build in ``folder``, recomputed; refused
    if the model changed or the compiler now plans differently."""
    model = Path(manifest.model_path)
    if not model.is_file():
        raise MedyateError(f"the build's model {model} is gone; compile again")
    if hashlib.sha256(model.read_bytes()).hexdigest() != manifest.model_sha256:
        raise MedyateError(f"{model} changed since the build; compile again")
    graph, _ = load_quantized(model)
    ranking = LayerRanking.load(Path(manifest.ranking_path), graph)
    settings = TrainSettings(**manifest.settings)
    backbone = Backbone(manifest.backbone)
    quantization = None
    if backbone is Backbone.INT8:
        path = folder / QUANTIZATION_FILE
        try:
            quantization = Quantization.load(path)
        except (OSError, ValueError, KeyError) as exc:
            raise MedyateError(f"{path} is missing or damaged ({exc}); compile again") from None
        graph = dequantized_graph(graph, quantization)
    headed = replace_classifier(graph, manifest.classes, settings.seed,
                                keep=manifest.head == HEAD_KEPT)
    plan = plan_budget(headed, ranking.ranking, manifest.budget, manifest.alpha,
                       KRule(manifest.k_rule), backbone)
    if list(plan.memory.schedule.candidates) != manifest.candidates \
            or plan.pool_bytes != manifest.pool_bytes:
        raise MedyateError("the build does not match what the compiler plans now; compile again")
    return Reference(headed, plan, settings, quantization)
