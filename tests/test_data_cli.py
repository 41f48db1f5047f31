"""Float features of any sign, from a user's .npz, through the whole CLI: a 1x49x10 keyword
model (DS-CNN, 10x4 stride-2 stem) and a 6x128 Conv1d sensor model go through `lara --data`,
`compile --data` (for qemu-mps2-an386), the host engine (`make host`, medyate_train), `verify`
and `verify --qemu`; one stores its samples as compact int8 (`--sample-format int8`), the other
as float32. The data are class-dependent Gaussian features with negative means."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from arm_support import require_tool
from click.testing import CliRunner
from model_builders import (
    KWS_SHAPE,
    SENSOR_SHAPE,
    export_kws_dscnn,
    kws_dscnn_model,
    sensor_conv1d_model,
)

from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import Project
from medyate_mcu.graph import export_onnx
from medyate_mcu.graph.ir import classifier_node

CLASSES = 4
PER_CLASS = 20
MODELS = {"kws": ("int8", KWS_SHAPE), "sensor": ("stored", SENSOR_SHAPE)}


def _write_model(name: str, path: Path) -> None:
    if name == "kws":
        onnx.save(export_kws_dscnn(kws_dscnn_model(CLASSES)), path)
    else:
        onnx.save(export_onnx(sensor_conv1d_model(CLASSES), torch.zeros(1, *SENSOR_SHAPE)),
                  path)


def _write_data(shape: tuple[int, ...], path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(CLASSES), PER_CLASS)
    centres = rng.normal(-2.0, 3.0, (CLASSES, *shape))
    x = (centres[y] + rng.normal(0.0, 2.0, (len(y), *shape))).astype(np.float32)
    np.savez(path, x=x, y=y)


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float_features_through_the_cli(name: str, tmp_path: Path) -> None:
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    sample_format, shape = MODELS[name]
    model, data = tmp_path / f"{name}.onnx", tmp_path / f"{name}.npz"
    _write_model(name, model)
    _write_data(shape, data)
    ranking = tmp_path / f"{name}.lara.json"
    _cli("lara", str(model), "--data", str(data), "--epochs", "1", "-o", str(ranking))
    build = tmp_path / "build"
    output = _cli("compile", str(model), "--data", str(data), "--ranking", str(ranking),
                  "--budget", "32kB", "--board", "qemu-mps2-an386", "--epochs", "2",
                  "--sample-format", sample_format, "-o", str(build))
    stored = "int8" if sample_format == "int8" else "float32"
    assert f"input: {stored} samples" in output
    manifest = json.loads((build / "medyate_build.json").read_text())
    assert manifest["samples"]["format"] == stored
    assert f"const {'int8_t' if stored == 'int8' else 'float'} mdy_train_x" in \
        (build / "data.c").read_text()
    subprocess.run(["make", "-s", "-C", str(build), "host"], check=True, capture_output=True)
    table = subprocess.run([str(build / "medyate_train")], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert table[0].split()[0] == "epoch" and len(table) == 4  # header, before, 2 epochs
    assert table[1].split()[:3] == ["0", "-", "-"]
    assert "all" in _cli("verify", str(build)).splitlines()[-1]
    report = _cli("verify", "--qemu", str(build), "--samples", "8", "--epochs", "1")
    assert report.splitlines()[-1].startswith("all ") and "passed" in report


def test_the_pretrained_classifier_is_kept_for_its_own_classes(tmp_path: Path) -> None:
    """Data whose classes are the ones the model was pre-trained on (its medyate.class_names)
    fine-tune the model's own classifier (a new voice for a keyword model); other classes get a
    new one. `verify` rebuilds the same reference from the manifest."""
    module = sensor_conv1d_model(CLASSES)
    names = [f"gesture{k}" for k in range(CLASSES)]
    model = export_onnx(module, torch.zeros(1, *SENSOR_SHAPE),
                        metadata={"medyate.class_names": json.dumps(names)})
    path = tmp_path / "sensor.onnx"
    onnx.save(model, path)
    data = tmp_path / "own.npz"
    _write_data(SENSOR_SHAPE, data)
    with np.load(data) as arrays:
        np.savez(data, x=arrays["x"], y=arrays["y"], class_names=np.array(names))
    ranking = tmp_path / "sensor.lara.json"
    _cli("lara", str(path), "--data", str(data), "--epochs", "1", "-o", str(ranking))
    build = tmp_path / "own"
    output = _cli("compile", str(path), "--data", str(data), "--ranking", str(ranking),
                  "--budget", "32kB", "--epochs", "1", "-o", str(build))
    assert "fine-tuning starts from its own classifier" in output
    assert json.loads((build / "medyate_build.json").read_text())["head"] == "pretrained"
    trained_head = module[-1].weight.detach().numpy()
    graph = Project.open(build).reference().graph
    assert np.array_equal(classifier_node(graph).params["weight"], trained_head)
    assert "all" in _cli("verify", str(build), "--samples", "16").splitlines()[-1]
    with np.load(data) as arrays:  # other class names: a new classifier
        np.savez(data, x=arrays["x"], y=arrays["y"], class_names=np.array(names[::-1]))
    other = tmp_path / "other"
    _cli("compile", str(path), "--data", str(data), "--ranking", str(ranking), "--budget",
         "32kB", "-o", str(other))
    assert json.loads((other / "medyate_build.json").read_text())["head"] == "new"
    assert not np.array_equal(classifier_node(Project.open(other).reference().graph)
                              .params["weight"], trained_head)
