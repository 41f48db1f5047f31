"""A 1-D model (6x128 Conv1d sensor net) and a non-square one (a 1x49x10 keyword-spotting DS-CNN
with the 10x4 stride-2 "same" stem) through the whole pipeline without a data loader: ONNX
import, `compile` (no data, a given ranking), the generated engine built for the host, and the
host verifier (run/verify.py) on injected samples: planned RAM, forward logits, one-sample
gradients, and one epoch's selection, steps, norms, loss and accuracy against the reference
trainer, with the verifier's own tolerances (docs/verification.md).

The samples are float features of both signs (standard normal), of the model's exact input shape;
labels are uniform over the classes. The ranking puts the stem first and the budget (32 KiB) makes
every conv a candidate, so the stem's weight gradient (10x4 window, 1x5 in 1-D) and the input
gradients of every later conv and pool are compared. A stem padding of 5/4 rows in place of the
compiled 4/5 is caught by the forward check (test_a_wrong_stem_padding_fails_verify).

Measured (relative, C vs reference; limits 1e-5 forward and loss, 5e-5 the rest): sensor forward
3.7e-7, gradients 2.2e-7, step-by-step weights 1.4e-7, norms 1.3e-7, loss 2.3e-7; KWS 1.4e-7,
2.9e-7, 1.7e-7, 8.4e-8, 6.6e-8; no activation decision differs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from model_builders import (
    KWS_SHAPE,
    SENSOR_SHAPE,
    export_kws_dscnn,
    kws_dscnn_model,
    max_abs_error_vs_onnxruntime,
    sensor_conv1d_model,
    write_ranking,
)

from medyate_mcu.codegen.folder import Project
from medyate_mcu.graph import export_onnx, import_onnx_model, load_onnx
from medyate_mcu.graph.ir import OpType, Window
from medyate_mcu.run.verify import Check, VerificationData, verify_build
from medyate_mcu.toolchain.compile import CompileOptions, compile_project

BUDGET = 32 * 1024  # every conv of either model is a candidate (12 KiB is the sensor's least)
SAMPLES = 24
CLASSES = {"sensor": 5, "kws": 6}
REQUIRED_ROWS = ("forward (logits)", "one-sample gradients (selected slices, classifier)",
                 "epoch 1 selection", "epoch 1 weights, step by step", "epoch 1 norms")


def onnx_model(name: str) -> onnx.ModelProto:
    if name == "sensor":
        return export_onnx(sensor_conv1d_model(CLASSES[name]), torch.zeros(1, *SENSOR_SHAPE))
    return export_kws_dscnn(kws_dscnn_model(CLASSES[name]))


@pytest.fixture(scope="module", params=sorted(CLASSES))
def build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[str, Project]:
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    path = folder / f"{name}.onnx"
    onnx.save(onnx_model(name), path)
    graph = load_onnx(path)
    ranking = write_ranking(graph, folder / f"{name}.lara.json",
                            [node.name for node in graph.nodes_of(OpType.CONV)])
    project = compile_project(CompileOptions(model=path, budget=BUDGET, ranking=ranking,
                                             epochs=1, batch_size=4, seed=3),
                              folder / "build", say=lambda _: None)
    return name, project


def injected_checks(project: Project) -> list[Check]:
    """verify_build on ``SAMPLES`` injected samples (the build embeds no data set)."""
    shape = project.reference().graph.input_shape
    rng = np.random.default_rng(7)
    x = rng.standard_normal((SAMPLES, *shape)).astype(np.float32)
    y = rng.integers(0, project.manifest.classes, SAMPLES)
    x_test = rng.standard_normal((8, *shape)).astype(np.float32)
    data = VerificationData(1, SimpleNamespace(x_test=x_test), x, y)  # type: ignore[arg-type]
    return verify_build(project, data=data)


def test_the_plan_trains_the_stem(build: tuple[str, Project]) -> None:
    name, project = build
    graph, plan, _, _ = project.reference()
    stem = graph.nodes_of(OpType.CONV)[0]
    assert stem.name in plan.memory.schedule.candidates
    assert len(plan.memory.schedule.candidates) == 3
    if name == "kws":
        assert graph.input_shape == KWS_SHAPE
        assert stem.conv.window == Window(kernel=(10, 4), stride=(2, 2), pads=(4, 1, 5, 1))
        assert graph.shapes[stem.output] == (8, 25, 5)
    else:
        assert graph.input_shape == (6, 1, 128) and graph.metadata["input_rank"] == "3"
        assert stem.conv.window == Window(kernel=(1, 5), stride=(1, 2), pads=(0, 2, 0, 2))


def test_the_kws_import_matches_onnxruntime() -> None:
    """The "same"-padded export imports as ONNX runs it (1e-5: test_import_ops' tolerance);
    the 1-D model is checked in test_import_1d (sensor_builder)."""
    model = onnx_model("kws")
    graph = import_onnx_model(model, name="kws")
    assert max_abs_error_vs_onnxruntime(graph, model) <= 1e-5


def test_host_engine_matches_the_reference(build: tuple[str, Project]) -> None:
    _, project = build
    checks = injected_checks(project)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    names = {c.name for c in checks}
    assert set(REQUIRED_ROWS) <= names, names
    assert any(n.startswith("epoch 1 loss") for n in names)


def test_a_wrong_stem_padding_fails_verify(build: tuple[str, Project], tmp_path: Path) -> None:
    """The stem's top padding one row off (KWS: 5/4 for 4/5; 1-D: the left one 1 for 2) in the
    generated model.c: the logits differ far beyond the forward tolerance (measured 0.14 for the
    KWS stem, 0.09 for the 1-D one, relative, against 1e-5)."""
    name, project = build
    copy = tmp_path / "wrong"
    shutil.copytree(project.folder, copy, ignore=shutil.ignore_patterns("build", "*.o", "*.so"))
    source = (copy / "model.c").read_text()
    right, wrong_pad = (".pad_top = 4,", ".pad_top = 5,") if name == "kws" else \
        (".pad_left = 2,", ".pad_left = 1,")
    stem = graph_stem_shape(source)
    wrong = stem.replace(right, wrong_pad)
    assert wrong != stem
    (copy / "model.c").write_text(source.replace(stem, wrong))
    wrong_project = Project(copy, project.manifest, project.manifest_text, project.reference())
    rows = {c.name: c for c in injected_checks(wrong_project)}
    assert not rows["forward (logits)"].ok, rows["forward (logits)"]


def graph_stem_shape(source: str) -> str:
    """The first conv shape struct of a generated model.c."""
    match = re.search(r"static const mdy_conv_shape_t shape_\w+ = \{[^}]*\};", source)
    assert match is not None
    return match.group(0)
