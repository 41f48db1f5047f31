"""The serial protocol's host side: CRC, frames, the decoder's resynchronisation, messages."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from medyate_mcu.device import protocol as p


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
    ready = p.Ready(1, 0, bytes(range(8)), bytes(range(8, 16)), 307200, 100352, 59072, 3072,
                    10, 10, 611, 3, 1, 12292, "qemu-mps2-an386")
    assert p.Ready.decode(ready.encode()) == ready
    assert len(ready.encode()) == 56 + len("qemu-mps2-an386")
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


def test_request_payloads() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    payload = p.sample_payload(x, 4, 6)
    assert struct.unpack_from("<i", payload)[0] == 4
    np.testing.assert_array_equal(np.frombuffer(payload[4:], "<f4"), np.arange(6))
    with pytest.raises(ValueError, match="6 values"):
        p.predict_payload(x, 7)
    assert p.read_payload(0x102, 5, 9) == struct.pack("<HHII", 0x102, 0, 5, 9)
