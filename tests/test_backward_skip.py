"""The backward pass stops below the lowest candidate layer with a channel selected this epoch
(engine.h, mdy_selected_below). Oracle: the same demo engine built with MDY_FULL_BACKWARD, which
runs the whole pass every step (the behaviour before the stop). Over a run of several epochs, every
RAM symbol but the per-sample arena is equal bit for bit after every sample; in an epoch without a
stem channel, the arena differs only in the error buffers the whole pass writes below candidate 1
(the stem is candidate 0), among them the stem's output error, which the stopped pass leaves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from c_build import require_gcc

from medyate_mcu.graph import load_onnx
from medyate_mcu.run.engine_lib import EngineLibrary
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.toolchain.host import LIBRARY, symbol_sizes
from medyate_mcu.zoo import default_model_path
from medyate_mcu.zoo.tasks import load_task

BUDGET = 200 * 1024
EPOCHS, SAMPLES = 4, 12
MAP_LINE = re.compile(r"^#define (\w+)\s+(\d+) /\*\s+(\d+)\s+(\d+)-(\d+)\s+(.+) \*/$")
STOP = re.compile(r"^    /\* \[(\d+)\] .*\n.*\n    if \(!mdy_selected_below\(model, 1u\)\)", re.M)
SENTINEL = 0xA5


def build_lib(build: Path, name: str, cflags: str) -> Path:
    subprocess.run(["make", "-s", "-B", "-C", str(build), "lib", f"CC={require_gcc()}",
                    f"CFLAGS={cflags}"], check=True, capture_output=True, text=True)
    return Path(shutil.copy2(build / LIBRARY, build / name))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The demo at 200kB: its folder, the library as generated, and the full-backward one."""
    build = tmp_path_factory.mktemp("demo")
    compile_project(CompileOptions(model=default_model_path(), budget=BUDGET, data="digits",
                                   embed=SAMPLES, epochs=EPOCHS, batch_size=4), build)
    return (build, build_lib(build, "stopping.so", "-O2"),
            build_lib(build, "full.so", "-O2 -DMDY_FULL_BACKWARD"))


def arena_map(source: str) -> dict[str, tuple[int, int, int, int]]:
    """Arena buffer -> (offset, bytes, first step, last step), from model.c's map."""
    return {m.group(1): tuple(int(v) for v in m.groups()[1:5])
            for m in map(MAP_LINE.match, source.splitlines()) if m}


def ram(engine: EngineLibrary, sizes: dict[str, int]) -> dict[str, bytes]:
    return {name: engine.array(name, np.uint8, size).tobytes() for name, size in sizes.items()}


def skipped_bytes(source: str) -> tuple[np.ndarray, slice]:
    """Arena bytes only the pass below the stop after candidate 1 writes (the error buffers it
    first writes), and the stem's output error among them."""
    entries = arena_map(source)
    stop_step = int(STOP.search(source).group(1))
    allowed = np.zeros(max(o + s for o, s, _, _ in entries.values()), bool)
    for name, (offset, size, first, _) in entries.items():
        if name.startswith("ERR_") and first > stop_step:
            allowed[offset:offset + size] = True
    offset, size, first, _ = entries["ERR_features_0_2"]
    assert first > stop_step
    return allowed, slice(offset, offset + size)


def compare_runs(source: str, stopping_lib: Path, full_lib: Path) -> list[str]:
    """Train both libraries on the same samples; what differs beyond the stop (empty: none)."""
    firsts = [int(v) for v in re.findall(r"\.first_channel = (\d+)u", source)]
    assert firsts[:2] == [0, 3]  # the stem (candidate 0) and its 3 channels come first
    allowed, stem_error = skipped_bytes(source)
    sizes = symbol_sizes(stopping_lib)
    arena_bytes = sizes.pop("mdy_arena")
    stopping, full = (EngineLibrary(lib, 3 * 32 * 32, 10) for lib in (stopping_lib, full_lib))
    data = load_task("digits", load_onnx(default_model_path()))
    rng = np.random.default_rng(0)
    problems: list[str] = []
    stem_epochs = []
    for engine in (stopping, full):
        engine.init()
    for epoch in range(1, EPOCHS + 1):
        if stopping.selected() != full.selected():
            return [f"epoch {epoch}: selections differ"]
        stem_selected = stopping.state.n_selected > 0 and stopping.selected()[0] < firsts[1]
        stem_epochs.append(stem_selected)
        for index in rng.choice(len(data.x_train), SAMPLES, replace=False):
            arenas = []
            for engine in (stopping, full):
                engine.array("mdy_arena", np.uint8, arena_bytes)[:] = SENTINEL
                engine.train_sample(data.x_train[index], int(data.y_train[index]))
                arenas.append(engine.array("mdy_arena", np.uint8, arena_bytes).copy())
            if ram(stopping, sizes) != ram(full, sizes):
                return [f"epoch {epoch}, sample {index}: RAM outside the arena differs"]
            differs = arenas[0] != arenas[1]
            if stem_selected and differs.any():
                problems.append(f"epoch {epoch}: the pass stopped with a stem channel selected")
            if not stem_selected and (not differs[stem_error].any()
                                      or (differs & ~allowed[:arena_bytes]).any()):
                problems.append(f"epoch {epoch}: the pass did not stop at candidate 1")
        for engine in (stopping, full):
            engine.end_epoch()
    assert any(stem_epochs) and not all(stem_epochs), stem_epochs  # both cases were run
    return problems


def test_the_pass_stops_only_where_nothing_below_is_used(
        demo: tuple[Path, Path, Path]) -> None:
    build, stopping_lib, full_lib = demo
    source = (build / "model.c").read_text()
    assert source.count("mdy_selected_below(model,") == 7  # classifier, candidates 6..1
    assert compare_runs(source, stopping_lib, full_lib) == []


def test_a_stop_one_layer_too_early_is_caught(demo: tuple[Path, Path, Path],
                                             tmp_path: Path) -> None:
    """Mutant: the boundary of the layer below (the pass stops above the lowest selected one)."""
    build = Path(shutil.copytree(demo[0], tmp_path / "mutant"))
    engine_c = build / "medyate" / "runtime" / "engine.c"
    text = engine_c.read_text()
    right = "model->candidates[index].first_channel"
    assert right in text
    engine_c.write_text(text.replace(right, "model->candidates[index - 1u].first_channel"))
    mutant = build_lib(build, "mutant.so", "-O2")
    problems = compare_runs((build / "model.c").read_text(), mutant, demo[2])
    assert problems and "RAM outside the arena differs" in problems[0], problems
