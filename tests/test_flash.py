"""`medyate-mcu flash`: the command formed for every real board and tool, emulated boards sent
to `simulate`, and a missing ELF, tool or probe reported in one line."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from medyate_mcu.boards import all_boards, get_board
from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import firmware_path
from medyate_mcu.device.flash import flash_command, run_flash
from medyate_mcu.errors import MedyateError

REAL = [name for name, board in all_boards().items() if board.kind == "real"]
EMULATED = [name for name, board in all_boards().items() if board.kind == "emulated"]


def test_there_are_real_and_emulated_boards() -> None:
    assert {"nucleo-f411re", "stm32f746g-disco", "nrf52840-dk"} <= set(REAL)
    assert EMULATED


@pytest.mark.parametrize("name", REAL)
def test_openocd_and_pyocd_commands(name: str) -> None:
    board = get_board(name)
    elf = Path("/builds/demo/arm/medyate_serial.elf")
    openocd = flash_command(board, elf, "openocd")
    adapter = ["-f", "interface/jlink.cfg", "-c", "transport select swd"] \
        if name == "nrf52840-dk" else []
    assert openocd.argv == ["openocd", *adapter, "-f", board.openocd_config, "-c",
                            "program /builds/demo/arm/medyate_serial.elf verify reset exit"]
    pyocd = flash_command(board, elf, "pyocd")
    assert pyocd.argv == ["pyocd", "flash", "-t", board.pyocd_target, str(elf)]
    assert flash_command(board, elf).tool == "openocd"  # the default where configured


def test_expected_board_configurations() -> None:
    elf = Path("fw.elf")
    assert flash_command(get_board("nucleo-f411re"), elf).argv[2] == "board/st_nucleo_f4.cfg"
    assert flash_command(get_board("nrf52840-dk"), elf, "pyocd").argv[3] == "nrf52840"


def test_a_path_with_spaces_stays_one_tcl_word() -> None:
    command = flash_command(get_board("nucleo-f411re"), Path("/my builds/fw.elf"))
    assert command.argv[-1] == "program {/my builds/fw.elf} verify reset exit"


@pytest.mark.parametrize("name", EMULATED)
def test_emulated_boards_are_refused_with_a_pointer_to_simulate(name: str) -> None:
    with pytest.raises(MedyateError, match=r"emulated.*medyate-mcu simulate"):
        flash_command(get_board(name), Path("fw.elf"))


def _build_dir(tmp_path: Path) -> Path:
    """A folder that passes for a compile output (the manifest is all flash reads)."""
    build = tmp_path / "build"
    build.mkdir()
    fields = dict(model_path="m.onnx", model_sha256="00", classes=10, budget=1, alpha=0.2,
                  k_rule="closest", ranking_path="r.json", settings={}, data_source=None,
                  candidates=[], pool_bytes=0, fixed_bytes=0, parts={})
    (build / "medyate_build.json").write_text(json.dumps(fields))
    return build


def test_cli_dry_run_prints_the_command(tmp_path: Path) -> None:
    build = _build_dir(tmp_path)
    result = CliRunner().invoke(main, ["flash", str(build), "--board", "stm32f746g-disco",
                                       "--dry-run"])
    assert result.exit_code == 0, result.output
    elf = firmware_path(build, "serial").as_posix()
    assert result.output.strip() == (f"openocd -f board/stm32f7discovery.cfg -c "
                                     f"'program {elf} verify reset exit'")
    result = CliRunner().invoke(main, ["flash", str(build), "--board", "nucleo-f411re",
                                       "--tool", "pyocd", "--app", "train", "--dry-run"])
    assert result.output.strip() == \
        f"pyocd flash -t stm32f411re {firmware_path(build, 'train')}"


def test_cli_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = _build_dir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["flash", str(build), "--board", "qemu-mps2-an386"])
    assert result.exit_code == 1 and "medyate-mcu simulate" in result.output
    result = runner.invoke(main, ["flash", str(build), "--board", "nucleo-f411re"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: {firmware_path(build, 'serial')} does not exist; "
                                     f"build it first: make -C {build} arm FIRMWARE_APP=serial")
    result = runner.invoke(main, ["flash", str(build)])
    assert result.exit_code == 1 and "compiled without --board" in result.output
    result = runner.invoke(main, ["flash", str(build), "--board", "nosuch"])
    assert result.exit_code == 2 and "unknown board" in result.output

    elf = firmware_path(build, "serial")
    elf.parent.mkdir()
    elf.write_bytes(b"not an elf")
    result = runner.invoke(main, ["flash", str(build), "--board", "nucleo-f411re"])
    assert result.output.strip() == f"error: {elf} is not an ELF file"

    elf.write_bytes(b"\x7fELF" + bytes(60))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = runner.invoke(main, ["flash", str(build), "--board", "nucleo-f411re"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: openocd is not installed")
    assert len(result.output.strip().splitlines()) == 1


def _fake_tool(folder: Path, name: str, output: str, status: int) -> None:
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f"#!/bin/sh\necho '{output}' >&2\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_no_probe_and_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    board = get_board("nucleo-f411re")
    # what openocd prints with no ST-LINK attached
    _fake_tool(bin_dir, "openocd", "Error: open failed", 1)
    with pytest.raises(MedyateError, match=r"no debug probe found.*Error: open failed"):
        run_flash(flash_command(board, Path("fw.elf")))
    _fake_tool(bin_dir, "pyocd", "0000 C No connected debug probes [__main__]", 1)
    with pytest.raises(MedyateError, match="no debug probe found"):
        run_flash(flash_command(board, Path("fw.elf"), "pyocd"))
    _fake_tool(bin_dir, "openocd", "Error: unable to select a session transport.", 0)
    with pytest.raises(MedyateError, match=r"openocd failed.*session transport"):
        run_flash(flash_command(board, Path("fw.elf")))  # exit 0 is not success for openocd
    _fake_tool(bin_dir, "openocd", "** Verified OK **", 0)
    assert "Verified OK" in run_flash(flash_command(board, Path("fw.elf")))


def test_real_openocd_without_a_probe_fails_clearly(tmp_path: Path) -> None:
    if shutil.which("openocd") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openocd is required in CI")
        pytest.skip("openocd is not installed")
    elf = tmp_path / "fw.elf"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    for name in REAL:
        with pytest.raises(MedyateError) as caught:
            run_flash(flash_command(get_board(name), elf), timeout=60)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(all_boards()))
def test_each_boards_uart_driver_compiles_for_its_core(name: str, tmp_path: Path) -> None:
    """The real boards' drivers cannot run here: they must at least build -Werror clean for
    the board's core with arm-none-eabi-gcc."""
    from medyate_mcu.codegen.serial import uart_config, uart_driver

    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        if os.environ.get("CI") == "true":
            pytest.fail("arm-none-eabi-gcc is required in CI")
        pytest.skip("arm-none-eabi-gcc is not installed")
    import subprocess

    board = get_board(name)
    (tmp_path / "uart_config.h").write_text(uart_config(board))
    hal = Path(__file__).resolve().parents[1] / "firmware" / "hal"
    result = subprocess.run([gcc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic",
                             f"-mcpu={board.core}", "-mthumb", f"-I{tmp_path}", f"-I{hal}", "-c",
                             str(hal / uart_driver(board)), "-o", str(tmp_path / "uart.o")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
