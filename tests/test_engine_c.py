"""The generated C engine, built for the host: verified against the host reference trainer on
every reference architecture at two budgets, held to the planned RAM, robust to bad input."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import Project
from medyate_mcu.graph import export_onnx, load_onnx
from medyate_mcu.method.lara import LaraSettings, compute_lara
from medyate_mcu.method.planner import minimum_budget, plan_budget
from medyate_mcu.method.trainer import channel_table, replace_classifier
from medyate_mcu.run.engine_lib import EngineLibrary
from medyate_mcu.run.verify import memory_checks, verify_build
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.toolchain.host import make
from medyate_mcu.zoo import architectures, default_model_path
from medyate_mcu.zoo.tasks import load_task

ARCHITECTURES = ("mbv2", "resnet8", "mbv1")
TASK = "digits"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each reference architecture (fresh seeded weights; the demo is the shipped pre-trained
    mbv2) as an .onnx file with a LaRa ranking beside it."""
    folder = tmp_path_factory.mktemp("models")
    paths = {"demo": default_model_path()}
    for name in ARCHITECTURES[1:]:
        torch.manual_seed(0)
        module = architectures.create(name, num_classes=10, width=0.5)
        path = folder / f"{name}.onnx"
        onnx.save(export_onnx(module, torch.zeros(1, 3, 32, 32),
                              load_onnx(default_model_path()).metadata), path)
        graph = load_onnx(path)
        data = load_task(TASK, graph)
        compute_lara(graph, data.x_train[:48], data.y_train[:48], data.classes, TASK,
                     LaraSettings(epochs=1, batch_size=16)).save(
            path.with_name(f"{name}.lara.json"))
        paths[name] = path
    return paths


def two_budgets(model: Path) -> list[int]:
    """Just above the smallest feasible budget, and twice that."""
    from medyate_mcu.method.lara import LayerRanking
    graph = replace_classifier(load_onnx(model), 10, 0)
    ranking = LayerRanking.load(model.with_name(model.name.removesuffix(".onnx") + ".lara.json"))
    from medyate_mcu.method.costs import channel_cost
    costs = [channel_cost(graph, graph.node(n)) for n in ranking.ranking]
    smallest, _ = minimum_budget(graph, ranking.ranking, costs)
    return [smallest + 4096, 2 * smallest]


def compile_build(model: Path, budget: int, out: Path, embed: int = 48) -> Path:
    compile_project(CompileOptions(model=model, budget=budget, data=TASK, embed=embed, epochs=3,
                                   batch_size=8), out)
    return out


@pytest.mark.parametrize("arch", ["demo", *ARCHITECTURES[1:]])
def test_verify_passes_at_two_budgets(models: dict[str, Path], arch: str,
                                      tmp_path: Path) -> None:
    for index, budget in enumerate(two_budgets(models[arch])):
        build = compile_build(models[arch], budget, tmp_path / f"b{index}")
        checks = verify_build(Project.open(build), epochs=2, samples=48)
        failed = [c for c in checks if not c.ok]
        assert not failed, failed
        assert any(c.name == "epoch 2 selection" for c in checks)


def test_budget_sweep_holds_the_plan(models: dict[str, Path], tmp_path: Path) -> None:
    model = models["mbv1"]
    smallest = two_budgets(model)[0] - 4096
    for index, factor in enumerate((1.0, 1.5, 2.5, 4.0)):
        budget = math.ceil(smallest * factor)
        build = compile_build(model, budget, tmp_path / f"s{index}", embed=0)
        library = make(build, "lib")
        graph = replace_classifier(load_onnx(model), 10, 0)
        from medyate_mcu.method.lara import LayerRanking
        ranking = LayerRanking.load(model.with_name("mbv1.lara.json"))
        checks = memory_checks(library, plan_budget(graph, ranking.ranking, budget))
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_bad_samples_get_error_codes_and_leave_weights_alone(tmp_path: Path) -> None:
    build = compile_build(default_model_path(), 300 * 1024, tmp_path / "bad")
    graph = replace_classifier(load_onnx(default_model_path()), 10, 0)
    engine = EngineLibrary(make(build, "lib"), 3 * 32 * 32, 10)
    engine.init()
    size = graph.producer(graph.output).params["weight"].size + 10
    before = engine.array("mdy_classifier", np.float32, size).copy()
    x = np.zeros((3, 32, 32), np.float32)
    assert engine.train_sample(x, 10)[0] == -1  # label out of range
    assert engine.train_sample(x, -3)[0] == -1
    x[1, 5, 5] = np.nan
    assert engine.train_sample(x, 0)[0] == -2  # NaN input
    x[1, 5, 5] = np.inf
    assert engine.predict(x)[0] == -2
    engine.end_epoch()  # nothing was accumulated: no update happens
    assert np.array_equal(engine.array("mdy_classifier", np.float32, size), before)
    assert engine.state.last_epoch_samples == 0


def test_host_program_trains_and_the_loss_falls(tmp_path: Path) -> None:
    compile_project(CompileOptions(budget=300 * 1024, embed=64, epochs=4), tmp_path / "demo")
    program = make(tmp_path / "demo", "host")
    run = subprocess.run([str(program)], capture_output=True, text=True, check=True, timeout=300)
    before, *rows = [line.split() for line in run.stdout.splitlines()[1:]]
    assert before[:3] == ["0", "-", "-"] and 0 <= float(before[3]) <= 1  # epoch 0: test acc
    losses = [float(row[1]) for row in rows]
    assert len(losses) == 4 and losses[-1] < losses[0], run.stdout
    assert all(int(row[4]) > 0 for row in rows)  # channels selected every epoch


def test_compile_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    result = CliRunner().invoke(main, ["compile", "-o", str(tmp_path)])
    assert result.exit_code == 1 and "not empty" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_selection_fits_the_pool(tmp_path: Path) -> None:
    build = compile_build(default_model_path(), 250 * 1024, tmp_path / "pool")
    graph = replace_classifier(load_onnx(default_model_path()), 10, 0)
    from medyate_mcu.cli.method_commands import load_ranking
    plan = plan_budget(graph, load_ranking(None, None, graph).ranking, 250 * 1024)
    engine = EngineLibrary(make(build, "lib"), 3 * 32 * 32, 10)
    engine.init()
    costs = channel_table(graph, plan.memory.schedule.candidates).channel_costs()
    assert 0 < sum(costs[c] for c in engine.selected()) <= plan.pool_bytes


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_generated_project_builds_warning_free(compiler: str, tmp_path: Path) -> None:
    import os
    import shutil
    if shutil.which(compiler) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{compiler} is missing (make test installs it)")
        pytest.skip(f"{compiler} is not installed")
    build = compile_build(default_model_path(), 300 * 1024, tmp_path / compiler)
    program = make(build, "host", compiler=compiler)  # -std=c99 -Wall -Wextra -Werror
    assert program.is_file()


def test_verify_catches_a_wrong_update(tmp_path: Path) -> None:
    """A learning rate 10% off in the C image must fail the step-by-step weight check."""
    import re
    build = compile_build(default_model_path(), 300 * 1024, tmp_path / "wrong")
    source = (build / "model.c").read_text()
    table = re.search(r"learning_rates\[\d+\] = \{ ([^}]*) \}", source)
    assert table is not None
    rates = [float(v.rstrip("f")) * 1.1 for v in table.group(1).split(", ")]
    (build / "model.c").write_text(source.replace(
        table.group(1), ", ".join(f"{r:.9g}f" for r in rates)))
    checks = verify_build(Project.open(build), epochs=1, samples=32)
    failed = {c.name for c in checks if not c.ok}
    assert "epoch 1 weights, step by step" in failed, checks
    assert "epoch 1 selection" not in failed  # the selection does not depend on the rate


def test_compile_ranks_a_model_without_ranking_on_a_proxy_task(tmp_path: Path) -> None:
    from medyate_mcu.method.lara import LayerRanking
    torch.manual_seed(1)
    path = tmp_path / "fresh.onnx"
    onnx.save(export_onnx(architectures.create("mbv1", 10, width=0.5),
                          torch.zeros(1, 3, 32, 32)), path)
    compile_project(CompileOptions(model=path, budget=120 * 1024, data="shapes", embed=8),
                    tmp_path / "b")
    ranking = LayerRanking.load(tmp_path / "fresh.lara.json", load_onnx(path))
    assert ranking.proxy_task == "digits"  # the panel task after the target, never the target
    assert (tmp_path / "b" / "model.c").is_file()
