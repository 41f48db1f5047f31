"""Check a generated engine, built for the host, against the host reference trainer.

Checks (each a row of the report):
- the image's RAM symbols have exactly the sizes the compiler planned, within the budget;
- the forward pass (logits) matches the reference forward pass;
- one sample's gradients (selected slices, classifier) match the reference's sparse gradients;
- each epoch, from a shared starting state (the C engine's weights and norms copied into the
  reference): the same channel selection (the Python sampler fed the C norm vector), the same
  weights, norms, loss and accuracy after the epoch, within tolerance.
The C engine itself is never given the reference's state: its run is an independent full run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from medyate_mcu.codegen.folder import Project
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.planner import BudgetPlan
from medyate_mcu.method.sampler import channel_weights
from medyate_mcu.method.trainer import (
    SelectionRule,
    SparseTrainer,
    selected_channel_gradients,
)
from medyate_mcu.planning.memory import linked_bytes, measured_parts
from medyate_mcu.planning.schedule import classifier_size
from medyate_mcu.run.decisions import (
    UNIT_ROUNDOFF,
    DecisionComparison,
    DecisionRecorder,
    compare_decisions,
)
from medyate_mcu.run.engine_lib import EngineLibrary
from medyate_mcu.toolchain.host import make, symbol_sizes
from medyate_mcu.zoo.tasks import TaskData

# Tolerances, derived and measured in docs/verification.md. Relative errors of float32 results
# computed in different summation orders; the measured clean maxima are 10-20x below each.
GRADIENT_TOLERANCE = 5e-5  # gradients and norms: max |C - ref| / max |ref|, per tensor
WEIGHT_TOLERANCE = GRADIENT_TOLERANCE  # one step's update beyond its final roundings, relative
FORWARD_TOLERANCE = 1e-5  # logits: max |C - ref| / max |ref|
LOSS_TOLERANCE = 1e-5  # epoch mean loss, relative


@dataclass(frozen=True)
class Check:
    name: str
    measured: str
    limit: str
    ok: bool


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    scale = max(float(np.abs(reference).max()), 1e-12)
    return float(np.abs(np.asarray(ours) - np.asarray(reference)).max()) / scale


def memory_checks(library: Path, plan: BudgetPlan) -> list[Check]:
    """The library's engine RAM symbols against the plan's (planning/memory.py)."""
    sizes = symbol_sizes(library)
    expected = plan.memory.symbols(plan.pool_bytes)
    checks = [Check(f"RAM symbol {name}", f"{sizes.get(name, 'missing')} B", f"{size} B",
                    sizes.get(name) == size) for name, size in expected.items()]
    weights = measured_parts(sizes)["candidate_weights"]
    checks.append(Check("RAM candidate weights", f"{weights} B",
                        f"{plan.memory.candidate_weights} B",
                        weights == plan.memory.candidate_weights))
    total = linked_bytes(sizes.values())
    checks.append(Check("engine RAM (all mdy_ symbols)", f"{total} B", f"<= {plan.budget} B",
                        total <= plan.budget))
    return checks


class VerificationData(NamedTuple):
    epochs: int
    task: TaskData
    x: np.ndarray  # the training samples compared, in the build's data set's order
    y: np.ndarray


def verification_data(project: Project, epochs: int | None, samples: int) -> VerificationData:
    """The epochs to compare (default: the build's whole run; more is refused) and ``samples``
    training samples of the build's data set, drawn stratified by class with the build's seed
    (as `train --samples` draws them)."""
    data_source = project.manifest.data_source
    settings = project.reference().settings
    if data_source is None:
        raise MedyateError("the build embeds no data set; compile with --data to verify")
    epochs = epochs or settings.epochs
    if epochs > settings.epochs:
        raise MedyateError(f"the build trains {settings.epochs} epoch(s); --epochs {epochs} is "
                           "more")
    task = project.task()
    return VerificationData(epochs, task, *task.train_subset(samples, settings.seed))


def verify_build(project: Project, epochs: int | None = None, samples: int = 96,
                 on_epoch=None, data: VerificationData | None = None) -> list[Check]:
    """Build ``project`` for the host and run every check; the report rows. ``data``: the
    samples to compare on, instead of the build's data set's (a build without one)."""
    manifest = project.manifest
    graph, plan, settings, quantization = project.reference()
    epochs, data, x, y = data or verification_data(project, epochs, samples)
    library = make(project.folder, "lib")
    checks = memory_checks(library, plan)
    engine = EngineLibrary(library, x[0].size, manifest.classes)
    engine.init()
    schedule = plan.memory.schedule
    candidates = list(schedule.candidates)
    reference = SparseTrainer(graph, candidates, plan.pool_bytes,
                              SelectionRule(resample=True, weighted=True), settings,
                              quantization)
    if reference.int8 is not None:
        assert reference.int8.nodes == plan.memory.int8_nodes, "two int8 regions"
    checks.append(_forward_check(engine, reference, data.x_test[:8]))
    recorder = DecisionRecorder(engine, plan.memory)
    if settings.batch_size > 1:
        checks.append(_gradient_check(engine, recorder, reference, plan, x, y))
        engine.init()
    weight_sizes = {name: graph.node(name).params["weight"].size for name in candidates}
    checks.append(_initial_state_check(engine, reference, weight_sizes))
    for epoch in range(1, epochs + 1):
        _copy_state(engine, reference, weight_sizes)
        checks.append(_sampler_weights_check(engine, reference, epoch))
        c_selection = sorted(engine.selected())
        h_selection = sorted(reference.select(epoch))
        checks.append(Check(f"epoch {epoch} selection", f"{len(c_selection)} channels",
                            "identical", c_selection == h_selection))
        steps = _StepComparison(engine, recorder, reference, weight_sizes, x, y)
        record = reference.train_epoch(x, y, epoch, steps.before, steps.after)
        checks.extend(steps.checks(epoch))
        norms_error = relative_error(engine.array("mdy_norms", np.float32,
                                                  max(reference.table.size, 1))[
                                         :reference.table.size], reference.norms) \
            if reference.table.size else 0.0
        checks.append(Check(f"epoch {epoch} norms", f"{norms_error:.2e}",
                            f"<= {GRADIENT_TOLERANCE:.0e}", norms_error <= GRADIENT_TOLERANCE))
        c_loss, c_correct = engine.state.last_epoch_loss, engine.state.last_epoch_correct
        loss_error = abs(c_loss - record.loss) / max(abs(record.loss), 1e-12)
        checks.append(Check(f"epoch {epoch} loss C {c_loss:.4f} / ref {record.loss:.4f}",
                            f"{loss_error:.2e}", f"<= {LOSS_TOLERANCE:.0e}",
                            loss_error <= LOSS_TOLERANCE))
        accuracy_gap = abs(c_correct - round(record.train_accuracy * len(x)))
        checks.append(Check(f"epoch {epoch} accuracy C {c_correct / len(x):.3f} / ref "
                            f"{record.train_accuracy:.3f}", f"{accuracy_gap} sample(s)",
                            "<= 1 sample", accuracy_gap <= 1))
        if on_epoch:
            on_epoch(epoch)
    return checks


class _StepComparison:
    """Step-by-step comparison within an epoch: before each mini-batch the reference takes the
    C engine's weights; both take the step; the updated weights are compared.

    The C engine's activation decisions (ReLU/ReLU6 masks, max-pool argmax) are recorded per
    sample. Where they differ from the reference's, each differing decision must lie within the
    float32 rounding bound of its threshold, and the reference then takes the step with the C
    engine's decisions forced; either way the step must match within ``WEIGHT_TOLERANCE``.
    Nothing else is excused (docs/verification.md).
    """

    def __init__(self, engine: EngineLibrary, recorder: DecisionRecorder,
                 reference: SparseTrainer, sizes: dict[str, int], x: np.ndarray,
                 y: np.ndarray) -> None:
        self.engine, self.recorder, self.reference, self.sizes = engine, recorder, reference, sizes
        self.x, self.y = x, y
        self.total_steps = -(-len(x) // reference.settings.batch_size)
        self.done = 0
        self.errors: list[float] = []
        self.start: dict[str, np.ndarray] = {}
        self.flips = self.unexplained = self.forced_steps = 0
        self.closest = 0.0
        self.int8_compared = 0  # int8 tensors of the C engine held to the integer reference
        self.int8_differ: list[str] = []

    def before(self, batch: list[int]) -> None:
        _copy_weights(self.engine, self.reference, self.sizes)
        self.start = _trainable(self.engine, self.reference, self.sizes)
        found = _train_recorded(self.engine, self.recorder, self.reference, self.x, self.y,
                                batch)
        self.flips += found.flips
        self.unexplained += found.unexplained
        self.closest = max(self.closest, found.closest)
        self.forced_steps += found.flips > 0
        self._compare_int8(batch)

    def _compare_int8(self, batch: list[int]) -> None:
        """The C engine's int8 outputs of this batch against the numpy integer reference's,
        every element (docs/quantization.md §9)."""
        prefix = self.reference.int8
        if prefix is None:
            return
        for index, recorded in zip(batch, self.recorder.last_int8, strict=True):
            expected = prefix.int8_values(self.x[index])
            for tensor, ours in recorded.items():
                self.int8_compared += 1
                wrong = np.flatnonzero(ours.reshape(-1) != expected[tensor].reshape(-1))
                if wrong.size:
                    at = int(wrong[0])
                    self.int8_differ.append(
                        f"sample {index} {tensor}[{at}]: C {int(ours.reshape(-1)[at])}, "
                        f"reference {int(expected[tensor].reshape(-1)[at])} ({wrong.size} "
                        "elements differ)")

    def after(self, batch: list[int]) -> None:
        self.reference.net.forced = {}
        self.done += 1
        if self.done == self.total_steps:
            self.engine.end_epoch()  # applies a partial last batch, updates norms, reselects
        ours = _trainable(self.engine, self.reference, self.sizes)
        theirs = _trainable(self.engine, self.reference, self.sizes, reference_side=True)
        self.errors.append(max(update_error(ours[name], theirs[name], self.start[name])
                               for name in ours))

    def checks(self, epoch: int) -> list[Check]:
        worst = max(self.errors)
        measured = f"{worst:.2e}"
        if self.forced_steps:
            measured += f" ({self.forced_steps} of {len(self.errors)} steps with C decisions)"
        int8 = [] if self.reference.int8 is None else [
            Check(f"epoch {epoch} int8 forward C / integer reference",
                  f"{self.int8_compared} tensors, {len(self.int8_differ)} differ"
                  + (f": {self.int8_differ[0]}" if self.int8_differ else ""),
                  "bit-exact", not self.int8_differ)]
        return [
            *int8,
            Check(f"epoch {epoch} weights, step by step", measured,
                  f"<= {WEIGHT_TOLERANCE:.0e}", worst <= WEIGHT_TOLERANCE),
            Check(f"epoch {epoch} activation decisions C / ref",
                  f"{self.flips} differ" + (f", {self.unexplained} beyond the rounding bound"
                                            if self.unexplained else
                                            f" (at most {self.closest:.1e} of the bound)"
                                            if self.flips else ""),
                  "differ only within the rounding bound", not self.unexplained),
        ]


def _train_recorded(engine: EngineLibrary, recorder: DecisionRecorder,
                    reference: SparseTrainer, x: np.ndarray, y: np.ndarray,
                    batch: list[int]) -> DecisionComparison:
    """The C engine trains on the samples ``batch``, in order, its decisions recorded and
    compared with the reference's on the same batch; where they differ, the reference's next
    step takes the C's decisions (``net.forced``, cleared by the caller after the step)."""
    recorder.start()
    for index in batch:
        recorder.next_sample()
        status, _ = engine.train_sample(x[index], int(y[index]))
        if status != 0:
            raise MedyateError(f"the C engine rejected training sample {index} ({status})")
    ours, c_values = recorder.stop()
    found = compare_decisions(reference.net, list(recorder.nodes.values()),
                              torch.from_numpy(x[batch]), ours, c_values)
    if found.flips:
        reference.net.forced = ours
    return found


def update_error(ours: np.ndarray, theirs: np.ndarray, start: np.ndarray) -> float:
    """How far one step's update differs, beyond the rounding of the final ``w − lr·g`` on each
    side, relative to the reference's largest update of the tensor (docs/verification.md)."""
    ours, theirs, start = (np.asarray(v, np.float64) for v in (ours, theirs, start))
    excess = float(np.maximum(np.abs(ours - theirs) - UNIT_ROUNDOFF * (np.abs(ours)
                                                                      + np.abs(theirs)),
                              0.0).max(initial=0.0))
    scale = float(np.abs(theirs - start).max(initial=0.0))
    if excess == 0.0:
        return 0.0
    return excess / scale if scale > 0.0 else math.inf


def _trainable(engine: EngineLibrary, reference: SparseTrainer, sizes: dict[str, int],
               reference_side: bool = False) -> dict[str, np.ndarray]:
    """Copies of the trainable tensors (candidate weights, classifier) of the C engine, or of
    the reference."""
    if reference_side:
        net = reference.net
        tensors = {name: net.weights[net.keys[name]].detach().numpy().reshape(-1).copy()
                   for name in sizes}
        tensors[reference.classifier] = _reference_classifier(reference)
        return tensors
    tensors = {name: engine.candidate_weights(name, size).copy() for name, size in sizes.items()}
    tensors[reference.classifier] = engine.array("mdy_classifier", np.float32,
                                                 classifier_size(reference.graph)).copy()
    return tensors


def _initial_state_check(engine: EngineLibrary, reference: SparseTrainer,
                         sizes: dict[str, int]) -> Check:
    """After ``mdy_init``: the trainable tensors are the model's, bit for bit, the norms zero."""
    ours = _trainable(engine, reference, sizes)
    theirs = _trainable(engine, reference, sizes, reference_side=True)
    differ = sum(int((ours[name].view(np.uint32) != theirs[name].view(np.uint32)).sum())
                 for name in ours)
    norms = engine.array("mdy_norms", np.float32, max(reference.table.size, 1))
    differ += int(np.count_nonzero(norms[:reference.table.size]))
    return Check("initial state (trainable weights, norms)", f"{differ} values differ",
                 "bit-identical", differ == 0)


def _sampler_weights_check(engine: EngineLibrary, reference: SparseTrainer,
                           epoch: int) -> Check:
    """The sampler's integer weights, from the C norm vector, against the contract's."""
    count = reference.table.size
    ours = engine.array("mdy_sampler_weights", np.uint32, max(count, 1))[:count]
    theirs = channel_weights(engine.array("mdy_norms", np.float32, max(count, 1))[:count],
                             uniform=epoch == 1 or not reference.rule.weighted)
    differ = int(np.count_nonzero(ours != theirs))
    return Check(f"epoch {epoch} sampler weights", f"{differ} of {count} differ",
                 "identical", differ == 0)


def _copy_weights(engine: EngineLibrary, reference: SparseTrainer,
                  sizes: dict[str, int]) -> None:
    """Give the reference the C engine's current trainable weights (host engine, via ctypes)."""
    with torch.no_grad():
        for name, size in sizes.items():
            weight = reference.net.weights[reference.net.keys[name]]
            weight.copy_(torch.from_numpy(engine.candidate_weights(name, size).copy())
                         .reshape(weight.shape))
        key = reference.net.keys[reference.classifier]
        values = engine.array("mdy_classifier", np.float32,
                              classifier_size(reference.graph)).copy()
        weight, bias = reference.net.weights[key], reference.net.biases[key]
        weight.copy_(torch.from_numpy(values[:weight.numel()]).reshape(weight.shape))
        bias.copy_(torch.from_numpy(values[weight.numel():]))


def _copy_state(engine: EngineLibrary, reference: SparseTrainer,
                sizes: dict[str, int]) -> None:
    """Start the reference from the C engine's weights and norm vector."""
    _copy_weights(engine, reference, sizes)
    if reference.table.size:
        reference.norms = engine.array("mdy_norms", np.float32, reference.table.size).copy()


def _reference_classifier(reference: SparseTrainer) -> np.ndarray:
    key = reference.net.keys[reference.classifier]
    return np.concatenate([reference.net.weights[key].detach().numpy().reshape(-1),
                           reference.net.biases[key].detach().numpy().reshape(-1)])


def _forward_check(engine: EngineLibrary, reference: SparseTrainer, x: np.ndarray) -> Check:
    read_logits = _logits(engine, reference.graph)
    errors = []
    with torch.no_grad():
        expected = reference.net(torch.from_numpy(x)).numpy()
    for sample, want in zip(x, expected, strict=True):
        status, _ = engine.predict(sample)
        if status != 0:
            return Check("forward (logits)", f"status {status}", "ok", False)
        errors.append(relative_error(read_logits(), want))
    return Check("forward (logits)", f"{max(errors):.2e}", f"<= {FORWARD_TOLERANCE:.0e}",
                 max(errors) <= FORWARD_TOLERANCE)


def _logits(engine: EngineLibrary, graph: Graph) -> Callable[[], np.ndarray]:
    """A reader of the logits in the C arena (the model descriptor points there)."""
    logits, classes = engine.model.logits, graph.output_shape[0]
    return lambda: np.ctypeslib.as_array(logits, shape=(classes,)).copy()


def _gradient_check(engine: EngineLibrary, recorder: DecisionRecorder,
                    reference: SparseTrainer, plan: BudgetPlan, x: np.ndarray,
                    y: np.ndarray) -> Check:
    """The first sample, no update yet: the pool's gradient slices and the classifier's
    gradient (decisions as in the step comparison)."""
    graph = reference.graph
    found = _train_recorded(engine, recorder, reference, x, y, [0])
    per_layer = reference.table.split(engine.selected())
    taps = frozenset(name for name, channels in per_layer.items() if channels)
    net = reference.net
    logits, inputs, outputs = net.forward_with_taps(torch.from_numpy(x[:1]), taps)
    net.forced = {}
    F.cross_entropy(logits, torch.from_numpy(y[:1]).long()).backward()
    pool = engine.array("mdy_pool", np.float32, max(plan.pool_bytes // 4, 1))
    offsets = engine.array("mdy_pool_offsets", np.uint32, max(reference.table.size, 1))
    errors = []
    slot = 0
    with torch.no_grad():
        for name in reference.table.layers:
            channels = per_layer[name]
            if not channels:
                continue
            grads = selected_channel_gradients(graph, name, channels, inputs[name],
                                               outputs[name].grad).numpy()
            ours = np.stack([pool[int(offsets[slot + j]):int(offsets[slot + j]) + grads[j].size]
                             for j in range(len(channels))])
            errors.append(relative_error(ours, grads.reshape(len(channels), -1)))  # per layer
            slot += len(channels)
        key = net.keys[reference.classifier]
        expected = np.concatenate([net.weights[key].grad.numpy().reshape(-1),
                                   net.biases[key].grad.numpy().reshape(-1)])
        errors.append(relative_error(engine.array("mdy_classifier_grad", np.float32,
                                                  expected.size), expected))
        for parameter in (net.weights[key], net.biases[key]):
            parameter.grad = None
    measured = f"{max(errors):.2e}" + (f" ({found.flips} decisions differ, "
                                         f"{found.unexplained} beyond the rounding bound)"
                                         if found.flips else "")
    return Check("one-sample gradients (selected slices, classifier)", measured,
                 f"<= {GRADIENT_TOLERANCE:.0e}",
                 max(errors) <= GRADIENT_TOLERANCE and not found.unexplained)

