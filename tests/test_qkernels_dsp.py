"""The int8 kernels' Cortex-M DSP paths (SMLAD; qconv.c, qblock.c, qdsp.h: compiled only where
__ARM_FEATURE_DSP is defined) against the numpy integer reference, under QEMU.

The host build runs the portable loops (tests/test_qkernels.py, tests/test_qblock.py), so these
cases run in a firmware (tests/qkernels_dsp_main.c) on the emulated Cortex-M4 (qemu-mps2-an386)
and Cortex-M7 (qemu-mps2-an500) that prints every output byte. No tolerance: integer sums are
exact, so every element must equal ``ref.conv2d`` (composed layer by layer for a block). The
cases are test_qkernels' and test_qblock's shapes plus the DSP paths' own edges: every pixel
tail (maps of 1 to 7 pixels and hw % 4 = 1, 2, 3), odd input-channel counts, 3x3 maps of width
3 to 7 (where the word loads stop), strides 1 and 2, groups, zero points -128, 0 and 127.
Guard bytes around every buffer must survive, and a mutant (a wrong rotation in the SXTB16
split) must be caught.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from arm_support import kernel_firmware_folder, require_tool
from test_kernels_c import CONV_CASES, KERNELS, Conv
from test_qblock import BLOCKS, DEPTHWISE, Block, random_block, reference_block
from test_qblock import PROFILES as BLOCK_PROFILES
from test_qkernels import PROFILES, conv_setup, random_conv, window

from medyate_mcu.boards import get_board
from medyate_mcu.quant import int_reference as ref
from medyate_mcu.quant.lowering import QConvParams
from medyate_mcu.run.qemu import run_qemu

HERE = Path(__file__).resolve().parent
BOARDS = ("qemu-mps2-an386", "qemu-mps2-an500")
MAX_X = 40_000  # bytes of one case's input (the firmware's buffers share the board's RAM)
Y_LINE = re.compile(r"^y (\d+) ([0-9a-f]+)$", re.M)
GUARD_LINE = re.compile(r"^guard (\d+)$", re.M)
KINDS = {"conv": "DSP_CONV", "inplace": "DSP_INPLACE", "block": "DSP_BLOCK"}


@dataclass
class Call:
    """One kernel call: its kind, its convs (None: a block without expansion), its input and
    the reference output."""
    name: str
    kind: str
    convs: list[tuple[Conv, np.ndarray, QConvParams] | None]
    x: np.ndarray
    expected: np.ndarray


def conv_call(name: str, case: Conv, profile: str, seed: int, in_zero: int | None = None
              ) -> Call:
    x, w, params = conv_setup(case, profile, seed)
    if in_zero is not None:
        params = dataclasses.replace(params, in_zero=in_zero)
    expected = ref.conv2d(x, w, params, window(case), case.groups)
    return Call(name, "conv", [(case, w, params)], x, expected)


def block_call(name: str, block: Block, profile: str, seed: int) -> Call:
    x, layers, expected = reference_block(block, profile, seed, strict=False)
    convs = [None if layer is None else (case, layer.w, layer.params)
             for case, layer in zip(block.convs(), layers, strict=True)]
    return Call(name, "block", convs, x, expected)


def edge_convs() -> dict[str, Conv]:
    """The DSP paths' edges: pointwise pixel and channel tails, 3x3 maps around the word
    loads' bounds, strides 1 and 2, padding on any side, groups."""
    cases: dict[str, Conv] = {}
    for in_c in (1, 2, 3, 5):
        for h, w in ((1, 1), (1, 2), (1, 3), (2, 2), (1, 5), (2, 3), (7, 1), (3, 5)):
            cases[f"pointwise {in_c}ch {h}x{w}"] = Conv(in_c, h, w, 3, (1, 1))
    cases["pointwise g2 odd"] = Conv(6, 3, 3, 4, (1, 1), groups=2)
    for h, w in ((3, 3), (3, 4), (4, 4), (4, 5), (5, 6), (6, 7), (2, 9)):
        for stride in (1, 2):
            for pads in ((1, 1, 1, 1), (0, 0, 0, 0), (0, 0, 1, 1), (1, 2, 0, 1)):
                if h + pads[0] + pads[2] < 3 or w + pads[1] + pads[3] < 3:
                    continue
                key = f"3x3 {h}x{w} s{stride} pads {pads}"
                cases[f"depthwise {key}"] = Conv(2, h, w, 2, (3, 3), (stride, stride), pads, 2)
                cases[f"regular {key}"] = Conv(3, h, w, 2, (3, 3), (stride, stride), pads)
    cases["3x3 s(1,2)"] = Conv(2, 6, 9, 2, (3, 3), (1, 2), (1, 1, 1, 1))
    cases["3x3 s(2,1)"] = Conv(2, 6, 9, 2, (3, 3), (2, 1), (1, 1, 1, 1))
    cases["depthwise multiplier 2 s2"] = Conv(2, 7, 7, 4, (3, 3), (2, 2), (1, 1, 1, 1), 2)
    return cases


def calls() -> list[Call]:
    profiles = list(PROFILES)
    found = [conv_call(name, case, profiles[i % len(profiles)], seed=i)
             for i, (name, case) in enumerate(CONV_CASES.items())]
    for i, (name, case) in enumerate(edge_convs().items()):
        zero = (-128, 0, 127)[i % 3]
        found.append(conv_call(f"{name} z {zero}", case, profiles[i % len(profiles)], i, zero))
    for seed in range(30):
        rng = np.random.default_rng(5000 + seed)
        found.append(conv_call(f"random conv {seed}", random_conv(rng),
                               profiles[seed % len(profiles)], seed))
    block_profiles = list(BLOCK_PROFILES)
    for i, (name, block) in enumerate(BLOCKS.items()):
        found.append(block_call(name, block, block_profiles[i % 3], seed=i))
    for seed in range(10):
        rng = np.random.default_rng(7000 + seed)
        found.append(block_call(f"random block {seed}", random_block(rng),
                                block_profiles[seed % 3], seed))
    for i, (name, case) in enumerate(DEPTHWISE.items()):
        if case.in_c * case.in_h * case.in_w <= MAX_X:
            call = conv_call(f"in place {name}", case, profiles[i % len(profiles)], i)
            found.append(dataclasses.replace(call, kind="inplace"))
    return [call for call in found if call.x.size <= MAX_X]


def c_array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = values.reshape(-1)
    body = ", ".join(str(int(v)) for v in flat) if flat.size else "0"
    return f"static const {ctype} {name}[] = {{{body}}};"


def header(cases: list[Call]) -> str:
    """qdsp_cases.h: every case's data, shapes and params, and the buffer sizes."""
    lines = ["/* Generated by tests/test_qkernels_dsp.py. */", '#include "conv.h"',
             '#include "qconv.h"', ""]
    entries, scratch, acc = [], 1, 1
    for i, call in enumerate(cases):
        shapes, qs, ws = [], [], []
        lines.append(c_array("int8_t", f"c{i}_x", call.x))
        for j, conv in enumerate(call.convs):
            if conv is None:
                shapes, qs, ws = [*shapes, "NULL"], [*qs, "NULL"], [*ws, "NULL"]
                continue
            case, w, p = conv
            shape = case.shape()
            body = ", ".join(f".{f} = {getattr(shape, f)}" for f, _ in shape._fields_)
            lines += [f"static const mdy_conv_shape_t c{i}_s{j} = {{{body}}};",
                      c_array("int8_t", f"c{i}_w{j}", w),
                      c_array("int32_t", f"c{i}_b{j}", p.bias),
                      c_array("int32_t", f"c{i}_m{j}", p.multiplier),
                      c_array("int8_t", f"c{i}_h{j}", p.shift),
                      f"static const mdy_q8_conv_t c{i}_q{j} = {{c{i}_b{j}, c{i}_m{j}, "
                      f"c{i}_h{j}, {p.in_zero}, {p.out_zero}, {p.act_min}, {p.act_max}}};"]
            shapes.append(f"&c{i}_s{j}")
            qs.append(f"&c{i}_q{j}")
            ws.append(f"c{i}_w{j}")
        if call.kind == "block":
            expand, depthwise, project = call.convs
            assert depthwise is not None and project is not None
            scratch = max(scratch, (call.x[0].size if expand is not None else 0)
                          + int(np.prod(depthwise[0].out_hw)))
            acc = max(acc, call.expected.size)
        else:
            scratch = max(scratch, call.x[0].size)
        pad = ["NULL"] * (3 - len(shapes))
        entries.append(f"    {{{KINDS[call.kind]}, {{{', '.join(shapes + pad)}}}, "
                       f"{{{', '.join(qs + pad)}}}, {{{', '.join(ws + pad)}}}, c{i}_x, "
                       f"{call.x.size}u, {call.expected.size}u}},")
    sizes = {"X": max(c.x.size for c in cases), "Y": max(c.expected.size for c in cases),
             "SCRATCH": scratch}
    lines[4:4] = [*(f"#define DSP_{k}_BYTES {v}u" for k, v in sizes.items()),
                  f"#define DSP_ACC_WORDS {acc}u", f"#define DSP_CASES {len(cases)}u",
                  "enum { DSP_CONV, DSP_INPLACE, DSP_BLOCK };",
                  "typedef struct {", "    int kind;", "    const mdy_conv_shape_t *shape[3];",
                  "    const mdy_q8_conv_t *q[3];", "    const int8_t *w[3];",
                  "    const int8_t *x;", "    uint32_t x_bytes, y_bytes;", "} dsp_case_t;", ""]
    lines += ["static const dsp_case_t dsp_cases[] = {", *entries, "};", ""]
    return "\n".join(lines)


def run_firmware(build: Path, board_name: str, arm_dir: str) -> str:
    """Builds the firmware from the int8 kernels alone (the project's HAL, linker script and
    flags; not its model) and runs it."""
    engine = " ".join(f"medyate/kernels/{name}.c" for name in ("quant", "qconv", "qblock"))
    subprocess.run(["make", "-s", "-C", str(build), "arm", "FIRMWARE_APP=qdsp",
                    "APP_SOURCES_qdsp=qkernels_dsp_main.c", f"ARM_DIR={arm_dir}",
                    f"ENGINE={engine}"], check=True, capture_output=True, text=True)
    result = run_qemu(get_board(board_name), build / arm_dir / "medyate_qdsp.elf", cwd=build,
                      timeout=120)
    assert result.status == 0 and not result.fault, result.output[-2000:]
    assert result.output.rstrip().endswith("done"), result.output[-2000:]
    return result.output


def outputs(text: str, cases: list[Call]) -> list[np.ndarray]:
    chunks: list[list[str]] = [[] for _ in cases]
    for index, digits in Y_LINE.findall(text):
        chunks[int(index)].append(digits)
    return [np.frombuffer(bytes.fromhex("".join(c)), dtype=np.int8) for c in chunks]


def differing(text: str, cases: list[Call]) -> list[str]:
    """The names of the cases whose firmware output differs from the reference."""
    guards = {int(i) for i in GUARD_LINE.findall(text)}
    return [case.name for i, (case, got) in enumerate(zip(cases, outputs(text, cases),
                                                          strict=True))
            if i in guards or not np.array_equal(got, case.expected.reshape(-1))]


@pytest.fixture(scope="module")
def cases() -> list[Call]:
    return calls()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, cases: list[Call]) -> dict[str, Path]:
    """A project folder per board (the demo engine, with the cases and the firmware beside
    it), compiled on first use."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    folders: dict[str, Path] = {}
    for board_name in BOARDS:
        folders[board_name] = kernel_firmware_folder(
            tmp_path_factory.mktemp(board_name) / "build", board_name,
            {"qdsp_cases.h": header(cases)}, [HERE / "qkernels_dsp_main.c"])
    return folders


@pytest.mark.parametrize("board_name", BOARDS)
def test_dsp_kernels_equal_the_reference(board_name: str, cases: list[Call],
                                         builds: dict[str, Path]) -> None:
    text = run_firmware(builds[board_name], board_name, "arm-qdsp")
    assert len(outputs(text, cases)) == len(cases)
    assert differing(text, cases) == []


def test_a_wrong_rotation_is_caught(cases: list[Call], builds: dict[str, Path],
                                    tmp_path: Path) -> None:
    """qdsp.h's odd-byte split rotated by 16 instead of 8 (bytes 2 and 0: the even pair
    again): the pointwise, 3x3 and block cases differ, a 5x5 conv (portable loop) does not."""
    build = tmp_path / "build"
    shutil.copytree(builds[BOARDS[0]], build, ignore=shutil.ignore_patterns("arm*"))
    header_path = build / "medyate" / "kernels" / "qdsp.h"
    source = header_path.read_text()
    original = "sxtb16 %0, %1, ror #8"
    assert source.count(original) == 1 and (KERNELS / "qdsp.h").read_text() == source
    header_path.write_text(source.replace(original, "sxtb16 %0, %1, ror #16"))
    bad = differing(run_firmware(build, BOARDS[0], "arm-mutant"), cases)
    assert any(name.startswith("pointwise") for name in bad), bad
    assert any(name.startswith("depthwise 3x3") for name in bad), bad
    assert "mobilenetv2 8->48->8 s2 64x64" in bad, bad
    assert "5x5 pad2" not in bad, bad
