"""The stem's forward (firmware/kernels/conv_stem.c: regular 3x3 stride-2 convolutions of at most
8 input channels, blocks of 4 output channels x 4 pixels) against the general loops.

Oracle: the same conv.c built with MDY_CONV_WINDOW_OFF, where the fast path declines and only
conv.c's general bounded loops run. The stem keeps their operations and summation order (bias,
input channel, ky, kx; padded taps skipped), so the outputs must agree bit for bit: tolerance
zero. Shapes: the demo's 3x32x32 -> 16x16x16 (pad 1), odd and small maps (the overlapping last
block, rows and columns in the padding top, bottom, left and right), in_c 1..8, out_c 4..12,
no bias; values over several binades plus NaN, +-0, +-inf, 6 and denormals. Shapes the path
must decline (out_c not a multiple of 4, 9 input channels, stride 1, grouped, under 4 inner
columns) fall through to the general loops. An injected reordering is caught.
"""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pytest
from test_kernels_c import Conv, ConvP, FloatP, conv_data, fp
from test_kernels_window import assert_bits_equal, forward, load

ACCEPTED = [Conv(3, 32, 32, 16, (3, 3), (2, 2), (1, 1, 1, 1)),  # the demo's stem
            *(Conv(in_c, h, w, out_c, (3, 3), (2, 2), pads)
              for (h, w), pads, (in_c, out_c) in itertools.product(
                  [(11, 11), (8, 13), (13, 10), (5, 16)],
                  [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 1, 0), (1, 0, 0, 1), (2, 1, 2, 1)],
                  [(1, 4), (3, 8), (8, 12), (2, 4)]))]
DECLINED = [Conv(3, 9, 9, 6, (3, 3), (2, 2), (1, 1, 1, 1)),
            Conv(9, 9, 9, 4, (3, 3), (2, 2), (1, 1, 1, 1)),
            Conv(3, 9, 9, 4, (3, 3), (1, 1), (1, 1, 1, 1)),
            Conv(4, 9, 9, 4, (3, 3), (2, 2), (1, 1, 1, 1), groups=2),
            Conv(3, 7, 7, 4, (3, 3), (2, 2), (1, 1, 1, 1))]  # 3 inner columns


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """(fast, general): the kernels as shipped, and with the fast paths switched off."""
    out = tmp_path_factory.mktemp("stem")
    found = load(out, "fast", ()), load(out, "general", ("-DMDY_CONV_WINDOW_OFF",))
    for lib in found:
        lib.mdy_conv3x3_stride2_forward.restype = ctypes.c_int
        lib.mdy_conv3x3_stride2_forward.argtypes = [ConvP, FloatP, FloatP, FloatP, FloatP]
    return found


def taken(lib: ctypes.CDLL, case: Conv) -> bool:
    x, w, b, _ = conv_data(case, 0)
    y = np.zeros((case.out_c, *case.out_hw), np.float32)
    return bool(lib.mdy_conv3x3_stride2_forward(ctypes.byref(case.shape()), fp(x), fp(w),
                                                fp(b), fp(y)))


def special(case: Conv, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """conv_data with NaN, +-0, +-inf, 6 and denormals sprinkled over x, a zero filter, a -0
    bias over an all -0 input channel's products."""
    x, w, b, _ = conv_data(case, seed)
    rng = np.random.default_rng(seed)
    values = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 6.0, 1e-40, -3e-39], np.float32)
    cells = rng.choice(x.size, size=max(1, x.size // 20), replace=False)
    x.flat[cells] = rng.choice(values, size=cells.size)
    w[0] = 0.0
    b[0] = -0.0
    return x, w, b


def test_stem_equals_the_general_loops_bit_for_bit(
        libs: tuple[ctypes.CDLL, ctypes.CDLL]) -> None:
    fast, general = libs
    for i, case in enumerate(ACCEPTED):
        assert taken(fast, case) and not taken(general, case), case
        x, w, b, _ = conv_data(case, i)
        assert_bits_equal(forward(fast, case, x, w, b), forward(general, case, x, w, b),
                          f"forward {case}")
        x, w, b = special(case, i)
        assert_bits_equal(forward(fast, case, x, w, b), forward(general, case, x, w, b),
                          f"special values {case}")
        y = np.full((case.out_c, *case.out_hw), np.nan, np.float32)
        fast.mdy_conv2d_forward(ctypes.byref(case.shape()), fp(x), fp(w), None, fp(y))
        z = np.full_like(y, np.nan)
        general.mdy_conv2d_forward(ctypes.byref(case.shape()), fp(x), fp(w), None, fp(z))
        assert_bits_equal(y, z, f"no bias {case}")


def test_other_shapes_take_the_general_loops(libs: tuple[ctypes.CDLL, ctypes.CDLL]) -> None:
    fast, general = libs
    for i, case in enumerate(DECLINED):
        assert not taken(fast, case), case
        x, w, b, _ = conv_data(case, i)
        assert_bits_equal(forward(fast, case, x, w, b), forward(general, case, x, w, b),
                          f"forward {case}")


def test_a_reordered_sum_is_caught(libs: tuple[ctypes.CDLL, ctypes.CDLL]) -> None:
    """Injection: the demo stem's sums with the input channels in reverse order (the filters
    and inputs reversed along channels: the same products, another order) differ in some
    bits from the general loops, so the exact comparison above would catch it."""
    fast, general = libs
    case = ACCEPTED[0]
    x, w, b, _ = conv_data(case, 3)
    reordered = forward(fast, case, np.ascontiguousarray(x[::-1]),
                        np.ascontiguousarray(w[:, ::-1]), b)
    expected = forward(general, case, x, w, b)
    assert not np.array_equal(reordered.view(np.uint32), expected.view(np.uint32))
    assert np.allclose(reordered, expected, rtol=1e-4, atol=1e-4)
