"""A task's preparation: its data and its LaRa proxy's (loaded by the driver, hashed for the
cell cache), then the LaRa ranking (cached in the output folder) and the int8 calibration (run
where the executor runs it, with pinned threads)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from medyate_mcu.errors import MedyateError
from medyate_mcu.experiments.cells import PreparedTask, SweepConfig, TaskBackbone, pinned_threads
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.lara import LayerRanking, backbone_fingerprint, compute_lara
from medyate_mcu.method.trainer import pretrained_for
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.quant.calibrate import calibrate, dequantized_graph
from medyate_mcu.zoo.tasks import TaskData, load_task, proxy_task_for, stratified_sample

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskInputs:
    """A task's data and its proxy's, and the ranking if the output folder has it."""

    task: str
    data: TaskData
    proxy: TaskData
    ranking: LayerRanking | None  # None: to compute
    ranking_path: Path

    @cached_property
    def data_hash(self) -> str:
        """:func:`data_fingerprint` of the task's data, hashed once for all its cells' keys."""
        return data_fingerprint(self.data)

    @cached_property
    def proxy_hash(self) -> str:
        return data_fingerprint(self.proxy)


def data_fingerprint(data: TaskData) -> str:
    """SHA-256 of a task's name, class names and train/test arrays (what a cell trains on)."""
    digest = hashlib.sha256(json.dumps([data.name, list(data.class_names)]).encode())
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def load_inputs(graph: Graph, config: SweepConfig, panel: Sequence[str], task: str,
                output: Path, threads: int) -> TaskInputs:
    """Load ``task``'s data (seed 0, as `compile`) and its proxy's; the ranking's file name
    holds the backbone, the proxy data, the LaRa settings and the thread count."""
    proxy = load_task(proxy_task_for(task, graph, tuple(panel)), graph,
                      train_per_class=config.train_per_class)
    data = load_task(task, graph, seed=0, train_per_class=config.train_per_class)
    settings = hashlib.sha256(json.dumps([data_fingerprint(proxy), asdict(config.lara),
                                          threads]).encode()).hexdigest()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", proxy.name)  # a user's path: one file name
    path = output / f"lara-{name}-{backbone_fingerprint(graph)[:12]}-{settings[:8]}.json"
    return TaskInputs(task, data, proxy, _cached_ranking(path, graph), path)


def _cached_ranking(path: Path, graph: Graph) -> LayerRanking | None:
    """The ranking kept at ``path``; None if absent or unreadable (warned: recomputed)."""
    if not path.is_file():
        return None
    try:
        return LayerRanking.load(path, graph)
    except MedyateError as error:
        LOG.warning("warning: %s: recomputing the ranking", error)
        path.unlink(missing_ok=True)  # the sweep writes the recomputed one there
        return None


def task_backbones(graph: Graph, data: TaskData, config: SweepConfig
                   ) -> dict[Backbone, TaskBackbone]:
    """Each backbone of ``config`` for ``data``'s task; int8 is calibrated on
    ``config.calibration_samples`` stratified training samples (seed 0, as `compile`)."""
    backbones = {}
    for backbone in config.backbones:
        if backbone is Backbone.INT8:
            picked = stratified_sample(data.y_train, config.calibration_samples, 0)
            quantization = calibrate(graph, data.x_train[picked])
            backbones[backbone] = TaskBackbone(dequantized_graph(graph, quantization),
                                               quantization)
        else:
            backbones[backbone] = TaskBackbone(graph)
    return backbones


def prepare_task(graph: Graph, config: SweepConfig, inputs: TaskInputs,
                 threads: int = 1) -> PreparedTask:
    """The ranking (computed on the proxy if ``inputs`` has none) and the backbones."""
    with pinned_threads(threads):
        ranking = inputs.ranking or compute_lara(graph, inputs.proxy.x_train,
                                                 inputs.proxy.y_train, inputs.proxy.classes,
                                                 inputs.proxy.name, config.lara)
        backbones = task_backbones(graph, inputs.data, config)
    return PreparedTask(graph, inputs.data, ranking, backbones,
                        pretrained_for(graph, inputs.data.class_names))
