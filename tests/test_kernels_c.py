"""The C training kernels (firmware/kernels) against PyTorch autograd, via ctypes.

Every kernel runs on random float32 data; the oracle is PyTorch in float64 (forward ops and
autograd gradients with a random upstream error), never values produced by the C code. Arrays
are compared with max |c - ref| <= 1e-4 * max |ref| + 1e-6. Backward kernels are checked with
accumulate = 0 on a NaN-filled destination (every cell must be written) and accumulate = 1 on
a random base (base + gradient).
"""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from c_build import PROJECT_FLAGS, ROOT, build_library, compile_objects, require_gcc

from medyate_mcu.codegen.c_interface import ctypes_struct, define_constants, status_codes

KERNELS = ROOT / "firmware/kernels"
SOURCES = sorted(KERNELS.glob("*.c"))
HEADERS = sorted(KERNELS.glob("*.h"))

STATUS = status_codes()  # firmware/kernels/mdy_status.h
MDY_OK, MDY_ERR_LABEL, MDY_ERR_NONFINITE = (STATUS[n] for n in ("MDY_OK", "MDY_ERR_LABEL",
                                                                "MDY_ERR_NONFINITE"))
NO_ARGMAX = define_constants("kernels/pool.h")["MDY_POOL_NO_ARGMAX"]

FloatP = ctypes.POINTER(ctypes.c_float)
U8P = ctypes.POINTER(ctypes.c_uint8)
U16, U32, I32, INT = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_int32, ctypes.c_int


# The shape structs, laid out as the headers declare them.
ConvShape = ctypes_struct("kernels/conv.h", "mdy_conv_shape_t")
PoolShape = ctypes_struct("kernels/pool.h", "mdy_pool_shape_t")


ConvP, PoolP = ctypes.POINTER(ConvShape), ctypes.POINTER(PoolShape)

PROTOTYPES: dict[str, tuple[type | None, list[type]]] = {
    "mdy_conv2d_forward": (None, [ConvP, FloatP, FloatP, FloatP, FloatP]),
    "mdy_conv2d_backward_input": (None, [ConvP, FloatP, FloatP, FloatP, INT]),
    "mdy_conv2d_backward_weight_channel": (None, [ConvP, FloatP, FloatP, U16, FloatP]),
    "mdy_linear_forward": (None, [U16, U16, FloatP, FloatP, FloatP, FloatP]),
    "mdy_linear_backward_input": (None, [U16, U16, FloatP, FloatP, FloatP, INT]),
    "mdy_linear_backward_weight": (None, [U16, U16, FloatP, FloatP, FloatP, FloatP]),
    "mdy_relu_forward": (None, [U32, FloatP, FloatP, U8P]),
    "mdy_relu6_forward": (None, [U32, FloatP, FloatP, U8P]),
    "mdy_relu_backward": (None, [U32, FloatP, U8P, FloatP, INT]),
    "mdy_relu6_backward": (None, [U32, FloatP, U8P, FloatP, INT]),
    "mdy_maxpool_forward": (None, [PoolP, FloatP, FloatP, U8P]),
    "mdy_maxpool_backward": (None, [PoolP, FloatP, U8P, FloatP, INT]),
    "mdy_avgpool_forward": (None, [PoolP, FloatP, FloatP]),
    "mdy_avgpool_backward": (None, [PoolP, FloatP, FloatP, INT]),
    "mdy_global_avgpool_forward": (None, [U16, U32, FloatP, FloatP]),
    "mdy_global_avgpool_backward": (None, [U16, U32, FloatP, FloatP, INT]),
    "mdy_add_forward": (None, [U32, FloatP, FloatP, FloatP]),
    "mdy_add_backward": (None, [U32, FloatP, FloatP, INT]),
    "mdy_flatten_forward": (None, [U32, FloatP, FloatP]),
    "mdy_flatten_backward": (None, [U32, FloatP, FloatP, INT]),
    "mdy_all_finite": (INT, [U32, FloatP]),
    "mdy_softmax_xent": (INT, [U16, FloatP, I32, FloatP, FloatP]),
    "mdy_argmax": (U16, [U16, FloatP]),
    "mdy_sgd_step": (None, [U32, FloatP, FloatP, ctypes.c_float]),
    "mdy_sum_squares": (ctypes.c_float, [U32, FloatP]),
    "mdy_zero": (None, [U32, FloatP]),
}


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    library = build_library(SOURCES, tmp_path_factory.mktemp("kernels"), "libmdy_kernels")
    for name, (restype, argtypes) in PROTOTYPES.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    return library


# ---------------------------------------------------------------------------------------------
# helpers


def fp(a: np.ndarray | None) -> ctypes._Pointer[ctypes.c_float] | None:
    """float* into a C-contiguous float32 array (the array must outlive the call)."""
    if a is None:
        return None
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data_as(FloatP)


def u8p(a: np.ndarray) -> ctypes._Pointer[ctypes.c_uint8]:
    assert a.dtype == np.uint8 and a.flags.c_contiguous
    return a.ctypes.data_as(U8P)


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def t64(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def assert_close(actual: np.ndarray, expected: torch.Tensor | np.ndarray,
                 rel: float = 1e-4, atol: float = 1e-6) -> None:
    ref = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    ref = np.asarray(ref, dtype=np.float64)
    assert actual.shape == ref.shape
    assert np.all(np.isfinite(actual)), "non-finite output (a cell left unwritten?)"
    err = float(np.max(np.abs(actual.astype(np.float64) - ref), initial=0.0))
    scale = float(np.max(np.abs(ref), initial=0.0))
    assert err <= rel * scale + atol, f"max error {err:.3g} vs max |ref| {scale:.3g}"


def check_backward(run: Callable[[np.ndarray, int], None], expected: torch.Tensor | np.ndarray,
                   rng: np.random.Generator) -> None:
    """accumulate = 0 overwrites a NaN-filled buffer; accumulate = 1 adds to a random base."""
    ref = np.asarray(expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected)
    out = np.full(ref.shape, np.nan, dtype=np.float32)
    run(out, 0)
    assert_close(out, ref)
    base = rand(rng, *ref.shape)
    out = base.copy()
    run(out, 1)
    assert_close(out, base.astype(np.float64) + ref)


# ---------------------------------------------------------------------------------------------
# convolution


@dataclass(frozen=True)
class Conv:
    in_c: int
    in_h: int
    in_w: int
    out_c: int
    k: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        top, left, bottom, right = self.pads
        return ((self.in_h + top + bottom - self.k[0]) // self.stride[0] + 1,
                (self.in_w + left + right - self.k[1]) // self.stride[1] + 1)

    def shape(self) -> ConvShape:
        out_h, out_w = self.out_hw
        return ConvShape(self.in_c, self.in_h, self.in_w, self.out_c, out_h, out_w,
                         self.k[0], self.k[1], self.stride[0], self.stride[1],
                         self.pads[0], self.pads[1], self.groups)


CONV_CASES = {
    "3x3 s1 pad1": Conv(3, 7, 6, 4, (3, 3), pads=(1, 1, 1, 1)),
    "3x3 s2 pad1": Conv(3, 9, 9, 5, (3, 3), (2, 2), (1, 1, 1, 1)),
    "3x3 s2 same (pad bottom/right only)": Conv(4, 8, 8, 3, (3, 3), (2, 2), (0, 0, 1, 1)),
    "3x3 s1 asymmetric": Conv(5, 6, 7, 3, (3, 3), pads=(1, 2, 0, 1)),
    "3x3 s2 trailing input unused": Conv(2, 8, 10, 3, (3, 3), (2, 2)),
    "5x5 pad2": Conv(2, 6, 6, 2, (5, 5), pads=(2, 2, 2, 2)),
    "3x3 pad3 (windows only padding)": Conv(1, 3, 3, 2, (3, 3), pads=(3, 3, 3, 3)),
    "pointwise": Conv(8, 5, 5, 6, (1, 1)),
    "pointwise s2": Conv(6, 7, 7, 5, (1, 1), (2, 2)),
    # the register-blocked pointwise kernels' tails: out_c % 4, pixels % 4, in_c % 4, groups
    "pointwise odd tails": Conv(7, 3, 6, 9, (1, 1)),
    "pointwise grouped g2": Conv(6, 5, 3, 10, (1, 1), groups=2),
    "depthwise s1": Conv(6, 6, 6, 6, (3, 3), pads=(1, 1, 1, 1), groups=6),
    "depthwise s2 same": Conv(5, 8, 8, 5, (3, 3), (2, 2), (0, 0, 1, 1), groups=5),
    "depthwise multiplier 2": Conv(4, 5, 5, 8, (3, 3), pads=(1, 1, 1, 1), groups=4),
    "grouped g2": Conv(4, 6, 6, 6, (3, 3), pads=(1, 1, 1, 1), groups=2),
    "grouped g4 s2": Conv(8, 5, 5, 8, (3, 3), (2, 2), (1, 1, 1, 1), groups=4),
    "1x3": Conv(3, 5, 6, 4, (1, 3), pads=(0, 1, 0, 1)),
    "3x1 s(2,1)": Conv(3, 7, 5, 2, (3, 1), (2, 1), (1, 0, 1, 0)),
    "2x3 s(1,2) asymmetric": Conv(2, 6, 7, 3, (2, 3), (1, 2), (1, 0, 0, 1)),
    # the keyword-spotting DS-CNN stem: 10x4, stride 2, TF "same" on 49x10 (pads 4/5 rows,
    # 1/1 columns) -> 25x5; and the same kernel with strides (2, 1) and (1, 2)
    "KWS 10x4 s2 same on 49x10": Conv(1, 49, 10, 6, (10, 4), (2, 2), (4, 1, 5, 1)),
    "10x4 s(2,1) asymmetric": Conv(2, 13, 6, 3, (10, 4), (2, 1), (4, 2, 5, 1)),
    "4x10 s(1,2) asymmetric": Conv(2, 6, 13, 3, (4, 10), (1, 2), (1, 4, 2, 5)),
    "KWS depthwise 3x3 on 25x5": Conv(4, 25, 5, 4, (3, 3), pads=(1, 1, 1, 1), groups=4),
    # 1-D models on the 2-D kernels: H = 1, kernel 1xk, stride 1xs, pads (0, p, 0, p)
    "1-D 1x5 s(1,2) pad2": Conv(6, 1, 32, 4, (1, 5), (1, 2), (0, 2, 0, 2)),
    "1-D 1x4 s(1,2) pads 1/2": Conv(3, 1, 11, 2, (1, 4), (1, 2), (0, 1, 0, 2)),
    "1-D depthwise 1x3 pad1": Conv(5, 1, 9, 5, (1, 3), pads=(0, 1, 0, 1), groups=5),
    "1-D pointwise s(1,2)": Conv(4, 1, 9, 3, (1, 1), (1, 2)),
}


def conv_reference(case: Conv, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                   dy: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y, dL/dx and dL/dW by autograd, with L = sum(y * dy)."""
    top, left, bottom, right = case.pads
    xt, wt = t64(x, grad=True), t64(w, grad=True)
    padded = F.pad(xt[None], (left, right, top, bottom))
    y = F.conv2d(padded, wt, None if b is None else t64(b), stride=case.stride,
                 groups=case.groups)[0]
    (y * t64(dy)).sum().backward()
    assert xt.grad is not None and wt.grad is not None
    return y, xt.grad, wt.grad


def conv_data(case: Conv, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    out_h, out_w = case.out_hw
    x = rand(rng, case.in_c, case.in_h, case.in_w)
    w = rand(rng, case.out_c, case.in_c // case.groups, *case.k)
    b = rand(rng, case.out_c)
    dy = rand(rng, case.out_c, out_h, out_w)
    return x, w, b, dy


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv_forward(lib: ctypes.CDLL, name: str) -> None:
    case = CONV_CASES[name]
    x, w, b, dy = conv_data(case, 1)
    shape = case.shape()
    for bias in (b, None):
        y = np.full(dy.shape, np.nan, dtype=np.float32)
        lib.mdy_conv2d_forward(ctypes.byref(shape), fp(x), fp(w), fp(bias), fp(y))
        assert_close(y, conv_reference(case, x, w, bias, dy)[0])


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv_backward_input(lib: ctypes.CDLL, name: str) -> None:
    case = CONV_CASES[name]
    x, w, b, dy = conv_data(case, 2)
    shape = case.shape()
    _, dx_ref, _ = conv_reference(case, x, w, b, dy)

    def run(dx: np.ndarray, accumulate: int) -> None:
        lib.mdy_conv2d_backward_input(ctypes.byref(shape), fp(dy), fp(w), fp(dx), accumulate)

    check_backward(run, dx_ref, np.random.default_rng(3))


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv_backward_weight_channel(lib: ctypes.CDLL, name: str) -> None:
    """Every input channel's slice of dL/dW, accumulated into a nonzero buffer, twice."""
    case = CONV_CASES[name]
    x, w, b, dy = conv_data(case, 4)
    shape = case.shape()
    _, _, dw_ref = conv_reference(case, x, w, b, dy)
    cpg, opg = case.in_c // case.groups, case.out_c // case.groups
    rng = np.random.default_rng(5)
    for c in range(case.in_c):
        g = c // cpg
        expected = dw_ref[g * opg:(g + 1) * opg, c % cpg].numpy()  # opg x k_h x k_w
        base = rand(rng, *expected.shape)
        grad = base.copy()
        x_channel = np.ascontiguousarray(x[c])
        lib.mdy_conv2d_backward_weight_channel(ctypes.byref(shape), fp(dy), fp(x_channel), c,
                                               fp(grad))
        assert_close(grad, base + expected)
        lib.mdy_conv2d_backward_weight_channel(ctypes.byref(shape), fp(dy), fp(x_channel), c,
                                               fp(grad))
        assert_close(grad, base + 2 * expected)


def test_conv_check_sees_a_swapped_kws_padding(lib: ctypes.CDLL) -> None:
    """The oracle tells the KWS stem's 4/5 row padding from 5/4 (a kernel that swapped top and
    bottom padding, or took H for W, would fail test_conv_forward)."""
    case = CONV_CASES["KWS 10x4 s2 same on 49x10"]
    x, w, b, dy = conv_data(case, 1)
    y = np.full(dy.shape, np.nan, dtype=np.float32)
    lib.mdy_conv2d_forward(ctypes.byref(case.shape()), fp(x), fp(w), fp(b), fp(y))
    assert_close(y, conv_reference(case, x, w, b, dy)[0])
    swapped = Conv(1, 49, 10, 6, (10, 4), (2, 2), (5, 1, 4, 1))
    with pytest.raises(AssertionError, match="max error"):
        assert_close(y, conv_reference(swapped, x, w, b, dy)[0])


def test_conv_weight_channels_tile_the_full_gradient(lib: ctypes.CDLL) -> None:
    """Summing all per-channel slices from zero rebuilds the whole dL/dW (grouped case)."""
    case = CONV_CASES["grouped g4 s2"]
    x, w, b, dy = conv_data(case, 6)
    shape = case.shape()
    _, _, dw_ref = conv_reference(case, x, w, b, dy)
    cpg, opg = case.in_c // case.groups, case.out_c // case.groups
    full = np.zeros(w.shape, dtype=np.float32)
    for c in range(case.in_c):
        g = c // cpg
        grad = np.zeros((opg, *case.k), dtype=np.float32)
        lib.mdy_conv2d_backward_weight_channel(ctypes.byref(shape), fp(dy),
                                               fp(np.ascontiguousarray(x[c])), c, fp(grad))
        full[g * opg:(g + 1) * opg, c % cpg] = grad
    assert_close(full, dw_ref)


# ---------------------------------------------------------------------------------------------
# linear


@pytest.mark.parametrize(("in_f", "out_f"), [(1, 1), (7, 3), (16, 10), (33, 5)])
def test_linear(lib: ctypes.CDLL, in_f: int, out_f: int) -> None:
    rng = np.random.default_rng(in_f * 100 + out_f)
    x, w, b, dy = rand(rng, in_f), rand(rng, out_f, in_f), rand(rng, out_f), rand(rng, out_f)
    xt, wt, bt = t64(x, grad=True), t64(w, grad=True), t64(b, grad=True)
    y_ref = F.linear(xt, wt, bt)
    (y_ref * t64(dy)).sum().backward()
    assert xt.grad is not None and wt.grad is not None and bt.grad is not None

    y = np.full(out_f, np.nan, dtype=np.float32)
    lib.mdy_linear_forward(in_f, out_f, fp(x), fp(w), fp(b), fp(y))
    assert_close(y, y_ref)
    lib.mdy_linear_forward(in_f, out_f, fp(x), fp(w), None, fp(y))
    assert_close(y, F.linear(t64(x), t64(w)))

    def run(dx: np.ndarray, accumulate: int) -> None:
        lib.mdy_linear_backward_input(in_f, out_f, fp(dy), fp(w), fp(dx), accumulate)

    check_backward(run, xt.grad, rng)

    gw_base, gb_base = rand(rng, out_f, in_f), rand(rng, out_f)
    gw, gb = gw_base.copy(), gb_base.copy()
    lib.mdy_linear_backward_weight(in_f, out_f, fp(dy), fp(x), fp(gw), fp(gb))
    assert_close(gw, gw_base + wt.grad.numpy())
    assert_close(gb, gb_base + bt.grad.numpy())
    lib.mdy_linear_backward_weight(in_f, out_f, fp(dy), fp(x), fp(gw), None)  # no bias
    assert_close(gw, gw_base + 2 * wt.grad.numpy())
    assert_close(gb, gb_base + bt.grad.numpy())


# ---------------------------------------------------------------------------------------------
# activations


def activation_input(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random values over (-3, 9) with the boundary values 0, -0, 6 planted."""
    x = rng.uniform(-3.0, 9.0, n).astype(np.float32)
    x[:4] = [0.0, 6.0, -0.0, 3.0]
    return x[rng.permutation(n)].copy()


def unpack_mask(mask: np.ndarray, n: int) -> np.ndarray:
    return np.array([(mask[i >> 3] >> (i & 7)) & 1 for i in range(n)], dtype=np.uint8)


@pytest.mark.parametrize("kind", ["relu", "relu6"])
@pytest.mark.parametrize("n", [1, 8, 16, 21])
def test_activation(lib: ctypes.CDLL, kind: str, n: int) -> None:
    rng = np.random.default_rng(n)
    forward = lib.mdy_relu_forward if kind == "relu" else lib.mdy_relu6_forward
    backward = lib.mdy_relu_backward if kind == "relu" else lib.mdy_relu6_backward
    torch_fn = F.relu if kind == "relu" else F.relu6
    x = activation_input(rng, n) if n >= 4 else np.array([6.0], dtype=np.float32)
    dy = rand(rng, n)
    xt = t64(x, grad=True)
    y_ref = torch_fn(xt)
    (y_ref * t64(dy)).sum().backward()
    assert xt.grad is not None
    # gradient-passes pattern from autograd with an all-ones upstream error
    xp = t64(x, grad=True)
    torch_fn(xp).sum().backward()
    assert xp.grad is not None
    passes = (xp.grad.numpy() != 0).astype(np.uint8)

    y = np.full(n, np.nan, dtype=np.float32)
    mask = np.full((n + 7) // 8, 0xFF, dtype=np.uint8)
    forward(n, fp(x), fp(y), u8p(mask))
    np.testing.assert_array_equal(y, y_ref.detach().numpy().astype(np.float32))
    np.testing.assert_array_equal(unpack_mask(mask, n), passes)
    if n % 8:
        assert mask[-1] >> (n % 8) == 0, "unused mask bits must be 0"

    in_place = x.copy()
    forward(n, fp(in_place), fp(in_place), None)  # inference: no mask
    np.testing.assert_array_equal(in_place, y)

    def run(dx: np.ndarray, accumulate: int) -> None:
        backward(n, fp(dy), u8p(mask), fp(dx), accumulate)

    check_backward(run, xt.grad, rng)
    dx = dy.copy()
    backward(n, fp(dx), u8p(mask), fp(dx), 0)  # in place, dx == dy
    assert_close(dx, xt.grad)


def test_activation_nan_propagates(lib: ctypes.CDLL) -> None:
    """NaN comes out as NaN (so divergence is detectable) with mask bit 0."""
    x = np.array([np.nan, 1.0, np.inf, -np.inf], dtype=np.float32)
    for forward, torch_fn in ((lib.mdy_relu_forward, F.relu), (lib.mdy_relu6_forward, F.relu6)):
        y = np.zeros(4, dtype=np.float32)
        mask = np.zeros(1, dtype=np.uint8)
        forward(4, fp(x), fp(y), u8p(mask))
        np.testing.assert_array_equal(y, torch_fn(torch.from_numpy(x)).numpy())
        assert unpack_mask(mask, 4)[0] == 0


# ---------------------------------------------------------------------------------------------
# pooling


@dataclass(frozen=True)
class Pool:
    c: int
    in_h: int
    in_w: int
    k: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right

    @property
    def out_hw(self) -> tuple[int, int]:
        top, left, bottom, right = self.pads
        return ((self.in_h + top + bottom - self.k[0]) // self.stride[0] + 1,
                (self.in_w + left + right - self.k[1]) // self.stride[1] + 1)

    def shape(self, count_include_pad: int = 0) -> PoolShape:
        out_h, out_w = self.out_hw
        return PoolShape(self.c, self.in_h, self.in_w, out_h, out_w, self.k[0], self.k[1],
                         self.stride[0], self.stride[1], self.pads[0], self.pads[1],
                         count_include_pad)

    def pad(self, x: torch.Tensor, value: float) -> torch.Tensor:
        top, left, bottom, right = self.pads
        return F.pad(x, (left, right, top, bottom), value=value)


POOL_CASES = {
    "2x2 s2": Pool(3, 6, 6, (2, 2), (2, 2)),
    "3x3 s2 pad1": Pool(2, 7, 7, (3, 3), (2, 2), (1, 1, 1, 1)),
    "3x3 s1 pad1": Pool(2, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1)),
    "3x3 s2 same (pad bottom/right only)": Pool(2, 6, 6, (3, 3), (2, 2), (0, 0, 1, 1)),
    "3x3 s2 pad top/left only": Pool(2, 6, 7, (3, 3), (2, 2), (1, 1, 0, 0)),
    "2x3 s(2,1) asymmetric": Pool(3, 5, 6, (2, 3), (2, 1), (1, 0, 0, 2)),
    "3x3 s2 trailing input unused": Pool(1, 8, 8, (3, 3), (2, 2)),
    "3x2 s(1,2) asymmetric": Pool(2, 7, 6, (3, 2), (1, 2), (0, 1, 2, 0)),
    "1-D 1x2 s(1,2)": Pool(3, 1, 9, (1, 2), (1, 2)),
    "1-D 1x3 s(1,2) pad1": Pool(2, 1, 10, (1, 3), (1, 2), (0, 1, 0, 1)),
}


def maxpool_reference(case: Pool, x: np.ndarray, dy: np.ndarray
                      ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """y, dL/dx by autograd and the expected in-window argmax (from torch's indices)."""
    xt = t64(x, grad=True)
    padded = case.pad(xt[None], -math.inf)
    y, index = F.max_pool2d(padded, case.k, case.stride, return_indices=True)
    (y * t64(dy)).sum().backward()
    assert xt.grad is not None
    padded_w = padded.shape[-1]
    out_h, out_w = case.out_hw
    oy = np.arange(out_h)[:, None] * case.stride[0]
    ox = np.arange(out_w)[None, :] * case.stride[1]
    iy, ix = index[0].numpy() // padded_w, index[0].numpy() % padded_w
    argmax = (iy - oy) * case.k[1] + (ix - ox)
    return y[0], xt.grad, argmax.astype(np.uint8)


def run_maxpool(lib: ctypes.CDLL, case: Pool, x: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    shape = case.shape()
    y = np.full((case.c, *case.out_hw), np.nan, dtype=np.float32)
    argmax = np.full(y.shape, 0xEE, dtype=np.uint8)
    lib.mdy_maxpool_forward(ctypes.byref(shape), fp(x), fp(y), u8p(argmax))
    return y, argmax


@pytest.mark.parametrize("name", POOL_CASES)
def test_maxpool(lib: ctypes.CDLL, name: str) -> None:
    case = POOL_CASES[name]
    rng = np.random.default_rng(7)
    x, dy = rand(rng, case.c, case.in_h, case.in_w), rand(rng, case.c, *case.out_hw)
    y_ref, dx_ref, argmax_ref = maxpool_reference(case, x, dy)
    y, argmax = run_maxpool(lib, case, x)
    assert_close(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)

    y_only = np.zeros_like(y)
    lib.mdy_maxpool_forward(ctypes.byref(case.shape()), fp(x), fp(y_only), None)
    np.testing.assert_array_equal(y_only, y)

    shape = case.shape()

    def run(dx: np.ndarray, accumulate: int) -> None:
        lib.mdy_maxpool_backward(ctypes.byref(shape), fp(dy), u8p(argmax), fp(dx), accumulate)

    check_backward(run, dx_ref, rng)


def test_maxpool_ties_go_to_first_max(lib: ctypes.CDLL) -> None:
    """Equal values in overlapping windows: the gradient goes where PyTorch CPU sends it."""
    case = POOL_CASES["3x3 s1 pad1"]
    rng = np.random.default_rng(8)
    x = np.round(rng.uniform(-1.0, 1.0, (case.c, case.in_h, case.in_w))).astype(np.float32)
    x[0] = -1.0  # a whole channel of ties, padded cells (-inf) must still never win
    dy = rand(rng, case.c, *case.out_hw)
    y_ref, dx_ref, argmax_ref = maxpool_reference(case, x, dy)
    y, argmax = run_maxpool(lib, case, x)
    assert_close(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert argmax[0, 0, 0] == 4  # window at (-1, -1): first input cell is its centre
    dx = np.full(x.shape, np.nan, dtype=np.float32)
    lib.mdy_maxpool_backward(ctypes.byref(case.shape()), fp(dy), u8p(argmax), fp(dx), 0)
    assert_close(dx, dx_ref)


def test_maxpool_window_of_padding_only(lib: ctypes.CDLL) -> None:
    """A window entirely in the padding outputs 0, records no argmax and passes no error."""
    case = Pool(1, 2, 2, (2, 2), (2, 2), (2, 2, 0, 0))  # out 2x2; window (0, 0) is all padding
    x = np.array([[[-3.0, -1.0], [-2.0, -4.0]]], dtype=np.float32)
    y, argmax = run_maxpool(lib, case, x)
    assert argmax[0, 0, 0] == NO_ARGMAX and y[0, 0, 0] == 0.0
    assert y[0, 1, 1] == -1.0 and argmax[0, 1, 1] == 1
    dx = np.full(x.shape, np.nan, dtype=np.float32)
    dy = np.ones((1, 2, 2), dtype=np.float32)
    lib.mdy_maxpool_backward(ctypes.byref(case.shape()), fp(dy), u8p(argmax), fp(dx), 0)
    np.testing.assert_array_equal(dx, [[[0.0, 1.0], [0.0, 0.0]]])


def test_maxpool_nan_propagates(lib: ctypes.CDLL) -> None:
    """A NaN in a window wins (like PyTorch), so divergence reaches the loss check."""
    case = POOL_CASES["2x2 s2"]
    x = rand(np.random.default_rng(16), case.c, case.in_h, case.in_w)
    x[1, 2, 3] = np.nan
    y, argmax = run_maxpool(lib, case, x)
    ref = F.max_pool2d(torch.from_numpy(x)[None], case.k, case.stride)[0].numpy()
    np.testing.assert_array_equal(y, ref)  # NaN == NaN here
    assert np.isnan(y[1, 1, 1]) and argmax[1, 1, 1] == 1  # row 2 = ky 0, column 3 = kx 1


def avgpool_reference(case: Pool, x: torch.Tensor, count_include_pad: int) -> torch.Tensor:
    """Sum pool over the zero-padded input divided by k_h*k_w or by the input-cell count."""
    area = case.k[0] * case.k[1]
    sums = F.avg_pool2d(case.pad(x[None], 0.0), case.k, case.stride) * area
    if count_include_pad:
        return (sums / area)[0]
    ones = torch.ones((1, 1, *x.shape[1:]), dtype=x.dtype)
    counts = F.avg_pool2d(case.pad(ones, 0.0), case.k, case.stride) * area
    return (sums / counts)[0]


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("name", POOL_CASES)
def test_avgpool(lib: ctypes.CDLL, name: str, count_include_pad: int) -> None:
    case = POOL_CASES[name]
    rng = np.random.default_rng(9)
    x, dy = rand(rng, case.c, case.in_h, case.in_w), rand(rng, case.c, *case.out_hw)
    xt = t64(x, grad=True)
    y_ref = avgpool_reference(case, xt, count_include_pad)
    (y_ref * t64(dy)).sum().backward()
    assert xt.grad is not None
    shape = case.shape(count_include_pad)

    y = np.full(dy.shape, np.nan, dtype=np.float32)
    lib.mdy_avgpool_forward(ctypes.byref(shape), fp(x), fp(y))
    assert_close(y, y_ref)

    def run(dx: np.ndarray, accumulate: int) -> None:
        lib.mdy_avgpool_backward(ctypes.byref(shape), fp(dy), fp(dx), accumulate)

    check_backward(run, xt.grad, rng)


def test_avgpool_symmetric_padding_matches_torch_directly(lib: ctypes.CDLL) -> None:
    """Symmetric padding: compare with F.avg_pool2d's own padding and count_include_pad."""
    case = POOL_CASES["3x3 s2 pad1"]
    x = rand(np.random.default_rng(10), case.c, case.in_h, case.in_w)
    for count_include_pad in (0, 1):
        y = np.full((case.c, *case.out_hw), np.nan, dtype=np.float32)
        lib.mdy_avgpool_forward(ctypes.byref(case.shape(count_include_pad)), fp(x), fp(y))
        ref = F.avg_pool2d(t64(x)[None], 3, 2, padding=1,
                           count_include_pad=bool(count_include_pad))[0]
        assert_close(y, ref)


@pytest.mark.parametrize(("c", "hw"), [(3, 16), (5, 1), (2, 49)])
def test_global_avgpool(lib: ctypes.CDLL, c: int, hw: int) -> None:
    rng = np.random.default_rng(c * hw)
    x, dy = rand(rng, c, hw), rand(rng, c)
    xt = t64(x, grad=True)
    y_ref = xt.mean(dim=1)
    (y_ref * t64(dy)).sum().backward()
    assert xt.grad is not None
    y = np.full(c, np.nan, dtype=np.float32)
    lib.mdy_global_avgpool_forward(c, hw, fp(x), fp(y))
    assert_close(y, y_ref)

    def run(dx: np.ndarray, accumulate: int) -> None:
        lib.mdy_global_avgpool_backward(c, hw, fp(dy), fp(dx), accumulate)

    check_backward(run, xt.grad, rng)


# ---------------------------------------------------------------------------------------------
# element-wise


def test_add(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(11)
    n = 37
    a, b, dy = rand(rng, n), rand(rng, n), rand(rng, n)
    at, bt = t64(a, grad=True), t64(b, grad=True)
    expected = at + bt
    (expected * t64(dy)).sum().backward()
    y = np.full(n, np.nan, dtype=np.float32)
    lib.mdy_add_forward(n, fp(a), fp(b), fp(y))
    assert_close(y, expected)
    for alias in ("a", "b"):
        a2, b2 = a.copy(), b.copy()
        out = a2 if alias == "a" else b2
        lib.mdy_add_forward(n, fp(a2), fp(b2), fp(out))
        assert_close(out, expected)

    def run(dx: np.ndarray, accumulate: int) -> None:
        lib.mdy_add_backward(n, fp(dy), fp(dx), accumulate)

    for grad in (at.grad, bt.grad):  # the error of each input
        assert grad is not None
        check_backward(run, grad, rng)


def test_add_bits_and_the_in_place_error(lib: ctypes.CDLL) -> None:
    """The unrolled forward is numpy's float32 a + b bit for bit (every tail of its blocks of
    4), and the error onto itself (dx == dy, accumulate 0) leaves dy's bytes as they are."""
    rng = np.random.default_rng(12)
    for n in range(1, 10):
        a, b = rand(rng, n), rand(rng, n)
        y = np.full(n, np.nan, dtype=np.float32)
        lib.mdy_add_forward(n, fp(a), fp(b), fp(y))
        assert y.tobytes() == (a + b).tobytes()
        dy = rand(rng, n)
        before = dy.tobytes()
        lib.mdy_add_backward(n, fp(dy), fp(dy), 0)
        lib.mdy_flatten_backward(n, fp(dy), fp(dy), 0)
        assert dy.tobytes() == before


def test_flatten(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(13)
    x = rand(rng, 3, 4, 5)
    n = x.size
    xt = t64(x, grad=True)
    expected = torch.flatten(xt)
    dy = rand(rng, n)
    (expected * t64(dy)).sum().backward()
    assert xt.grad is not None
    y = np.full(n, np.nan, dtype=np.float32)
    lib.mdy_flatten_forward(n, fp(x), fp(y))
    assert_close(y, expected)

    def run(dx: np.ndarray, accumulate: int) -> None:
        flat = dx.reshape(-1)  # the error of x, (3, 4, 5), laid out as the kernel sees it
        lib.mdy_flatten_backward(n, fp(dy), fp(flat), accumulate)

    check_backward(run, xt.grad, rng)


def test_all_finite(lib: ctypes.CDLL) -> None:
    x = rand(np.random.default_rng(12), 20)
    assert lib.mdy_all_finite(20, fp(x)) == 1
    assert lib.mdy_all_finite(0, fp(x)) == 1
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, 7, 19):
            y = x.copy()
            y[where] = bad
            assert lib.mdy_all_finite(20, fp(y)) == 0
            assert lib.mdy_all_finite(where, fp(y)) == 1  # only the first n are read
    huge = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, -0.0, 1e-45, -1e-40,
                     np.finfo(np.float32).tiny], dtype=np.float32)
    assert lib.mdy_all_finite(6, fp(huge)) == 1
    signed_nan = np.array([1.0, -np.nan], dtype=np.float32)  # a NaN with the sign bit set
    assert np.signbit(signed_nan[1]) and lib.mdy_all_finite(2, fp(signed_nan)) == 0


# ---------------------------------------------------------------------------------------------
# loss


@pytest.mark.parametrize(("n", "scale"), [(1, 1.0), (2, 1.0), (10, 3.0), (37, 1.0), (10, 1e3)])
def test_softmax_xent(lib: ctypes.CDLL, n: int, scale: float) -> None:
    rng = np.random.default_rng(n)
    logits = (rand(rng, n) * scale).astype(np.float32)
    for label in sorted({0, n - 1, int(rng.integers(n))}):
        zt = t64(logits, grad=True)
        loss_ref = F.cross_entropy(zt[None], torch.tensor([label]))
        loss_ref.backward()
        assert zt.grad is not None
        dlogits = np.full(n, np.nan, dtype=np.float32)
        loss = ctypes.c_float(np.nan)
        status = lib.mdy_softmax_xent(n, fp(logits), label, fp(dlogits), ctypes.byref(loss))
        assert status == MDY_OK
        assert_close(np.array([loss.value], dtype=np.float32), loss_ref.detach()[None])
        assert_close(dlogits, zt.grad)

        in_place = logits.copy()  # dlogits == logits
        status = lib.mdy_softmax_xent(n, fp(in_place), label, fp(in_place), ctypes.byref(loss))
        assert status == MDY_OK
        np.testing.assert_array_equal(in_place, dlogits)


def test_softmax_xent_errors_write_nothing(lib: ctypes.CDLL) -> None:
    n = 5
    logits = rand(np.random.default_rng(13), n)
    for label in (-1, n, n + 10, -(2**31)):
        dlogits = np.full(n, 7.0, dtype=np.float32)
        loss = ctypes.c_float(7.0)
        status = lib.mdy_softmax_xent(n, fp(logits), label, fp(dlogits), ctypes.byref(loss))
        assert status == MDY_ERR_LABEL
        assert np.all(dlogits == 7.0) and loss.value == 7.0
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, 2, n - 1):
            z = logits.copy()
            z[where] = bad
            dlogits = np.full(n, 7.0, dtype=np.float32)
            loss = ctypes.c_float(7.0)
            status = lib.mdy_softmax_xent(n, fp(z), 1, fp(dlogits), ctypes.byref(loss))
            assert status == MDY_ERR_NONFINITE
            assert np.all(dlogits == 7.0) and loss.value == 7.0
    empty = np.zeros(1, dtype=np.float32)
    assert lib.mdy_softmax_xent(0, fp(empty), 0, fp(empty), ctypes.byref(loss)) == MDY_ERR_LABEL


def test_argmax(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(14)
    for n in (1, 2, 10, 100):
        z = rand(rng, n)
        assert lib.mdy_argmax(n, fp(z)) == int(np.argmax(z))
    ties = np.array([0.5, 2.0, -1.0, 2.0, 2.0], dtype=np.float32)
    assert lib.mdy_argmax(5, fp(ties)) == int(np.argmax(ties)) == 1


# ---------------------------------------------------------------------------------------------
# SGD helpers


def test_sgd_step_sum_squares_zero(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(15)
    n = 53
    w, grad = rand(rng, n), rand(rng, n)
    scale = 0.0125
    expected = w.astype(np.float64) - scale * grad.astype(np.float64)
    lib.mdy_sgd_step(n, fp(w), fp(grad), scale)
    assert_close(w, expected)

    assert lib.mdy_sum_squares(0, fp(grad)) == 0.0
    ref = float(np.sum(grad.astype(np.float64) ** 2))
    assert abs(lib.mdy_sum_squares(n, fp(grad)) - ref) <= 1e-5 * ref

    v = rand(rng, n)
    lib.mdy_zero(n - 3, fp(v))
    assert np.all(v[: n - 3] == 0.0) and np.all(v[n - 3:] != 0.0)


# ---------------------------------------------------------------------------------------------
# build hygiene


def test_kernels_compile_cleanly_under_strict_warnings(tmp_path: Path) -> None:
    """Beyond the project flags: pedantic C99, shadowing, implicit conversions, and no silent
    float -> double promotion (Cortex-M4F/M7 single-precision FPUs)."""
    strict = [*PROJECT_FLAGS, "-pedantic", "-Wshadow", "-Wconversion", "-Wdouble-promotion",
              "-Wstrict-prototypes", "-Wmissing-prototypes", "-Wcast-qual", "-O2"]
    compile_objects(SOURCES, strict, tmp_path)


def test_headers_are_self_contained(tmp_path: Path) -> None:
    gcc = require_gcc()
    for header in HEADERS:
        source = tmp_path / f"use_{header.stem}.c"
        # twice: the include guard must hold; the typedef keeps the unit non-empty (-pedantic)
        source.write_text(f'#include "{header.name}"\n#include "{header.name}"\n'
                          "typedef int unit_is_not_empty;\n")
        subprocess.run([gcc, *PROJECT_FLAGS, "-pedantic", "-fsyntax-only", f"-I{KERNELS}",
                        str(source)], check=True, capture_output=True, text=True)


def test_no_global_mutable_state(tmp_path: Path) -> None:
    """No object file defines writable data (.data/.bss): kernels keep state in the caller's
    buffers only."""
    compile_objects(SOURCES, [*PROJECT_FLAGS, "-O2"], tmp_path)
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    for obj in sorted(tmp_path.glob("*.o")):
        symbols = subprocess.run([nm, str(obj)], check=True, capture_output=True,
                                 text=True).stdout.splitlines()
        writable = [s for s in symbols if s.split()[-2:-1] and s.split()[-2] in "bBdDcC"]
        assert not writable, f"{obj.name}: {writable}"
