"""The command line: help, inspect (checked by hand calculation), boards, compile, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from model_builders import make_model
from onnx import TensorProto, helper

from medyate_mcu.boards import all_boards
from medyate_mcu.cli.main import main
from medyate_mcu.errors import MedyateError

CONSOLE_SCRIPT = Path(sys.executable).parent / "medyate-mcu"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def weights(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def hand_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3x8x8 input -> 3x3/s2 conv -> depthwise 3x3 -> grouped 1x1 (G=2) -> pointwise -> GAP
    -> Gemm: small enough to count everything by hand (see test_inspect_by_hand)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", group=8,
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], name="grouped", group=2),
        helper.make_node("Conv", ["c3", "w4", "b4"], ["c4"], name="pw"),
        helper.make_node("GlobalAveragePool", ["c4"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w5", "b5"], ["y"], name="fc", transB=1),
    ]
    initializers = {
        "w1": weights(8, 3, 3, 3), "b1": weights(8), "w2": weights(8, 1, 3, 3), "b2": weights(8),
        "w3": weights(4, 4, 1, 1), "b3": weights(4), "w4": weights(6, 4, 1, 1), "b4": weights(6),
        "w5": weights(5, 6), "b5": weights(5),
    }
    model = make_model(nodes, [1, 3, 8, 8], initializers)
    path = tmp_path_factory.mktemp("hand") / "hand.onnx"
    onnx.save(model, path)
    return path


def test_inspect_by_hand(hand_model: Path) -> None:
    result = run("inspect", str(hand_model), "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    layers = {layer["name"]: layer for layer in report["layers"]}
    # conv1: out 8x4x4; MACs = 8*4*4 * 3*3*3; C_W = 8*3*3; C_A = 8*8; Σ = 3*(72+64)
    assert layers["conv1"]["output_shape"] == [8, 4, 4]
    assert (layers["conv1"]["macs"], layers["conv1"]["parameters"]) == (3456, 224)
    assert (layers["conv1"]["c_w"], layers["conv1"]["c_a"], layers["conv1"]["layer_units"]) \
        == (72, 64, 408)
    # depthwise: MACs = 8*4*4*9; C_W = kh*kw = 9; C_A = 4*4; Σ = 8*(9+16)
    assert layers["dw"]["op"] == "Conv (depthwise 3x3)"
    assert (layers["dw"]["macs"], layers["dw"]["c_w"], layers["dw"]["c_a"],
            layers["dw"]["layer_units"]) == (1152, 9, 16, 200)
    # grouped 8->4, G=2: MACs = 4*16*4; C_W = (4/2)*1*1 = 2; Σ = 8*(2+16)
    assert layers["grouped"]["op"] == "Conv (grouped 1x1)"
    assert (layers["grouped"]["macs"], layers["grouped"]["c_w"],
            layers["grouped"]["layer_units"]) == (256, 2, 144)
    # pointwise 4->6: MACs = 6*16*4; C_W = 6; Σ = 4*(6+16)
    assert layers["pw"]["op"] == "Conv (pointwise 1x1)"
    assert (layers["pw"]["macs"], layers["pw"]["c_w"], layers["pw"]["layer_units"]) \
        == (384, 6, 88)
    assert (layers["fc"]["macs"], layers["fc"]["parameters"]) == (30, 35)
    assert "c_w" not in layers["fc"] and "c_w" not in layers["gap"]
    assert report["total_parameters"] == 224 + 80 + 20 + 30 + 35
    assert report["total_macs"] == 3456 + 1152 + 256 + 384 + 30
    assert report["total_channel_units"] == 408 + 200 + 144 + 88


def test_inspect_table_shows_the_same_numbers(hand_model: Path) -> None:
    result = run("inspect", str(hand_model))
    assert result.exit_code == 0, result.output
    conv1_row = next(line for line in result.output.splitlines() if " conv1 " in line)
    cells = [cell.strip() for cell in conv1_row.strip("│┃ ").split("│")]
    assert cells == ["0", "conv1", "Conv (regular 3x3, stride 2)", "3x8x8", "8x4x4", "224",
                     "3,456", "3", "72", "64", "408"]
    total_row = next(line for line in result.output.splitlines() if " total " in line)
    assert "389" in total_row and "5,278" in total_row and "840" in total_row


@pytest.mark.parametrize("command", [[], ["inspect"], ["compile"], ["boards"]])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_compile_help_explains_budget_units() -> None:
    assert "k/kB/KB/KiB = 1024" in run("compile", "--help").output


def test_boards_lists_every_board_file() -> None:
    result = run("boards")
    assert result.exit_code == 0
    for name in ("stm32f746g-disco", "nucleo-f411re", "nrf52840-dk", "qemu-mps2-an386",
                 "qemu-mps2-an500", "qemu-netduinoplus2"):
        assert name in result.output
    assert "320 KiB" in result.output and "128 KiB" in result.output


def test_board_facts() -> None:
    boards = all_boards()
    assert boards["stm32f746g-disco"].ram_bytes == 320 * 1024
    assert boards["nucleo-f411re"].flash_bytes == 512 * 1024
    assert boards["nrf52840-dk"].fpu == "fpv4-sp-d16"
    assert all(b.qemu_machine for b in boards.values() if b.kind == "emulated")


def test_invalid_board_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('name = "bad"\nkind = "real"\n')
    with pytest.raises(MedyateError, match=r"bad\.toml"):
        all_boards(tmp_path)


def test_unknown_board_lists_valid_ones(hand_model: Path) -> None:
    result = run("compile", str(hand_model), "--board", "stm32f999")
    assert result.exit_code == 2
    assert "unknown board 'stm32f999'; valid boards: nrf52840-dk" in result.output


@pytest.mark.parametrize("budget", ["-1", "abc", "0"])
def test_compile_rejects_bad_budget(hand_model: Path, budget: str) -> None:
    result = run("compile", str(hand_model), "--budget", budget)
    assert result.exit_code == 2
    assert f"Invalid value for '--budget': budget '{budget}'" in result.output


def test_compile_over_the_board_ram_writes_nothing(hand_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "hand.onnx"
    model.write_bytes(hand_model.read_bytes())
    out = tmp_path / "out"
    result = run("compile", str(model), "--budget", "300kB", "--board", "nrf52840-dk",
                 "-o", str(out))
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: budget 300.0 KiB (307200 B) exceeds nrf52840-dk's "
                                     "RAM (256.0 KiB (262144 B))")
    assert not out.exists()
    # no ranking existed: compile ranked the layers on the first panel task, at the model's size
    assert "no LaRa ranking for hand.onnx" in result.stdout
    assert (tmp_path / "hand.lara.json").is_file()


# ---- bad model files: one clear line on stderr, non-zero exit, no traceback -----------------

def _valid_bytes(hand_model: Path) -> bytes:
    return hand_model.read_bytes()


def _variant(hand_model: Path, **changes) -> onnx.ModelProto:
    model = onnx.load(hand_model)
    if "input_dims" in changes:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for dim, value in zip(dims, changes["input_dims"], strict=True):
            dim.Clear()
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value
    if "opset" in changes:
        model.opset_import[0].version = changes["opset"]
    if changes.get("second_input"):
        model.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 3]))
    if changes.get("second_output"):
        model.graph.output.append(helper.make_tensor_value_info("g", TensorProto.FLOAT,
                                                                [1, 6, 1, 1]))
    if changes.get("int_input"):
        model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    if "replace_op" in changes:
        model.graph.node[1].op_type = changes["replace_op"]
    return model


BAD_FILES = {
    "not_onnx": (lambda m: b"hello, I am a text file\n" * 10, "not a readable ONNX model"),
    "truncated": (lambda m: _valid_bytes(m)[: len(_valid_bytes(m)) // 2],
                  "not a readable ONNX model"),
    "empty": (lambda m: b"", "the file is empty"),
    "dynamic_height": (lambda m: _variant(m, input_dims=[1, 3, "H", 8]),
                       "dynamic dimension 'H' at axis 2"),
    "fixed_batch_8": (lambda m: _variant(m, input_dims=[8, 3, 8, 8]), "fixed batch size of 8"),
    "two_inputs": (lambda m: _variant(m, second_input=True), "exactly one input, it has 2"),
    "two_outputs": (lambda m: _variant(m, second_output=True), "exactly one output, it has 2"),
    "int_input": (lambda m: _variant(m, int_input=True), "only float32 inputs"),
    "unsupported_op": (lambda m: _variant(m, replace_op="Sigmoid"),
                       "node 'relu1': op Sigmoid is not supported"),
    "old_opset": (lambda m: _variant(m, opset=11), "opset 11 is not supported (supported: 13-21)"),
    "new_opset": (lambda m: _variant(m, opset=22), "opset 22 is not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_model_file(case: str, hand_model: Path, tmp_path: Path) -> None:
    make, expected = BAD_FILES[case]
    content = make(hand_model)
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
    result = run("inspect", str(path))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert result.stdout == ""


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = run("inspect", str(tmp_path / "nope.onnx"))
    assert missing.exit_code == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.onnx'}: no such file"
    directory = run("inspect", str(tmp_path))
    assert directory.exit_code == 2
    assert "is a directory" in directory.stderr


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    process = subprocess.run([str(CONSOLE_SCRIPT), "inspect", str(bad)], capture_output=True,
                             text=True, check=False)
    assert process.returncode == 1
    assert process.stderr.startswith("error: ") and "Traceback" not in process.stderr
    version = subprocess.run([str(CONSOLE_SCRIPT), "--version"], capture_output=True, text=True,
                             check=True)
    assert version.stdout.startswith("medyate-mcu, version ")
