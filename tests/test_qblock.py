"""The RAM-saving int8 kernels (firmware/kernels/qblock.c) against the numpy integer reference
(medyate_mcu/quant/int_reference.py) composed layer by layer, via ctypes.

No tolerance: ``mdy_q8_block_forward`` (1x1 expand -> depthwise -> 1x1 project, one hidden
channel at a time) must equal ``ref.conv2d`` applied three times, and
``mdy_q8_depthwise_inplace_forward`` the out-of-place ``ref.conv2d``, on every element. Each
layer's parameters are QConvParams built directly: random int8 weights and int32 biases,
per-channel multipliers fitted to the layer's real accumulators (so every layer's outputs lie
partly inside its clamp: checked, the case is not trivially saturated), the expand's and the
depthwise's outputs clamped like fused ReLU6s, extreme zero points. The block runs with y
apart and with y at the start of acc (the one overlap its header allows). Guard bytes around
every buffer must survive, and mutants of qblock.c (no bias, the wrong zero point, y written
backwards, reversed in-place order, no copy to scratch) must be caught.
"""

from __future__ import annotations

import ctypes
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from arm_support import require_tool
from c_build import PROJECT_FLAGS
from test_kernels_c import KERNELS, SOURCES, Conv, ConvP
from test_qkernels import (
    CORTEX_M4,
    I8P,
    STRICT,
    QConv,
    QConvP,
    c_params,
    conv_accumulators,
    i8p,
    load,
    log_uniform,
)

from medyate_mcu.codegen.c_interface import ctypes_struct
from medyate_mcu.graph.ir import Window
from medyate_mcu.quant import int_reference as ref
from medyate_mcu.quant.lowering import QConvParams
from medyate_mcu.quant.scheme import fixed_point

QBlock = ctypes_struct("kernels/qblock.h", "mdy_q8_block_t")
QBlockP = ctypes.POINTER(QBlock)
I32P = ctypes.POINTER(ctypes.c_int32)
U32 = ctypes.c_uint32

BLOCK_PROTOTYPES: dict[str, tuple[type | None, list[type]]] = {
    "mdy_q8_block_forward": (None, [QBlockP, I8P, I8P, I8P, I32P]),
    "mdy_q8_block_scratch_bytes": (U32, [QBlockP]),
    "mdy_q8_block_acc_words": (U32, [QBlockP]),
    "mdy_q8_depthwise_inplace_forward": (None, [ConvP, QConvP, I8P, I8P, I8P]),
}
GUARD = 16  # guard bytes (or words) on each side of every buffer the kernels write
GUARD_VALUE = 0x5A


def prototyped(library: ctypes.CDLL) -> ctypes.CDLL:
    for function, (restype, argtypes) in BLOCK_PROTOTYPES.items():
        getattr(library, function).restype = restype
        getattr(library, function).argtypes = argtypes
    return library


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    assert KERNELS / "qblock.c" in SOURCES
    return prototyped(load(SOURCES, tmp_path_factory.mktemp("qblock"), "libmdy_qblock"))


# ---------------------------------------------------------------------------------------------
# parameters and the layer-by-layer reference


@dataclass(frozen=True)
class Act:
    """A layer output's zero point and clamp (a fused ReLU6 clamps at the zero point)."""

    zero: int
    lo: int = -128
    hi: int = 127


@dataclass(frozen=True)
class Block:
    in_c: int
    hidden: int
    out_c: int
    in_h: int
    in_w: int
    k: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (1, 1, 1, 1)
    expand: bool = True

    def convs(self) -> tuple[Conv | None, Conv, Conv]:
        depthwise = Conv(self.hidden, self.in_h, self.in_w, self.hidden, self.k, self.stride,
                         self.pads, self.hidden)
        out_h, out_w = depthwise.out_hw
        expand = Conv(self.in_c, self.in_h, self.in_w, self.hidden, (1, 1)) if self.expand \
            else None
        return expand, depthwise, Conv(self.hidden, out_h, out_w, self.out_c, (1, 1))


# (block input zero point, expand's ReLU6, depthwise's ReLU6, block output): zero points at
# both extremes, a ReLU6 range ending below 127, an unclamped output with its zero point at 127.
PROFILES = {
    "relu6 z -128": (-128, Act(-128, -128, 127), Act(-128, -128, 127), Act(3)),
    "x z 127, narrow relu6": (127, Act(-128, -128, -20), Act(0, 0, 90), Act(127)),
    "mid zero points": (-5, Act(-40, -40, 127), Act(17, 17, 127), Act(-128)),
}


@dataclass
class Layer:
    w: np.ndarray
    params: QConvParams
    y: np.ndarray  # the reference output


def layer(rng: np.random.Generator, case: Conv, x: np.ndarray, in_zero: int, out: Act,
          strict: bool = True) -> Layer:
    """Random weights, biases within half the accumulators' spread, and per-channel multipliers
    from 1/2 to 2 times the one mapping the 90th percentile accumulator magnitude to the clamp's
    width (some outputs saturate, most do not). strict: check that at least 10 % of the outputs
    are not clamped (tiny random shapes may legitimately saturate more)."""
    w = rng.integers(-127, 128, size=(case.out_c, case.in_c // case.groups, *case.k),
                     dtype=np.int8)
    acc = conv_accumulators(case, x, w, np.zeros(case.out_c), in_zero).reshape(case.out_c, -1)
    bias = np.rint(rng.uniform(-0.5, 0.5, case.out_c) * max(acc.std(), 1.0)).astype(np.int32)
    peak = max(float(np.percentile(np.abs(acc + bias[:, None]), 90)), 1.0)
    width = (out.hi - out.lo) / (1 if out.lo == out.zero else 2)
    fixed = [fixed_point(float(r))
             for r in width / peak * log_uniform(rng, 0.5, 2.0, case.out_c)]
    params = QConvParams(bias, np.array([f.multiplier for f in fixed], np.int32),
                         np.array([f.shift for f in fixed], np.int8), in_zero, out.zero,
                         out.lo, out.hi)
    y = ref.conv2d(x, w, params, Window(case.k, case.stride, case.pads), case.groups)
    inside = np.mean((y > out.lo) & (y < out.hi))
    assert inside >= 0.1 or not strict, f"{case}: only {inside:.0%} of the outputs are not clamped"
    return Layer(w, params, y)


def reference_block(block: Block, profile: str, seed: int, strict: bool = True
                    ) -> tuple[np.ndarray, list[Layer | None], np.ndarray]:
    """The block input, its three layers (None: no expansion), each computed by the numpy
    reference from the previous one's output, and the block output."""
    rng = np.random.default_rng(seed)
    x_zero, *acts = PROFILES[profile]
    x = rng.integers(-128, 128, size=(block.in_c, block.in_h, block.in_w), dtype=np.int8)
    layers: list[Layer | None] = []
    value, zero = x, x_zero
    for case, act in zip(block.convs(), acts, strict=True):
        if case is None:
            layers.append(None)
            continue
        current = layer(rng, case, value, zero, act, strict)
        layers.append(current)
        value, zero = current.y, act.zero
    return x, layers, value


# ---------------------------------------------------------------------------------------------
# the C calls


def guarded(n: int, dtype: type = np.int8) -> np.ndarray:
    return np.full(n + 2 * GUARD, GUARD_VALUE, dtype=dtype)


def check_guards(buffer: np.ndarray, n: int, what: str) -> None:
    assert np.all(buffer[:GUARD] == GUARD_VALUE) and np.all(buffer[GUARD + n:] == GUARD_VALUE), \
        f"the kernel wrote outside {what}"


def c_block(library: ctypes.CDLL, block: Block, x: np.ndarray, layers: list[Layer | None],
            y_in_acc: bool = False) -> np.ndarray:
    """mdy_q8_block_forward on guarded y, scratch and acc of the sizes the helpers report;
    y_in_acc: y starts at acc (the one overlap allowed)."""
    keep: list[object] = []
    fields: list[int | None] = []
    for case, current in zip(block.convs(), layers, strict=True):
        if case is None or current is None:
            fields += [None, None, None]
            continue
        shape, params = case.shape(), c_params(QConv, current.params)
        keep += [shape, params, current.w]
        fields += [ctypes.addressof(shape), ctypes.addressof(params), i8p(current.w)]
    struct = QBlock(*fields)
    project = block.convs()[2]
    out_hw = project.in_h * project.in_w
    n_scratch = block.in_h * block.in_w * block.expand + out_hw
    n_acc = block.out_c * out_hw
    assert library.mdy_q8_block_scratch_bytes(ctypes.byref(struct)) == n_scratch
    assert library.mdy_q8_block_acc_words(ctypes.byref(struct)) == n_acc
    n_y = block.out_c * out_hw
    y, work = guarded(n_y), guarded(n_scratch)
    acc = guarded(n_acc, np.int32)
    y_c = acc[GUARD:].view(np.int8) if y_in_acc else y[GUARD:]
    x_before = x.copy()
    library.mdy_q8_block_forward(ctypes.byref(struct), i8p(x), i8p(y_c), i8p(work[GUARD:]),
                                 acc[GUARD:].ctypes.data_as(I32P))
    for buffer, n, what in ((y, n_y, "y"), (work, n_scratch, "scratch"), (acc, n_acc, "acc")):
        check_guards(buffer, n, what)
    assert np.array_equal(x, x_before), "the block wrote into its input"
    return y_c[:n_y].copy().reshape(block.out_c, project.in_h, project.in_w)


def check_block(library: ctypes.CDLL, block: Block, profile: str, seed: int) -> None:
    x, layers, expected = reference_block(block, profile, seed)
    for y_in_acc in (False, True):
        got = c_block(library, block, x, layers, y_in_acc)
        bad = np.flatnonzero(got != expected)
        assert bad.size == 0, (f"y in acc {y_in_acc}: {bad.size} of {got.size} differ, first at "
                               f"{bad[0]}: C {got.flat[bad[0]]} vs numpy {expected.flat[bad[0]]}")


# ---------------------------------------------------------------------------------------------
# the block


BLOCKS = {
    # MobileNetV2-w0.35 at 128 px: the block whose expansion set the int8 prefix's peak
    "mobilenetv2 8->48->8 s2 64x64": Block(8, 48, 8, 64, 64, stride=(2, 2)),
    "8->48->8 s1 16x16": Block(8, 48, 8, 16, 16),
    "expansion 1 (no expand) s1": Block(16, 16, 8, 12, 12, expand=False),
    "expansion 1 (no expand) s2 odd": Block(5, 5, 7, 9, 7, stride=(2, 2), expand=False),
    "s2 same padding (bottom/right) odd": Block(3, 6, 5, 7, 9, stride=(2, 2), pads=(0, 0, 1, 1)),
    "5x5 s2 pad2 odd": Block(4, 12, 3, 11, 13, (5, 5), (2, 2), (2, 2, 2, 2)),
    "3x1 kernel, stride 2x1": Block(2, 7, 3, 6, 5, (3, 1), (2, 1), (1, 0, 1, 0)),
    "1x1 map": Block(4, 24, 4, 1, 1),
}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", BLOCKS)
def test_block_equals_three_convs(lib: ctypes.CDLL, name: str, profile: str) -> None:
    check_block(lib, BLOCKS[name], profile, seed=len(name) * 13 + len(profile))


def random_block(rng: np.random.Generator) -> Block:
    k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    pads = tuple(int(rng.integers(0, k[i % 2])) for i in range(4))
    in_c = int(rng.integers(1, 9))
    expand = bool(rng.random() < 0.7)
    hidden = in_c * int(rng.integers(1, 7)) if expand else in_c
    in_h = max(int(rng.integers(1, 14)), k[0] - pads[0] - pads[2])
    in_w = max(int(rng.integers(1, 14)), k[1] - pads[1] - pads[3])
    return Block(in_c, hidden, int(rng.integers(1, 9)), in_h, in_w, k,
                 (int(rng.integers(1, 3)), int(rng.integers(1, 3))), pads,  # type: ignore[arg-type]
                 expand)


@pytest.mark.parametrize("seed", range(16))
def test_block_random_shapes(lib: ctypes.CDLL, seed: int) -> None:
    rng = np.random.default_rng(3000 + seed)
    block = random_block(rng)
    profile = list(PROFILES)[seed % len(PROFILES)]
    x, layers, expected = reference_block(block, profile, seed, strict=False)
    assert np.array_equal(c_block(lib, block, x, layers), expected), block


# ---------------------------------------------------------------------------------------------
# the in-place depthwise conv


DEPTHWISE = {
    "3x3 s1 pad1": Conv(6, 9, 7, 6, (3, 3), (1, 1), (1, 1, 1, 1), 6),
    "3x3 s2 pad1": Conv(6, 9, 7, 6, (3, 3), (2, 2), (1, 1, 1, 1), 6),
    "3x3 s2 same": Conv(5, 8, 8, 5, (3, 3), (2, 2), (0, 0, 1, 1), 5),
    "5x5 s2 pad2 odd": Conv(4, 11, 13, 4, (5, 5), (2, 2), (2, 2, 2, 2), 4),
    "3x3 s1 no padding (smaller output)": Conv(3, 6, 6, 3, (3, 3), groups=3),
    "mobilenetv2 48ch 3x3 s2 64x64": Conv(48, 64, 64, 48, (3, 3), (2, 2), (1, 1, 1, 1), 48),
}


def c_depthwise_inplace(library: ctypes.CDLL, case: Conv, x: np.ndarray, current: Layer
                        ) -> np.ndarray:
    """The kernel on a copy of x inside a guarded buffer; scratch guarded too."""
    n_in, in_hw = x.size, case.in_h * case.in_w
    out_h, out_w = case.out_hw
    buffer, work = guarded(n_in), guarded(in_hw)
    buffer[GUARD:GUARD + n_in] = x.reshape(-1)
    library.mdy_q8_depthwise_inplace_forward(ctypes.byref(case.shape()),
                                             ctypes.byref(c_params(QConv, current.params)),
                                             i8p(current.w), i8p(buffer[GUARD:]),
                                             i8p(work[GUARD:]))
    check_guards(buffer, n_in, "xy")
    check_guards(work, in_hw, "scratch")
    return buffer[GUARD:GUARD + case.out_c * out_h * out_w].reshape(case.out_c, out_h, out_w)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", DEPTHWISE)
def test_depthwise_in_place_equals_out_of_place(lib: ctypes.CDLL, name: str,
                                                profile: str) -> None:
    case = DEPTHWISE[name]
    rng = np.random.default_rng(len(name) + len(profile))
    x_zero, act, _, _ = PROFILES[profile]
    x = rng.integers(-128, 128, size=(case.in_c, case.in_h, case.in_w), dtype=np.int8)
    current = layer(rng, case, x, x_zero, act)
    assert np.array_equal(c_depthwise_inplace(lib, case, x, current), current.y)


# ---------------------------------------------------------------------------------------------
# injected errors, builds


MUTANTS = {  # (original text, mutant text, the check that must fail)
    "acc starts without the bias": ("pq->bias != NULL ? pq->bias[o] : 0",
                                    "pq->bias != NULL ? 0 * pq->bias[o] : 0", "block"),
    "project reads the wrong zero point": ("return b->project_q->in_zero;",
                                           "return b->depthwise_q->in_zero;", "block"),
    "y written in decreasing order": (
        "for (o = 0; o < ps->out_c; ++o) {\n        const mdy_q8_requant_t rq = "
        "mdy_q8_conv_requant(pq, o);\n        for (i = 0; i < hw; ++i) {\n            y[",
        "for (o = ps->out_c - 1; o >= 0; --o) {\n        const mdy_q8_requant_t rq = "
        "mdy_q8_conv_requant(pq, o);\n        for (i = hw - 1; i >= 0; --i) {\n            y[",
        "y in acc"),
    "in place in decreasing order": ("for (c = 0; c < s->out_c; ++c)",
                                     "for (c = s->out_c - 1; c >= 0; --c)", "stride 2"),
    "in place without the copy": ("mdy_q8_conv2d_forward(&one, &q, scratch,",
                                  "mdy_q8_conv2d_forward(&one, &q, x_c,", "stride 1"),
}


def mutant_library(tmp_path: Path, original: str, mutant: str) -> ctypes.CDLL:
    source = (KERNELS / "qblock.c").read_text()
    assert source.count(original) == 1, original
    path = tmp_path / "qblock.c"
    path.write_text(source.replace(original, mutant))
    return prototyped(load([path, KERNELS / "quant.c", KERNELS / "qconv.c"], tmp_path,
                           "mutant"))


def mismatches(library: ctypes.CDLL) -> dict[str, bool]:
    """Which checks (a block with expansion, y apart and y in acc; in-place depthwise at
    stride 1 and 2) differ."""
    block = BLOCKS["8->48->8 s1 16x16"]
    x, layers, expected = reference_block(block, "mid zero points", 1)
    found = {"block": not np.array_equal(c_block(library, block, x, layers), expected),
             "y in acc": not np.array_equal(c_block(library, block, x, layers, True), expected)}
    for check, name in (("stride 1", "3x3 s1 pad1"), ("stride 2", "3x3 s2 pad1")):
        case = DEPTHWISE[name]
        rng = np.random.default_rng(7)
        x = rng.integers(-128, 128, size=(case.in_c, case.in_h, case.in_w), dtype=np.int8)
        current = layer(rng, case, x, -5, Act(0, 0, 127))
        found[check] = not np.array_equal(c_depthwise_inplace(library, case, x, current),
                                          current.y)
    return found


@pytest.mark.parametrize("mutant", MUTANTS)
def test_an_injected_error_is_caught(lib: ctypes.CDLL, mutant: str, tmp_path: Path) -> None:
    assert not any(mismatches(lib).values())
    original, text, check = MUTANTS[mutant]
    assert mismatches(mutant_library(tmp_path, original, text))[check]


@pytest.mark.parametrize("compiler", ["clang", "arm-none-eabi-gcc"])
def test_qblock_compiles_warning_free(compiler: str, tmp_path: Path) -> None:
    """gcc builds it above and under strict warnings in test_kernels_c (which globs
    firmware/kernels/*.c); clang and the Cortex-M4F cross compiler too."""
    tool = require_tool(compiler)
    flags = [*PROJECT_FLAGS, *STRICT, *(CORTEX_M4 if compiler.startswith("arm") else ())]
    result = subprocess.run([tool, *flags, "-c", str(KERNELS / "qblock.c"), "-o",
                             str(tmp_path / "qblock.o")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
