"""What a board's RAM holds. ``--budget auto``: the engine gets what the board's RAM leaves after
the stack, the rest of the image and the reserve, on every real board, for the demo and a user
model; the whole image then fits, and a board too small says so in one line. A fixed budget the
board cannot hold is refused at `compile`, with the figure, measured the same way."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
import torch
from arm_support import TASK, require_tool, small_model
from click.testing import CliRunner
from elftools.elf.elffile import ELFFile
from model_builders import write_tail_first_ranking

from medyate_mcu.boards import all_boards, get_board
from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import Project
from medyate_mcu.graph import export_onnx, load_onnx
from medyate_mcu.toolchain import compile as compile_module
from medyate_mcu.toolchain.arm import build_firmware, size_report
from medyate_mcu.toolchain.auto_budget import RESERVE_BYTES
from medyate_mcu.zoo import architectures, default_model_path


@pytest.fixture(autouse=True)
def toolchain() -> None:
    require_tool("arm-none-eabi-gcc")


REAL_BOARDS = sorted(name for name, board in all_boards().items() if board.kind == "real")
TOO_SMALL_FOR_THE_DEMO = "nucleo-f411re"  # 128 KiB: refused, test_auto_budget_on_a_board_too_small


@pytest.fixture(scope="module")
def user_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_model(tmp_path_factory.mktemp("user"))


@pytest.mark.parametrize("model_name, board_name",
                         [("demo", name) for name in REAL_BOARDS
                          if name != TOO_SMALL_FOR_THE_DEMO]
                         + [("user", name) for name in REAL_BOARDS])
def test_auto_budget_fills_the_board(model_name: str, board_name: str, user_model: Path,
                                     tmp_path: Path) -> None:
    """`compile --budget auto --board X` on every real board, the demo and a user model: the ARM
    image links, its engine RAM is within the chosen budget, and only the reserve is left."""
    out = tmp_path / "auto"
    model = [str(user_model), "--data", TASK] if model_name == "user" else []
    result = CliRunner().invoke(main, ["compile", *model, "--budget", "auto", "--board",
                                       board_name, "--embed-data", "16", "-o", str(out)])
    assert result.exit_code == 0, result.output
    said = re.search(r"--budget auto: .* = ([\d,]+) B for the engine", result.output)
    assert said is not None, result.output
    budget = int(said.group(1).replace(",", ""))
    assert Project.open(out).manifest.budget == budget
    board = get_board(board_name)
    report = size_report(build_firmware(Project.open(out)), board, budget)
    assert not report.problems()
    assert report.engine_bytes <= budget
    # nothing more could have been given: the image uses the RAM but the reserve (and the pool's
    # rounding down to whole 8-byte slots)
    assert board.ram_bytes - RESERVE_BYTES - 8 < report.ram_bytes <= board.ram_bytes


def test_a_budget_the_board_cannot_hold_is_refused_at_compile(tmp_path: Path) -> None:
    """qemu-mps2-an386 (256 KiB): 250 kB used to compile and then fail `build` by 10,616 B. It
    is refused at compile with the figure; that figure builds, filling the RAM, and the stack
    the image reserves is the one `build --help` states."""
    board = get_board("qemu-mps2-an386")
    args = ["compile", "--board", board.name, "--embed-data", "16"]
    refused = CliRunner().invoke(main, [*args, "--budget", "250kB", "-o", str(tmp_path / "no")])
    assert refused.exit_code == 1
    line = refused.stderr.strip()
    assert "\n" not in line and line.startswith("error: budget 250.0 KiB (256000 B) does not "
                                                 "fit qemu-mps2-an386:"), line
    assert not (tmp_path / "no").exists()
    most = int(re.search(r"= ([\d,]+) B at most for the engine", line).group(1).replace(",", ""))
    assert f"use --budget {most} or less" in line
    over = CliRunner().invoke(main, [*args, "--budget", str(most + 1), "-o", str(tmp_path / "n")])
    assert over.exit_code == 1 and "at most for the engine" in over.stderr
    out = tmp_path / "most"
    result = CliRunner().invoke(main, [*args, "--budget", str(most), "-o", str(out)])
    assert result.exit_code == 0, result.output
    image = build_firmware(Project.open(out))
    report = size_report(image, board, most)
    assert not report.problems()
    assert board.ram_bytes - 8 < report.ram_bytes <= board.ram_bytes
    with image.open("rb") as handle:
        stack = ELFFile(handle).get_section_by_name(".stack")["sh_size"]
    help_text = CliRunner().invoke(main, ["build", "--help"]).output
    assert f"[default: {stack:,} B]" in " ".join(help_text.split())


def test_without_the_toolchain_compile_says_build_checks_the_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    result = CliRunner().invoke(main, ["compile", "--board", "qemu-mps2-an386", "--budget",
                                       "250kB", "--embed-data", "8", "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "arm-none-eabi-gcc is not installed" in " ".join(result.output.split())


def large_input_model(folder: Path) -> Path:
    """The demo architecture at 64 px (seeded weights), its ranking deepest layer first (made
    here, no LaRa run): in float32 its 48×32×32 expansions alone take 192 KiB."""
    torch.manual_seed(0)
    module = architectures.create("mbv2", num_classes=10, resolution=64)
    path = folder / "mbv2_64.onnx"
    onnx.save(export_onnx(module, torch.zeros(1, 3, 64, 64),
                          load_onnx(default_model_path()).metadata), path)
    write_tail_first_ranking(load_onnx(path), folder / "mbv2_64.lara.json")
    return path


def test_auto_budget_on_a_board_too_small(tmp_path: Path) -> None:
    model = large_input_model(tmp_path)
    result = CliRunner().invoke(main, ["compile", str(model), "--data", TASK, "--budget", "auto",
                                       "--board", "nucleo-f411re", "--backbone", "float32",
                                       "-o", str(tmp_path / "small")])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "does not fit nucleo-f411re" in line
    assert re.search(r"RAM overflowed by [\d,]+ bytes", line)
    assert not (tmp_path / "small").exists()


def test_auto_backbone_fits_a_model_to_a_board_float32_cannot(tmp_path: Path) -> None:
    """The same model and board with the default --backbone auto: the float32 engine does not
    fit its 128 KiB, so compile says so and takes an int8 backbone, which does."""
    model = large_input_model(tmp_path)
    result = CliRunner().invoke(main, ["compile", str(model), "--data", TASK, "--budget", "auto",
                                       "--board", "nucleo-f411re", "--embed-data", "8",
                                       "-o", str(tmp_path / "int8")])
    assert result.exit_code == 0, result.output
    assert re.search(r"backbone: int8, since in float32 its smallest engine needs [\d.]+ KiB",
                     result.output)
    assert Project.open(tmp_path / "int8").manifest.backbone == "int8"


def test_auto_budget_needs_a_board(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compile", "--budget", "auto", "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "--budget auto needs --board" in result.stderr
