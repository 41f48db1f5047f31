"""The paper's setting (issue 11): the bundled MobileNetV2-w0.35 at 128 px, int8 backbone,
`--budget auto` on the STM32F746G-DISCO (320 KiB RAM, 1 MiB flash) and the nRF52840-DK
(256 KiB, 1 MiB), linked with arm-none-eabi-gcc and read back from the ELF; on the emulated
F746 (qemu-mps2-an500, the same limits) the Cortex-M engine ≡ the host engine byte for byte and
the host engine against the reference, on a reduced run."""

from __future__ import annotations

from pathlib import Path

import pytest
from arm_support import require_tool

from medyate_mcu.boards import get_board
from medyate_mcu.codegen.folder import Project
from medyate_mcu.planning.memory import Backbone
from medyate_mcu.run.verify_qemu import verify_qemu
from medyate_mcu.toolchain.arm import build_firmware, size_report
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.zoo import bundled_model_path

MODEL = "mbv2-w0.35-128"
TASK = "digits"
# The paper's smallest channel budget, 27,946 float units. It does not fit the F746 beside
# the classifier (102,480 B) and the int8 stem's peak (114,688 B): docs/quantization.md §11.
PAPER_SMALLEST_POOL = 27_946 * 4


def paper_build(board: str, folder: Path, epochs: int = 2) -> Project:
    require_tool("arm-none-eabi-gcc")
    return compile_project(CompileOptions(model=bundled_model_path(MODEL), data=TASK,
                                          budget="auto", board=board, backbone="int8",
                                          calibration_samples=16, epochs=epochs),
                           folder, say=lambda _: None)


@pytest.mark.parametrize("board_name", ["stm32f746g-disco", "nrf52840-dk"])
def test_the_paper_model_fits_the_board_read_from_the_elf(board_name: str,
                                                          tmp_path: Path) -> None:
    project = paper_build(board_name, tmp_path / "build")
    plan = project.reference().plan
    assert plan.memory.backbone is Backbone.INT8 and plan.memory.int8_nodes
    board = get_board(board_name)
    report = size_report(build_firmware(project), board, plan.budget)
    assert not report.problems(), report.problems()
    assert report.ram_bytes <= board.ram_bytes and report.flash_bytes <= board.flash_bytes
    assert report.engine_bytes == plan.total_bytes == plan.budget
    assert 0 < plan.pool_bytes < PAPER_SMALLEST_POOL


def test_the_paper_model_verifies_under_qemu(tmp_path: Path) -> None:
    require_tool("qemu-system-arm")
    project = paper_build("qemu-mps2-an500", tmp_path / "build", epochs=1)
    checks, figures = verify_qemu(project, epochs=1, samples=8)
    assert all(check.ok for check in checks), [c for c in checks if not c.ok]
    names = [check.name for check in checks]
    assert sum(name.startswith("Cortex-M ≡ host C") for name in names) == 2  # init, epoch 1
    assert "epoch 1 int8 forward C / integer reference" in names
    assert figures.steps == 8
