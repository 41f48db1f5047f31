"""The shipped demo model: it imports, its metadata is complete, and it scores what it claims on
the held-out source split the metadata names. Plus the zoo commands end to end (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from medyate_mcu.cli.main import main
from medyate_mcu.graph import ReferenceNet, load_onnx
from medyate_mcu.zoo import datasets, default_model_path
from medyate_mcu.zoo.training import normalise, read_metadata


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDYATE_CACHE", str(tmp_path / "cache"))


def _metadata() -> dict[str, str]:
    return read_metadata(onnx.load(str(default_model_path())))


def test_shipped_model_is_small_and_described() -> None:
    path = default_model_path()
    assert path.is_file() and path.stat().st_size < 600 * 1024
    meta = _metadata()
    assert meta["architecture"] == "mbv2" and meta["source_task"] == "chars"
    assert int(meta["num_classes"]) == 62
    assert "".join(json.loads(meta["class_names"])) == "".join(datasets.SPECS["chars"].class_names)
    assert len(json.loads(meta["input_mean"])) == len(json.loads(meta["input_std"])) == 3
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["metadata"] == meta  # the reproduction record matches the model
    graph = load_onnx(path)
    assert graph.input_shape == (3, 32, 32) and graph.output_shape[-1] == 62
    assert graph.parameter_count() <= 100_000


def test_shipped_model_accuracy_matches_metadata_and_readme() -> None:
    """The accuracy the metadata and the README claim, measured by onnxruntime (an independent
    runtime) on the held-out split the metadata names, normalised here in numpy."""
    meta = _metadata()
    split = json.loads(meta["source_test_split"])
    assert split["generator_version"] == datasets.SPECS["chars"].version
    test = datasets.build_test_split(split["dataset"], seed=split["seed"],
                                     test_per_class=split["test_per_class"], size=split["size"])
    mean = np.array(json.loads(meta["input_mean"]), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(json.loads(meta["input_std"]), dtype=np.float32).reshape(1, -1, 1, 1)
    x = ((test.x.astype(np.float32) / np.float32(255.0) - mean) / std).astype(np.float32)
    session = ort.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predicted = [int(session.run(None, {name: x[i:i + 1]})[0].argmax()) for i in range(len(x))]
    measured = float(np.mean(np.array(predicted) == test.y))
    assert len(x) == 62 * split["test_per_class"]
    assert abs(measured - float(meta["source_test_accuracy"])) <= 0.002
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{100 * measured:.1f} % on its source" in readme
    # The reference forward agrees with onnxruntime on the logits of a few samples.
    ours = ReferenceNet(load_onnx(default_model_path()))
    with torch.no_grad():
        for i in range(0, len(x), 517):
            expected = session.run(None, {name: x[i:i + 1]})[0]
            np.testing.assert_allclose(ours(torch.from_numpy(x[i:i + 1])).numpy(), expected,
                                       atol=1e-4)


def test_zoo_commands_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["zoo", "datasets"])
    assert listed.exit_code == 0, listed.output
    for name in datasets.SPECS:
        assert name in listed.output

    model = tmp_path / "tiny.onnx"
    trained = runner.invoke(main, ["zoo", "pretrain", "-o", str(model), "--epochs", "1",
                                   "--train-per-class", "2", "--width", "0.5", "--threads", "1"])
    assert trained.exit_code == 0, trained.output
    meta = read_metadata(onnx.load(str(model)))
    assert meta["width"] == "0.5" and json.loads(meta["pretrain_config"])["epochs"] == 1
    assert json.loads(model.with_suffix(".json").read_text())["metadata"] == meta

    table = tmp_path / "brackets.md"
    evaluated = runner.invoke(main, ["zoo", "evaluate", "--model", str(model), "--task",
                                     "shapes", "--epochs", "1", "-o", str(table), "--threads",
                                     "1"])
    assert evaluated.exit_code == 0, evaluated.output
    assert table.read_text().count("| shapes |") == 1
    results = json.loads(table.with_suffix(".json").read_text())["results"]
    assert results[0]["train"] == 300 and 0.0 <= results[0]["full_finetune"] <= 1.0


@pytest.mark.parametrize("args", [
    ["zoo", "pretrain", "--epochs", "0"],
    ["zoo", "evaluate", "--model", __file__],
    ["zoo", "evaluate", "--epochs", "0"],
    ["zoo", "pretrain", "-o", "/proc/medyate-test/model.onnx"],
])
def test_zoo_command_errors_are_one_line(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [*args[:2], *args[2:]])
    assert result.exit_code != 0
    assert result.output.strip().startswith("Error:")
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_cli_choices_follow_the_panel() -> None:
    from medyate_mcu.cli.zoo_commands import evaluate_command

    task_option = next(p for p in evaluate_command.params if p.name == "tasks")
    assert tuple(task_option.type.choices) == (*datasets.DOWNSTREAM_TASKS, "kws-newvoice")


def test_defaults_reproduce_the_shipped_model() -> None:
    """`zoo pretrain` with no options uses exactly the settings recorded with the shipped model."""
    from dataclasses import asdict

    from medyate_mcu.cli.zoo_commands import pretrain_command
    from medyate_mcu.zoo.training import PretrainConfig

    recorded = json.loads(default_model_path().with_suffix(".json").read_text())["config"]
    defaults = asdict(PretrainConfig())
    assert {k: defaults[k] for k in recorded} == recorded
    # Settings added after the demo was trained default to doing nothing (no coarse phase).
    assert {k: v for k, v in defaults.items() if k not in recorded} == {
        "coarse_epochs": 0, "coarse_resolution": 0, "task": "chars",
        "standardise_features": False}
    defaults = {p.name: p.default for p in pretrain_command.params}
    assert defaults["epochs"] == recorded["epochs"]
    assert defaults["train_per_class"] == recorded["train_per_class"]
    assert (defaults["architecture"], defaults["width"], defaults["resolution"], defaults["seed"]) \
        == (recorded["architecture"], recorded["width"], recorded["resolution"], recorded["seed"])


def test_brackets_train_what_they_claim() -> None:
    """Classifier-only training leaves the backbone as shipped; full fine-tuning moves it all."""
    from medyate_mcu.zoo.evaluation import _trainable, _with_new_classifier, load_reference
    from medyate_mcu.zoo.training import fit

    base, mean, std = load_reference(default_model_path())
    split = datasets.build("shapes", train_per_class=3, test_per_class=1, cache=False)
    x, y = normalise(split.train.x, mean, std), torch.from_numpy(split.train.y)
    head = base.keys[base.graph.nodes[-1].name]
    backbone = [key for key in base.keys.values() if key != head]
    for mode in ("classifier", "full"):
        net = _with_new_classifier(base, 10, seed=0)
        assert net.weights[head].shape == (10, base.weights[head].shape[1])
        start = net.weights[head].detach().clone()
        fit(net, _trainable(net, mode), x, y, epochs=2, lr=0.1, batch_size=8, seed=0)
        assert not torch.equal(net.weights[head], start)
        unchanged = [torch.equal(net.weights[k], base.weights[k])
                     and torch.equal(net.biases[k], base.biases[k]) for k in backbone]
        assert all(unchanged) if mode == "classifier" else not any(unchanged)
