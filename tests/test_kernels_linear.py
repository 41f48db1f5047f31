"""The register-blocked linear kernels (firmware/kernels/linear.c) give the plain loops' results
bit for bit.

The oracle is numpy in float32 summing in the plain loops' order (forward: bias, then inputs
ascending; input gradient: rows ascending onto dx, or onto 0; weight gradient: one += per
cell), each product and sum rounded once to float32 as the C does under -ffp-contract=off.
Equality is exact (the bit patterns), so the tolerance is zero; a changed summation order is
caught (test_a_changed_order_is_caught). Sizes cover every tail of the blocks (4 rows and 2
inputs in the forward and weight gradient, 8 inputs in the input gradient): in_f and out_f
1..5, 7..9, 15..17, 33, and the classifiers 128 -> 10 and 1280 -> 10. The autograd checks of the
same kernels stay in test_kernels_c.py; the *_w8 kernels against these on dequantized weights
in test_qkernels.py.
"""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pytest
from c_build import build_library
from test_kernels_c import KERNELS, FloatP, fp
from test_kernels_pointwise import bits, rand

U16 = ctypes.c_uint16
PROTOTYPES: dict[str, list[type]] = {
    "mdy_linear_forward": [U16, U16, FloatP, FloatP, FloatP, FloatP],
    "mdy_linear_backward_input": [U16, U16, FloatP, FloatP, FloatP, ctypes.c_int],
    "mdy_linear_backward_weight": [U16, U16, FloatP, FloatP, FloatP, FloatP],
}
SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33]
CASES = [*itertools.product(SIZES, [1, 2, 3, 4, 5, 8, 9, 10, 17]), (128, 10), (1280, 10)]


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    library = build_library([KERNELS / "linear.c", KERNELS / "quant.c", KERNELS / "sgd.c"],
                            tmp_path_factory.mktemp("linear"), "libmdy_linear")
    for name, argtypes in PROTOTYPES.items():
        getattr(library, name).argtypes = argtypes
        getattr(library, name).restype = None
    return library


def forward_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                      order: slice = slice(None)) -> np.ndarray:
    """y[o] = b[o] (or 0) + w[o][i] x[i] over i ascending (``order`` reorders: the injection)."""
    y = np.zeros(w.shape[0], np.float32) if b is None else b.copy()
    for i in list(range(x.size))[order]:
        y = y + w[:, i] * x[i]
    return y


def input_grad_reference(dy: np.ndarray, w: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """dx += dy[o] w[o][:] over o ascending."""
    for o in range(dy.size):
        dx = dx + dy[o] * w[o]
    return dx


def case_data(in_f: int, out_f: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(in_f * 1000 + out_f)
    return rand(rng, in_f), rand(rng, out_f, in_f), rand(rng, out_f), rand(rng, out_f)


@pytest.mark.parametrize(("in_f", "out_f"), CASES)
def test_forward_matches_the_plain_order(lib: ctypes.CDLL, in_f: int, out_f: int) -> None:
    x, w, b, _ = case_data(in_f, out_f)
    for bias in (b, None):
        y = np.full(out_f, np.nan, np.float32)
        lib.mdy_linear_forward(in_f, out_f, fp(x), fp(w), fp(bias), fp(y))
        assert np.array_equal(bits(y), bits(forward_reference(x, w, bias)))


@pytest.mark.parametrize(("in_f", "out_f"), CASES)
def test_input_gradient_matches_the_plain_order(lib: ctypes.CDLL, in_f: int, out_f: int) -> None:
    _, w, _, dy = case_data(in_f, out_f)
    base = rand(np.random.default_rng(7), in_f)
    for accumulate, start in ((0, np.full(in_f, np.nan, np.float32)), (1, base)):
        dx = start.copy()
        lib.mdy_linear_backward_input(in_f, out_f, fp(dy), fp(w), fp(dx), accumulate)
        expected = input_grad_reference(dy, w, base if accumulate else np.zeros_like(base))
        assert np.array_equal(bits(dx), bits(expected))


@pytest.mark.parametrize(("in_f", "out_f"), CASES)
def test_weight_gradient_is_one_add_per_cell(lib: ctypes.CDLL, in_f: int, out_f: int) -> None:
    x, _, _, dy = case_data(in_f, out_f)
    rng = np.random.default_rng(11)
    gw_base, gb_base = rand(rng, out_f, in_f), rand(rng, out_f)
    gw, gb = gw_base.copy(), gb_base.copy()
    lib.mdy_linear_backward_weight(in_f, out_f, fp(dy), fp(x), fp(gw), fp(gb))
    assert np.array_equal(bits(gw), bits(gw_base + dy[:, None] * x[None, :]))
    assert np.array_equal(bits(gb), bits(gb_base + dy))
    lib.mdy_linear_backward_weight(in_f, out_f, fp(dy), fp(x), fp(gw), None)  # no bias
    assert np.array_equal(bits(gb), bits(gb_base + dy))


def test_a_changed_order_is_caught(lib: ctypes.CDLL) -> None:
    """The oracle summing the inputs in reverse differs from the kernel: the bit test is not
    blind to order (the values span 13 binades, so the roundings differ)."""
    x, w, b, _ = case_data(33, 9)
    y = np.full(9, np.nan, np.float32)
    lib.mdy_linear_forward(33, 9, fp(x), fp(w), fp(b), fp(y))
    assert np.array_equal(bits(y), bits(forward_reference(x, w, b)))
    assert not np.array_equal(bits(y), bits(forward_reference(x, w, b, slice(None, None, -1))))
