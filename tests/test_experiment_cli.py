"""`medyate-mcu experiment` on a user's own .npz: bad values refused before anything is written,
the cache explained in --help, and a small sweep on local Ray whose recommendation matches its
definition recomputed from the written CSV, resumed serially and run afresh."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from arm_support import require_tool
from click.testing import CliRunner

from medyate_mcu.cli.main import main
from medyate_mcu.experiments import prepare
from medyate_mcu.toolchain.compile import default_ranking_path
from medyate_mcu.zoo import default_model_path

K = 1024


def user_npz(path: Path) -> Path:
    """Three classes of MFCC-shaped features (1x49x10) a class apart in mean: what a user would
    save with numpy for the keyword model."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.standard_normal((60, 1, 49, 10)).astype(np.float32) + y[:, None, None, None]
    np.savez(path, x=x, y=y, class_names=np.array(["low", "mid", "high"]))
    return path


@pytest.mark.parametrize(("args", "message"), [
    (["--within", "-2pp"], "not a margin"),
    (["--within", "2%"], "not a margin"),
    (["--cpus", "0"], "0 is not in the range"),
    (["--threads-per-cell", "0"], "0 is not in the range"),
    (["--policies", "medyate,fast"], "unknown policy 'fast'"),
    (["--address", "localhost"], "not host:port"),
    (["--address", "10.0.0.1:70000"], "not host:port"),
    (["--serial", "--address", "127.0.0.1:6379"], "--serial runs without Ray"),
    (["--address", "127.0.0.1:6379", "--cpus", "2"], "a cluster (--address) has its own"),
    (["--data", "no-such-set"], "unknown data no-such-set"),
    (["--boards", "no-such-board"], "unknown board"),
    (["--budgets", "0kB"], "must be more than 0 bytes"),
])
def test_bad_values_one_line_nothing_written(tmp_path: Path, args: list[str],
                                             message: str) -> None:
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, ["experiment", *args, "-o", str(out)])
    assert result.exit_code != 0
    assert message in result.output
    assert not out.exists()


def test_ray_address_from_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    bad = CliRunner().invoke(main, ["experiment", "-o", str(out)],
                             env={"RAY_ADDRESS": "nowhere"})
    assert bad.exit_code == 1 and "RAY_ADDRESS 'nowhere' is not host:port" in bad.output
    # --serial ignores it (a debugging run in a shell set up for a cluster)
    serial = CliRunner().invoke(main, ["experiment", "--serial", "--data", "no-such-set",
                                       "-o", str(out)], env={"RAY_ADDRESS": "nowhere"})
    assert "unknown data no-such-set" in serial.output  # past the address check
    assert not out.exists()


def test_help_explains_the_cache() -> None:
    text = CliRunner().invoke(main, ["experiment", "--help"]).output
    assert "OUTPUT/cells" in text and "--fresh" in text and "ray start --head" in text


def test_a_model_without_ranking_checks_boards_with_the_sweeps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model with no ranking beside it: the board check compiles with the ranking the sweep
    computed (compile would otherwise run LaRa and write one beside the model)."""
    monkeypatch.setenv("MEDYATE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "mine.onnx"
    shutil.copy(default_model_path(), model)
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, [
        "experiment", str(model), "--data", "shapes", "--budgets", "300kB", "--policies",
        "medyate,full", "--seeds", "1", "--epochs", "1", "--train-per-class", "5",
        "--boards", "nucleo-f411re", "--serial", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "exceeds nucleo-f411re's RAM" in (out / "recommendation.md").read_text()
    assert not default_ranking_path(model).exists()


def test_sweep_on_a_user_npz_recommends_by_the_definition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("arm-none-eabi-gcc")
    monkeypatch.setenv("MEDYATE_CACHE", str(tmp_path / "cache"))
    # LaRa ranks on the user's own split here: the keyword model's default proxy (kws-newvoice,
    # tests/test_zoo_userdata.py) would synthesize 1,080 clips; this test is about the sweep
    monkeypatch.setattr(prepare, "proxy_task_for", lambda target, graph, panel: target)
    data = user_npz(tmp_path / "mine.npz")
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, [
        "experiment", "ds-cnn-kws", "--data", str(data), "--budgets", "76kB,90kB,200kB",
        "--policies", "medyate,full", "--seeds", "2", "--epochs", "1", "--lr", "0.02",
        "--within", "1pp", "--boards", "nucleo-f411re", "--cpus", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "# Recommendation" in result.output
    # the oracle: the definition, on the CSV's rounded accuracies (4 decimals: 0.01 pp, far
    # below one test sample's 100/12 pp)
    accuracies: dict[str | None, list[float]] = defaultdict(list)
    for row in csv.DictReader((out / "results.csv").open()):
        accuracies[row["budget_bytes"] or None].append(100 * float(row["test_accuracy"]))
    full = float(np.mean(accuracies.pop(None)))
    means = {int(b): float(np.mean(v)) for b, v in accuracies.items()}
    within = [b for b in sorted(means) if full - means[b] <= 1.0 + 1e-6]
    best = max(means.values())
    expected = within[0] if within else min(b for b in means if means[b] == best)
    answer = json.loads((out / "recommendation.json").read_text())
    (task,) = answer["tasks"]
    assert task["budget"] == expected and task["within"] == bool(within)
    assert task["full"] == pytest.approx(full, abs=0.01)
    assert answer["overall"] == {"float32": expected}
    # 200 KiB exceeds the nucleo's 128 KiB: the check then refuses it, else it fits
    (fit,) = answer["boards"]["float32"]
    assert fit["fits"] is (expected < 128 * K)
    assert (out / "recommendation.md").read_text().splitlines()[2] in result.output
    # resuming, serially, from the cells local Ray computed: two cells deleted are the only ones
    # recomputed
    cells = sorted((out / "cells").glob("*.json"))
    for cell in cells[:2]:
        cell.unlink()
    again = CliRunner().invoke(main, [
        "experiment", "ds-cnn-kws", "--data", str(data), "--budgets", "76kB,90kB,200kB",
        "--policies", "medyate,full", "--seeds", "2", "--epochs", "1", "--lr", "0.02",
        "--within", "1pp", "--boards", "none", "--serial", "-o", str(out)])
    assert again.exit_code == 0, again.output
    assert f"resuming: {len(cells) - 2} of {len(cells)} cells cached" in again.output
    assert again.output.count("] ") == 2  # one log line per computed cell
    assert not (out / "recommendation.json").read_text().count('"fits"')  # no board asked
    # --fresh: nothing reused, only this run's cells in the cache
    fresh = CliRunner().invoke(main, [
        "experiment", "ds-cnn-kws", "--data", str(data), "--budgets", "76kB",
        "--policies", "medyate,full", "--seeds", "1", "--epochs", "1", "--boards", "none",
        "--serial", "--fresh", "-o", str(out)])
    assert fresh.exit_code == 0, fresh.output
    assert "resuming" not in fresh.output
    assert len(list((out / "cells").glob("*.json"))) == 2
