"""Stored samples -> the network's input: the C decoder (firmware/runtime/sample.c) against the
host's (zoo/samples.py), bit for bit, for every format; encode/decode round trips."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from c_build import ROOT, build_library

from medyate_mcu.codegen.c_interface import sample_format_code
from medyate_mcu.errors import MedyateError
from medyate_mcu.zoo.samples import (
    PIXEL_SCALE,
    SampleEncoding,
    SampleFormat,
    int8_encoding,
    pixel_encoding,
)

RUNTIME = ROOT / "firmware" / "runtime"


class _Encoding(ctypes.Structure):  # mdy_sample_encoding_t (sample.h)
    _fields_ = [("format", ctypes.c_int), ("size", ctypes.c_uint32),
                ("channels", ctypes.c_uint32), ("scale", ctypes.c_float),
                ("mean", ctypes.POINTER(ctypes.c_float)), ("std", ctypes.POINTER(ctypes.c_float))]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory):
    library = build_library([RUNTIME / "sample.c"], tmp_path_factory.mktemp("sample"), "sample")
    library.mdy_sample_decode.restype = None
    library.mdy_sample_bytes.restype = ctypes.c_uint32

    def decode(encoding: SampleEncoding, stored: np.ndarray) -> np.ndarray:
        sample = np.ascontiguousarray(stored)
        mean = (ctypes.c_float * encoding.channels)(*encoding.mean)
        std = (ctypes.c_float * encoding.channels)(*encoding.std)
        c = _Encoding(sample_format_code(encoding.format), sample.size, encoding.channels,
                      encoding.scale, mean, std)
        assert library.mdy_sample_bytes(ctypes.byref(c)) == sample.nbytes
        out = np.empty(sample.size, np.float32)
        library.mdy_sample_decode(ctypes.byref(c), sample.ctypes.data_as(ctypes.c_void_p),
                                  out.ctypes.data_as(ctypes.c_void_p))
        return out.reshape(sample.shape)
    return decode


def _cases() -> list[tuple[SampleEncoding, np.ndarray]]:
    rng = np.random.default_rng(0)
    every_byte = np.arange(256, dtype=np.uint8)
    floats = np.concatenate([rng.normal(0, 7, 250), [0.0, -0.0, 1e-30, -1e38, 1e38, 1e-42]])
    return [
        (pixel_encoding((0.498326, 0.499992), (0.291932, 0.318466)),
         np.stack([every_byte, every_byte[::-1]])),
        (SampleEncoding(SampleFormat.INT8, 0.0371, (-1.25, 0.5), (1.0, 0.13)),
         np.stack([every_byte.view(np.int8)] * 2)),
        (int8_encoding(rng.normal(0, 3, (10, 2, 64)).astype(np.float32)),
         np.stack([every_byte.view(np.int8)] * 2)),
        (SampleEncoding(SampleFormat.FLOAT32, 1.0, (0.25, -3.0), (2.5, 0.7)),
         floats.astype(np.float32).reshape(2, -1)),
        (SampleEncoding.identity(2), floats.astype(np.float32).reshape(2, -1)),
    ]


@pytest.mark.parametrize("case", range(len(_cases())))
def test_c_decoder_equals_host_bit_for_bit(decoder, case: int) -> None:
    encoding, sample = _cases()[case]
    host = encoding.decode(sample[None])[0]
    device = decoder(encoding, sample)
    assert np.array_equal(host.view(np.uint32), device.view(np.uint32))


def test_the_comparison_sees_one_rounding(decoder) -> None:
    """Dividing by 255 instead of multiplying by float32(1/255) (one rounding apart) differs from
    the C decoder on some pixel values: bit equality is a check that can fail."""
    encoding, sample = _cases()[0]
    device = decoder(encoding, sample)
    mean = np.asarray(encoding.mean, np.float32)[:, None]
    std = np.asarray(encoding.std, np.float32)[:, None]
    divided = (sample.astype(np.float32) / np.float32(255) - mean) / std
    assert not np.array_equal(divided.view(np.uint32), device.view(np.uint32))


def test_identity_is_exact_and_float32_round_trips() -> None:
    x = np.random.default_rng(1).normal(0, 5, (3, 1, 49, 10)).astype(np.float32)
    identity = SampleEncoding.identity(1)
    assert np.array_equal(identity.decode(x).view(np.uint32), x.view(np.uint32))
    assert np.array_equal(identity.encode(x), x)


def test_pixels_round_trip_exactly() -> None:
    encoding = pixel_encoding((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    pixels = np.random.default_rng(2).integers(0, 256, (4, 3, 5, 5), dtype=np.uint8)
    assert np.array_equal(encoding.encode(encoding.decode(pixels)), pixels)
    assert encoding.scale == PIXEL_SCALE


def test_int8_samples_lose_at_most_half_a_step_per_channel() -> None:
    """int8_encoding maps each channel's range onto 256 steps: the decoded value is within half
    a step (plus float32 rounding) of the original, and the extremes stay in range."""
    rng = np.random.default_rng(3)
    x = np.stack([rng.normal(0, 1, (40, 128)), rng.normal(5, 20, (40, 128))], axis=1)
    x = x.astype(np.float32)
    encoding = int8_encoding(x)
    stored = encoding.encode(x)
    assert stored.dtype == np.int8
    error = np.abs(encoding.decode(stored) - x)
    for c in range(2):
        step = 1.0 / encoding.std[c]
        bound = step / 2 + 4 * np.finfo(np.float32).eps * float(np.abs(x[:, c]).max())
        assert error[:, c].max() <= bound
        assert error[:, c].max() > step / 4  # the bound is not loose by more than 2x


def test_encoding_survives_the_manifest() -> None:
    encoding = int8_encoding(np.random.default_rng(4).normal(0, 2, (6, 3, 8)).astype(np.float32))
    assert SampleEncoding.from_record(encoding.record()) == encoding


def test_every_format_has_a_c_enumerator() -> None:
    codes = {fmt: sample_format_code(fmt) for fmt in SampleFormat}
    assert len(set(codes.values())) == len(SampleFormat)


def test_nonsense_encodings_are_refused() -> None:
    with pytest.raises(MedyateError, match="non-zero"):
        SampleEncoding(SampleFormat.FLOAT32, 1.0, (0.0,), (0.0,))
    with pytest.raises(MedyateError, match="means for"):
        SampleEncoding(SampleFormat.FLOAT32, 1.0, (0.0, 1.0), (1.0,))
    with pytest.raises(MedyateError, match="damaged"):
        SampleEncoding.from_record({"format": "int4"})


