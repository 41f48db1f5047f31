"""The byte-at-a-time ReLU/ReLU6 kernels (firmware/kernels/activation.c) give the element-by-
element loops' results bit for bit.

The oracle is the previous element-by-element C loops, kept below as test-only C (REFERENCE_C,
compiled into the same library under other names): float comparisons per element, one mask bit
at a time. Outputs, mask bytes and errors are compared as bit patterns (tolerance zero) on every
special value (signed zeros, 6 and its neighbours, denormals, infinities, NaNs of both signs and
with payloads) and random values, for n = 1..17, 63..65 and 1000 (every tail of the 8-element
blocks), in place and not, and the backward with accumulate 0 (a separate dx and in place) and 1.
A mutant whose mask lets 6.0 pass is caught. The autograd checks stay in test_kernels_c.py.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from c_build import build_library
from test_kernels_c import KERNELS, FloatP, fp

U8P = ctypes.POINTER(ctypes.c_uint8)
REFERENCE_C = r"""
#include <stddef.h>
#include <stdint.h>

static void clamp_forward(uint32_t n, const float *x, float *y, uint8_t *mask, int has_hi,
                          float hi)
{
    uint32_t i, bits = 0u;
    for (i = 0; i < n; ++i) {
        const float v = x[i];
        const int pass = v > 0.0f && (!has_hi || v < hi);
        float out = v;
        if (v <= 0.0f) {
            out = 0.0f;
        } else if (has_hi && v >= hi) {
            out = hi;
        }
        y[i] = out;
        bits |= (uint32_t)pass << (i & 7u);
        if (mask != NULL && ((i & 7u) == 7u || i + 1u == n)) {
            mask[i >> 3] = (uint8_t)bits;
            bits = 0u;
        }
    }
}

void old_relu_forward(uint32_t n, const float *x, float *y, uint8_t *mask)
{
    clamp_forward(n, x, y, mask, 0, 0.0f);
}

void old_relu6_forward(uint32_t n, const float *x, float *y, uint8_t *mask)
{
    clamp_forward(n, x, y, mask, 1, 6.0f);
}

void old_masked_backward(uint32_t n, const float *dy, const uint8_t *mask, float *dx,
                         int accumulate)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        const int pass = (mask[i >> 3] >> (i & 7u)) & 1;
        if (accumulate) {
            if (pass) {
                dx[i] += dy[i];
            }
        } else {
            dx[i] = pass ? dy[i] : 0.0f;
        }
    }
}
"""
FORWARD = [ctypes.c_uint32, FloatP, FloatP, U8P]
BACKWARD = [ctypes.c_uint32, FloatP, U8P, FloatP, ctypes.c_int]
SIZES = [*range(1, 18), 63, 64, 65, 1000]
KINDS = ["relu", "relu6"]


def library(folder: Path, activation_c: str, name: str) -> ctypes.CDLL:
    (folder / "reference.c").write_text(REFERENCE_C)
    (folder / "activation.c").write_text(activation_c)
    (folder / "activation.h").write_text((KERNELS / "activation.h").read_text())
    lib = build_library([folder / "activation.c", folder / "reference.c"], folder, name)
    for kind in KINDS:
        for prefix in ("mdy", "old"):
            getattr(lib, f"{prefix}_{kind}_forward").argtypes = FORWARD
        getattr(lib, f"mdy_{kind}_backward").argtypes = BACKWARD
    lib.old_masked_backward.argtypes = BACKWARD
    return lib


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return library(tmp_path_factory.mktemp("activation"),
                   (KERNELS / "activation.c").read_text(), "libmdy_activation")


def u8p(a: np.ndarray) -> ctypes._Pointer[ctypes.c_uint8]:
    return a.ctypes.data_as(U8P)


def special_values() -> np.ndarray:
    """Every boundary the comparisons meet, as bit patterns."""
    six = 0x40C00000
    patterns = [0x0, 0x80000000, 0x1, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00800000,
                six, six - 1, six + 1, 0xC0C00000, 0x3F800000, 0xBF800000, 0x7F7FFFFF,
                0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,
                0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FA00000]
    return np.array(patterns, dtype=np.uint32).view(np.float32)


def inputs(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    values = np.concatenate([special_values(), rng.uniform(-3.0, 9.0, 64).astype(np.float32)])
    return rng.choice(values, n).astype(np.float32)


def forward_bytes(forward: ctypes._CFuncPtr, x: np.ndarray, in_place: bool) -> bytes:
    n = x.size
    y = x.copy() if in_place else np.full(n, np.nan, np.float32)
    mask = np.full((n + 7) // 8, 0xA5, np.uint8)
    forward(n, fp(y if in_place else x), fp(y), u8p(mask))
    return y.tobytes() + mask.tobytes()


def check_forward(lib: ctypes.CDLL, kind: str, n: int) -> None:
    x = inputs(n)
    new, old = getattr(lib, f"mdy_{kind}_forward"), getattr(lib, f"old_{kind}_forward")
    for in_place in (False, True):
        assert forward_bytes(new, x, in_place) == forward_bytes(old, x, in_place), in_place
    y_new, y_old = (np.full(n, np.nan, np.float32) for _ in range(2))
    new(n, fp(x), fp(y_new), None)  # inference: no mask
    old(n, fp(x), fp(y_old), None)
    assert y_new.tobytes() == y_old.tobytes()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", SIZES)
def test_forward_matches_the_element_loop(lib: ctypes.CDLL, kind: str, n: int) -> None:
    check_forward(lib, kind, n)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", SIZES)
def test_backward_matches_the_element_loop(lib: ctypes.CDLL, kind: str, n: int) -> None:
    rng = np.random.default_rng(n + 1)
    mask = rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8)
    mask[: len(mask) // 3] = rng.choice([0x00, 0xFF], len(mask) // 3)  # the whole-byte paths
    dy = np.concatenate([special_values(), rng.standard_normal(n).astype(np.float32)])[:n]
    dy = rng.permutation(dy)
    backward = getattr(lib, f"mdy_{kind}_backward")
    for accumulate in (0, 1):
        base = rng.standard_normal(n).astype(np.float32)
        ours, reference = base.copy(), base.copy()
        backward(n, fp(dy), u8p(mask), fp(ours), accumulate)
        lib.old_masked_backward(n, fp(dy), u8p(mask), fp(reference), accumulate)
        assert ours.tobytes() == reference.tobytes(), accumulate
        ours, reference = dy.copy(), dy.copy()  # in place, dx == dy
        backward(n, fp(ours), u8p(mask), fp(ours), accumulate)
        lib.old_masked_backward(n, fp(reference), u8p(mask), fp(reference), accumulate)
        assert ours.tobytes() == reference.tobytes(), accumulate


def test_a_mask_letting_six_pass_is_caught(tmp_path: Path) -> None:
    source = (KERNELS / "activation.c").read_text()
    assert source.count("0x40bfffffu") == 1
    mutant = library(tmp_path, source.replace("0x40bfffffu", "0x40c00000u"), "libmutant")
    with pytest.raises(AssertionError):
        check_forward(mutant, "relu6", 64)
