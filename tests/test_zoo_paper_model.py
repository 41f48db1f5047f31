"""The paper-scale bundled model, MobileNetV2 width 0.35 at 128×128 (docs/panel.md): its
architecture against the MobileNetV2 table, the shipped ONNX, its recorded source accuracy
re-measured, its LaRa ranking, and selection by name on the command line."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from medyate_mcu.cli.common import ModelType
from medyate_mcu.cli.main import main
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import ReferenceNet, export_onnx, import_onnx_model, load_onnx
from medyate_mcu.graph.ir import OpType
from medyate_mcu.method.lara import LayerRanking
from medyate_mcu.method.trainer import replace_classifier
from medyate_mcu.zoo import BUNDLED_MODELS, architectures, bundled_model_path, datasets, training
from medyate_mcu.zoo.training import read_metadata

NAME = "mbv2-w0.35-128"
PATH = bundled_model_path(NAME)
ISSUE_PARAMETERS = 401_898  # issue 11's figure: width 0.35, 128 px, 10 classes, BN folded
SUBSET_PER_CLASS = 10  # of the 50 test images per class the recorded accuracy was measured on


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDYATE_CACHE", str(tmp_path / "cache"))


def _table_parameters(classes: int) -> int:
    """Parameters after BatchNorm folding (every conv gets a bias), derived by hand from the
    MobileNetV2 table at width 0.35: the stem 3·3·3·16; stages (t, c, n, s) with c already rounded
    (16·0.35 = 5.6 -> 8, 24·0.35 = 8.4 -> 8, 32·0.35 = 11.2 -> 16, 64·0.35 = 22.4 -> 24,
    96·0.35 = 33.6 -> 32, 160·0.35 = 56, 320·0.35 = 112; the stem's 11.2 rounds to 8, under
    90 % of 11.2, hence 16); each block a 1×1 expansion to t·c_in (none when t = 1), a 3×3
    depthwise and a 1×1 projection; the 1×1 head to 1280; the linear classifier."""
    stages = ((1, 8, 1), (6, 8, 2), (6, 16, 3), (6, 24, 4), (6, 32, 3), (6, 56, 3), (6, 112, 1))
    total, cin = 3 * 3 * 3 * 16 + 16, 16
    for t, c, n in stages:
        for _ in range(n):
            hidden = cin * t
            if t != 1:
                total += cin * hidden + hidden
            total += 9 * hidden + hidden + hidden * c + c
            cin = c
    return total + cin * 1280 + 1280 + 1280 * classes + classes


def test_architecture_is_the_mobilenetv2_table() -> None:
    assert _table_parameters(10) == ISSUE_PARAMETERS
    model = architectures.create("mobilenetv2", 10, width=0.35, resolution=128).eval()
    graph = import_onnx_model(export_onnx(model, model.example_input()), name="t", origin="test")
    assert graph.parameter_count() == ISSUE_PARAMETERS
    convs = graph.nodes_of(OpType.CONV)
    assert len(convs) == 52  # stem + 17 blocks (the first without expansion: 2 convs) + head
    assert graph.shapes[convs[0].output] == (16, 64, 64)
    # Width 1: torchvision's published MobileNetV2 figure, 3,504,872 parameters with 1000
    # classes and BatchNorm unfolded.
    assert architectures.parameter_count(architectures.create("mobilenetv2", 1000)) == 3_504_872


def test_shipped_model_imports_with_its_record() -> None:
    assert PATH is not None and PATH.is_file()
    graph = load_onnx(PATH)
    assert graph.input_shape == (3, 128, 128) and graph.output_shape[-1] == 62
    assert graph.parameter_count() == _table_parameters(62) == 468_510
    assert replace_classifier(graph, 10, seed=0).parameter_count() == ISSUE_PARAMETERS
    meta = read_metadata(onnx.load(str(PATH)))
    record = json.loads(PATH.with_suffix(".json").read_text())
    assert record["metadata"] == meta and meta["architecture"] == "mobilenetv2"
    assert record["onnx_bytes"] == PATH.stat().st_size < 2_500_000
    assert record["parameters"] == graph.parameter_count()


def _source_subset(meta: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The first SUBSET_PER_CLASS test images of every class of the recorded split, normalised:
    each class is drawn image by image from its own seeded generator, so these are exactly the
    recorded split's first images of each class (checked below on one class)."""
    split = json.loads(meta["source_test_split"])
    assert split["generator_version"] == datasets.SPECS[split["dataset"]].version
    spec = datasets.SPECS[split["dataset"]]
    assert spec.builder is not None
    first = spec.builder(5, 2, split["size"], np.random.default_rng([split["seed"], 1, 5]))
    longer = spec.builder(5, 4, split["size"], np.random.default_rng([split["seed"], 1, 5]))
    np.testing.assert_array_equal(first, longer[:2])
    test = datasets.build_test_split(split["dataset"], seed=split["seed"],
                                     test_per_class=SUBSET_PER_CLASS, size=split["size"])
    mean = np.array(json.loads(meta["input_mean"]), np.float32).reshape(1, -1, 1, 1)
    std = np.array(json.loads(meta["input_std"]), np.float32).reshape(1, -1, 1, 1)
    return ((test.x.astype(np.float32) / np.float32(255) - mean) / std).astype(np.float32), test.y


def _accuracy(net: ReferenceNet, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        logits = torch.cat([net(torch.from_numpy(x[i:i + 256])) for i in range(0, len(x), 256)])
    return float((logits.argmax(1).numpy() == y).mean())


def test_recorded_source_accuracy_holds_on_a_stratified_subset() -> None:
    """The recorded accuracy (the full split, N = 62·50) re-measured on n = 62·10 of its images
    by the importer's reference forward pass. The subset's accuracy is a draw without
    replacement from the full split's, standard deviation sqrt(p(1-p)/n · (N-n)/(N-1)); the
    test allows 4 of them (a false alarm below 1e-4)."""
    assert PATH is not None
    meta = read_metadata(onnx.load(str(PATH)))
    recorded = float(meta["source_test_accuracy"])
    split = json.loads(meta["source_test_split"])
    x, y = _source_subset(meta)
    n, total = len(y), 62 * split["test_per_class"]
    assert n == 62 * SUBSET_PER_CLASS
    tolerance = 4 * math.sqrt(recorded * (1 - recorded) / n * (total - n) / (total - 1))
    net = ReferenceNet(load_onnx(PATH))
    measured = _accuracy(net, x, y)
    assert abs(measured - recorded) <= tolerance, (measured, recorded, tolerance)
    # onnxruntime (an independent runtime) agrees with the reference forward on the logits.
    session = ort.InferenceSession(str(PATH), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = np.concatenate([session.run(None, {name: x[i:i + 1]})[0]
                               for i in range(0, n, 311)])
    with torch.no_grad():
        ours = net(torch.from_numpy(x[::311])).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4 * float(np.abs(expected).max()))
    # An injected pipeline error, the inputs not divided by the std, is caught.
    raw = x * np.array(json.loads(meta["input_std"]), np.float32).reshape(1, -1, 1, 1)
    assert abs(_accuracy(net, raw, y) - recorded) > tolerance


def test_ranking_names_every_conv_layer_once() -> None:
    assert PATH is not None
    graph = load_onnx(PATH)
    ranking = LayerRanking.load(PATH.with_name("mbv2_w035_128.lara.json"), graph)  # fingerprint
    convs = [node.name for node in graph.nodes_of(OpType.CONV)]
    assert sorted(ranking.ranking) == sorted(convs) and len(set(ranking.ranking)) == len(convs)
    assert ranking.proxy_task in datasets.DOWNSTREAM_TASKS


def test_models_are_selected_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    shown = runner.invoke(main, ["inspect", NAME])
    assert shown.exit_code == 0, shown.output
    assert "3x128x128" in shown.output and "468,510" in shown.output
    for command in ("inspect", "lara", "plan", "compile"):
        helped = runner.invoke(main, [command, "--help"])
        assert all(name in helped.output for name in BUNDLED_MODELS), helped.output
    unknown = runner.invoke(main, ["inspect", "mbv2-w0.5-96"])
    assert unknown.exit_code == 1
    assert len(unknown.output.strip().splitlines()) == 1, unknown.output
    assert "'mbv2-w0.5-96'" in unknown.output
    assert all(name in unknown.output for name in BUNDLED_MODELS)
    # A file of that name wins over the bundled model; a folder is refused.
    monkeypatch.chdir(tmp_path)
    Path(NAME).write_bytes(b"")
    assert ModelType().convert(NAME, None, None) == Path(NAME)
    Path("folder").mkdir()
    with pytest.raises(click.BadParameter, match="is a directory"):
        ModelType().convert("folder", None, None)
    # A missing path is not taken for a name: the loader reports the file.
    assert ModelType().convert("folder/mbv2-w0.35-128", None, None) == Path("folder", NAME)
    assert ModelType().convert("missing.onnx", None, None) == Path("missing.onnx")


def test_progressive_resizing_trains_coarse_then_full(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`coarse_epochs` (how the paper-scale model was pre-trained): first the images 2×2
    average-pooled at the full rate with warm-up, then full size at COARSE_FINE_LR of the rate,
    no warm-up. The two fits are recorded, not run."""
    calls: list[dict[str, object]] = []

    def fake_fit(model: object, params: object, x: torch.Tensor, y: torch.Tensor,
                 **kwargs: object) -> float:
        calls.append({"x": x, **kwargs})
        return 1.0

    monkeypatch.setattr(training, "fit", fake_fit)
    config = training.PretrainConfig(architecture="mbv1", width=0.25, resolution=16, epochs=2,
                                     train_per_class=1, test_per_class=1, lr=0.05,
                                     coarse_epochs=3, coarse_resolution=8, threads=1)
    training.pretrain(config, tmp_path / "m.onnx")
    coarse, full = calls
    assert coarse["x"].shape[-2:] == (8, 8) and full["x"].shape[-2:] == (16, 16)
    torch.testing.assert_close(coarse["x"], torch.nn.functional.avg_pool2d(full["x"], 2))
    assert (coarse["epochs"], coarse["lr"], coarse["warmup_epochs"]) == (3, 0.05, 1)
    assert (full["epochs"], full["lr"], full["warmup_epochs"]) == (
        2, 0.05 * training.COARSE_FINE_LR, 0)
    with pytest.raises(MedyateError, match="must divide 16"):
        training.pretrain(replace(config, coarse_resolution=6), tmp_path / "n.onnx")
