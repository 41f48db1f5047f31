"""Cortex-M builds (link only) for the real boards: the image fits, its engine RAM is the
compiler's plan byte for byte, the linker script follows the board file, and a budget whose
image does not fit the board's RAM fails with one line naming the overflow in bytes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from arm_support import compile_for, require_tool, small_model
from click.testing import CliRunner
from elftools.elf.elffile import ELFFile

from medyate_mcu.boards import get_board
from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import Project
from medyate_mcu.codegen.project import DEFAULT_STACK_BYTES
from medyate_mcu.errors import MedyateError
from medyate_mcu.run.verify import memory_checks
from medyate_mcu.toolchain.arm import build_firmware, size_report, stack_bound
from medyate_mcu.toolchain.compile import CompileOptions, compile_project

KiB = 1024


@pytest.fixture(scope="module")
def mbv1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_model(tmp_path_factory.mktemp("mbv1"))


@pytest.fixture(autouse=True)
def toolchain() -> None:
    require_tool("arm-none-eabi-gcc")
    require_tool("arm-none-eabi-objdump")


def _case(name: str, mbv1: Path) -> tuple[Path | None, str]:
    return {"stm32f746g-disco": (None, "290kB"), "nrf52840-dk": (None, "200kB"),
            "nucleo-f411re": (mbv1, "96kB")}[name]


@pytest.mark.parametrize("board_name", ["stm32f746g-disco", "nucleo-f411re", "nrf52840-dk"])
def test_link_fits_and_engine_ram_is_the_plan(board_name: str, mbv1: Path,
                                              tmp_path: Path) -> None:
    model, budget = _case(board_name, mbv1)
    build = compile_for(model, board_name, budget, tmp_path / "b")
    board = get_board(board_name)
    image = build_firmware(Project.open(build))
    for suffix in (".bin", ".hex"):
        assert image.with_suffix(suffix).stat().st_size > 0
    project = Project.open(build)
    manifest = project.manifest
    _, plan, _, _ = project.reference()
    failed = [check for check in memory_checks(image, plan) if not check.ok]
    assert not failed, failed
    report = size_report(image, board, manifest.budget)
    assert report.engine_bytes == plan.total_bytes == manifest.budget
    assert report.problems() == []
    assert report.ram_bytes <= board.ram_bytes and report.flash_bytes <= board.flash_bytes
    with image.open("rb") as handle:  # the linker script follows the board file
        elf = ELFFile(handle)
        sections = {s.name: s for s in elf.iter_sections()}
        assert sections[".isr_vector"]["sh_addr"] == board.flash_origin
        assert sections[".data"]["sh_addr"] == board.ram_origin
        stack = sections[".stack"]
        assert stack["sh_size"] == DEFAULT_STACK_BYTES
        assert stack["sh_addr"] + stack["sh_size"] <= board.ram_origin + board.ram_bytes
        # Armv7E-M (M4 and M7), hard-float ABI: Tag_ABI_VFP_args (28) = 1, VFP registers
        attributes = sections[".ARM.attributes"].data()
        assert b"7E-M" in attributes and b"\x1c\x01" in attributes
        flags = elf.header["e_flags"]
        assert flags & 0x400  # EF_ARM_ABI_FLOAT_HARD
    # RAM parts read from the image add up to what the linker holds against the board: from the
    # RAM's origin to the stack's top, the sections and the alignment gaps between them
    assert report.ram_bytes == stack["sh_addr"] + stack["sh_size"] - board.ram_origin
    assert report.ram_bytes - sum(sections[name]["sh_size"]
                                  for name in (".data", ".bss", ".stack")) < 16
    bound = stack_bound(build, image)
    assert bound.bytes is not None and 200 < bound.bytes < DEFAULT_STACK_BYTES
    assert bound.chain[0] == "mdy_train_sample"


@pytest.mark.parametrize("board_name, fits", [("nrf52840-dk", "200kB"),
                                               ("nucleo-f411re", "96kB")])
def test_image_over_the_board_ram_fails_naming_the_overflow(board_name: str, fits: str,
                                                            mbv1: Path, tmp_path: Path) -> None:
    """`compile` refuses a budget the board cannot hold (tests/test_auto_budget.py), so the RAM
    is overflowed here by the stack: the link fails with one line naming the bytes over."""
    model, _ = _case(board_name, mbv1)
    board = get_board(board_name)
    small = compile_for(model, board_name, fits, tmp_path / "fits")
    project = Project.open(small)
    used = size_report(build_firmware(project), board, project.manifest.budget).ram_bytes
    stack = DEFAULT_STACK_BYTES + (board.ram_bytes - used) // 8 * 8 + 64  # 57..64 B over
    expected = used - DEFAULT_STACK_BYTES + stack - board.ram_bytes
    with pytest.raises(MedyateError) as error:
        build_firmware(project, stack_bytes=stack)
    message = str(error.value)
    assert "\n" not in message
    found = re.search(r"RAM overflowed by ([\d,]+) bytes", message)
    assert found, message
    assert abs(int(found.group(1).replace(",", "")) - expected) <= 8
    result = CliRunner().invoke(main, ["build", str(small), "--stack", str(stack)])
    assert result.exit_code == 1
    assert "RAM overflowed by" in result.output and board_name in result.output


def test_build_command_reports_parts(tmp_path: Path) -> None:
    build = compile_for(None, "stm32f746g-disco", "290kB", tmp_path / "b")
    result = CliRunner().invoke(main, ["build", str(build)])
    assert result.exit_code == 0, result.output
    for part in ("engine arena", "frozen weights", "embedded data set", "stack (reserved)",
                 "engine RAM (mdy_ symbols): 296,960 B of the 296,960 B budget",
                 "stack of mdy_train_sample: at most"):
        assert part in result.output


def test_host_project_refuses_arm_build(tmp_path: Path) -> None:
    project = compile_project(CompileOptions(budget=200 * 1024, embed=8), tmp_path / "b")
    with pytest.raises(MedyateError, match="compiled without --board"):
        build_firmware(project)


def test_the_flagship_command_fits_its_board(tmp_path: Path) -> None:
    """`compile --budget 300kB --board stm32f746g-disco` on the bundled model links and fits."""
    out = tmp_path / "f746"
    project = compile_project(CompileOptions(budget=300 * KiB, board="stm32f746g-disco"), out)
    board = get_board("stm32f746g-disco")
    report = size_report(build_firmware(project), board, 300 * KiB)
    assert not report.problems(), report.problems()
    assert report.engine_bytes == 300 * KiB
    assert report.ram_bytes <= board.ram_bytes and report.flash_bytes <= board.flash_bytes
