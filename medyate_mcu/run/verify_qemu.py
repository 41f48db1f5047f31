"""`verify --qemu`: the Cortex-M build of a project, run under QEMU, against the host reference.

The verification firmware (qemu_verify.c, generated) reads the samples of every epoch, in the
epoch's order (`epoch_order`), from a file the host wrote, and writes a snapshot of the engine
after mdy_init and after each epoch (candidate weights, classifier, norms, the next selection,
the epoch's loss and correct count, cycle counts, stack high-water mark) through semihosting
files. Each epoch is then replayed in the host reference from the firmware's previous snapshot,
as the host verification does with the ctypes engine: same selection, weights, norms, loss and
accuracy within the host tolerances.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medyate_mcu.errors import MedyateError
from medyate_mcu.method.trainer import SelectionRule, SparseTrainer, epoch_order
from medyate_mcu.run.verify import (
    BOUNDARY,
    EXPLAINED_TOLERANCE,
    LOSS_TOLERANCE,
    WEIGHT_TOLERANCE,
    Check,
    boundary_distance,
    load_manifest,
    memory_checks,
    rebuild_reference,
    relative_error,
)
from medyate_mcu.zoo.tasks import load_task

NORMS_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Snapshot:
    """The engine's trainable state at an epoch boundary: after mdy_init (epoch 0) or after
    mdy_end_epoch (that epoch's statistics, and the selection of the next epoch)."""

    weights: dict[str, np.ndarray]  # candidate layer -> its RAM weights, flat
    classifier: np.ndarray  # weights then bias
    norms: np.ndarray
    selected: list[int]
    loss: float
    correct: int


def _classifier(reference: SparseTrainer) -> np.ndarray:
    key = reference.net.keys[reference.classifier]
    return np.concatenate([reference.net.weights[key].detach().numpy().reshape(-1),
                           reference.net.biases[key].detach().numpy().reshape(-1)])


def load_state(reference: SparseTrainer, snapshot: Snapshot) -> None:
    """Start the reference from a snapshot's weights and norm vector."""
    with torch.no_grad():
        for name, values in snapshot.weights.items():
            weight = reference.net.weights[reference.net.keys[name]]
            weight.copy_(torch.from_numpy(values.copy()).reshape(weight.shape))
        key = reference.net.keys[reference.classifier]
        weight, bias = reference.net.weights[key], reference.net.biases[key]
        weight.copy_(torch.from_numpy(snapshot.classifier[:weight.numel()].copy())
                     .reshape(weight.shape))
        bias.copy_(torch.from_numpy(snapshot.classifier[weight.numel():].copy()))
    if reference.table.size:
        reference.norms = snapshot.norms.copy()


def epoch_checks(reference: SparseTrainer, before: Snapshot, after: Snapshot, x: np.ndarray,
                 y: np.ndarray, epoch: int) -> list[Check]:
    """One epoch: the reference starts from `before`, selects with the Python sampler fed the C
    norms, trains the epoch on the same samples in the same order and must end at `after`.

    The firmware runs whole epochs, so state cannot be shared per step as on the host: a
    ReLU/ReLU6 mask flipped by rounding (a pre-activation within ``BOUNDARY`` of its threshold)
    compounds over the epoch. An epoch over tolerance passes only when such a pre-activation
    exists on its samples (at the start or end state), and never beyond ``EXPLAINED_TOLERANCE``.
    """
    load_state(reference, before)
    checks = [Check(f"epoch {epoch} selection", f"{len(before.selected)} channels", "identical",
                    sorted(before.selected) == sorted(reference.select(epoch)))]
    start_distance = boundary_distance(reference, x)
    record = reference.train_epoch(x, y, epoch)
    boundary = min(start_distance, boundary_distance(reference, x)) <= BOUNDARY

    def within(error: float, tolerance: float) -> bool:
        return error <= tolerance or (boundary and error <= EXPLAINED_TOLERANCE)

    note = " (ReLU boundary in this epoch)" if boundary else ""
    errors = [relative_error(values, reference.net.weights[reference.net.keys[name]].detach()
                             .numpy().reshape(-1)) for name, values in after.weights.items()]
    errors.append(relative_error(after.classifier, _classifier(reference)))
    checks.append(Check(f"epoch {epoch} weights", f"{max(errors):.2e}{note}",
                        f"<= {WEIGHT_TOLERANCE:.0e}", within(max(errors), WEIGHT_TOLERANCE)))
    norms_error = relative_error(after.norms, reference.norms) if reference.table.size else 0.0
    checks.append(Check(f"epoch {epoch} norms", f"{norms_error:.2e}",
                        f"<= {NORMS_TOLERANCE:.0e}", within(norms_error, NORMS_TOLERANCE)))
    loss_error = abs(after.loss - record.loss) / max(abs(record.loss), 1e-12)
    checks.append(Check(f"epoch {epoch} loss C {after.loss:.4f} / ref {record.loss:.4f}",
                        f"{loss_error:.2e}", f"<= {LOSS_TOLERANCE:.0e}",
                        within(loss_error, LOSS_TOLERANCE)))
    gap = abs(after.correct - round(record.train_accuracy * len(x)))
    checks.append(Check(f"epoch {epoch} accuracy C {after.correct / len(x):.3f} / ref "
                        f"{record.train_accuracy:.3f}", f"{gap} sample(s)", "<= 1 sample",
                        gap <= 1))
    return checks


VERIFY_MAGIC, SNAPSHOT_MAGIC, FILE_VERSION = 0x5659444D, 0x5359444D, 1  # qemu_verify.c.j2
SNAPSHOT_HEADER_WORDS = 16


@dataclass(frozen=True)
class QemuFigures:
    """What the QEMU run measured besides the state: per training step and the stack."""

    steps: int
    instructions_mean: float
    instructions_min: float
    instructions_max: float
    stack_used: int  # bytes of the reserved stack ever written (painted at reset)
    stack_reserved: int


def write_verify_input(path: Path, x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> None:
    """mdy_verify.in: the header, then each epoch's samples in the epoch's order."""
    header = np.array([VERIFY_MAGIC, FILE_VERSION, epochs, len(x), x[0].size], np.uint32)
    with path.open("wb") as handle:
        handle.write(header.tobytes())
        for epoch in range(1, epochs + 1):
            for index in epoch_order(len(x), seed, epoch):
                handle.write(np.int32(y[index]).tobytes())
                handle.write(np.ascontiguousarray(x[index], np.float32).tobytes())


def read_snapshot(path: Path, weight_sizes: dict[str, int], classifier_size: int,
                  channels: int) -> tuple[Snapshot, np.ndarray]:
    """A snapshot file the verification firmware wrote, and its header words."""
    if not path.is_file():
        raise MedyateError(f"the firmware wrote no {path.name}")
    raw = path.read_bytes()
    floats = sum(weight_sizes.values()) + classifier_size + channels
    expected = 4 * SNAPSHOT_HEADER_WORDS + 4 * floats + 2 * channels
    header = np.frombuffer(raw[:4 * SNAPSHOT_HEADER_WORDS], np.uint32)
    if len(raw) != expected or header[0] != SNAPSHOT_MAGIC or header[1] != FILE_VERSION:
        raise MedyateError(f"{path.name}: {len(raw)} bytes, expected {expected} with a "
                           "snapshot header: firmware and host disagree; build again")
    offset = 4 * SNAPSHOT_HEADER_WORDS
    values = np.frombuffer(raw[offset:offset + 4 * floats], np.float32)
    weights, at = {}, 0
    for name, size in weight_sizes.items():
        weights[name] = values[at:at + size].copy()
        at += size
    classifier = values[at:at + classifier_size].copy()
    norms = values[at + classifier_size:].copy()
    count = int(header[3])
    selected = np.frombuffer(raw[offset + 4 * floats:], np.uint16)[:count].astype(int).tolist()
    loss = float(np.array([header[4]], np.uint32).view(np.float32)[0])
    return Snapshot(weights, classifier, norms, sorted(selected), loss, int(header[5])), header


def verify_qemu(build_dir: Path, epochs: int | None = None, samples: int = 96,
                timeout: float = 600.0, on_epoch=None) -> tuple[list[Check], QemuFigures]:
    """Build the verification firmware for the build's emulated board, run it under QEMU on
    the same samples as the host verification, and compare every epoch with the reference
    from the firmware's previous snapshot, as `verify_build` does with the host engine."""
    from medyate_mcu.build.arm import build_firmware, project_board
    from medyate_mcu.run.qemu import instructions, run_qemu

    manifest = load_manifest(build_dir)
    _, board = project_board(build_dir)
    if board.kind != "emulated":
        raise MedyateError(f"{board.name} is a real board: verify --qemu needs a build for an "
                           "emulated board (compile with --board qemu-mps2-an386, "
                           "qemu-mps2-an500 or qemu-netduinoplus2)")
    graph, plan, settings = rebuild_reference(manifest)
    if manifest.data_source is None:
        raise MedyateError("the build embeds no data set; compile with --data to verify")
    epochs = epochs or settings.epochs
    if epochs > settings.epochs:
        raise MedyateError(f"the build trains {settings.epochs} epochs; --epochs {epochs} is "
                           "more")
    data = load_task(manifest.data_source, graph, seed=0)
    x, y = data.x_train[:samples], data.y_train[:samples]
    image = build_firmware(build_dir, "verify")
    checks = memory_checks(image, plan)
    candidates = list(plan.memory.schedule.candidates)
    weight_sizes = {name: graph.node(name).params["weight"].size for name in candidates}
    reference = SparseTrainer(graph, candidates, plan.pool_bytes,
                              SelectionRule(resample=True, weighted=True), settings)
    channels = reference.table.size
    head = graph.producer(graph.output)
    assert head is not None
    classifier_size = head.params["weight"].size + head.params["bias"].size
    with tempfile.TemporaryDirectory(prefix="medyate-qemu-") as folder:
        work = Path(folder)
        write_verify_input(work / "mdy_verify.in", x, y, settings.seed, epochs)
        run = run_qemu(board, image, cwd=work, timeout=timeout)
        if run.fault:
            raise MedyateError(f"the verification firmware hard-faulted on "
                               f"{board.qemu_machine}: {' '.join(run.fault.split())}")
        if run.status != 0:
            last = run.output.strip().splitlines()[-1:] or ["(no output)"]
            raise MedyateError(f"the verification firmware exited with status {run.status}: "
                               f"{last[0]}")
        snapshots = [read_snapshot(work / f"mdy_snapshot_{epoch}.bin", weight_sizes,
                                   classifier_size, channels)
                     for epoch in range(epochs + 1)]
    for epoch in range(1, epochs + 1):
        checks.extend(epoch_checks(reference, snapshots[epoch - 1][0], snapshots[epoch][0], x,
                                   y, epoch))
        if on_epoch:
            on_epoch(epoch)
    header = snapshots[-1][1]
    steps = int(header[6])
    total = int(header[7]) | int(header[8]) << 32
    fastest = int(header[9]) | int(header[10]) << 32
    slowest = int(header[11]) | int(header[12]) << 32
    reserved, untouched = int(header[14]), int(header[13])
    figures = QemuFigures(steps, instructions(total / max(steps, 1), board),
                          instructions(fastest, board), instructions(slowest, board),
                          reserved - untouched, reserved)
    checks.append(Check("stack used under QEMU (painted at reset)", f"{reserved - untouched} B",
                        f"<= {reserved} B reserved", untouched > 0))
    return checks, figures
