"""Shared by the Cortex-M tests: required tools (skip locally, FAIL in CI), a small reference
model that fits the 128 KiB boards, and compiling a project for a board."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from medyate_mcu.graph import export_onnx, load_onnx
from medyate_mcu.method.lara import LaraSettings, compute_lara
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.units import parse_size
from medyate_mcu.zoo import architectures, default_model_path
from medyate_mcu.zoo.tasks import load_task

TASK = "digits"


def require_tool(name: str) -> str:
    """Path of ``name``; skip the test when it is missing, fail when ``CI=true``."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI to test the Cortex-M builds")
        pytest.skip(f"{name} is not installed")
    return path


def small_model(folder: Path) -> Path:
    """mbv1 at width 0.5 (seeded weights) as .onnx with its LaRa ranking beside it."""
    torch.manual_seed(0)
    module = architectures.create("mbv1", num_classes=10, width=0.5)
    path = folder / "mbv1.onnx"
    onnx.save(export_onnx(module, torch.zeros(1, 3, 32, 32),
                          load_onnx(default_model_path()).metadata), path)
    graph = load_onnx(path)
    data = load_task(TASK, graph)
    compute_lara(graph, data.x_train[:32], data.y_train[:32], data.classes, TASK,
                 LaraSettings(epochs=1, batch_size=16)).save(folder / "mbv1.lara.json")
    return path


def compile_for(model: Path | None, board: str, budget: str, out: Path,
                samples: int = 24, epochs: int = 2) -> Path:
    """`medyate-mcu compile` for ``board`` (model None: the bundled demo model)."""
    compile_project(CompileOptions(model=model, budget=parse_size(budget), board=board,
                                   data=TASK, embed=samples, epochs=epochs, batch_size=8), out)
    return out


def kernel_firmware_folder(folder: Path, board: str, files: dict[str, str],
                           sources: list[Path]) -> Path:
    """A demo project for ``board`` (64 kB engine: the HAL, linker script and flags of a kernel
    test's firmware) with ``files`` written (name -> text) and ``sources`` copied beside it."""
    compile_project(CompileOptions(budget=parse_size("64kB"), board=board), folder,
                    say=lambda _: None)
    for name, text in files.items():
        (folder / name).write_text(text)
    for source in sources:
        shutil.copy2(source, folder)
    return folder
