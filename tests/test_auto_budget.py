"""``--budget auto``: the engine gets what the board's RAM leaves after the stack, the rest of the
image and the reserve; the whole image then fits, and a board too small says so in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from arm_support import require_tool
from click.testing import CliRunner

from medyate_mcu.boards import get_board
from medyate_mcu.build.arm import build_firmware, size_report
from medyate_mcu.build.auto_budget import RESERVE_BYTES
from medyate_mcu.cli.main import main
from medyate_mcu.run.verify import load_manifest


@pytest.fixture(autouse=True)
def toolchain() -> None:
    require_tool("arm-none-eabi-gcc")


@pytest.mark.parametrize("board_name", ["nrf52840-dk", "stm32f746g-disco"])
def test_auto_budget_fills_the_board(board_name: str, tmp_path: Path) -> None:
    out = tmp_path / "auto"
    result = CliRunner().invoke(main, ["compile", "--budget", "auto", "--board", board_name,
                                       "--embed-data", "16", "-o", str(out)])
    assert result.exit_code == 0, result.output
    said = re.search(r"--budget auto: .* = ([\d,]+) B for the engine", result.output)
    assert said is not None, result.output
    budget = int(said.group(1).replace(",", ""))
    assert load_manifest(out).budget == budget
    board = get_board(board_name)
    report = size_report(build_firmware(out), board, budget)
    assert not report.problems()
    assert report.engine_bytes <= budget
    # nothing more could have been given: the image uses the RAM but the reserve (and padding)
    assert board.ram_bytes - RESERVE_BYTES - 64 <= report.ram_bytes <= board.ram_bytes


def test_auto_budget_on_a_board_too_small(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compile", "--budget", "auto", "--board", "nucleo-f411re",
                                       "-o", str(tmp_path / "small")])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "does not fit nucleo-f411re" in line
    assert re.search(r"RAM overflowed by [\d,]+ bytes", line)
    assert not (tmp_path / "small").exists()


def test_auto_budget_needs_a_board(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compile", "--budget", "auto", "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "--budget auto needs --board" in result.stderr
