"""What the serial-link tests share: the same build's engine trained through ctypes (the
host C the device must equal), the reference network's losses with their bound, and half a
SAMPLE frame (a host interrupted mid-frame)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medyate_mcu.codegen.folder import Project
from medyate_mcu.codegen.project import BuildManifest
from medyate_mcu.device import protocol as p
from medyate_mcu.graph import Graph
from medyate_mcu.graph.reference import ReferenceNet
from medyate_mcu.method.planner import BudgetPlan
from medyate_mcu.method.trainer import TrainSettings, epoch_order
from medyate_mcu.run.engine_lib import EngineLibrary
from medyate_mcu.run.verify import FORWARD_TOLERANCE
from medyate_mcu.toolchain.host import make
from medyate_mcu.zoo.tasks import TaskData, stratified_sample


@dataclass
class HostRun:
    """A build's engine compiled for this machine and trained through ctypes on ``samples``
    training samples of the build's data (decoded from the build's stored samples) in the
    reference order, with what it was built from."""

    manifest: BuildManifest
    graph: Graph
    plan: BudgetPlan
    settings: TrainSettings
    data: TaskData
    stored: np.ndarray  # the samples as the device receives them
    x: np.ndarray  # decoded: what the engine and the reference train on
    y: np.ndarray
    engine: EngineLibrary
    losses: list[float]  # per epoch
    sample_losses: np.ndarray  # per sample, in training order, epoch after epoch


def host_engine_run(build: Path, samples: int, epochs: int) -> HostRun:
    project = Project.open(build)
    manifest = project.manifest
    graph, plan, settings, _ = project.reference()
    data = project.task()
    chosen = stratified_sample(data.y_train, samples, settings.seed)  # as `train --samples`
    stored, x, y = data.stored_train[chosen], data.x_train[chosen], data.y_train[chosen]
    engine = EngineLibrary(make(build, "lib"), x[0].size, manifest.classes)
    engine.init()
    losses, sample_losses = [], []
    for epoch in range(1, epochs + 1):
        for index in epoch_order(len(x), settings.seed, epoch):
            status, loss = engine.train_sample(x[index], int(y[index]))
            assert status == 0
            sample_losses.append(loss)
        engine.end_epoch()
        losses.append(engine.state.last_epoch_loss)
    return HostRun(manifest, graph, plan, settings, data, stored, x, y, engine, losses,
                   np.asarray(sample_losses, np.float32))


def reference_losses(run: HostRun, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference network's per-sample losses at the pre-trained weights, and the bound on
    the engine's difference from them: a loss is logsumexp(z) - z_y, whose gradient in the
    logits z (softmax minus one-hot) has an L1 norm of at most 2, so
    |loss_C - loss_ref| <= 2 max_j |z_C,j - z_ref,j| <= 2 FORWARD_TOLERANCE max_j |z_ref,j|."""
    with torch.no_grad():
        logits = ReferenceNet(run.graph)(torch.from_numpy(run.x[samples]))
        losses = F.cross_entropy(logits, torch.from_numpy(run.y[samples]), reduction="none")
    return losses.numpy(), 2 * FORWARD_TOLERANCE * logits.abs().amax(dim=1).numpy()


def half_a_sample(build: Path) -> bytes:
    data = Project.open(build).task()
    sample = data.stored_train[0]
    frame = p.encode_frame(p.MsgType.SAMPLE, 60, p.sample_payload(sample, 1,
                                                                  data.encoding.format,
                                                                  sample.size))
    return frame[:len(frame) // 2]
