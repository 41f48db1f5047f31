"""Cortex-M kernel benchmark under QEMU -icount (1 instruction = 1 ns of virtual time, so the
SysTick cycle counter counts instructions), on the Cortex-M4F (qemu-mps2-an386) and the M7
(qemu-mps2-an500):

1. every float kernel the engine runs, on the demo model's shapes: conv forward, input gradient and
   weight gradient (every input channel, in one mdy_conv2d_backward_weight_channels call as the
   engine makes it per layer, the slots in a pool) for each distinct
   pointwise, depthwise 3x3 stride 1/2 and regular 3x3 conv shape, and the linear classifier's
   (the demo's and the paper-scale mbv2-w0.35-128's, 1280 -> 10)
   forward, input gradient and weight gradient: instructions and instructions per MAC
   (benchmarks/kernel_bench.c);
2. the demo (`compile --budget 200kB --board B`, every other option at its default): instructions
   per training step as `medyate-mcu simulate` reports it (the embedded-data trainer, 64 samples,
   10 epochs), per inference (mdy_predict on 8 embedded samples, benchmarks/predict_bench.c) and
   their ratio, next to the figures before the kernel work (issue 13).

3. the int8 frozen forward of the paper-scale model (`mbv2-w0.35-128 --backbone int8`): every int8
   call (stem, in-place depthwise, pointwise, fused blocks) on its own shapes, instructions per
   MAC next to the figures of the portable loops (benchmarks/qkernel_bench.c).

Run: .venv/bin/python benchmarks/kernel_benchmark.py   (about 3 minutes; needs arm-none-eabi-gcc
and qemu-system-arm); `--int8` runs section 3 alone.
Figures only: nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medyate_mcu.boards import Board, get_board
from medyate_mcu.codegen.folder import Project
from medyate_mcu.run.qemu import instructions, run_qemu, step_instructions
from medyate_mcu.toolchain.arm import build_firmware
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.units import parse_size
from medyate_mcu.zoo import bundled_model_path

HERE = Path(__file__).resolve().parent
BOARDS = ("qemu-mps2-an386", "qemu-mps2-an500")
BUDGET = "200kB"
# Before the kernel work: issue 13 (`issues show 13`), measured with `medyate-mcu simulate` on the
# demo at --budget 200kB, and the per-inference figure the same way.
BEFORE = {"qemu-mps2-an386": {"step": 34.66e6, "inference": 14.96e6},
          "qemu-mps2-an500": {"step": 34.59e6, "inference": None}}
BEFORE_SOURCE = "issue 13, the same measure before the kernel work"
SHAPE = re.compile(r"static const mdy_conv_shape_t (\w+) = \{(.*?)\};", re.S)
FIELD = re.compile(r"\.(\w+) = (\d+)")
KERNEL_LINE = re.compile(r"^(conv|linear) (\d+) (\w+) (\d+)$", re.M)
PREDICT_LINE = re.compile(r"^predict (\d+) (\d+) (\d+) (\d+)$", re.M)
LINEAR = re.compile(r"mdy_linear_forward\((\d+), (\d+),")
PAPER_CLASSIFIER = (1280, 10)  # mbv2-w0.35-128's classifier, where the linear kernels matter


@dataclass(frozen=True)
class ConvShape:
    fields: dict[str, int]

    @property
    def family(self) -> str:
        f = self.fields
        if f["k_h"] == f["k_w"] == 1 and f["groups"] == 1:
            return "pointwise"
        kind = "depthwise" if f["groups"] == f["in_c"] == f["out_c"] else \
            "regular" if f["groups"] == 1 else "grouped"
        return f"{kind} {f['k_h']}x{f['k_w']} s{f['stride_h']}"

    @property
    def macs(self) -> int:
        f = self.fields
        return (f["out_c"] * f["out_h"] * f["out_w"] * (f["in_c"] // f["groups"])
                * f["k_h"] * f["k_w"])

    @property
    def text(self) -> str:
        f = self.fields
        return (f"{f['in_c']}x{f['in_h']}x{f['in_w']} -> {f['out_c']}x{f['out_h']}x"
                f"{f['out_w']}")


def conv_shapes(model_c: str) -> list[ConvShape]:
    """The distinct conv shapes of a generated model.c, in graph order."""
    shapes: list[ConvShape] = []
    for _, body in SHAPE.findall(model_c):
        shape = ConvShape({k: int(v) for k, v in FIELD.findall(body)})
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def cases_header(shapes: list[ConvShape], linears: list[tuple[int, int]]) -> str:
    """bench_cases.h: the shapes, the linear layers' sizes and the buffer sizes they need."""
    in_f, out_f = max(i for i, _ in linears), max(o for _, o in linears)

    def most(*values: int) -> int:
        return max(values)

    x = most(in_f, *(s.fields["in_c"] * s.fields["in_h"] * s.fields["in_w"] for s in shapes))
    y = most(out_f, *(s.fields["out_c"] * s.fields["out_h"] * s.fields["out_w"] for s in shapes))
    w = most(in_f * out_f, *(s.macs // (s.fields["out_h"] * s.fields["out_w"]) for s in shapes))
    b = most(out_f, *(s.fields["out_c"] for s in shapes))
    g = most(in_f * out_f + out_f, *(s.fields["out_c"] // s.fields["groups"] * s.fields["k_h"]
                                     * s.fields["k_w"] for s in shapes))
    # every input channel's slot (its gradient slice, then its input map), as the engine's pool
    pool = most(*(s.fields["in_c"] * (s.fields["out_c"] // s.fields["groups"] * s.fields["k_h"]
                                      * s.fields["k_w"] + s.fields["in_h"] * s.fields["in_w"])
                  for s in shapes))
    channels = most(*(s.fields["in_c"] for s in shapes))
    lines = ["/* Generated by benchmarks/kernel_benchmark.py: the demo's conv shapes. */",
             "#include \"conv.h\"", "",
             *(f"#define BENCH_{name}_FLOATS {value}u" for name, value in
               (("X", x), ("Y", y), ("W", w), ("B", b), ("G", g), ("POOL", pool))),
             f"#define BENCH_CHANNELS {channels}u",
             f"#define BENCH_LINEARS {len(linears)}u",
             "static const uint16_t bench_linears[][2] = {"
             + ", ".join(f"{{{i}u, {o}u}}" for i, o in linears) + "};",
             f"#define BENCH_CONVS {len(shapes)}u", ""]
    for i, shape in enumerate(shapes):
        body = ", ".join(f".{k} = {v}" for k, v in shape.fields.items())
        lines.append(f"static const mdy_conv_shape_t bench_shape_{i} = {{{body}}};")
    pointers = ", ".join(f"&bench_shape_{i}" for i in range(len(shapes)))
    lines += [f"static const mdy_conv_shape_t *const bench_convs[] = {{{pointers}}};", ""]
    return "\n".join(lines)


def build_app(build: Path, app: str, sources: list[Path], extra: list[str],
              define: str = "") -> Path:
    """A firmware of the project's engine, HAL and linker script with our own application
    (``sources`` copied in, ``extra`` the project's own files), every file compiled with
    ``define`` (then in its own object folder)."""
    for source in sources:
        shutil.copy2(source, build / source.name)
    names = " ".join([*(s.name for s in sources), *extra])
    options = [f"ARM_CC=arm-none-eabi-gcc {define}", f"ARM_DIR=arm-{app}"] if define else []
    subprocess.run(["make", "-s", "-C", str(build), "arm", f"FIRMWARE_APP={app}",
                    f"APP_SOURCES_{app}={names}", *options], check=True, capture_output=True,
                   text=True)
    return build / (f"arm-{app}" if define else "arm") / f"medyate_{app}.elf"


def run(board: Board, image: Path, build: Path) -> str:
    result = run_qemu(board, image, cwd=build, timeout=600)
    if result.status != 0 or result.fault:
        sys.exit(f"{image.name} on {board.name} failed (status {result.status}):\n"
                 f"{result.output[-2000:]}")
    return result.output


def measure(board_name: str, root: Path) -> dict:
    board = get_board(board_name)
    build = root / board_name
    compile_project(CompileOptions(budget=parse_size(BUDGET), board=board_name), build)
    model_c = (build / "model.c").read_text()
    shapes = conv_shapes(model_c)
    demo_linear = LINEAR.search(model_c)
    assert demo_linear is not None, "no linear layer in the demo's model.c"
    linears = [(int(demo_linear[1]), int(demo_linear[2])), PAPER_CLASSIFIER]
    (build / "bench_cases.h").write_text(cases_header(shapes, linears))
    kernels = run(board, build_app(build, "kernels", [HERE / "kernel_bench.c"], []), build)
    rows = {}
    for kind, index, kernel, cycles in KERNEL_LINE.findall(kernels):
        if kind == "conv":
            shape = shapes[int(index)]
            key = (shape.family, shape.text, kernel)
            macs = shape.macs
        else:
            in_f, out_f = linears[int(index)]
            key = ("linear", f"{in_f} -> {out_f}", kernel)
            macs = in_f * out_f
        rows[key] = (macs, instructions(int(cycles), board))
    predict = PREDICT_LINE.search(run(board, build_app(build, "predict", [
        HERE / "predict_bench.c"], ["data.c"]), build))
    step = step_instructions(run(board, build_firmware(Project.open(build), "train"), build),
                             board)
    full = step_instructions(run(board, build_app(build, "full", [], [
        "main.c", "data.c"], "-DMDY_FULL_BACKWARD"), build), board)
    assert predict is not None and step is not None and full is not None, \
        "no figures in the firmware's output"
    return {"kernels": rows, "step": step[0], "steps": step[3], "full_step": full[0],
            "inference": instructions(int(predict.group(1)), board)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Cortex-M kernels under QEMU -icount: float kernels and the demo's step and "
                    "inference (sections 1-2), the paper-scale int8 forward (section 3).")
    parser.add_argument("--int8", action="store_true", help="run section 3 alone")
    if parser.parse_args().int8:
        int8_section()
        return
    with tempfile.TemporaryDirectory(prefix="medyate-kernel-bench-") as folder:
        results = {board: measure(board, Path(folder)) for board in BOARDS}
    m4, m7 = (results[b] for b in BOARDS)
    print("1. kernels on the demo's shapes, QEMU -icount (instructions; per MAC)")
    header = f"{'kernel':36s} {'shape':22s} {'MACs':>9s} {'M4 instr':>11s} {'/MAC':>6s} " \
             f"{'M7 instr':>11s} {'/MAC':>6s}"
    print(header)
    for key, (macs, count4) in m4["kernels"].items():
        family, shape, kernel = key
        count7 = m7["kernels"][key][1]
        print(f"{family + ' ' + kernel:36s} {shape:22s} {macs:9,d} {count4:11,.0f} "
              f"{count4 / macs:6.2f} {count7:11,.0f} {count7 / macs:6.2f}")
    print(f"\n2. the demo, --budget {BUDGET}, instructions (before: {BEFORE_SOURCE})")
    print(f"{'board':18s} {'step':>8s} {'before':>8s} {'whole bw':>9s} {'inference':>10s} "
          f"{'before':>8s} {'step/inference':>15s}")
    for board in BOARDS:
        r, before = results[board], BEFORE[board]
        old_inference = before["inference"]
        print(f"{board:18s} {r['step'] / 1e6:7.2f}M {before['step'] / 1e6:7.2f}M "
              f"{r['full_step'] / 1e6:8.2f}M {r['inference'] / 1e6:9.2f}M "
              f"{(f'{old_inference / 1e6:7.2f}M' if old_inference else '-'):>8s} "
              f"{r['step'] / r['inference']:15.2f}")
    print(f"   step: mean over the {m4['steps']} steps of `medyate-mcu simulate` (64 samples, "
          "10 epochs)\n   whole bw: the same built with MDY_FULL_BACKWARD (every backward pass "
          "down to the lowest\n   candidate layer, as before the stop)\n"
          "   inference: mdy_predict, mean over 8 embedded samples")
    int8_section()



# ---- 3. int8 frozen forward (issue 13, second half) ------------------------------------------
PAPER_MODEL = "mbv2-w0.35-128"
INT8_BUDGET = "64kB"  # the demo engine beside the int8 buffers (x, y, acc: ~160 KB) in 256 KiB
Q8_STRUCT = re.compile(r"static const (mdy_q8_conv_t|mdy_q8_block_t) (\w+) = \{(.*?)\};", re.S)
Q8_FIELD = re.compile(r"\.(\w+) = &?(-?\w+)")
Q8_CALL = re.compile(r"(mdy_q8_conv2d_forward|mdy_q8_depthwise_inplace_forward|"
                     r"mdy_q8_block_forward)\(&(\w+)(?:, &(\w+))?")
Q8_LINE = re.compile(r"^q8 (\d+) (\d+)$", re.M)
Q8_KINDS = {"mdy_q8_conv2d_forward": "conv", "mdy_q8_depthwise_inplace_forward": "in-place dw",
            "mdy_q8_block_forward": "block"}
# Before the DSP kernels (the portable loops of 36b0b44's qconv.c/qblock.c, measured with this
# section): instructions per MAC, M4 / M7, by layer name.
INT8_BEFORE: dict[str, tuple[float, float]] = {
    "features_0_1": (15.86, 15.84), "features_1_body_0_1": (24.97, 24.93),
    "features_1_body_1_1": (12.58, 12.61), "features_2_body_2_1": (17.66, 17.69),
    "features_3_body_2_1": (17.33, 17.33), "features_4_body_2_1": (16.41, 16.44),
    "features_5_body_2_1": (13.29, 13.30), "features_6_body_2_1": (13.29, 13.30)}


@dataclass(frozen=True)
class Q8Case:
    """One int8 call of the generated forward: its kind, its convs' shapes and zero points."""
    name: str
    kind: str
    shapes: tuple[ConvShape, ...]
    zeros: tuple[tuple[int, int, int, int], ...]  # (in_zero, out_zero, act_min, act_max)

    @property
    def macs(self) -> int:
        return sum(shape.macs for shape in self.shapes)

    @property
    def text(self) -> str:
        return " | ".join(f"{s.family} {s.text}" for s in self.shapes)


def int8_cases(model_c: str) -> list[Q8Case]:
    """The int8 convs, in-place depthwise convs and blocks of a generated model.c, in order."""
    shapes = {name: ConvShape({k: int(v) for k, v in FIELD.findall(body)})
              for name, body in SHAPE.findall(model_c)}
    structs = {name: dict(Q8_FIELD.findall(body)) for _, name, body in Q8_STRUCT.findall(model_c)}

    def zeros(q: str) -> tuple[int, int, int, int]:
        f = structs[q]
        return tuple(int(f[k]) for k in ("in_zero", "out_zero", "act_min", "act_max"))

    cases = []
    for function, first, second in Q8_CALL.findall(model_c):
        if function == "mdy_q8_block_forward":
            b = structs[first]
            assert b["expand"] != "NULL", "a block without expansion: not in the paper model"
            parts = ("expand", "depthwise", "project")
            cases.append(Q8Case(first.removeprefix("block_"), "block",
                                tuple(shapes[b[p]] for p in parts),
                                tuple(zeros(b[p + "_q"]) for p in parts)))
        else:
            cases.append(Q8Case(first.removeprefix("shape_"), Q8_KINDS[function],
                                (shapes[first],), (zeros(second),)))
    return cases


def int8_header(cases: list[Q8Case]) -> str:
    """qbench_cases.h: the cases and the buffer sizes they need."""
    def size(s: ConvShape, side: str) -> int:
        f = s.fields
        return f[f"{side}_c"] * f[f"{side}_h"] * f[f"{side}_w"]

    every = [s for case in cases for s in case.shapes]
    blocks = [case for case in cases if case.kind == "block"]
    sizes = {"X": max(size(c.shapes[0], "in") for c in cases),
             "Y": max(size(c.shapes[-1], "out") for c in cases),
             "W": 3 * max(s.macs // (s.fields["out_h"] * s.fields["out_w"]) for s in every),
             "SCRATCH": max([size(s, "in") // s.fields["in_c"] for s in every]
                            + [size(c.shapes[0], "out") // c.shapes[0].fields["out_c"]
                               + size(c.shapes[1], "out") // c.shapes[1].fields["out_c"]
                               for c in blocks]),
             "ACC_WORDS": max([1] + [size(c.shapes[2], "out") for c in blocks]),
             "CHANNELS": max(s.fields["out_c"] for s in every)}
    lines = ["/* Generated by benchmarks/kernel_benchmark.py: the int8 calls of "
             f"{PAPER_MODEL}. */", "#include \"conv.h\"", "",
             *(f"#define QBENCH_{name}{'' if name.endswith('WORDS') else '_BYTES'} {value}u"
               if name != "CHANNELS" else f"#define QBENCH_CHANNELS {value}u"
               for name, value in sizes.items()),
             f"#define QBENCH_CASES {len(cases)}u",
             "enum { QBENCH_CONV, QBENCH_INPLACE, QBENCH_BLOCK };",
             "typedef struct { int32_t in_zero, out_zero; int8_t act_min, act_max; } qbench_q_t;",
             "typedef struct { int kind; const mdy_conv_shape_t *shape[3]; qbench_q_t q[3]; }"
             " qbench_case_t;", ""]
    entries = []
    for i, case in enumerate(cases):
        names = []
        for j, shape in enumerate(case.shapes):
            body = ", ".join(f".{k} = {v}" for k, v in shape.fields.items())
            lines.append(f"static const mdy_conv_shape_t qbench_{i}_{j} = {{{body}}};")
            names.append(f"&qbench_{i}_{j}")
        kind = {"conv": "QBENCH_CONV", "in-place dw": "QBENCH_INPLACE"}.get(case.kind,
                                                                         "QBENCH_BLOCK")
        qs = ", ".join("{" + ", ".join(map(str, z)) + "}" for z in case.zeros)
        entries.append(f"    {{{kind}, {{{', '.join(names)}}}, {{{qs}}}}},")
    lines += ["static const qbench_case_t qbench_cases[] = {", *entries, "};", ""]
    return "\n".join(lines)


def paper_int8_model_c(root: Path) -> str:
    """model.c of the paper-scale model compiled with its int8 backbone (test_paper_scale's
    options, on the M7 board: the int8 layers do not depend on the board)."""
    folder = root / "paper"
    compile_project(CompileOptions(model=bundled_model_path(PAPER_MODEL), data="digits",
                                   budget="auto", board="qemu-mps2-an500", backbone="int8",
                                   calibration_samples=16, epochs=1), folder,
                    say=lambda _: None)
    return (folder / "model.c").read_text()


def measure_int8(board_name: str, root: Path, cases: list[Q8Case]) -> dict[str, float]:
    """Instructions of every int8 call on ``board_name``, by case name."""
    board = get_board(board_name)
    build = root / f"int8-{board_name}"
    compile_project(CompileOptions(budget=parse_size(INT8_BUDGET), board=board_name), build,
                    say=lambda _: None)
    (build / "qbench_cases.h").write_text(int8_header(cases))
    output = run(board, build_app(build, "qkernels", [HERE / "qkernel_bench.c"], []), build)
    found = {int(i): instructions(int(c), board) for i, c in Q8_LINE.findall(output)}
    assert len(found) == len(cases), output[-2000:]
    return {case.name: found[i] for i, case in enumerate(cases)}


def int8_section() -> None:
    """Prints section 3: the int8 calls of the paper-scale model, before and now."""
    with tempfile.TemporaryDirectory(prefix="medyate-int8-bench-") as folder:
        root = Path(folder)
        cases = int8_cases(paper_int8_model_c(root))
        m4, m7 = (measure_int8(board, root, cases) for board in BOARDS)
    print(f"\n3. int8 frozen forward of {PAPER_MODEL} (--backbone int8), every int8 call, "
          "QEMU -icount (instructions per MAC; before: the portable loops)")
    print(f"{'layer':22s} {'kind':11s} {'MACs':>10s} {'M4 /MAC':>8s} {'before':>7s} "
          f"{'M7 /MAC':>8s} {'before':>7s}  shape")
    for case in cases:
        before = INT8_BEFORE.get(case.name)
        old = [f"{b:7.2f}" for b in before] if before else ["      -"] * 2
        print(f"{case.name:22s} {case.kind:11s} {case.macs:10,d} {m4[case.name] / case.macs:8.2f} "
              f"{old[0]} {m7[case.name] / case.macs:8.2f} {old[1]}  {case.text}")
    macs = sum(case.macs for case in cases)
    total4, total7 = sum(m4.values()), sum(m7.values())
    old4, old7 = (sum(INT8_BEFORE.get(c.name, (0.0, 0.0))[k] * c.macs for c in cases)
                  for k in (0, 1))
    print(f"{'int8 forward':22s} {'total':11s} {macs:10,d} {total4 / macs:8.2f} "
          f"{old4 / macs:7.2f} {total7 / macs:8.2f} {old7 / macs:7.2f}  instructions: M4 "
          f"{total4 / 1e6:.2f}M (before {old4 / 1e6:.2f}M), M7 {total7 / 1e6:.2f}M (before "
          f"{old7 / 1e6:.2f}M); the int8 adds between blocks not counted")


if __name__ == "__main__":
    main()
