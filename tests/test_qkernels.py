"""The C int8 kernels (firmware/kernels/quant.c, qconv.c, qpool.c, qeltwise.c) against the numpy
integer reference (medyate_mcu/quant/int_reference.py), and the float kernels with int8 weights
(``*_w8``) against the float kernels on the dequantized weights, via ctypes.

No tolerance anywhere: both sides of every int8 comparison compute the integer arithmetic of
docs/quantization.md §2-3, so every element must be equal; mdy_quantize / mdy_dequantize must
give TensorQuant.quantize / dequantize's values (numpy float32) exactly, and the w8 kernels the
float kernels' float32 bits. Parameters are built from the lowering dataclasses (QConvParams,
QRescaleParams, QAddParams) with random scales and extreme zero points; each case also checks
that it is not trivial (some outputs lie strictly inside the clamp). Mutants of quant.c with one
rounding detail changed must fail the same comparisons.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from arm_support import require_tool
from c_build import PROJECT_FLAGS, build_library
from test_kernels_c import (
    CONV_CASES,
    KERNELS,
    POOL_CASES,
    PROTOTYPES,
    SOURCES,
    Conv,
    ConvP,
    FloatP,
    Pool,
    PoolP,
    fp,
)

from medyate_mcu.codegen.c_interface import ctypes_struct, define_constants, struct_fields
from medyate_mcu.graph.ir import Window
from medyate_mcu.quant import int_reference as ref
from medyate_mcu.quant.lowering import ADD_LEFT_SHIFT, QAddParams, QConvParams, QRescaleParams
from medyate_mcu.quant.scheme import INT32_MAX, INT32_MIN, TensorQuant, WeightQuant, fixed_point

QSOURCES = [KERNELS / f"{name}.c" for name in ("quant", "qconv", "qpool", "qeltwise")]

QConv = ctypes_struct("kernels/qconv.h", "mdy_q8_conv_t")
QRescale = ctypes_struct("kernels/quant.h", "mdy_q8_rescale_t")
QAdd = ctypes_struct("kernels/qeltwise.h", "mdy_q8_add_t")

I8P = ctypes.POINTER(ctypes.c_int8)
U16, U32, I32, INT = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_int32, ctypes.c_int
QConvP, QRescaleP, QAddP = (ctypes.POINTER(t) for t in (QConv, QRescale, QAdd))

Q_PROTOTYPES: dict[str, tuple[type | None, list[type]]] = {
    "mdy_requantize": (I32, [I32, I32, I32]),
    "mdy_quantize": (None, [U32, FloatP, ctypes.c_float, I32, I8P]),
    "mdy_dequantize": (None, [U32, I8P, ctypes.c_float, I32, FloatP]),
    "mdy_q8_rescale_forward": (None, [U32, QRescaleP, I8P, I8P]),
    "mdy_q8_conv2d_forward": (None, [ConvP, QConvP, I8P, I8P, I8P]),
    "mdy_q8_global_avgpool_forward": (None, [U16, U32, QRescaleP, I8P, I8P]),
    "mdy_q8_avgpool_forward": (None, [PoolP, QRescaleP, I8P, I8P]),
    "mdy_q8_maxpool_forward": (None, [PoolP, QRescaleP, I8P, I8P]),
    "mdy_q8_add_forward": (None, [U32, QAddP, I8P, I8P, I8P]),
    "mdy_conv2d_forward_w8": (None, [ConvP, FloatP, I8P, FloatP, FloatP, FloatP, FloatP]),
    "mdy_conv2d_backward_input_w8": (None, [ConvP, FloatP, I8P, FloatP, FloatP, INT, FloatP]),
    "mdy_linear_forward_w8": (None, [U16, U16, FloatP, I8P, FloatP, FloatP, FloatP, FloatP]),
    "mdy_linear_backward_input_w8": (None, [U16, U16, FloatP, I8P, FloatP, FloatP, INT,
                                            FloatP]),
}


def load(sources: list[Path], out_dir: Path, name: str) -> ctypes.CDLL:
    library = build_library(sources, out_dir, name, ("-O2", f"-I{KERNELS}"))
    for function, (restype, argtypes) in (PROTOTYPES | Q_PROTOTYPES).items():
        if hasattr(library, function):
            getattr(library, function).restype = restype
            getattr(library, function).argtypes = argtypes
    return library


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return load(SOURCES, tmp_path_factory.mktemp("qkernels"), "libmdy_qkernels")


# ---------------------------------------------------------------------------------------------
# helpers


def i8p(a: np.ndarray) -> ctypes._Pointer[ctypes.c_int8]:
    assert a.dtype == np.int8 and a.flags.c_contiguous
    return a.ctypes.data_as(I8P)


def c_params(struct: type[ctypes.Structure], params: object) -> ctypes.Structure:
    """The C struct of a lowering dataclass, field by field (array fields become pointers into
    contiguous copies that the struct keeps alive)."""
    values, keep = [], []
    pointer_types = dict(struct._fields_)  # type: ignore[arg-type]
    for field in dataclasses.fields(params):  # type: ignore[arg-type]
        value = getattr(params, field.name)
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            keep.append(array)
            values.append(array.ctypes.data_as(pointer_types[field.name]))
        else:
            values.append(int(value))
    result = struct(*values)
    result.keep = keep  # type: ignore[attr-defined]
    return result


def rand_i8(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def window(case: Conv | Pool) -> Window:
    return Window(case.k, case.stride, case.pads)


def assert_equal_nontrivial(c: np.ndarray, expected: np.ndarray, act_min: int,
                            act_max: int) -> None:
    """Every element equal, and some strictly inside the clamp (the case tests requantization,
    not only saturation)."""
    assert c.dtype == expected.dtype == np.int8 and c.shape == expected.shape
    mismatch = np.flatnonzero(c != expected)
    assert mismatch.size == 0, (f"{mismatch.size} of {c.size} differ, first at {mismatch[0]}: "
                                f"C {c.flat[mismatch[0]]} vs numpy {expected.flat[mismatch[0]]}")
    inside = np.mean((expected > act_min) & (expected < act_max))
    assert inside >= 0.1, f"only {inside:.0%} of the outputs are not clamped"


def log_uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    return np.exp2(rng.uniform(np.log2(low), np.log2(high), n))


# The conv profiles (in_zero, out_zero, act_min, act_max, spread): extreme zero points both
# ways, a fused ReLU (clamp at the output zero point), a fused ReLU6-like narrow range, over the
# full int8 range (spread 0); and small codes (x within +-spread of in_zero, |w| <= spread) whose
# small accumulators take multipliers in [1/4, 1): right shifts of 1 or 2 bits, where the
# roundings' ties are frequent.
PROFILES = {
    "z -128/127": (-128, 127, -128, 127, 0),
    "z 127/-128": (127, -128, -128, 127, 0),
    "relu z 127/-5": (127, -5, -5, 127, 0),
    "relu6 z 3/-128": (3, -128, -128, -88, 0),
    "small codes z -7/2": (-7, 2, -128, 127, 3),
}


def test_structs_are_the_lowering_dataclasses() -> None:
    """The C structs hold the lowering dataclasses' fields in their order (the code generator
    fills one from the other), and the Add's left shift is the lowering's."""
    for header, typedef, params in (("kernels/qconv.h", "mdy_q8_conv_t", QConvParams),
                                    ("kernels/quant.h", "mdy_q8_rescale_t", QRescaleParams),
                                    ("kernels/qeltwise.h", "mdy_q8_add_t", QAddParams)):
        assert ([f.name for f in struct_fields(header, typedef)]
                == [f.name for f in dataclasses.fields(params)]), typedef
    assert define_constants("kernels/qeltwise.h")["MDY_Q8_ADD_LEFT_SHIFT"] == ADD_LEFT_SHIFT


# ---------------------------------------------------------------------------------------------
# requantize, quantize, dequantize


EDGE_X = [INT32_MIN, INT32_MIN + 1, -(2**30) - 1, -(2**30), -65537, -1000, -3, -2, -1, 0, 1, 2,
          3, 1000, 65537, 2**30, 2**30 + 1, INT32_MAX - 1, INT32_MAX]
EDGE_M = [0, 2**30, 2**30 + 1, 1518500250, 2**31 - 2, 2**31 - 1]
SHIFTS = list(range(-31, 31))


def c_requantize(library: ctypes.CDLL, x: np.ndarray, m: np.ndarray, s: np.ndarray
                 ) -> np.ndarray:
    return np.array([library.mdy_requantize(int(a), int(b), int(c))
                     for a, b, c in zip(x, m, s, strict=True)], dtype=np.int64)


def requantize_grid(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edge values x edge multipliers x every shift, plus random triples, with exact ties of both
    roundings (multiplier 2^30 halves x; odd x then lands on .5)."""
    rng = np.random.default_rng(seed)
    xs = EDGE_X + [int(v) for v in rng.integers(INT32_MIN, INT32_MAX, 12, dtype=np.int64)]
    grid = np.array([(x, m, s) for x in xs for m in EDGE_M for s in SHIFTS], dtype=np.int64)
    randoms = np.stack([rng.integers(-(2**20), 2**20, 4000),
                        rng.integers(2**30, 2**31, 4000), rng.integers(-31, 31, 4000)], axis=1)
    both = np.concatenate([grid, randoms])
    return both[:, 0], both[:, 1], both[:, 2]


def test_requantize_edges_and_ties(lib: ctypes.CDLL) -> None:
    x, m, s = requantize_grid(1)
    expected = ref.requantize(x, m, s)
    got = c_requantize(lib, x, m, s)
    bad = np.flatnonzero(got != expected)
    assert bad.size == 0, [(int(x[i]), int(m[i]), int(s[i]), int(got[i]), int(expected[i]))
                           for i in bad[:5]]
    # ties of the final rounding happen in the grid (x * m * 2^s / 2^31 exactly k + 1/2) ...
    exact = [Fraction(int(a) * int(b)) * Fraction(2) ** (int(c) - 31)
             for a, b, c in zip(x, m, s, strict=True)]
    assert sum(v.denominator == 2 for v in exact) > 100
    # ... and with no left saturation and no right shift there is one rounding, SRDHM's: to
    # nearest, ties up (toward +inf; its nudge for a negative product is 1 - 2^30, not -2^30):
    # an independent check of the numpy reference on those
    single = [i for i, (a, c) in enumerate(zip(x, s, strict=True))
              if c >= 0 and INT32_MIN <= int(a) << int(c) <= INT32_MAX and m[i] != 0]
    for i in single:
        v = exact[i]
        assert got[i] == math.floor(v + Fraction(1, 2)), (x[i], m[i], s[i])
    # the one SRDHM overflow: INT32_MIN * INT32_MIN saturates
    assert lib.mdy_requantize(INT32_MIN, INT32_MIN, 0) == INT32_MAX


def quantize_inputs(scale: float) -> np.ndarray:
    """Ties k + 1/2 of both signs and both parities (exact: scale is a power of two in the tie
    cases), near-ties, huge values, infinities, signed zeros and subnormals."""
    k = np.arange(-140, 141, dtype=np.float32)
    ties = (k + np.float32(0.5)) * np.float32(scale)
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)),
                           np.nextafter(ties, np.float32(-np.inf))])
    tiny = np.finfo(np.float32).smallest_subnormal
    special = np.array([0.0, -0.0, tiny, -tiny, 1e-40, -1e-40, 3e38, -3e38, np.inf, -np.inf,
                        np.finfo(np.float32).max, -np.finfo(np.float32).max, 1e6, -1e6],
                       dtype=np.float32)
    randoms = np.random.default_rng(2).standard_normal(500).astype(np.float32) * 60 * scale
    return np.concatenate([ties, near, special, randoms]).astype(np.float32)


@pytest.mark.parametrize("scale", [0.25, 1.0, 0.0123, 3.7, 1e-40])
@pytest.mark.parametrize("zero_point", [-128, -1, 0, 57, 127])
def test_quantize_and_dequantize(lib: ctypes.CDLL, scale: float, zero_point: int) -> None:
    quant = TensorQuant(float(np.float32(scale)), zero_point)
    x = quantize_inputs(quant.scale)
    q = np.full(x.shape, 99, dtype=np.int8)
    lib.mdy_quantize(x.size, fp(x), quant.scale, zero_point, i8p(q))
    with np.errstate(over="ignore"):  # x / scale overflows to inf for the huge values
        expected = quant.quantize(x)
    bad = np.flatnonzero(q != expected)
    assert bad.size == 0, [(float(x[i]), int(q[i]), int(expected[i])) for i in bad[:5]]
    if scale in (0.25, 1.0):  # the ties went both ways: to the even neighbour
        ties = (np.arange(-140, 141) + 0.5) * quant.scale
        rounded = lib_quantize(lib, ties.astype(np.float32), quant)
        assert np.array_equal(rounded, np.clip(np.rint(ties / quant.scale) + zero_point,
                                               -128, 127))
    codes = np.arange(-128, 128, dtype=np.int8)
    real = np.full(256, np.nan, dtype=np.float32)
    lib.mdy_dequantize(256, i8p(codes), quant.scale, zero_point, fp(real))
    assert np.array_equal(real.view(np.uint32), quant.dequantize(codes).view(np.uint32))


def lib_quantize(library: ctypes.CDLL, x: np.ndarray, quant: TensorQuant) -> np.ndarray:
    q = np.zeros(x.shape, dtype=np.int8)
    library.mdy_quantize(x.size, fp(x), quant.scale, quant.zero_point, i8p(q))
    return q


# ---------------------------------------------------------------------------------------------
# conv


def conv_accumulators(case: Conv, x: np.ndarray, w: np.ndarray, bias: np.ndarray,
                      in_zero: int) -> np.ndarray:
    """The exact int32 accumulators in float64 (torch), only to pick multipliers that land the
    outputs in the int8 range."""
    top, left, bottom, right = case.pads
    padded = F.pad(torch.tensor(x, dtype=torch.float64)[None] - in_zero,
                   (left, right, top, bottom))
    acc = F.conv2d(padded, torch.tensor(w, dtype=torch.float64), stride=case.stride,
                   groups=case.groups)[0].numpy()
    return acc + bias[:, None, None]


def conv_setup(case: Conv, profile: str, seed: int
               ) -> tuple[np.ndarray, np.ndarray, QConvParams]:
    """Random int8 x and weights, int32 bias, and per-channel multipliers spread from 1/4 to 4
    times the one that maps each channel's largest accumulator to the clamp's half width (so
    some saturate), and with more than 4 channels one multiplier above 1 (a positive shift);
    small codes: multipliers in [1/4, 1) (see PROFILES)."""
    rng = np.random.default_rng(seed)
    in_zero, out_zero, act_min, act_max, spread = PROFILES[profile]
    w_shape = (case.out_c, case.in_c // case.groups, *case.k)
    if spread:
        x = (in_zero + rng.integers(-spread, spread + 1, (case.in_c, case.in_h, case.in_w)))
        x = x.astype(np.int8)
        w = rng.integers(-spread, spread + 1, size=w_shape, dtype=np.int8)
        bias = rng.integers(-20, 20, case.out_c).astype(np.int32)
    else:
        x = rand_i8(rng, case.in_c, case.in_h, case.in_w)
        w = rng.integers(-127, 128, size=w_shape, dtype=np.int8)
        bias = rng.integers(-5000, 5000, case.out_c).astype(np.int32)
    acc = conv_accumulators(case, x, w, bias, in_zero)
    peak = np.maximum(np.abs(acc).reshape(case.out_c, -1).max(axis=1), 1.0)
    real = (act_max - act_min) / 2 / peak * log_uniform(rng, 0.25, 4.0, case.out_c)
    if spread:  # right shifts of 1 or 2 bits
        real = log_uniform(rng, 0.26, 0.99, case.out_c)
    if case.out_c > 4:
        real[0] = 1.7
    fixed = [fixed_point(float(r)) for r in real]
    params = QConvParams(bias, np.array([f.multiplier for f in fixed], np.int32),
                         np.array([f.shift for f in fixed], np.int8), in_zero, out_zero,
                         act_min, act_max)
    return x, w, params


def c_conv(library: ctypes.CDLL, case: Conv, x: np.ndarray, w: np.ndarray,
           params: QConvParams) -> np.ndarray:
    y = np.full((case.out_c, *case.out_hw), 77, dtype=np.int8)
    shape = case.shape()
    library.mdy_q8_conv2d_forward(ctypes.byref(shape), ctypes.byref(c_params(QConv, params)),
                                  i8p(x), i8p(w), i8p(y))
    return y


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", CONV_CASES)
def test_q8_conv(lib: ctypes.CDLL, name: str, profile: str) -> None:
    case = CONV_CASES[name]
    x, w, params = conv_setup(case, profile, seed=len(name) * 7 + len(profile))
    expected = ref.conv2d(x, w, params, window(case), case.groups)
    got = c_conv(lib, case, x, w, params)
    if name == "3x3 pad3 (windows only padding)":  # most outputs are the bias alone
        assert np.array_equal(got, expected)
        return
    assert_equal_nontrivial(got, expected, params.act_min, params.act_max)


def random_conv(rng: np.random.Generator) -> Conv:
    """A random conv shape: odd and tiny maps, kernels 1-5 (non-square), strides 1-3, padding
    0 to k - 1 on each side (asymmetric), regular, grouped or depthwise (multiplier 1-2)."""
    groups = int(rng.choice([1, 1, 2, 3, 4]))
    depthwise = rng.random() < 0.3
    in_c = groups * int(rng.integers(1, 4)) if not depthwise else int(rng.integers(1, 7))
    groups = in_c if depthwise else groups
    out_c = groups * int(rng.integers(1, 3) if depthwise else rng.integers(1, 4))
    k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    pads = tuple(int(rng.integers(0, k[i % 2])) for i in range(4))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    in_h = max(int(rng.integers(1, 12)), k[0] - pads[0] - pads[2])
    in_w = max(int(rng.integers(1, 12)), k[1] - pads[1] - pads[3])
    return Conv(in_c, in_h, in_w, out_c, k, stride, pads, groups)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(40))
def test_q8_conv_random_shapes(lib: ctypes.CDLL, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    case = random_conv(rng)
    profile = list(PROFILES)[seed % len(PROFILES)]
    x, w, params = conv_setup(case, profile, seed)
    expected = ref.conv2d(x, w, params, window(case), case.groups)
    assert np.array_equal(c_conv(lib, case, x, w, params), expected), case


def test_q8_conv_without_bias_is_a_zero_bias(lib: ctypes.CDLL) -> None:
    case = CONV_CASES["3x3 s2 pad1"]
    x, w, params = conv_setup(case, "z -128/127", seed=3)
    params = dataclasses.replace(params, bias=np.zeros(case.out_c, np.int32))
    struct = c_params(QConv, params)
    struct.bias = ctypes.POINTER(ctypes.c_int32)()  # NULL
    y = np.zeros((case.out_c, *case.out_hw), dtype=np.int8)
    lib.mdy_q8_conv2d_forward(ctypes.byref(case.shape()), ctypes.byref(struct), i8p(x), i8p(w),
                              i8p(y))
    assert np.array_equal(y, ref.conv2d(x, w, params, window(case), case.groups))


# ---------------------------------------------------------------------------------------------
# rescale, pools, add


def rescale_params(real: float, in_zero: int, act: str) -> QRescaleParams:
    """M = real, and the output zero point that centres the outputs (the input codes' middle
    -0.5 maps to 0): they span the int8 range. act: "none" (-128..127), "relu" (clamp at the
    output zero point) or "relu6" (40 codes above it)."""
    out_zero = int(np.clip(math.floor(real * (in_zero + 0.5)), -128, 127))
    act_min, act_max = {"none": (-128, 127), "relu": (out_zero, 127),
                        "relu6": (out_zero, min(out_zero + 40, 127))}[act]
    fixed = fixed_point(real)
    return QRescaleParams(in_zero, out_zero, fixed.multiplier, fixed.shift, act_min, act_max)


# (M, in_zero, activation): the identity (M = 1 is (2^30, 1)), M < 1 and M > 1 (a positive
# shift), extreme zero points, fused ReLU / ReLU6 clamps.
RESCALES = [(1.0, -128, "none"), (1.0, 5, "relu"), (0.37, 127, "none"), (0.37, -128, "relu6"),
            (0.8123, 5, "relu"), (2.9, 0, "none"), (2.9, -128, "relu"), (1 / 3, -30, "none")]


@pytest.mark.parametrize(("real", "in_zero", "act"), RESCALES)
def test_q8_rescale(lib: ctypes.CDLL, real: float, in_zero: int, act: str) -> None:
    """Every int8 code, out of place and in place."""
    params = rescale_params(real, in_zero, act)
    if real == 1.0:
        assert (params.multiplier, params.shift) == (2**30, 1)
    x = np.arange(-128, 128, dtype=np.int8)
    expected = ref.rescale(x, params)
    if real == 1.0:
        assert np.array_equal(expected, np.clip(x, params.act_min, params.act_max))
    struct = ctypes.byref(c_params(QRescale, params))
    y = np.zeros_like(x)
    lib.mdy_q8_rescale_forward(x.size, struct, i8p(x), i8p(y))
    assert_equal_nontrivial(y, expected, params.act_min, params.act_max)
    lib.mdy_q8_rescale_forward(x.size, struct, i8p(x), i8p(x))
    assert np.array_equal(x, expected)


POOL_PARAMS = [(-128, "none"), (127, "none"), (-20, "relu"), (60, "relu6")]  # in_zero, act


def uniform_i8(rng: np.random.Generator, in_zero: int, *shape: int) -> np.ndarray:
    """int8 codes around the zero point (real values of both signs unless it is extreme)."""
    return np.clip(rng.normal(in_zero, 50, size=shape).round(), -128, 127).astype(np.int8)


@pytest.mark.parametrize(("in_zero", "act"), POOL_PARAMS)
@pytest.mark.parametrize(("c", "hw"), [(1, 1), (5, 9), (16, 49), (3, 1000)])
def test_q8_global_avgpool(lib: ctypes.CDLL, in_zero: int, act: str, c: int, hw: int) -> None:
    rng = np.random.default_rng(c * hw)
    x = uniform_i8(rng, in_zero, c, hw, 1)
    params = rescale_params(1.9 / hw, in_zero, act)
    expected = ref.global_avgpool(x, params).reshape(c)
    y = np.full(c, 55, dtype=np.int8)
    lib.mdy_q8_global_avgpool_forward(c, hw, ctypes.byref(c_params(QRescale, params)), i8p(x),
                                      i8p(y))
    assert np.array_equal(y, expected)
    if c * hw > 100:
        assert_equal_nontrivial(y, expected, params.act_min, params.act_max)


def check_pools(lib: ctypes.CDLL, case: Pool, in_zero: int, act: str, seed: int) -> None:
    """Average pool over k_h * k_w cells (no padding, or padding counted), max pool with padding
    that never wins."""
    x = uniform_i8(np.random.default_rng(seed), in_zero, case.c, case.in_h, case.in_w)
    shape = case.shape(count_include_pad=1)
    for kind, real in (("avgpool", 1.3 / (case.k[0] * case.k[1])), ("maxpool", 0.8)):
        params = rescale_params(real, in_zero, act)
        expected = getattr(ref, kind)(x, params, window(case))
        y = np.full(expected.shape, 66, dtype=np.int8)
        getattr(lib, f"mdy_q8_{kind}_forward")(ctypes.byref(shape),
                                               ctypes.byref(c_params(QRescale, params)),
                                               i8p(x), i8p(y))
        assert np.array_equal(y, expected), (kind, case)
        if y.size >= 20:
            assert_equal_nontrivial(y, expected, params.act_min, params.act_max)


@pytest.mark.parametrize(("in_zero", "act"), POOL_PARAMS)
@pytest.mark.parametrize("name", POOL_CASES)
def test_q8_avgpool_and_maxpool(lib: ctypes.CDLL, name: str, in_zero: int, act: str) -> None:
    check_pools(lib, POOL_CASES[name], in_zero, act, len(name) + in_zero + 128)


@pytest.mark.parametrize("seed", range(20))
def test_q8_pools_random_shapes(lib: ctypes.CDLL, seed: int) -> None:
    """Random windows (padding below the kernel on each side: no window of padding only)."""
    rng = np.random.default_rng(2000 + seed)
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    pads = tuple(int(rng.integers(0, k[i % 2])) for i in range(4))
    case = Pool(int(rng.integers(1, 5)), max(int(rng.integers(1, 12)), k[0]),
                max(int(rng.integers(1, 12)), k[1]), k,
                (int(rng.integers(1, 4)), int(rng.integers(1, 4))), pads)  # type: ignore[arg-type]
    in_zero, act = POOL_PARAMS[seed % len(POOL_PARAMS)]
    check_pools(lib, case, in_zero, act, seed)


def add_params(seed: int, in1_zero: int, in2_zero: int, relu: bool) -> QAddParams:
    """Random scales s_a, s_b, s_y ~ s_a + s_b, the lowering's multipliers (docs/quantization.md
    §3), and the output zero point that maps the lowest sum to -128."""
    rng = np.random.default_rng(seed)
    s_a, s_b = log_uniform(rng, 0.01, 0.1, 2)
    s_y = float(log_uniform(rng, 0.8, 1.25, 1)[0]) * (s_a + s_b)
    lowest = (s_a * (-128 - in1_zero) + s_b * (-128 - in2_zero)) / s_y
    out_zero = int(np.clip(round(-128 - lowest), -128, 127))
    twice = 2 * max(s_a, s_b)
    m_a, m_b = fixed_point(s_a / twice), fixed_point(s_b / twice)
    m_y = fixed_point(twice / (2**ADD_LEFT_SHIFT * s_y))
    return QAddParams(in1_zero, in2_zero, out_zero, m_a.multiplier, m_a.shift,
                      m_b.multiplier, m_b.shift, m_y.multiplier, m_y.shift,
                      out_zero if relu else -128, 127)


ADDS = [(-128, -128, False), (127, 127, False), (-128, 127, True), (10, -60, False),
        (0, 3, True)]  # in1_zero, in2_zero, fused ReLU


def all_pairs() -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(-128, 128, dtype=np.int8)
    return np.repeat(codes, 256), np.tile(codes, 256)


@pytest.mark.parametrize(("in1_zero", "in2_zero", "relu"), ADDS)
def test_q8_add(lib: ctypes.CDLL, in1_zero: int, in2_zero: int, relu: bool) -> None:
    """Every pair of int8 codes, out of place and in place on either input."""
    params = add_params(in1_zero - in2_zero + 256, in1_zero, in2_zero, relu)
    a, b = all_pairs()
    expected = ref.add(a, b, params)
    struct = ctypes.byref(c_params(QAdd, params))
    y = np.zeros_like(a)
    lib.mdy_q8_add_forward(a.size, struct, i8p(a), i8p(b), i8p(y))
    assert_equal_nontrivial(y, expected, params.act_min, params.act_max)
    in_place = a.copy()  # y = a
    lib.mdy_q8_add_forward(a.size, struct, i8p(in_place), i8p(b), i8p(in_place))
    assert np.array_equal(in_place, expected)
    in_place = b.copy()  # y = b
    lib.mdy_q8_add_forward(a.size, struct, i8p(a), i8p(in_place), i8p(in_place))
    assert np.array_equal(in_place, expected)


# ---------------------------------------------------------------------------------------------
# float kernels with int8 weights


def weight_quant(rng: np.random.Generator, shape: tuple[int, ...]) -> WeightQuant:
    """Symmetric per-channel int8 weights (docs/quantization.md §6), one all-zero channel."""
    w = rng.standard_normal(shape).astype(np.float32)
    w[-1] = 0.0
    peak = np.abs(w.reshape(shape[0], -1)).max(axis=1)
    scales = np.where(peak > 0, peak / 127, 1).astype(np.float32)
    values = np.clip(np.rint(w / scales.reshape((-1,) + (1,) * (len(shape) - 1))), -127, 127)
    return WeightQuant(values.astype(np.int8), scales)


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def scratch(n: int) -> np.ndarray:
    """n floats of scratch and 8 guard floats behind them."""
    return np.full(n + 8, -7.0, dtype=np.float32)


def check_guard(buffer: np.ndarray, n: int) -> None:
    assert np.all(buffer[n:] == -7.0), "the kernel wrote past its scratch"


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv_w8_equals_the_float_kernel_on_dequantized_weights(lib: ctypes.CDLL,
                                                                name: str) -> None:
    case = CONV_CASES[name]
    rng = np.random.default_rng(len(name))
    quant = weight_quant(rng, (case.out_c, case.in_c // case.groups, *case.k))
    w, q, scales = quant.dequantize(), quant.values, quant.scales
    x = rng.standard_normal((case.in_c, case.in_h, case.in_w)).astype(np.float32)
    dy = rng.standard_normal((case.out_c, *case.out_hw)).astype(np.float32)
    shape = ctypes.byref(case.shape())
    n = w[0].size
    work = scratch(n)
    for b in (rng.standard_normal(case.out_c).astype(np.float32), None):
        y_float, y_w8 = (np.full(dy.shape, np.nan, dtype=np.float32) for _ in range(2))
        lib.mdy_conv2d_forward(shape, fp(x), fp(w), fp(b), fp(y_float))
        lib.mdy_conv2d_forward_w8(shape, fp(x), i8p(q), fp(scales), fp(b), fp(y_w8), fp(work))
        assert_same_bits(y_w8, y_float)
    for accumulate, base in ((0, np.nan), (1, 0.25)):
        dx_float, dx_w8 = (np.full(x.shape, base, dtype=np.float32) for _ in range(2))
        lib.mdy_conv2d_backward_input(shape, fp(dy), fp(w), fp(dx_float), accumulate)
        lib.mdy_conv2d_backward_input_w8(shape, fp(dy), i8p(q), fp(scales), fp(dx_w8),
                                         accumulate, fp(work))
        assert_same_bits(dx_w8, dx_float)
    check_guard(work, n)


@pytest.mark.parametrize(("in_f", "out_f"), [(1, 1), (17, 5), (160, 10)])
def test_linear_w8_equals_the_float_kernel_on_dequantized_weights(lib: ctypes.CDLL, in_f: int,
                                                                  out_f: int) -> None:
    rng = np.random.default_rng(in_f)
    quant = weight_quant(rng, (out_f, in_f))
    w, q, scales = quant.dequantize(), quant.values, quant.scales
    x = rng.standard_normal(in_f).astype(np.float32)
    dy = rng.standard_normal(out_f).astype(np.float32)
    work = scratch(in_f)
    for b in (rng.standard_normal(out_f).astype(np.float32), None):
        y_float, y_w8 = (np.full(out_f, np.nan, dtype=np.float32) for _ in range(2))
        lib.mdy_linear_forward(in_f, out_f, fp(x), fp(w), fp(b), fp(y_float))
        lib.mdy_linear_forward_w8(in_f, out_f, fp(x), i8p(q), fp(scales), fp(b), fp(y_w8),
                                  fp(work))
        assert_same_bits(y_w8, y_float)
    for accumulate, base in ((0, np.nan), (1, 0.25)):
        dx_float, dx_w8 = (np.full(in_f, base, dtype=np.float32) for _ in range(2))
        lib.mdy_linear_backward_input(in_f, out_f, fp(dy), fp(w), fp(dx_float), accumulate)
        lib.mdy_linear_backward_input_w8(in_f, out_f, fp(dy), i8p(q), fp(scales), fp(dx_w8),
                                         accumulate, fp(work))
        assert_same_bits(dx_w8, dx_float)
    check_guard(work, in_f)


# ---------------------------------------------------------------------------------------------
# injected errors, builds


MUTANTS = {  # one rounding detail of quant.c/.h changed: (original text, mutant text)
    "RDBPOT rounds negative ties up": ("(v < 0 ? 1 : 0)", "0"),
    "SRDHM floors (no nudge)": ("+ ((int64_t)1 << 30)) >> 31", ") >> 31"),
    "quantize rounds ties up": ("(frac == 0.5f && odd)", "frac == 0.5f"),
}


def mutant_library(tmp_path: Path, original: str, mutant: str) -> ctypes.CDLL:
    """The int8 kernels built from a copy of their sources and every kernel header (quant.h's
    requantization is inlined, also through qconv.h) with ``original`` replaced in the one file
    holding it."""
    files = [*QSOURCES, *sorted(KERNELS.glob("*.h"))]
    holders = [f for f in files if original in f.read_text()]
    assert len(holders) == 1 and holders[0].read_text().count(original) == 1, original
    for file in files:
        text = file.read_text()
        (tmp_path / file.name).write_text(text.replace(original, mutant))
    return load([tmp_path / f.name for f in QSOURCES], tmp_path, "mutant")


def mismatches(library: ctypes.CDLL) -> dict[str, bool]:
    """Which of the checks above (requantize grid, quantize ties, the rescale with M = 0.37, the
    conv cases) see a difference."""
    x, m, s = requantize_grid(1)
    quant = TensorQuant(0.25, 3)
    values = quantize_inputs(quant.scale)
    with np.errstate(over="ignore"):
        quantized = quant.quantize(values)
    rescale = rescale_params(0.37, 127, "none")
    codes = np.arange(-128, 128, dtype=np.int8)
    y = np.zeros_like(codes)
    library.mdy_q8_rescale_forward(256, ctypes.byref(c_params(QRescale, rescale)), i8p(codes),
                                   i8p(y))
    conv = False
    for case in CONV_CASES.values():
        cx, cw, conv_params = conv_setup(case, "small codes z -7/2", seed=5)
        conv |= bool(np.any(c_conv(library, case, cx, cw, conv_params)
                            != ref.conv2d(cx, cw, conv_params, window(case), case.groups)))
    return {"requantize": bool(np.any(c_requantize(library, x, m, s) != ref.requantize(x, m, s))),
            "quantize": bool(np.any(lib_quantize(library, values, quant) != quantized)),
            "rescale": bool(np.any(y != ref.rescale(codes, rescale))), "conv": conv}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_a_changed_rounding_is_caught(lib: ctypes.CDLL, mutant: str, tmp_path: Path) -> None:
    """The true kernels pass every check; each mutant fails the scalar check of its function
    and, for the requantization, a kernel's too."""
    assert not any(mismatches(lib).values())
    caught = mismatches(mutant_library(tmp_path, *MUTANTS[mutant]))
    if mutant.startswith("quantize"):
        assert caught["quantize"], caught
    else:
        assert caught["requantize"] and caught["rescale"] and caught["conv"], caught


STRICT = ("-pedantic", "-Wshadow", "-Wconversion", "-Wdouble-promotion", "-Wcast-qual",
          "-Wstrict-prototypes", "-Wmissing-prototypes", "-O2")
CORTEX_M4 = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")


@pytest.mark.parametrize("compiler", ["clang", "arm-none-eabi-gcc"])
def test_int8_and_w8_kernels_compile_warning_free(compiler: str, tmp_path: Path) -> None:
    """gcc builds them in every test above (and under strict warnings in test_kernels_c);
    clang and the Cortex-M4F cross compiler too, with the project's flags and strict ones."""
    tool = require_tool(compiler)
    flags = [*PROJECT_FLAGS, *STRICT, *(CORTEX_M4 if compiler.startswith("arm") else ())]
    for source in [*QSOURCES, KERNELS / "conv.c", KERNELS / "linear.c"]:
        result = subprocess.run([tool, *flags, "-c", str(source), "-o",
                                 str(tmp_path / f"{source.stem}.o")],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
