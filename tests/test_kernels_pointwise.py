"""The register-blocked pointwise (1x1) conv kernels (firmware/kernels/conv_pointwise.c) give
the general loops' results bit for bit.

The oracle is numpy in float32 summing in the general loops' order (forward: bias, then input
channels ascending; input gradient: output channels ascending onto dx; weight gradient: pixels
ascending onto the gradient), each product and sum rounded once to float32 as the C does under
-ffp-contract=off. Equality is exact (the bit patterns), so the tolerance is zero; a changed
summation order is caught (test_a_changed_order_is_caught). Sizes cover every tail of the
4 x 4 blocks: out_c 1..9, pixels 1..19, in_c 1..7, groups 1 and 2, and of the forward's
6-channel blocks (out_c 6..26, 48, 160 on 4, 8, 16 pixels). Autograd checks of the same
kernels stay in test_kernels_c.py.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from c_build import ROOT, build_library

from medyate_mcu.codegen.c_interface import ctypes_struct

SOURCES = sorted((ROOT / "firmware/kernels").glob("*.c"))
ConvShape = ctypes_struct("kernels/conv.h", "mdy_conv_shape_t")
ConvP, FloatP, I8P = (ctypes.POINTER(ConvShape), ctypes.POINTER(ctypes.c_float),
                      ctypes.POINTER(ctypes.c_int8))
PROTOTYPES: dict[str, list[type]] = {
    "mdy_conv2d_forward": [ConvP, FloatP, FloatP, FloatP, FloatP],
    "mdy_conv2d_backward_input": [ConvP, FloatP, FloatP, FloatP, ctypes.c_int],
    "mdy_conv2d_backward_weight_channel": [ConvP, FloatP, FloatP, ctypes.c_uint16, FloatP],
    "mdy_conv2d_forward_w8": [ConvP, FloatP, I8P, FloatP, FloatP, FloatP, FloatP],
    "mdy_conv2d_backward_input_w8": [ConvP, FloatP, I8P, FloatP, FloatP, ctypes.c_int, FloatP],
    "mdy_conv2d_backward_weight_channels": [
        ConvP, FloatP, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint16), ctypes.c_uint32, FloatP,
        ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint32],
}
# maps of 1..19 pixels (rows x columns)
MAPS = [(1, 1), (1, 2), (1, 3), (2, 2), (1, 5), (2, 3), (1, 7), (2, 4), (3, 3), (2, 5), (1, 11),
        (3, 4), (1, 13), (2, 7), (3, 5), (4, 4), (1, 17), (3, 6), (1, 19)]
Case = tuple[int, int, int, int, int]  # in_c, out_c, h, w, groups


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    library = build_library(SOURCES, tmp_path_factory.mktemp("pointwise"), "libmdy_pw")
    for name, argtypes in PROTOTYPES.items():
        getattr(library, name).argtypes = argtypes
        getattr(library, name).restype = None
    return library


def cases() -> Iterator[Case]:
    for out_c, (h, w), in_c in itertools.product(range(1, 10), MAPS, range(1, 8)):
        yield in_c, out_c, h, w, 1
        if in_c % 2 == 0 and out_c % 2 == 0:
            yield in_c, out_c, h, w, 2


def shape(in_c: int, out_c: int, h: int, w: int, groups: int, stride: int = 1,
          out: tuple[int, int] | None = None) -> ConvShape:
    out_h, out_w = out if out is not None else (h, w)
    return ConvShape(in_c=in_c, in_h=h, in_w=w, out_c=out_c, out_h=out_h, out_w=out_w, k_h=1,
                     k_w=1, stride_h=stride, stride_w=stride, pad_top=0, pad_left=0,
                     groups=groups)


def fp(a: np.ndarray) -> ctypes._Pointer[ctypes.c_float]:
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data_as(FloatP)


def rand(rng: np.random.Generator, *dims: int) -> np.ndarray:
    """float32 over several binades, so that a different summation order rounds differently."""
    return (rng.standard_normal(dims) * np.exp2(rng.integers(-6, 7, dims))).astype(np.float32)


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def forward_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, groups: int,
                      order: slice = slice(None)) -> np.ndarray:
    """y[o] = b[o] + x[ic] w[o][ic] over ic ascending (``order`` reorders them: the injection)."""
    in_c, out_c = x.shape[0], w.shape[0]
    cpg, opg = in_c // groups, out_c // groups
    y = np.zeros((out_c, x.shape[1]), np.float32) if b is None else np.repeat(b[:, None],
                                                                               x.shape[1], 1)
    for g in range(groups):
        rows = slice(g * opg, (g + 1) * opg)
        for ic in list(range(cpg))[order]:
            y[rows] = y[rows] + x[g * cpg + ic][None, :] * w[rows, ic][:, None]
    return y


def input_grad_reference(dy: np.ndarray, w: np.ndarray, dx: np.ndarray,
                         groups: int) -> np.ndarray:
    """dx[ic] += dy[o] w[o][ic] over o ascending."""
    dx = dx.copy()
    cpg, opg = dx.shape[0] // groups, dy.shape[0] // groups
    for o in range(dy.shape[0]):
        rows = slice((o // opg) * cpg, (o // opg + 1) * cpg)
        dx[rows] = dx[rows] + dy[o][None, :] * w[o][:, None]
    return dx


def weight_grad_reference(dy: np.ndarray, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """g[m] += dy[m][p] x[p] over pixels p ascending (dy: n x pixels, x: pixels)."""
    g = g.copy()
    for p in range(x.size):
        g = g + dy[:, p] * x[p]
    return g


def test_forward_matches_the_general_order(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(1)
    for in_c, out_c, h, w, groups in cases():
        x, wt = rand(rng, in_c, h * w), rand(rng, out_c, in_c // groups)
        for b in (rand(rng, out_c), None):
            y = np.full((out_c, h * w), np.nan, np.float32)
            lib.mdy_conv2d_forward(shape(in_c, out_c, h, w, groups), fp(x), fp(wt),
                                   None if b is None else fp(b), fp(y))
            expected = forward_reference(x, wt, b, groups)
            assert np.array_equal(bits(y), bits(expected)), (in_c, out_c, h, w, groups)


def test_six_channel_blocks_match_the_general_order(lib: ctypes.CDLL) -> None:
    """The forward's blocks of six output channels (pixel counts a multiple of 4), then none,
    two or one block of four and the odd channel: out_c 6..26 and the demo's 48, 160."""
    rng = np.random.default_rng(7)
    for out_c, (h, w), in_c in itertools.product([*range(6, 27), 48, 160],
                                                 [(2, 2), (2, 4), (4, 4)], (1, 3, 16)):
        x, wt, b = rand(rng, in_c, h * w), rand(rng, out_c, in_c), rand(rng, out_c)
        y = np.full((out_c, h * w), np.nan, np.float32)
        lib.mdy_conv2d_forward(shape(in_c, out_c, h, w, 1), fp(x), fp(wt), fp(b), fp(y))
        assert np.array_equal(bits(y), bits(forward_reference(x, wt, b, 1))), (in_c, out_c, h)


def test_input_gradient_matches_the_general_order(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(2)
    for in_c, out_c, h, w, groups in cases():
        dy, wt = rand(rng, out_c, h * w), rand(rng, out_c, in_c // groups)
        base = rand(rng, in_c, h * w)
        for accumulate, start in ((0, np.zeros_like(base)), (1, base)):
            dx = base.copy() if accumulate else np.full_like(base, np.nan)
            lib.mdy_conv2d_backward_input(shape(in_c, out_c, h, w, groups), fp(dy), fp(wt),
                                          fp(dx), accumulate)
            expected = input_grad_reference(dy, wt, start, groups)
            assert np.array_equal(bits(dx), bits(expected)), (in_c, out_c, h, w, groups)


def test_weight_gradient_matches_the_general_order(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(3)
    for in_c, out_c, h, w, groups in cases():
        x, dy = rand(rng, in_c, h * w), rand(rng, out_c, h * w)
        cpg, opg = in_c // groups, out_c // groups
        for c in range(in_c):
            g0 = rand(rng, opg)
            grad = g0.copy()
            rows = slice((c // cpg) * opg, (c // cpg + 1) * opg)
            lib.mdy_conv2d_backward_weight_channel(shape(in_c, out_c, h, w, groups), fp(dy),
                                                   fp(np.ascontiguousarray(x[c])), c,
                                                   fp(grad))
            expected = weight_grad_reference(dy[rows], x[c], g0)
            assert np.array_equal(bits(grad), bits(expected)), (in_c, out_c, h, w, groups, c)


def selected_sets(in_c: int) -> list[list[int]]:
    """None, one, all, and an unsorted set with gaps (pairs of channels and a lone one)."""
    unsorted = list(dict.fromkeys([*range(in_c - 1, -1, -2), *range(0, in_c, 3)]))
    return [[], [in_c - 1], list(range(in_c)), unsorted]


def test_multi_channel_weight_gradient_matches_the_general_order(lib: ctypes.CDLL) -> None:
    """mdy_conv2d_backward_weight_channels (the engine's call: slots in a pool, channels taken
    two at a time) gives each selected slot the per-channel sum's bits; stride 2 too."""
    rng = np.random.default_rng(7)
    first = 5  # the layer's first canonical channel
    strided = [(3, out_c, 8, 8, 1) for out_c in (1, 4, 9)]
    for index, (in_c, out_c, h, w, groups) in enumerate([*cases(), *strided]):
        stride = 2 if index >= len(list(cases())) else 1
        out_h, out_w = (h + stride - 1) // stride, (w + stride - 1) // stride
        x, dy = rand(rng, in_c, h * w), rand(rng, out_c, out_h * out_w)
        cpg, opg = in_c // groups, out_c // groups
        s = shape(in_c, out_c, h, w, groups, stride, (out_h, out_w))
        for selected in selected_sets(in_c):
            size = opg + h * w + 2
            pool = np.full(size * len(selected) + 3, np.nan, np.float32)
            offsets = np.array([3 + size * (len(selected) - 1 - j) for j in range(len(selected))],
                               np.uint32)
            g0 = rand(rng, len(selected), opg)
            for j, c in enumerate(selected):
                pool[offsets[j]:offsets[j] + opg] = g0[j]
                pool[offsets[j] + opg:offsets[j] + opg + h * w] = x[c]
            numbers = np.array([first + c for c in selected], np.uint16)
            lib.mdy_conv2d_backward_weight_channels(
                s, fp(dy), len(selected), numbers.ctypes.data_as(ctypes.POINTER(ctypes.c_uint16)),
                first, fp(pool), offsets.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), opg)
            for j, c in enumerate(selected):
                rows = slice((c // cpg) * opg, (c // cpg + 1) * opg)
                read = x[c].reshape(h, w)[::stride, ::stride][:out_h, :out_w].reshape(-1)
                expected = weight_grad_reference(dy[rows], read, g0[j])
                assert np.array_equal(bits(pool[offsets[j]:offsets[j] + opg]), bits(expected)), \
                    (in_c, out_c, h, w, groups, stride, selected, c)


@pytest.mark.parametrize(("in_hw", "out_hw"), [((7, 9), (4, 5)), ((8, 8), (4, 4)),
                                               ((9, 5), (3, 2)), ((1, 19), (1, 10))])
def test_strided_weight_gradient_matches_the_general_order(
        lib: ctypes.CDLL, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    """Stride 2 without padding, including trailing input rows/columns no pixel reads."""
    rng = np.random.default_rng(4)
    (h, w), (out_h, out_w) = in_hw, out_hw
    for out_c in range(1, 10):
        x, dy = rand(rng, 3, h, w), rand(rng, out_c, out_h * out_w)
        s = shape(3, out_c, h, w, 1, stride=2, out=out_hw)
        for c in range(3):
            g0 = rand(rng, out_c)
            grad = g0.copy()
            lib.mdy_conv2d_backward_weight_channel(s, fp(dy), fp(np.ascontiguousarray(x[c])), c,
                                                   fp(grad))
            read = x[c, ::2, ::2][:out_h, :out_w].reshape(-1)
            expected = weight_grad_reference(dy, read, g0)
            assert np.array_equal(bits(grad), bits(expected)), (in_hw, out_c, c)


def test_int8_weights_match_the_float_kernels(lib: ctypes.CDLL) -> None:
    """The *_w8 entry points (one dequantized channel at a time) equal the general order on
    the dequantized weights scale[o] * q."""
    rng = np.random.default_rng(5)
    for in_c, out_c, h, w, groups in [(7, 9, 3, 5, 1), (6, 4, 1, 19, 2), (1, 1, 1, 1, 1),
                                      (5, 6, 4, 4, 1)]:
        cpg = in_c // groups
        q = rng.integers(-127, 128, (out_c, cpg)).astype(np.int8)
        scale = (rng.random(out_c) * 0.05 + 0.01).astype(np.float32)
        wt = (scale[:, None] * q.astype(np.float32)).astype(np.float32)
        x, b, dy = rand(rng, in_c, h * w), rand(rng, out_c), rand(rng, out_c, h * w)
        s, scratch = shape(in_c, out_c, h, w, groups), np.zeros(cpg, np.float32)
        qp = q.ctypes.data_as(I8P)
        y = np.full((out_c, h * w), np.nan, np.float32)
        lib.mdy_conv2d_forward_w8(s, fp(x), qp, fp(scale), fp(b), fp(y), fp(scratch))
        assert np.array_equal(bits(y), bits(forward_reference(x, wt, b, groups)))
        base = rand(rng, in_c, h * w)
        dx = base.copy()
        lib.mdy_conv2d_backward_input_w8(s, fp(dy), qp, fp(scale), fp(dx), 1, fp(scratch))
        assert np.array_equal(bits(dx), bits(input_grad_reference(dy, wt, base, groups)))


def test_a_changed_order_is_caught(lib: ctypes.CDLL) -> None:
    """Injection: the same sums with the input channels in reverse order differ in some bits,
    so the exact comparison above would catch a kernel that reordered its sums."""
    rng = np.random.default_rng(6)
    x, wt, b = rand(rng, 7, 19), rand(rng, 9, 7), rand(rng, 9)
    y = np.full((9, 19), np.nan, np.float32)
    lib.mdy_conv2d_forward(shape(7, 9, 1, 19, 1), fp(x), fp(wt), fp(b), fp(y))
    assert np.array_equal(bits(y), bits(forward_reference(x, wt, b, 1)))
    reordered = forward_reference(x, wt, b, 1, order=slice(None, None, -1))
    assert not np.array_equal(bits(y), bits(reordered))

