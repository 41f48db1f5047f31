"""The 3x3 fast interior paths (firmware/kernels/conv_window.c) against the general loops.

Oracle: the same conv.c built with MDY_CONV_WINDOW_OFF, where the fast paths decline and only
the general bounded loops run. The fast paths keep the general loops' operations and summation
order, so forward, input error (overwrite and accumulate) and weight gradient must agree bit
for bit, on many shapes: maps 1x1 to 9x11, strides 1 and 2, pads 0/1 and asymmetric, depthwise,
grouped and regular with odd channel counts, and non-3x3 kernels (1x3, 10x4) that must fall
through to the general loops. Depthwise layers run whole (one call per layer), maps of at most
16 output pixels from a pixel table (the 4x4 / 4x5 cases sit either side of that bound; the
258x1788 case has 16 pixels whose offsets overflow the table's 16 bits), and the stride-1
input error as a gather (the forward of the transposed shape). The demo's shapes are also
checked against PyTorch autograd in float64 with the tolerance of tests/test_kernels_c.py
(max |c - ref| <= 1e-4 max |ref| + 1e-6).

The engine's multi-channel weight gradient (mdy_conv2d_backward_weight_channels: several selected
channels' slots in a pool, one call per layer) must equal the reference build's per-channel calls
bit for bit on the same shapes and on shapes either side of its thresholds (a padded copy of at
most 100 floats: 8x8 s1 = 10x10 in, 8x9 out; 4x4 s2 = 9x9 in, 5x5 out, and 4x4 s3 = 12x12 out
of the pixel table's reach; rows of four output pixels, unrolled, and five), for several channel
sets (none, one, all, unsorted with gaps). Those threshold shapes also run the first test.
"""

from __future__ import annotations

import ctypes
import itertools
from pathlib import Path

import numpy as np
import pytest
from c_build import build_library
from test_kernels_c import KERNELS, Conv, ConvP, FloatP, assert_close, conv_data, conv_reference, fp

PROTOTYPES: dict[str, tuple[type | None, list[type]]] = {
    "mdy_conv2d_forward": (None, [ConvP, FloatP, FloatP, FloatP, FloatP]),
    "mdy_conv2d_backward_input": (None, [ConvP, FloatP, FloatP, FloatP, ctypes.c_int]),
    "mdy_conv2d_backward_weight_channel": (None, [ConvP, FloatP, FloatP, ctypes.c_uint16,
                                                  FloatP]),
    "mdy_conv3x3_forward": (ctypes.c_int, [ConvP, FloatP, FloatP, ctypes.c_float, FloatP]),
    "mdy_conv2d_backward_weight_channels": (None, [
        ConvP, FloatP, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint16), ctypes.c_uint32, FloatP,
        ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint32]),
}


def load(out_dir: Path, name: str, flags: tuple[str, ...]) -> ctypes.CDLL:
    library = build_library(sorted(KERNELS.glob("*.c")), out_dir, name, ("-O2", *flags))
    for function_name, (restype, argtypes) in PROTOTYPES.items():
        function = getattr(library, function_name)
        function.restype = restype
        function.argtypes = argtypes
    return library


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """(fast, general): the kernels as shipped, and with the 3x3 fast paths switched off."""
    out = tmp_path_factory.mktemp("window")
    return load(out, "fast", ()), load(out, "general", ("-DMDY_CONV_WINDOW_OFF",))


def cases() -> list[Conv]:
    """Maps 1x1..9x11 x strides x pads x (depthwise, regular, grouped), plus other kernels."""
    found = []
    channel_sets = [(3, 3, 3), (5, 5, 5), (3, 7, 1), (1, 4, 1), (4, 6, 2)]  # in_c, out_c, groups
    pad_sets = [(0, 0, 0, 0), (1, 1, 1, 1), (0, 0, 1, 1), (1, 0, 0, 1), (1, 1, 0, 0),
                (2, 1, 0, 2)]
    maps = [(1, 1), (2, 3), (3, 3), (4, 5), (5, 4), (7, 6), (9, 11)]
    for (h, w), stride, pads in itertools.product(maps, [(1, 1), (2, 2), (1, 2), (2, 1)],
                                                  pad_sets):
        for in_c, out_c, groups in channel_sets:
            case = Conv(in_c, h, w, out_c, (3, 3), stride, pads, groups)
            if min(case.out_hw) >= 1:
                found.append(case)
    found += [Conv(5, 4, 4, 5, (3, 3), pads=(1, 1, 1, 1), groups=5),  # 16 pixels: a table
              Conv(5, 4, 5, 5, (3, 3), pads=(1, 1, 1, 1), groups=5),  # 20: the rows
              Conv(2, 258, 1788, 2, (3, 3), (255, 255), groups=2),  # offsets past 16 bits
              Conv(3, 5, 6, 4, (1, 3), pads=(0, 1, 0, 1)),
              Conv(2, 13, 6, 3, (10, 4), (2, 1), (4, 2, 5, 1)),
              Conv(1, 49, 10, 3, (10, 4), (2, 2), (4, 1, 5, 1))]
    return found


CASES = cases()


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape
    differ = np.flatnonzero(actual.view(np.uint32) != expected.view(np.uint32))
    assert differ.size == 0, f"{what}: {differ.size} cells differ, first at {differ[0]}"


def forward(lib: ctypes.CDLL, case: Conv, x: np.ndarray, w: np.ndarray,
            b: np.ndarray) -> np.ndarray:
    y = np.full((case.out_c, *case.out_hw), np.nan, dtype=np.float32)
    lib.mdy_conv2d_forward(ctypes.byref(case.shape()), fp(x), fp(w), fp(b), fp(y))
    return y


def backward_input(lib: ctypes.CDLL, case: Conv, dy: np.ndarray, w: np.ndarray,
                   base: np.ndarray | None) -> np.ndarray:
    """dx overwritten (base None, on NaNs) or accumulated into a copy of base."""
    dx = np.full((case.in_c, case.in_h, case.in_w), np.nan, np.float32) if base is None \
        else base.copy()
    lib.mdy_conv2d_backward_input(ctypes.byref(case.shape()), fp(dy), fp(w), fp(dx),
                                  int(base is not None))
    return dx


def backward_weight(lib: ctypes.CDLL, case: Conv, dy: np.ndarray, x: np.ndarray,
                    base: np.ndarray) -> np.ndarray:
    """Every input channel's slice, accumulated into a copy of base (out_c x cpg x k)."""
    cpg, opg = case.in_c // case.groups, case.out_c // case.groups
    grad = base.copy()
    for c in range(case.in_c):
        g = c // cpg
        slice_ = np.ascontiguousarray(grad[g * opg:(g + 1) * opg, c % cpg])
        lib.mdy_conv2d_backward_weight_channel(ctypes.byref(case.shape()), fp(dy),
                                               fp(np.ascontiguousarray(x[c])), c, fp(slice_))
        grad[g * opg:(g + 1) * opg, c % cpg] = slice_
    return grad


def test_fast_paths_equal_general_loops_bit_for_bit(libs: tuple[ctypes.CDLL, ctypes.CDLL]
                                                    ) -> None:
    fast, general = libs
    for i, case in enumerate(CASES + THRESHOLDS):
        x, w, b, dy = conv_data(case, i)
        base_dx = np.random.default_rng(1000 + i).standard_normal(x.shape).astype(np.float32)
        base_dw = np.random.default_rng(2000 + i).standard_normal(w.shape).astype(np.float32)
        label = f"{case}"
        assert_bits_equal(forward(fast, case, x, w, b), forward(general, case, x, w, b),
                          f"forward {label}")
        for base in (None, base_dx):
            assert_bits_equal(backward_input(fast, case, dy, w, base),
                              backward_input(general, case, dy, w, base),
                              f"input error {label}")
        assert_bits_equal(backward_weight(fast, case, dy, x, base_dw),
                          backward_weight(general, case, dy, x, base_dw),
                          f"weight gradient {label}")


def test_fast_path_taken_for_3x3_only(libs: tuple[ctypes.CDLL, ctypes.CDLL]) -> None:
    """The comparison above is meaningful: the shipped build takes the 3x3 path, the
    reference build never does, and other kernels fall through in both."""
    fast, general = libs
    for case, taken in ((Conv(3, 6, 6, 2, (3, 3)), 1), (Conv(3, 5, 6, 2, (1, 3)), 0),
                        (Conv(1, 13, 6, 2, (10, 4)), 0)):
        x, w, _, _ = conv_data(case, 0)
        y = np.zeros((case.out_c, *case.out_hw), np.float32)
        shape = ctypes.byref(case.shape())
        assert fast.mdy_conv3x3_forward(shape, fp(x), fp(w), 0.5, fp(y)) == taken
        assert general.mdy_conv3x3_forward(shape, fp(x), fp(w), 0.5, fp(y)) == 0


def test_bit_check_sees_a_reordered_sum(libs: tuple[ctypes.CDLL, ctypes.CDLL]) -> None:
    """A one-ulp difference, as a different summation order gives, fails the check: the
    forward summed kx descending instead of ascending differs from the kernel's result."""
    fast, _ = libs
    case = Conv(3, 9, 11, 4, (3, 3), pads=(1, 1, 1, 1))
    x, w, b, _ = conv_data(case, 7)
    y = forward(fast, case, x, w, b)
    flipped = forward(fast, case, x[:, :, ::-1].copy(), w[:, :, :, ::-1].copy(), b)[:, :, ::-1]
    assert not np.array_equal(y.view(np.uint32), np.ascontiguousarray(flipped).view(np.uint32))
    with pytest.raises(AssertionError):
        assert_bits_equal(y, np.ascontiguousarray(flipped), "reordered forward")
    nudged = y.copy()
    nudged[1, 4, 5] = np.nextafter(nudged[1, 4, 5], np.float32(np.inf))
    with pytest.raises(AssertionError):
        assert_bits_equal(y, nudged, "one ulp")


DEMO = {
    "stem 3x3 s2 3->16 on 32x32": Conv(3, 32, 32, 16, (3, 3), (2, 2), (0, 0, 1, 1)),
    "depthwise 3x3 s1 on 48x16x16": Conv(48, 16, 16, 48, (3, 3), pads=(1, 1, 1, 1), groups=48),
    "depthwise 3x3 s2 on 48x16x16": Conv(48, 16, 16, 48, (3, 3), (2, 2), (0, 0, 1, 1), 48),
    "depthwise 3x3 s2 on 96x8x8": Conv(96, 8, 8, 96, (3, 3), (2, 2), (0, 0, 1, 1), 96),
    "depthwise 3x3 s1 on 160x4x4": Conv(160, 4, 4, 160, (3, 3), pads=(1, 1, 1, 1), groups=160),
}


@pytest.mark.parametrize("name", DEMO)
def test_demo_shapes_against_autograd(libs: tuple[ctypes.CDLL, ctypes.CDLL], name: str) -> None:
    fast, _ = libs
    case = DEMO[name]
    x, w, b, dy = conv_data(case, 3)
    y, dx, dw = conv_reference(case, x, w, b, dy)
    assert_close(forward(fast, case, x, w, b), y)
    assert_close(backward_input(fast, case, dy, w, None), dx)
    assert_close(backward_weight(fast, case, dy, x, np.zeros_like(w)), dw)


FIRST = 7  # the layer's first canonical channel: channels[j] - FIRST is the layer's channel


def channel_sets(in_c: int) -> list[list[int]]:
    """None, one, all, and an unsorted set with gaps (canonical numbers from FIRST)."""
    unsorted = list(range(in_c - 1, -1, -2)) + list(range(0, in_c, 4))
    picked = list(dict.fromkeys(unsorted))
    return [[], [in_c - 1], list(range(in_c)), picked]


def backward_weights(lib: ctypes.CDLL, case: Conv, dy: np.ndarray, x: np.ndarray,
                     base: np.ndarray, channels: list[int]) -> np.ndarray:
    """The selected channels' slices (len(channels) x opg x k), accumulated into copies of base's
    slices: one multi-channel call, the slots in a pool in reverse order with gaps between."""
    cpg, opg = case.in_c // case.groups, case.out_c // case.groups
    k_hw, in_hw = case.k[0] * case.k[1], case.in_h * case.in_w
    slot = opg * k_hw + in_hw + 3
    pool = np.full(slot * len(channels) + 5, np.nan, np.float32)
    offsets = np.array([5 + slot * (len(channels) - 1 - j) for j in range(len(channels))],
                       np.uint32)
    for j, c in enumerate(channels):
        g = c // cpg
        pool[offsets[j]:offsets[j] + opg * k_hw] = base[g * opg:(g + 1) * opg, c % cpg].ravel()
        pool[offsets[j] + opg * k_hw:offsets[j] + opg * k_hw + in_hw] = x[c].ravel()
    numbers = np.array([FIRST + c for c in channels], np.uint16)
    lib.mdy_conv2d_backward_weight_channels(
        ctypes.byref(case.shape()), fp(dy), len(channels),
        numbers.ctypes.data_as(ctypes.POINTER(ctypes.c_uint16)), FIRST, fp(pool),
        offsets.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), opg * k_hw)
    return np.stack([pool[o:o + opg * k_hw] for o in offsets]) if channels else \
        np.zeros((0, opg * k_hw), np.float32)


def per_channel(lib: ctypes.CDLL, case: Conv, dy: np.ndarray, x: np.ndarray,
                base: np.ndarray, channels: list[int]) -> np.ndarray:
    """The same slices from one mdy_conv2d_backward_weight_channel call each."""
    cpg, opg = case.in_c // case.groups, case.out_c // case.groups
    out = []
    for c in channels:
        g = c // cpg
        slice_ = np.ascontiguousarray(base[g * opg:(g + 1) * opg, c % cpg])
        lib.mdy_conv2d_backward_weight_channel(ctypes.byref(case.shape()), fp(dy),
                                               fp(np.ascontiguousarray(x[c])), c, fp(slice_))
        out.append(slice_.ravel())
    return np.stack(out) if out else np.zeros((0, opg * case.k[0] * case.k[1]), np.float32)


THRESHOLDS = [Conv(3, 8, 8, 3, (3, 3), pads=(1, 1, 1, 1), groups=3),  # 10x10: padded
              Conv(3, 4, 4, 3, (3, 3), pads=(1, 1, 1, 1), groups=3),  # rows of four, stride 1
              Conv(2, 6, 8, 2, (3, 3), (2, 2), (0, 0, 1, 1), 2),  # rows of four, stride 2
              Conv(2, 7, 8, 2, (3, 3), (2, 2), (1, 1, 1, 1), 2),  # the same, padded left
              Conv(2, 6, 9, 2, (3, 3), (2, 2), (0, 0, 1, 1), 2),  # 9 wide: rows of five
              Conv(2, 6, 7, 2, (3, 3), (2, 2), (1, 1, 1, 1), 2),  # stride 2, both sides
              Conv(3, 8, 9, 3, (3, 3), pads=(1, 1, 1, 1), groups=3),  # 10x11: the geometry
              Conv(2, 8, 8, 2, (3, 3), (2, 2), (0, 0, 1, 1), 2),  # 9x9 windows: padded
              Conv(2, 10, 10, 2, (3, 3), (2, 2), (1, 1, 1, 1), 2),  # 5x5 out, 11x11: geometry
              Conv(2, 12, 12, 2, (3, 3), (3, 3), (1, 1, 1, 1), 2),  # 4x4 s3, 12x12: table
              Conv(3, 7, 5, 6, (3, 3), pads=(2, 1, 0, 2), groups=3)]  # odd, asymmetric


def test_multi_channel_weight_gradient_equals_per_channel_calls(
        libs: tuple[ctypes.CDLL, ctypes.CDLL]) -> None:
    """Bytes equal to the reference build's per-channel general loops, onto random bases and
    onto +0 (the engine's slots), dy with zeros of both signs (products -0 and +0)."""
    fast, general = libs
    for i, case in enumerate(CASES + THRESHOLDS):
        x, w, _, dy = conv_data(case, i)
        dy.flat[::5] = 0.0
        dy.flat[1::7] = -0.0
        bases = (np.random.default_rng(3000 + i).standard_normal(w.shape).astype(np.float32),
                 np.zeros_like(w))
        for n, channels in enumerate(channel_sets(case.in_c)):
            base = bases[n % 2]
            assert_bits_equal(backward_weights(fast, case, dy, x, base, channels),
                              per_channel(general, case, dy, x, base, channels),
                              f"weight gradients {case} channels {channels}")


def test_multi_channel_bit_check_sees_a_reordered_sum(
        libs: tuple[ctypes.CDLL, ctypes.CDLL]) -> None:
    """The check catches the pixels summed in another order (the map and dy transposed)."""
    fast, _ = libs
    case = Conv(4, 8, 8, 4, (3, 3), pads=(1, 1, 1, 1), groups=4)
    x, w, _, dy = conv_data(case, 11)
    base = np.zeros_like(w)
    got = backward_weights(fast, case, dy, x, base, [0, 1, 2, 3])
    swapped = backward_weights(fast, case, dy.transpose(0, 2, 1).copy(),
                               x.transpose(0, 2, 1).copy(), base.transpose(0, 1, 3, 2).copy(),
                               [0, 1, 2, 3]).reshape(4, 1, 3, 3).transpose(0, 1, 3, 2)
    with pytest.raises(AssertionError):
        assert_bits_equal(got, np.ascontiguousarray(swapped).reshape(4, 9), "reordered")
    np.testing.assert_allclose(got, np.ascontiguousarray(swapped).reshape(4, 9), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("name", DEMO)
def test_multi_channel_demo_shapes_against_autograd(libs: tuple[ctypes.CDLL, ctypes.CDLL],
                                                    name: str) -> None:
    fast, _ = libs
    case = DEMO[name]
    x, w, b, dy = conv_data(case, 4)
    dw = conv_reference(case, x, w, b, dy)[2]
    channels = list(range(case.in_c))[::-3]
    got = backward_weights(fast, case, dy, x, np.zeros_like(w), channels)
    cpg, opg = case.in_c // case.groups, case.out_c // case.groups
    ref = np.stack([dw[(c // cpg) * opg:(c // cpg + 1) * opg, c % cpg].ravel() for c in channels])
    assert_close(got, ref)


def test_forward_keeps_signed_zeros_and_padded_infinities(
        libs: tuple[ctypes.CDLL, ctypes.CDLL]) -> None:
    """Cases where reading the padding as zeros would change bits, which the depthwise forward
    must route to the masked path: a bias of -0 with every product -0 (a padded +0 * w would
    turn a -0 sum into +0), and an infinite weight whose tap is padded for the border pixels
    (0 * inf would be NaN; the stride-1 input error's gather too). Checked against the
    reference build, and the -0 is really there."""
    fast, general = libs
    for case in (Conv(3, 4, 4, 3, (3, 3), pads=(1, 1, 1, 1), groups=3),
                 Conv(3, 8, 8, 3, (3, 3), (2, 2), (0, 0, 1, 1), 3),
                 Conv(2, 7, 9, 2, (3, 3), pads=(1, 1, 1, 1), groups=2)):
        x, w, b, _ = conv_data(case, 5)
        x[0] = -0.0
        w[0] = np.abs(w[0]) + 0.25
        b[0] = -0.0
        w[1, 0, 0, 0] = np.inf
        y = forward(fast, case, x, w, b)
        assert_bits_equal(y, forward(general, case, x, w, b), f"forward {case}")
        assert np.all(np.signbit(y[0])) and not np.any(y[0])
        assert np.all(np.isfinite(y[1, 0, :])) or case.pads[0] == 0
        dy = conv_data(case, 6)[3]
        assert_bits_equal(backward_input(fast, case, dy, w, None),
                          backward_input(general, case, dy, w, None), f"input error {case}")
