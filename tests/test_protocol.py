"""The serial protocol's host side: CRC, frames, the decoder's resynchronisation, messages;
the device's in-place sample decoder (firmware/runtime/sample.c) against the host's."""

from __future__ import annotations

import ctypes
import re
import struct

import numpy as np
import pytest
from c_build import ROOT, build_library

from medyate_mcu.codegen.c_interface import header_text, sample_format_code
from medyate_mcu.device import protocol as p
from medyate_mcu.zoo.samples import SampleEncoding, SampleFormat, int8_encoding, pixel_encoding


def test_crc_is_zlibs_crc32_with_the_published_check_value() -> None:
    # CRC-32/ISO-HDLC check value for "123456789" (the catalogue's "check" field)
    assert p.crc32(b"123456789") == 0xCBF43926
    assert p.crc32(b"") == 0


def test_frame_layout() -> None:
    frame = p.encode_frame(p.MsgType.STATS, 7, b"\x01\x02")
    assert frame[:2] == b"\xa5\x5a"
    assert struct.unpack_from("<HBB", frame, 2) == (2, 0x06, 7)
    assert frame[6:8] == b"\x01\x02"
    assert struct.unpack_from("<I", frame, 8)[0] == p.crc32(frame[2:8])
    assert len(frame) == p.OVERHEAD + 2


def test_decoder_round_trip_in_pieces() -> None:
    frames = [p.encode_frame(t, s, bytes(range(n))) for t, s, n in
              ((0x81, 0, 60), (0x83, 1, 20), (0x87, 2, 255))]
    stream = b"".join(frames)
    decoder = p.FrameDecoder()
    out = []
    for i in range(0, len(stream), 7):  # fed in odd-sized pieces
        out += decoder.feed(stream[i:i + 7])
    assert [(f.type, f.sequence, len(f.payload)) for f in out] == \
        [(0x81, 0, 60), (0x83, 1, 20), (0x87, 2, 255)]
    assert decoder.pending == 0


def test_decoder_skips_garbage_and_resynchronises() -> None:
    good = p.encode_frame(0x86, 3, b"abc")
    bad_crc = bytearray(p.encode_frame(0x86, 4, b"xyz"))
    bad_crc[-1] ^= 0xFF
    garbage = b"\x00\xa5\x11\xa5\xa5\x99junk"
    out = p.FrameDecoder().feed(garbage + bytes(bad_crc) + good)
    frames = [f for f in out if isinstance(f, p.Frame)]
    bad = [f for f in out if isinstance(f, p.BadFrame)]
    assert frames == [p.Frame(0x86, 3, b"abc")]
    assert any("CRC" in b.reason for b in bad)


def test_decoder_refuses_oversize_length_at_once() -> None:
    decoder = p.FrameDecoder(max_payload=16)
    header = b"\xa5\x5a" + struct.pack("<HBB", 17, 0x03, 1)
    out = decoder.feed(header + p.encode_frame(0x06, 2))
    assert isinstance(out[0], p.BadFrame) and "length 17" in out[0].reason
    assert out[-1] == p.Frame(0x06, 2, b"")


def test_truncated_frame_is_completed_by_following_bytes_and_fails() -> None:
    truncated = p.encode_frame(0x03, 1, bytes(40))[:20]
    out = p.FrameDecoder().feed(truncated + p.encode_frame(0x06, 2) + bytes(64))
    # the stats frame lies inside the truncated frame's declared length: the CRC fails, and the
    # decoder rescans from the byte after the failed sync, so it finds the stats frame
    assert p.Frame(0x06, 2, b"") in out


def test_encode_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        p.encode_frame(0x100, 0)
    with pytest.raises(ValueError):
        p.encode_frame(0x01, 0, bytes(p.MAX_LENGTH + 1))


def test_messages_round_trip() -> None:
    ready = p.Ready(2, 0, bytes(range(8)), bytes(range(8, 16)), 307200, 100352, 59072, 490,
                    12, 10, 611, 3, 1, 1040, 2, 490, "qemu-mps2-an386")
    assert p.Ready.decode(ready.encode()) == ready
    assert len(ready.encode()) == 64 + len("qemu-mps2-an386")
    assert ready.sample_format is SampleFormat.INT8
    assert ready.describe_samples() == "int8 samples, 490 B a frame"
    sample = struct.pack("<fBBHIII", 1.5, 1, 0, 0, 2, 7, 1234)
    assert p.SampleResult.decode(sample) == p.SampleResult(1.5, True, 2, 7, 1234)
    data = struct.pack("<HHIII", 0x101, 4, 8, 2, 100) + np.array([1.0, -2.0], "<f4").tobytes()
    decoded = p.Data.decode(data)
    assert (decoded.region, decoded.offset, decoded.total) == (0x101, 8, 100)
    np.testing.assert_array_equal(decoded.values, [1.0, -2.0])
    error = p.ErrorReply.decode(struct.pack("<BBh", 5, 0x03, -1) + b"label out of range")
    assert error.describe() == "ENGINE for SAMPLE, engine status -1: label out of range"


@pytest.mark.parametrize("payload", [b"", b"\x00" * 19, b"\x00" * 21])
def test_short_or_long_replies_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.SampleResult.decode(payload)


def test_data_with_inconsistent_count_is_refused() -> None:
    data = struct.pack("<HHIII", 0, 4, 0, 3, 10) + bytes(8)
    with pytest.raises(p.ProtocolError):
        p.Data.decode(data)


def test_ready_layout_is_the_headers() -> None:
    """READY's fields sit at the byte offsets protocol.h documents (all aligned), and its
    sample_format byte is sample.h's mdy_sample_format_t."""
    text = " ".join(header_text("runtime/protocol.h").split())
    documented = re.search(r"READY's byte offsets: (.*?)\(at most", text)
    assert documented
    offsets = {name: int(at) for at, name in re.findall(r"(\d+) (\w+)", documented.group(1))}
    ready = p.Ready(2, 0, bytes(8), bytes(8), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 0x0BADF00D, "b")
    encoded = ready.encode()
    assert encoded[offsets["sample_format"]] == 1
    assert struct.unpack_from("<I", encoded, offsets["sample_bytes"])[0] == 0x0BADF00D
    assert struct.unpack_from("<I", encoded, offsets["max_payload"])[0] == 10
    assert encoded[offsets["board"]:] == b"b"
    assert offsets["sample_bytes"] % 4 == 0 and len(offsets) == 18
    assert {code: fmt.value for code, fmt in p.SAMPLE_FORMATS.items()} == \
        {sample_format_code(fmt): fmt.value for fmt in SampleFormat}


def test_an_older_firmwares_ready_keeps_its_version() -> None:
    """A version 1 READY (8 bytes shorter) decodes to its version, which hello() refuses."""
    v1 = struct.pack("<HH8s8sIIIIHHIIII", 1, 0, bytes(8), bytes(8), *range(10))
    assert p.Ready.decode(v1 + b"host").version == 1


def test_request_payloads() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    payload = p.sample_payload(x, 4, SampleFormat.FLOAT32, 6)
    assert struct.unpack_from("<i", payload)[0] == 4
    np.testing.assert_array_equal(np.frombuffer(payload[4:], "<f4"), np.arange(6))
    with pytest.raises(ValueError, match="6 values"):
        p.predict_payload(x, SampleFormat.FLOAT32, 7)
    pixels = np.array([[0, 255, 7]], np.uint8)
    assert p.predict_payload(pixels, SampleFormat.UINT8, 3) == b"\x00\xff\x07"
    assert p.sample_payload(pixels.view(np.int8), -1, SampleFormat.INT8, 3) == \
        b"\xff\xff\xff\xff\x00\xff\x07"
    with pytest.raises(ValueError, match="the device stores uint8"):  # never converted
        p.predict_payload(x, SampleFormat.UINT8, 6)
    assert p.read_payload(0x102, 5, 9) == struct.pack("<HHII", 0x102, 0, 5, 9)


# ---- the device's in-place decoder (sample.c) -------------------------------------------------

class _CEncoding(ctypes.Structure):
    """mdy_sample_encoding_t (sample.h)."""

    _fields_ = [("format", ctypes.c_int), ("size", ctypes.c_uint32),
                ("channels", ctypes.c_uint32), ("scale", ctypes.c_float),
                ("mean", ctypes.POINTER(ctypes.c_float)), ("std", ctypes.POINTER(ctypes.c_float))]


@pytest.fixture(scope="module")
def in_place(tmp_path_factory: pytest.TempPathFactory):
    """sample.c's mdy_sample_decode_in_place on a receive buffer of 4 bytes a value."""
    library = build_library([ROOT / "firmware" / "runtime" / "sample.c"],
                            tmp_path_factory.mktemp("in_place"), "sample")
    library.mdy_sample_decode_in_place.restype = None

    def decode(encoding: SampleEncoding, stored: np.ndarray) -> np.ndarray:
        raw = np.ascontiguousarray(stored).reshape(-1)
        buffer = np.full(4 * raw.size, 0xCC, np.uint8)  # what a previous frame left
        buffer[:raw.nbytes] = raw.view(np.uint8)
        mean = (ctypes.c_float * encoding.channels)(*encoding.mean)
        std = (ctypes.c_float * encoding.channels)(*encoding.std)
        c = _CEncoding(sample_format_code(encoding.format), raw.size, encoding.channels,
                       encoding.scale, mean, std)
        library.mdy_sample_decode_in_place(ctypes.byref(c),
                                           buffer.ctypes.data_as(ctypes.c_void_p))
        return buffer.view(np.float32).reshape(stored.shape)
    return decode


def _stored_cases() -> dict[str, tuple[SampleEncoding, np.ndarray]]:
    """Every byte value in each channel, and float32 specials (signed zero, subnormals, the
    extremes)."""
    every = np.arange(256, dtype=np.uint8)
    floats = np.concatenate([[0.0, -0.0, 1e-42, -1e-40, 3.4e38, -3.4e38],
                             np.random.default_rng(5).normal(0, 9, 58)]).astype(np.float32)
    spread = np.random.default_rng(6).normal(0, 4, (8, 2, 32)).astype(np.float32)
    return {"uint8": (pixel_encoding((0.49, 0.51), (0.29, 0.31)), np.stack([every, every[::-1]])),
            "int8": (int8_encoding(spread), np.stack([every.view(np.int8)] * 2)),
            "float32": (SampleEncoding(SampleFormat.FLOAT32, 1.0, (0.25, -3.0), (2.5, 0.7)),
                        floats.reshape(2, -1))}


@pytest.mark.parametrize("name", ["uint8", "int8", "float32"])
def test_in_place_decoder_equals_the_host_bit_for_bit(in_place, name: str) -> None:
    encoding, stored = _stored_cases()[name]
    host = encoding.decode(stored[None])[0]
    assert np.array_equal(in_place(encoding, stored).view(np.uint32), host.view(np.uint32))


def test_decoding_in_place_front_to_back_would_clobber() -> None:
    """The injected error: the same decoder run from the first element up overwrites bytes
    1..3 with element 0's float before reading them, so the bit-for-bit check above would
    fail; only the last-to-first order is safe."""
    encoding, stored = _stored_cases()["uint8"]
    buffer = np.zeros(4 * stored.size, np.uint8)
    buffer[:stored.size] = stored.reshape(-1)
    per_channel = stored.size // encoding.channels
    for i in range(stored.size):
        c = i // per_channel
        value = (np.float32(buffer[i]) * np.float32(encoding.scale)
                 - np.float32(encoding.mean[c])) / np.float32(encoding.std[c])
        buffer[4 * i:4 * i + 4] = np.float32(value).reshape(1).view(np.uint8)
    host = encoding.decode(stored[None])[0].reshape(-1)
    assert not np.array_equal(buffer.view(np.float32), host)
