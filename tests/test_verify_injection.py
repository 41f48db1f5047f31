"""The verifier's own oracle: small real errors injected into a copy of the generated C must fail
host `verify` within one epoch; a clean build passes with no excuse; a differing activation
decision passes only within its rounding bound and with the step replayed on the C decisions."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medyate_mcu.codegen.folder import Project
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import export_onnx, import_torch
from medyate_mcu.graph.ir import OpType
from medyate_mcu.graph.reference import ReferenceNet
from medyate_mcu.run.decisions import (
    DecisionRecorder,
    compare_decisions,
    forward_values,
    gamma,
    own_decisions,
    rounding_bounds,
)
from medyate_mcu.run.engine_lib import EngineLibrary
from medyate_mcu.run.verify import (
    WEIGHT_TOLERANCE,
    Check,
    verify_build,
)
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.toolchain.host import make
from medyate_mcu.zoo.tasks import load_task

SAMPLES = 48
ENGINE = "medyate/runtime/engine.c"
# name -> (file, text, replacement, the check that must fail in epoch 1)
INJECTIONS = {
    "learning rate x 1.001": (ENGINE, "scale = s->lr / (float)n;",
                              "scale = s->lr * 1.001f / (float)n;",
                              "epoch 1 weights, step by step"),
    "first selected channel not updated": (
        ENGINE, "w[t] -= scale * grad[o * taps + t];",
        "if (j != 0u) { w[t] -= scale * grad[o * taps + t]; }", "epoch 1 weights, step by step"),
    "one trainable weight one ulp off after mdy_init": (
        ENGINE, "    mdy_zero(model->n_channels, model->norms);\n",
        "    { uint32_t b; memcpy(&b, model->candidates[0].weights, 4); b += 1u;"
        " memcpy(model->candidates[0].weights, &b, 4); }\n"
        "    mdy_zero(model->n_channels, model->norms);\n",
        "initial state (trainable weights, norms)"),
    "one sampler weight + 1": ("medyate/runtime/sampler.c", "weights_out[c] = w;",
                               "weights_out[c] = w + (c == 3u ? 1u : 0u);",
                               "epoch 1 sampler weights"),
    "norm sums x 1.001": (ENGINE, "grad)) / (float)n;", "grad)) / (float)n * 1.001f;",
                          "epoch 1 norms"),
    "epoch loss x (1 + 1e-4)": (ENGINE, "s->loss_sum += sample_loss;",
                                "s->loss_sum += sample_loss * 1.0001f;", "epoch 1 loss"),
    # the blocked classifier kernels (linear.c): rows 0 and 4 of the demo's ten take the block path
    "classifier weight gradient x 1.001": ("medyate/kernels/linear.c", "g0[i] += d0 * v;",
                                           "g0[i] += d0 * v * 1.001f;",
                                           "one-sample gradients (selected slices, classifier)"),
    "logits x (1 + 1e-4)": ("medyate/kernels/linear.c", "y[o] = a0;", "y[o] = a0 * 1.0001f;",
                            "forward (logits)"),
    # the C's mask threshold moved from 0 to 1e-3 (bits 0x3a83126f): masks of pre-activations in
    # (0, 1e-3] flip, most of them far beyond any rounding of the forward pass; outputs unchanged
    "ReLU masks flipped up to 1e-3": ("medyate/kernels/activation.c", "        return 1u;",
                                      "        return u > 0x3a83126fu;",
                                      "epoch 1 activation decisions C / ref"),
}


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inject") / "clean"
    compile_project(CompileOptions(budget=300 * 1024, data="digits", embed=SAMPLES, epochs=3,
                                   batch_size=8), out)
    return out


def injected(build: Path, folder: Path, file: str, text: str, replacement: str) -> Path:
    """A copy of ``build`` with ``text`` replaced once in its copy of the firmware ``file``."""
    copy = folder / "injected"
    shutil.copytree(build, copy)
    source = copy / file
    content = source.read_text()
    assert content.count(text) == 1, f"{text!r} not found once in {file}"
    source.write_text(content.replace(text, replacement))
    return copy


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name.split(" C ")[0] if " loss " in check.name else check.name: check
            for check in checks}


def test_a_clean_build_passes_with_no_excuse(demo_build: Path) -> None:
    """Every row passes; there is no excuse path (a differing decision would have to lie within
    its bound and its step still match within the clean tolerance: none differs here)."""
    checks = verify_build(Project.open(demo_build), epochs=1, samples=SAMPLES)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    rows = by_name(checks)
    assert rows["epoch 1 activation decisions C / ref"].measured == "0 differ"
    assert float(rows["epoch 1 weights, step by step"].measured) <= WEIGHT_TOLERANCE / 10


def test_more_epochs_than_the_build_trains_are_refused(demo_build: Path) -> None:
    with pytest.raises(MedyateError, match="trains 3 epoch"):
        verify_build(Project.open(demo_build), epochs=4, samples=8)


def test_a_library_without_the_decision_export_is_refused(demo_build: Path,
                                                           tmp_path: Path) -> None:
    build = injected(demo_build, tmp_path, "Makefile", " -DMDY_DECISION_EXPORT", "")
    with pytest.raises(MedyateError, match="compile the project again"):
        verify_build(Project.open(build), epochs=1, samples=8)


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_an_injected_error_fails_within_one_epoch(name: str, demo_build: Path,
                                                  tmp_path: Path) -> None:
    file, text, replacement, row = INJECTIONS[name]
    build = injected(demo_build, tmp_path, file, text, replacement)
    checks = by_name(verify_build(Project.open(build), epochs=1, samples=SAMPLES))
    assert not checks[row].ok, checks[row]
    if name == "learning rate x 1.001":  # every step is 1e-3 off, the tolerance well under it
        assert float(checks[row].measured.split()[0]) == pytest.approx(1e-3, rel=0.05)
        assert WEIGHT_TOLERANCE <= 1e-4


def test_flips_within_the_rounding_bound_pass_with_the_c_decisions_replayed(
        demo_build: Path, tmp_path: Path) -> None:
    """The C's mask threshold moved to 1e-6 (bits 0x358637bd): the few pre-activations in
    (0, 1e-6] flip, all within the bound; the reference replays those steps with the C masks
    and matches."""
    build = injected(demo_build, tmp_path, "medyate/kernels/activation.c",
                     "        return 1u;", "        return u > 0x358637bdu;")
    checks = by_name(verify_build(Project.open(build), epochs=1, samples=SAMPLES))
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
    decisions = checks["epoch 1 activation decisions C / ref"].measured
    assert int(decisions.split()[0]) >= 1, decisions
    assert "with C decisions" in checks["epoch 1 weights, step by step"].measured


# ---- the rounding bound and the forced replay, on a network small enough to reason about ----

class Tiny(nn.Module):
    """conv 1x1 (weight 1) -> ReLU6 -> max-pool 2x2 -> linear: the ReLU6 input is the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu6(self.conv(x)), 2).flatten(1))


@pytest.fixture()
def tiny() -> ReferenceNet:
    torch.manual_seed(0)
    module = Tiny()
    with torch.no_grad():
        module.conv.weight.fill_(1.0)
    return ReferenceNet(import_torch(module, torch.zeros(1, 1, 2, 4)))


def nodes_of(net: ReferenceNet, op: OpType):
    return [node for node in net.graph.nodes if node.op is op]


def test_the_bound_of_a_one_term_conv_is_two_roundings(tiny: ReferenceNet) -> None:
    x = torch.tensor([[[[0.5, 6.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]]])
    values = forward_values(tiny, x)
    relu6 = nodes_of(tiny, OpType.RELU6)[0]
    bound = rounding_bounds(tiny, values)[relu6.inputs[0]]
    # one product and a zero bias, on each side: γ_2 · 2|x| (docs/verification.md)
    assert torch.allclose(bound, gamma(2) * 2 * x.double().abs(), rtol=1e-12, atol=0)


def test_a_flip_is_explained_only_within_the_bound(tiny: ReferenceNet) -> None:
    relu6 = nodes_of(tiny, OpType.RELU6)[0]
    step = float(np.spacing(np.float32(6.0)))
    x = torch.tensor([[[[0.5, 6.0 + step, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]]])
    nodes = [relu6, *nodes_of(tiny, OpType.MAX_POOL)]
    ours = own_decisions(tiny, nodes, forward_values(tiny, x))
    bound = gamma(2) * 2 * (6.0 + step)
    assert step < bound  # one ulp above 6 is within the rounding of one product

    flipped = {name: value.clone() for name, value in ours.items()}
    flipped[relu6.name][0, 0, 0, 1] = True  # the C saw 6 + 1 ulp below 6
    found = compare_decisions(tiny, nodes, x, flipped)
    assert (found.flips, found.unexplained) == (1, 0)
    assert found.closest == pytest.approx(step / bound)

    flipped[relu6.name][0, 0, 0, 2] = False  # 2.0 is nowhere near 0 or 6
    found = compare_decisions(tiny, nodes, x, flipped)
    assert (found.flips, found.unexplained) == (2, 1)


def test_a_max_pool_flip_is_explained_only_within_the_bound(tiny: ReferenceNet) -> None:
    pool = nodes_of(tiny, OpType.MAX_POOL)[0]
    nearly = float(np.nextafter(np.float32(3.0), np.float32(0.0)))
    x = torch.tensor([[[[3.0, nearly, 1.0, 2.0], [0.0, 0.0, 5.0, 0.0]]]])
    ours = own_decisions(tiny, [pool], forward_values(tiny, x))
    assert ours[pool.name].flatten().tolist() == [0, 2]  # row-major cells of each 2x2 window
    ours[pool.name][0, 0, 0, 0] = 1  # 3 - 1 ulp instead of 3: within two cells' roundings
    assert compare_decisions(tiny, [pool], x, ours).unexplained == 0
    ours[pool.name][0, 0, 0, 1] = 3  # 2 instead of 5: not a rounding
    assert compare_decisions(tiny, [pool], x, ours).unexplained == 1


def test_the_forced_replay_takes_the_given_decisions(tiny: ReferenceNet) -> None:
    """Gradients with forced decisions equal an independent formulation: y = relu6(z) with the
    error passed through mask m, written as z·m + (relu6(z) − z·m) detached; the max-pool
    output written as a plain index of the chosen cell."""
    relu6, pool = nodes_of(tiny, OpType.RELU6)[0], nodes_of(tiny, OpType.MAX_POOL)[0]
    x = torch.tensor([[[[0.5, 6.0, 2.0, 3.0], [1.0, 7.0, 1.0, -1.0]]]])
    mask = torch.tensor([[[[True, True, False, True], [True, True, True, False]]]])
    cells = torch.tensor([[[[3, 1]]]])  # window 0 takes (1, 1), window 1 takes (0, 3)
    tiny.forced = {relu6.name: mask, pool.name: cells}
    tiny(x).sum().backward()
    forced = {name: p.grad.clone() for name, p in tiny.named_parameters()}
    tiny.zero_grad()
    tiny.forced = {}
    tiny(x).sum().backward()
    own = {name: p.grad.clone() for name, p in tiny.named_parameters()}
    tiny.zero_grad()
    assert not all(torch.equal(own[name], forced[name]) for name in own)  # the forcing matters

    conv, fc = tiny.keys.values()
    z = F.conv2d(x, tiny.weights[conv], tiny.biases[conv])
    y = z * mask + (F.relu6(z) - z * mask).detach()
    pooled = torch.stack([y[0, 0, 1, 1], y[0, 0, 0, 3]])
    out = F.linear(pooled[None], tiny.weights[fc], tiny.biases[fc])
    out.sum().backward()
    for name, p in tiny.named_parameters():
        assert torch.equal(p.grad, forced[name]), name


# ---- max-pool argmax, end to end (the bundled models have no max-pool) ----------------------

@pytest.fixture(scope="module")
def pool_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small user model with two max-pools inside the backward pass."""
    folder = tmp_path_factory.mktemp("pool")
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(16, 16, 3, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten(), nn.Linear(16, 10))
    onnx.save(export_onnx(module, torch.zeros(1, 3, 32, 32)), folder / "pool.onnx")
    compile_project(CompileOptions(model=folder / "pool.onnx", budget=400 * 1024, data="digits",
                                   embed=32, epochs=2, batch_size=8, alpha=1.0), folder / "b")
    exports = re.findall(r"MDY_DECISIONS\(\d+u\);", (folder / "b" / "model.c").read_text())
    assert len(exports) == 5  # three ReLUs and two max-pools
    return folder / "b"


def test_max_pool_ties_broken_otherwise_are_explained(pool_build: Path, tmp_path: Path) -> None:
    """The last maximum instead of the first: flips only on exact ties (a gap of 0, within any
    bound); the replay on the C argmax matches."""
    build = injected(pool_build, tmp_path, "medyate/kernels/pool.c", "v > best || isnan(v)",
                     "v >= best || isnan(v)")
    checks = by_name(verify_build(Project.open(build), epochs=1, samples=32))
    assert int(checks["epoch 1 activation decisions C / ref"].measured.split()[0]) > 0
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]


def test_a_wrong_max_pool_argmax_fails(pool_build: Path, tmp_path: Path) -> None:
    """The C stores cell 1 where its maximum is cell 0 (the forward value stays right)."""
    build = injected(pool_build, tmp_path, "medyate/kernels/pool.c",
                     "argmax[i] = (uint8_t)best_k;",
                     "argmax[i] = (uint8_t)(best_k == 0 ? 1 : best_k);")
    checks = by_name(verify_build(Project.open(build), epochs=1, samples=32))
    assert not checks["epoch 1 activation decisions C / ref"].ok


def test_the_c_forward_lies_within_the_rounding_bound(demo_build: Path) -> None:
    """The bound's own oracle: the output of every exported ReLU of the C forward pass, read
    from the arena, differs from the reference's by no more than the bound of its input (a clamp
    does not increase a difference), with the C's earlier outputs known or not, on real samples."""

    graph, plan, _, _ = Project.open(demo_build).reference()
    x = load_task("digits", graph, seed=0).x_test[:4]
    engine = EngineLibrary(make(demo_build, "lib"), x[0].size, 10)
    engine.init()
    recorder = DecisionRecorder(engine, plan.memory)
    recorder.start()
    for sample in x:
        recorder.next_sample()
        assert engine.predict(sample)[0] == 0
    _, outputs = recorder.stop()
    net = ReferenceNet(graph)
    values = forward_values(net, torch.from_numpy(x))
    nodes = list(recorder.nodes.values())
    assert len(outputs) == len(nodes) == 12
    worst = {}
    for known in ({}, outputs):
        bounds = rounding_bounds(net, values, known)
        ratios = []
        for node in nodes:
            difference = (outputs[node.output].double() - values[node.output].double()).abs()
            bound = bounds[node.inputs[0]]
            assert bool((difference <= bound).all()), node.name
            ratios.append(float((difference / bound).nan_to_num(0).max()))
        worst[bool(known)] = max(ratios)
    assert 0 < worst[False] < worst[True] < 1  # knowing the C's values tightens the bound
