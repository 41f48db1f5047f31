"""The sweep engine: a tiny sweep (digits, 8 samples per class, one budget, MeDyate and full
fine-tuning, two seeds, one epoch) gives the same results.csv bytes serially, on a local Ray and
on a Ray cluster started here (`ray start --head` on loopback, stopped afterwards); an
interrupted sweep resumes computing only its missing cells; a changed model, data or setting
never reuses a cached cell; a corrupt cache file is recomputed; an unreachable cluster fails in
one line within seconds. Ray is a dependency: without it this module fails to import (no skip)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from medyate_mcu.errors import MedyateError
from medyate_mcu.experiments import executors, prepare
from medyate_mcu.experiments.budget_sweep import RunResult, SweepConfig, run_sweep
from medyate_mcu.experiments.cache import cell_key, graph_fingerprint
from medyate_mcu.experiments.cells import Cell, cells_of
from medyate_mcu.experiments.executors import RayExecutor, SerialExecutor
from medyate_mcu.experiments.prepare import load_inputs
from medyate_mcu.graph import load_onnx
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.lara import LaraSettings
from medyate_mcu.method.policies import Policy
from medyate_mcu.method.trainer import TrainSettings
from medyate_mcu.zoo import DOWNSTREAM_TASKS, default_model_path

CONFIG = SweepConfig(("digits",), (300 * 1024,), (Policy.MEDYATE, Policy.FULL), seeds=(0, 1),
                     train=TrainSettings(epochs=1, batch_size=16, lr=0.1, warmup=1),
                     lara=LaraSettings(epochs=1), train_per_class=8)
TOTAL = 4  # 2 seeds x (MeDyate at the budget + full fine-tuning)
FAIL_WITHIN = 15.0  # s: an unreachable address fails at the TCP check (5 s timeout), not Ray's


@pytest.fixture(scope="module")
def graph() -> Graph:
    return load_onnx(default_model_path())


class Counter:
    """Counts the cells the serial executor computes (the real runner does the work)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cells: list[Cell] = []
        runner = executors.run_cell

        def counted(prepared, cell, config, threads=1):
            self.cells.append(cell)
            return runner(prepared, cell, config, threads)

        monkeypatch.setattr(executors, "run_cell", counted)


@pytest.fixture(scope="module")
def serial(graph: Graph, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """An uninterrupted serial sweep: its folder and its results."""
    folder = tmp_path_factory.mktemp("serial")
    return folder, run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, folder, executor=SerialExecutor())


def _comparable(results: list[RunResult]) -> list[tuple]:
    return [dataclasses.astuple(dataclasses.replace(r, seconds=0.0)) for r in results]


def _ranking_bytes(folder: Path) -> bytes:
    [path] = folder.glob("lara-*.json")
    return path.read_bytes()


def test_serial_sweep_writes_every_cell_in_canonical_order(serial) -> None:
    folder, results = serial
    assert [(r.seed, r.policy) for r in results] == [
        (0, "medyate"), (0, "full"), (1, "medyate"), (1, "full")]
    assert all(r.test_accuracy is not None for r in results)
    lines = (folder / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + TOTAL and "seconds" not in lines[0]
    assert (folder / "timings.csv").read_text().splitlines()[0].endswith(",seconds")
    assert len(list((folder / "cells").glob("*.json"))) == TOTAL


def _driver_prepares(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tasks the driver prepares while Ray starts (:class:`executors._LocalPreparation`),
    the first one held until Ray has started: the driver prepares exactly that one."""
    tasks: list[str] = []
    stopped = threading.Event()
    stop = executors._LocalPreparation.stop

    def stopping(self: executors._LocalPreparation) -> None:
        stop(self)
        stopped.set()

    def held(graph: Graph, config: SweepConfig, inputs: prepare.TaskInputs, threads: int):
        tasks.append(inputs.task)
        assert stopped.wait(executors.START_TIMEOUT), "Ray never started"
        return prepare.prepare_task(graph, config, inputs, threads)

    monkeypatch.setattr(executors._LocalPreparation, "stop", stopping)
    monkeypatch.setattr(executors, "prepare_task", held)
    return tasks


def _ray_prepares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every task prepared by a Ray task (the driver prepares none while Ray starts)."""
    monkeypatch.setattr(executors._LocalPreparation, "start", lambda self: None)


def test_local_ray_gives_the_same_bytes_and_resumes(graph: Graph, serial, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted after its first cell (Ray shut down), then resumed: only the other cells run,
    and the CSV and the LaRa ranking are the serial sweep's bytes. The first run's task is
    prepared by the driver while Ray starts, the resumed run's by a Ray task."""
    folder, results = serial
    seen: list[int] = []
    prepared_here = _driver_prepares(monkeypatch)

    def interrupt(result: RunResult, done: int, total: int) -> None:
        seen.append(done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, tmp_path, interrupt, RayExecutor(cpus=2))
    assert not ray.is_initialized()
    assert seen == [1] and len(list((tmp_path / "cells").glob("*.json"))) == 1
    assert prepared_here == ["digits"]
    _ray_prepares(monkeypatch)
    progress: list[tuple[int, int]] = []
    resumed = run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, tmp_path,
                        lambda r, done, total: progress.append((done, total)),
                        RayExecutor(cpus=2))
    assert not ray.is_initialized()
    assert progress == [(1, TOTAL), (2, TOTAL), (3, TOTAL), (4, TOTAL)]
    assert _comparable(resumed) == _comparable(results)
    assert (tmp_path / "results.csv").read_bytes() == (folder / "results.csv").read_bytes()
    assert _ranking_bytes(tmp_path) == _ranking_bytes(folder)
    started: list[bool] = []  # run again, every cell cached: no Ray is started for nothing
    monkeypatch.setattr(executors._RaySession, "start", lambda self: started.append(True))
    again = run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, tmp_path, executor=RayExecutor(cpus=2))
    assert started == [] and _comparable(again) == _comparable(results)


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A one-node Ray cluster on loopback (`ray start --head --block`, stopped by its pid:
    SIGTERM makes it stop the processes it started)."""
    ray_binary = Path(sys.executable).parent / "ray"
    if not ray_binary.is_file():
        pytest.fail(f"{ray_binary} is missing: the ray package is a dependency")
    port = _free_port()
    # its own temporary folder (short: Unix socket paths live there), not /tmp/ray where other
    # Ray instances of this machine find "the current cluster"
    temporary = tempfile.mkdtemp(prefix="ray-test-", dir="/tmp")
    process = subprocess.Popen(
        [str(ray_binary), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temporary}", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=dict(os.environ, RAY_AUTH_MODE="disabled"))  # loopback only, no token to share
    try:
        deadline = time.monotonic() + 60
        while not _accepts(port):
            assert process.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head did not come up in 60 s"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(temporary, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_ray_cluster_gives_the_same_bytes(graph: Graph, serial, ray_cluster: str,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step on the cluster: the ranking too (computed by a Ray task)."""
    folder, results = serial
    _ray_prepares(monkeypatch)
    swept = run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, tmp_path,
                      executor=RayExecutor(address=ray_cluster))
    assert not ray.is_initialized()  # the driver disconnected
    assert _comparable(swept) == _comparable(results)
    assert (tmp_path / "results.csv").read_bytes() == (folder / "results.csv").read_bytes()
    assert _ranking_bytes(tmp_path) == _ranking_bytes(folder)


def test_serial_resume_computes_only_the_missing_cells(graph: Graph, serial, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = serial
    counter = Counter(monkeypatch)

    def interrupt_at_two(result: RunResult, done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, tmp_path, interrupt_at_two)
    assert len(counter.cells) == 2
    # the ranking is cached too: the resumed sweep does not compute it again
    monkeypatch.setattr(prepare, "compute_lara", _never)
    counter.cells.clear()
    run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, tmp_path)
    assert counter.cells == cells_of(CONFIG)[2:]
    assert (tmp_path / "results.csv").read_bytes() == (folder / "results.csv").read_bytes()


def _never(*args, **kwargs):
    raise AssertionError("the LaRa ranking was recomputed")


def _copy_cache(source: Path, target: Path) -> None:
    """The cached cells and LaRa ranking of one output folder into another."""
    (target / "cells").mkdir(parents=True, exist_ok=True)
    for path in [*(source / "cells").glob("*.json"), *source.glob("lara-*.json")]:
        (target / path.relative_to(source)).write_bytes(path.read_bytes())


def test_a_changed_setting_recomputes_every_cell(graph: Graph, serial, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = serial
    counter = Counter(monkeypatch)
    _copy_cache(folder, tmp_path)  # the serial sweep's cells, all at hand
    changed = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, epochs=2))
    run_sweep(graph, changed, DOWNSTREAM_TASKS, tmp_path)
    assert counter.cells == cells_of(CONFIG)
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2 * TOTAL


def test_corrupt_cache_files_are_recomputed_with_a_warning(
        graph: Graph, serial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    folder, _ = serial
    counter = Counter(monkeypatch)
    _copy_cache(folder, tmp_path)
    broken = sorted((tmp_path / "cells").glob("*.json"))[0]
    [ranking] = tmp_path.glob("lara-*.json")
    for path in (broken, ranking):
        path.write_text(path.read_text()[:40])  # a half-written file
    with caplog.at_level(logging.WARNING):
        run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, tmp_path)
    assert len(counter.cells) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert ranking.name in warnings[0] and broken.name in warnings[1]
    assert _ranking_bytes(tmp_path) == _ranking_bytes(folder)
    assert (tmp_path / "results.csv").read_bytes() == (folder / "results.csv").read_bytes()
    assert _cached(tmp_path / "cells" / broken.name) == _cached(folder / "cells" / broken.name)


def _cached(path: Path) -> dict:
    """A cache file's content but the wall-clock seconds."""
    data = json.loads(path.read_text())
    return data | {"result": data["result"] | {"seconds": None}}


def test_the_key_changes_with_the_model_the_data_and_every_setting(graph: Graph,
                                                                   tmp_path: Path) -> None:
    inputs = load_inputs(graph, CONFIG, DOWNSTREAM_TASKS, "digits", tmp_path, 1)
    model = graph_fingerprint(graph)
    cell = cells_of(CONFIG)[0]
    key = cell_key(model, inputs, CONFIG, cell, 1)
    assert key == cell_key(graph_fingerprint(load_onnx(default_model_path())), inputs, CONFIG,
                           cell, 1)  # the same model loaded again: the same key
    nudged = load_onnx(default_model_path())
    weight = nudged.nodes[0].params["weight"].copy()
    weight.flat[0] *= 1 + 2 ** -20  # one weight, in its 20th bit
    nudged.nodes[0].params["weight"] = weight
    data = dataclasses.replace(inputs, data=dataclasses.replace(
        inputs.data, y_train=inputs.data.y_train[::-1].copy()))
    changes = [
        cell_key(graph_fingerprint(nudged), inputs, CONFIG, cell, 1),
        cell_key(model, data, CONFIG, cell, 1),
        cell_key(model, inputs, CONFIG, cell, 2),
        cell_key(model, inputs, CONFIG, cells_of(CONFIG)[2], 1),
        *(cell_key(model, inputs, dataclasses.replace(CONFIG, **change), cell, 1) for change in (
            {"train": dataclasses.replace(CONFIG.train, lr=0.05)},
            {"lara": dataclasses.replace(CONFIG.lara, epochs=2)},
            {"alpha": CONFIG.alpha * 1.01}, {"calibration_samples": 32},
            {"train_per_class": 9}))]
    assert len({key, *changes}) == 1 + len(changes)


@pytest.mark.parametrize("via", ["argument", "RAY_ADDRESS"])
def test_an_unreachable_cluster_fails_in_one_line(graph: Graph, tmp_path: Path, via: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    if via == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", address)
    executor = RayExecutor(address=address if via == "argument" else None)
    start = time.monotonic()
    with pytest.raises(MedyateError) as failure:
        run_sweep(graph, CONFIG, DOWNSTREAM_TASKS, tmp_path, executor=executor)
    assert time.monotonic() - start < FAIL_WITHIN
    message = str(failure.value)
    assert f"no Ray cluster at {address}" in message and "\n" not in message
    assert not ray.is_initialized()
