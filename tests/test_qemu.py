"""The Cortex-M builds under QEMU, on the three emulated boards: `verify --qemu` (the engine's
whole RAM after mdy_init and after every epoch, byte for byte against the host build of the same
sources, then the host build against the reference), a one-ulp weight change on the Cortex-M side
only caught and named, the embedded-data trainer's epoch table against the host-built trainer's,
instruction counts, exit statuses through semihosting and the hard-fault report. Small runs:
24 samples, 2 epochs (the build's whole run)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from arm_support import compile_for, require_tool, small_model
from click.testing import CliRunner

from medyate_mcu.boards import get_board
from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import Project
from medyate_mcu.run.qemu import FAULT_EXIT_STATUS, instructions, run_qemu
from medyate_mcu.run.verify_qemu import verify_qemu
from medyate_mcu.toolchain.arm import build_firmware
from medyate_mcu.toolchain.host import make

SAMPLES, EPOCHS = 24, 2


@pytest.fixture(scope="module")
def mbv1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_model(tmp_path_factory.mktemp("mbv1"))


@pytest.fixture(autouse=True)
def tools() -> None:
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")


def test_qemu_machines_exist() -> None:
    listing = subprocess.run([require_tool("qemu-system-arm"), "-M", "help"],
                             capture_output=True, text=True, check=True).stdout
    for machine in ("mps2-an386", "mps2-an500", "netduinoplus2"):
        assert re.search(rf"^{machine}\s", listing, re.MULTILINE), machine


CASES = [("qemu-mps2-an386", "demo", "200kB"), ("qemu-mps2-an500", "demo", "300kB"),
         ("qemu-netduinoplus2", "mbv1", "96kB")]


@pytest.mark.parametrize("board_name, model, budget", CASES)
def test_verify_qemu_is_byte_identical(board_name: str, model: str, budget: str, mbv1: Path,
                                       tmp_path: Path) -> None:
    build = compile_for(mbv1 if model == "mbv1" else None, board_name, budget, tmp_path / "b",
                        SAMPLES, EPOCHS)
    checks, figures = verify_qemu(Project.open(build), samples=SAMPLES, timeout=300)
    failed = [check for check in checks if not check.ok]
    assert not failed, failed
    rows = {check.name: check.measured for check in checks}
    for moment in ("after mdy_init", *(f"after epoch {e}" for e in range(1, EPOCHS + 1))):
        assert " identical (" in rows[f"Cortex-M ≡ host C {moment}"]
    assert "epoch 2 selection" in rows  # the host build against the reference, same build
    assert figures.steps == SAMPLES * EPOCHS
    assert 1e5 < figures.instructions_min <= figures.instructions_mean \
        <= figures.instructions_max < 1e10
    assert 0 < figures.stack_used < figures.stack_reserved


def test_verify_qemu_names_a_one_ulp_weight_change_on_the_cortex_m_side(tmp_path: Path) -> None:
    """The verification firmware (Cortex-M only; the host library does not compile it) adds one
    ulp to one candidate weight after mdy_init: the byte check fails at the first snapshot and
    names the tensor, the index and both values."""
    build = compile_for(None, "qemu-mps2-an386", "200kB", tmp_path / "b", 8, 1)
    source = (build / "qemu_verify.c").read_text()
    symbol = re.search(r'\{"(mdy_w_\w+)", 1u,', source).group(1)
    inject = (f"static void inject(void)\n{{\n    union {{ float f; uint32_t u; }} b;\n"
              f"    b.f = {symbol}[7];\n    b.u += 1u;\n    {symbol}[7] = b.f;\n}}\n\n"
              "int main(void)")
    call = "mdy_init(&mdy_model) != MDY_OK || write_snapshot(0u) != 0"
    assert call in source
    (build / "qemu_verify.c").write_text(
        source.replace("int main(void)", inject)
        .replace(call, "mdy_init(&mdy_model) != MDY_OK || (inject(), write_snapshot(0u)) != 0"))
    checks, _ = verify_qemu(Project.open(build), samples=8, timeout=300)
    failed = [check for check in checks if not check.ok]
    assert [check.name for check in failed] == ["Cortex-M ≡ host C after mdy_init"], failed
    assert failed[0].measured.startswith(f"{symbol}[7] (weight [")
    device, host = re.findall(r"(?:Cortex-M|host) \S+ \(0x([0-9a-f]{8})\)", failed[0].measured)
    assert int(device, 16) == int(host, 16) + 1
    assert re.search(rf"\(1 of \d+ elements of {symbol} differ\)", failed[0].measured)
    result = CliRunner().invoke(main, ["verify", "--qemu", str(build), "--samples", "8"])
    assert result.exit_code == 1 and f"{symbol}[7]" in result.output
    assert "error: 1 of " in result.output


# Errors in the engine compiled for Cortex-M only: the build's own copy of engine.c, changed under
# MDY_SEMIHOSTING (defined for the Cortex-M objects, not for the host library). The code goes
# right before the anchor.
ENGINE_INJECTIONS = {
    "learning rate x 1.001": ("    s->samples_in_batch = 0;\n    s->steps_in_epoch = 0;\n",
                              "    s->lr *= 1.001f;\n"),
    "first selected channel skipped": (
        "        model->norm_sums[c] += sqrtf(",
        "        if (j == 0u) {\n            mdy_zero(cand->weight_units, grad);\n"
        "            continue;\n        }\n"),
    "one sampler weight + 1": ("    /* The draw order lands",
                               "    model->sampler_weights[0] += 1u;\n"),
}


@pytest.mark.parametrize("injection", ENGINE_INJECTIONS)
def test_verify_qemu_catches_an_engine_error_on_the_cortex_m_side(injection: str,
                                                                  tmp_path: Path) -> None:
    build = compile_for(None, "qemu-mps2-an386", "200kB", tmp_path / "b", 8, 2)
    engine = build / "medyate/runtime/engine.c"
    anchor, code = ENGINE_INJECTIONS[injection]
    source = engine.read_text()
    assert source.count(anchor) == 1
    at = source.index(anchor)
    engine.write_text(f"{source[:at]}#ifdef MDY_SEMIHOSTING\n{code}#endif\n{source[at:]}")
    checks, _ = verify_qemu(Project.open(build), samples=8, epochs=1, timeout=300)
    failed = [check for check in checks if not check.ok]
    assert len(failed) == 1 and failed[0].name in ("Cortex-M ≡ host C after mdy_init",
                                                   "Cortex-M ≡ host C after epoch 1"), failed
    assert re.match(r"mdy_\w+(\.\w+|\[\d+\])", failed[0].measured), failed[0].measured


@pytest.mark.parametrize("board_name, model, budget", CASES[:1] + CASES[2:])
def test_simulate_prints_the_host_trainers_table(board_name: str, model: str, budget: str,
                                                 mbv1: Path, tmp_path: Path) -> None:
    build = compile_for(mbv1 if model == "mbv1" else None, board_name, budget, tmp_path / "b",
                        SAMPLES, EPOCHS)
    host = subprocess.run([str(make(build, "host"))], capture_output=True, text=True,
                          check=True).stdout
    result = CliRunner().invoke(main, ["simulate", str(build), "--timeout", "300"])
    assert result.exit_code == 0, result.output
    row = re.compile(r"\s+\d+\s+[\d-]")  # epoch 0 (before training: "-" for loss) then 1..
    table = [line.split() for line in host.splitlines() if row.match(line)]
    ours = [line.split() for line in result.output.splitlines() if row.match(line)]
    assert len(table) == EPOCHS + 1 and len(ours) == EPOCHS + 1
    assert table == ours  # the same bits: every figure of every epoch, as printed
    assert "instructions per training step (mdy_train_sample, QEMU -icount)" in result.output


def test_instruction_count_conversion() -> None:
    """-icount shift=0: 1 instruction per ns; SysTick counts the machine's CPU clock."""
    assert instructions(100_000, get_board("qemu-mps2-an386")) == pytest.approx(4e6)
    assert instructions(672_000, get_board("qemu-netduinoplus2")) == pytest.approx(4e6)


def test_hard_fault_reports_registers_and_fails(tmp_path: Path) -> None:
    build = compile_for(None, "qemu-mps2-an386", "200kB", tmp_path / "b", 8, 1)
    (build / "fault.c").write_text(
        "#include <stdint.h>\n"
        "int main(void)\n{\n"
        "    return (int)*(volatile uint32_t *)0xF0000000u; /* no memory there: BusFault */\n"
        "}\n")
    result = subprocess.run(["make", "-s", "-C", str(build), "arm", "FIRMWARE_APP=fault",
                             "APP_SOURCES_fault=fault.c"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    run = run_qemu(get_board("qemu-mps2-an386"), build / "arm" / "medyate_fault.elf", timeout=60)
    assert run.status == FAULT_EXIT_STATUS
    assert run.fault is not None
    for register in ("pc=0x", "lr=0x", "CFSR=0x", "BFAR=0xf0000000"):
        assert register in run.fault, run.output


def test_exit_status_comes_through_semihosting(tmp_path: Path) -> None:
    build = compile_for(None, "qemu-mps2-an386", "200kB", tmp_path / "b", 8, 1)
    (build / "status.c").write_text("int main(void)\n{\n    return 42;\n}\n")
    subprocess.run(["make", "-s", "-C", str(build), "arm", "FIRMWARE_APP=status",
                    "APP_SOURCES_status=status.c"], capture_output=True, check=True)
    run = run_qemu(get_board("qemu-mps2-an386"), build / "arm" / "medyate_status.elf",
                   timeout=60)
    assert run.status == 42 and run.fault is None


def test_simulate_refuses_a_real_board(tmp_path: Path) -> None:
    build = compile_for(None, "nrf52840-dk", "200kB", tmp_path / "b", 8, 1)
    build_firmware(Project.open(build))
    result = CliRunner().invoke(main, ["simulate", str(build)])
    assert result.exit_code == 1
    assert "real board" in result.output
