"""`medyate-mcu build` reports the flash the embedded samples take (data.c's arrays in the ELF),
in the build's sample format; the serial firmware embeds none."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from arm_support import require_tool
from click.testing import CliRunner
from elftools.elf.elffile import ELFFile

from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import Project
from medyate_mcu.toolchain.compile import CompileOptions, compile_project

LINE = re.compile(r"embedded samples: (\d+) train \+ (\d+) test, (\w+), ([\d,]+) B of flash")


@pytest.fixture(autouse=True)
def toolchain() -> None:
    require_tool("arm-none-eabi-gcc")
    require_tool("arm-none-eabi-objdump")


def _build(folder: Path, sample_format: str) -> tuple[Path, re.Match[str], int]:
    """Compile digits for the F746 with 8 training samples, build the train firmware; the
    build's folder, its report line and the image's .data_rodata section (data.c) size."""
    compile_project(CompileOptions(budget=290 * 1024, board="stm32f746g-disco", data="digits",
                                   embed=8, epochs=2, batch_size=8,
                                   sample_format=sample_format), folder)
    result = CliRunner().invoke(main, ["build", str(folder)])
    assert result.exit_code == 0, result.output
    line = LINE.search(result.output)
    assert line, result.output
    with Project.open(folder).firmware_path("train").open("rb") as handle:
        section = ELFFile(handle).get_section_by_name(".data_rodata")
        return folder, line, section["sh_size"]


@pytest.fixture(scope="module")
def pixels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, re.Match[str], int]:
    return _build(tmp_path_factory.mktemp("flash") / "uint8", "stored")


def test_the_report_counts_the_embedded_samples_in_their_format(
        pixels: tuple[Path, re.Match[str], int], tmp_path: Path) -> None:
    """The oracle: (train + test) samples of input_size values of the format's bytes, plus a
    one-byte label each; the float32 build's data section is larger than the uint8 one's by
    exactly 3 bytes a value. Forgetting the labels (the smallest error the line could make)
    would be off by train + test bytes."""
    folder, line8, section8 = pixels
    _, line32, section32 = _build(tmp_path / "float32", "float32")
    size = int(np.prod(Project.open(folder).reference().graph.input_shape))
    train, test = int(line8.group(1)), int(line8.group(2))
    assert (train, test) == (8, 2)
    samples = train + test
    reported8, reported32 = (int(m.group(4).replace(",", "")) for m in (line8, line32))
    assert (line8.group(3), line32.group(3)) == ("uint8", "float32")
    assert reported8 == samples * size + samples  # 30,730 B for 3x32x32 digits
    assert reported32 == samples * 4 * size + samples
    assert section32 - section8 == samples * 3 * size
    assert section8 - 4 < reported8 <= section8  # the section only adds its alignment


def test_the_serial_firmware_embeds_none(pixels: tuple[Path, re.Match[str], int]) -> None:
    result = CliRunner().invoke(main, ["build", str(pixels[0]), "--app", "serial"])
    assert result.exit_code == 0, result.output
    assert "embedded samples: none (the serial firmware receives them over the link)" in \
        result.output
