"""The MeDyate serial protocol, host side: frames, CRC-32 and the messages.

The device side and the reference description of every field is ``firmware/runtime/protocol.h``
(version 2). A frame is ``A5 5A | length u16 | type u8 | sequence u8 | payload | CRC-32``, all
little-endian; the CRC is zlib's CRC-32 over length, type, sequence and payload. SAMPLE and
PREDICT carry a sample as the build stores it (READY's sample format and byte count;
``zoo/samples.py``): the device decodes it with the build's encoding.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from medyate_mcu.codegen.c_interface import define_constants, enum_constants, sample_format_code
from medyate_mcu.errors import MedyateError
from medyate_mcu.zoo.samples import SampleFormat

# The numbers are protocol.h's (its enums and #defines), read from the header: never typed here.
_ENUMS = enum_constants("runtime/protocol.h")
_DEFINES = define_constants("runtime/protocol.h")


def _enum(name: str, prefix: str, skip: tuple[str, ...] = ()) -> type[IntEnum]:
    members = {key.removeprefix(prefix): value for key, value in _ENUMS.items()
               if key.startswith(prefix) and key.removeprefix(prefix) not in skip}
    return IntEnum(name, members)


VERSION = _DEFINES["MDY_PROTO_VERSION"]
SYNC = bytes([_DEFINES["MDY_PROTO_SYNC0"], _DEFINES["MDY_PROTO_SYNC1"]])
HEADER = struct.Struct("<HBB")  # length, type, sequence (after the sync bytes)
OVERHEAD = _DEFINES["MDY_PROTO_OVERHEAD"]
MAX_LENGTH = 0xFFFF

MsgType = _enum("MsgType", "MDY_MSG_", skip=("REPLY",))
REPLY_TO = {MsgType.HELLO: MsgType.READY, MsgType.RESET: MsgType.READY,
            MsgType.SAMPLE: MsgType.SAMPLE_RESULT, MsgType.END_EPOCH: MsgType.EPOCH_RESULT,
            MsgType.PREDICT: MsgType.PREDICTION, MsgType.STATS: MsgType.STATS_RESULT,
            MsgType.READ_WEIGHTS: MsgType.DATA}
ErrorCode = _enum("ErrorCode", "MDY_PERR_")  # the ERROR frame's code (a wire format)
Region = _enum("Region", "MDY_REGION_")  # CANDIDATE + candidate layer index
# READY's sample_format byte: sample.h's mdy_sample_format_t
SAMPLE_FORMATS = {sample_format_code(fmt): fmt for fmt in SampleFormat}


def samples_text(format_name: str, sample_bytes: int) -> str:
    """How a frame's samples are described: "int8 samples, 490 B a frame"."""
    return f"{format_name} samples, {sample_bytes:,} B a frame"


class ProtocolError(MedyateError):
    """A reply that does not decode as the protocol says (a bug or a different firmware)."""


@dataclass(frozen=True)
class Frame:
    type: int
    sequence: int
    payload: bytes


@dataclass(frozen=True)
class BadFrame:
    """Bytes that looked like a frame but were not one (what the decoder skipped)."""

    reason: str


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(msg_type: int, sequence: int, payload: bytes = b"") -> bytes:
    if not 0 <= msg_type <= 0xFF or not 0 <= sequence <= 0xFF:
        raise ValueError("type and sequence are bytes")
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"payload of {len(payload)} bytes: a frame holds at most {MAX_LENGTH}")
    body = HEADER.pack(len(payload), msg_type, sequence) + payload
    return SYNC + body + struct.pack("<I", crc32(body))


class FrameDecoder:
    """Turns a byte stream into frames, as the device's receiver does: hunts for the sync bytes,
    refuses a length above ``max_payload`` at once and a bad CRC when the frame is in, and then
    hunts again. Bounded: it never holds more than one frame."""

    def __init__(self, max_payload: int = MAX_LENGTH) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        self._buffer += data
        out: list[Frame | BadFrame] = []
        buffer = self._buffer
        while True:
            start = buffer.find(SYNC)
            if start < 0:
                # keep a trailing first sync byte: the second may be in the next read
                del buffer[:len(buffer) - 1 if buffer.endswith(SYNC[:1]) else len(buffer)]
                return out
            del buffer[:start]
            if len(buffer) < len(SYNC) + HEADER.size:
                return out
            length, msg_type, sequence = HEADER.unpack_from(buffer, len(SYNC))
            if length > self.max_payload:
                out.append(BadFrame(f"length {length} above {self.max_payload}"))
                del buffer[:len(SYNC)]
                continue
            end = len(SYNC) + HEADER.size + length
            if len(buffer) < end + 4:
                return out
            body = bytes(buffer[len(SYNC):end])
            (crc,) = struct.unpack_from("<I", buffer, end)
            if crc != crc32(body):
                out.append(BadFrame(f"CRC mismatch in a frame of type 0x{msg_type:02x}"))
                del buffer[:len(SYNC)]  # rescan from the next byte: a real frame may be inside
                continue
            out.append(Frame(msg_type, sequence, body[HEADER.size:]))
            del buffer[:end + 4]

    @property
    def pending(self) -> int:
        return len(self._buffer)


# ---- requests -----------------------------------------------------------------------------

def stored_bytes(stored: np.ndarray, sample_format: SampleFormat, size: int) -> bytes:
    """One stored sample (``size`` values of ``sample_format``, never converted) as the wire
    carries it: little-endian, in CHW order."""
    if stored.dtype != sample_format.dtype:
        raise ValueError(f"a sample of {stored.dtype} values; the device stores "
                         f"{sample_format.value}")
    if stored.size != size:
        raise ValueError(f"a sample of {stored.size} values; the device takes {size}")
    return np.ascontiguousarray(stored, stored.dtype.newbyteorder("<")).reshape(-1).tobytes()


def sample_payload(stored: np.ndarray, label: int, sample_format: SampleFormat,
                   size: int) -> bytes:
    return struct.pack("<i", int(label)) + stored_bytes(stored, sample_format, size)


def predict_payload(stored: np.ndarray, sample_format: SampleFormat, size: int) -> bytes:
    return stored_bytes(stored, sample_format, size)


def read_payload(region: int, offset: int, count: int) -> bytes:
    return struct.pack("<HHII", region, 0, offset, count)


# ---- replies ------------------------------------------------------------------------------

def _unpack(fmt: str, payload: bytes, what: str, exact: bool = True) -> tuple:
    layout = struct.Struct(fmt)
    if len(payload) < layout.size or (exact and len(payload) != layout.size):
        raise ProtocolError(f"{what} of {len(payload)} bytes, expected "
                            f"{layout.size}{'' if exact else ' or more'}")
    return layout.unpack_from(payload)


@dataclass(frozen=True)
class Ready:
    version: int
    flags: int
    model_hash: bytes
    build_hash: bytes
    budget: int
    arena: int
    pool: int
    input_size: int
    classes: int
    candidates: int
    channels: int
    epochs: int
    epoch: int
    max_payload: int
    sample_code: int  # mdy_sample_format_t (:attr:`sample_format`)
    sample_bytes: int  # one stored sample
    board: str

    FORMAT = "<HH8s8sIIIIHHIIIIB3xI"

    @classmethod
    def decode(cls, payload: bytes) -> Ready:
        version = _unpack("<H", payload[:2], "READY")[0]
        if 1 <= version < VERSION:  # an older firmware's READY has fewer fields: keep the
            return cls(version, 0, b"", b"", *[0] * 12, board="")  # version (hello refuses it)
        fields = _unpack(cls.FORMAT, payload, "READY", exact=False)
        board = payload[struct.calcsize(cls.FORMAT):].decode("ascii", "replace")
        return cls(*fields, board=board)

    def encode(self) -> bytes:
        return struct.pack(self.FORMAT, self.version, self.flags, self.model_hash,
                           self.build_hash, self.budget, self.arena, self.pool, self.input_size,
                           self.classes, self.candidates, self.channels, self.epochs, self.epoch,
                           self.max_payload, self.sample_code,
                           self.sample_bytes) + self.board.encode("ascii")

    @property
    def sample_format(self) -> SampleFormat | None:
        """The device's stored-sample format (None: a code this host does not know)."""
        return SAMPLE_FORMATS.get(self.sample_code)

    def describe_samples(self) -> str:
        """e.g. "int8 samples, 490 B a frame"."""
        name = self.sample_format.value if self.sample_format else f"format {self.sample_code}"
        return samples_text(name, self.sample_bytes)


@dataclass(frozen=True)
class SampleResult:
    loss: float
    correct: bool
    epoch: int
    samples_in_epoch: int
    cycles: int

    @classmethod
    def decode(cls, payload: bytes) -> SampleResult:
        loss, correct, _, _, epoch, samples, cycles = _unpack("<fBBHIII", payload, "SAMPLE_RESULT")
        return cls(loss, bool(correct), epoch, samples, cycles)


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    samples: int
    correct: int
    loss: float
    selected: int
    next_selected: int
    next_lr: float

    @classmethod
    def decode(cls, payload: bytes) -> EpochResult:
        return cls(*_unpack("<IIIfIIf", payload, "EPOCH_RESULT"))


@dataclass(frozen=True)
class Prediction:
    label: int
    cycles: int

    @classmethod
    def decode(cls, payload: bytes) -> Prediction:
        label, _, cycles = _unpack("<HHI", payload, "PREDICTION")
        return cls(label, cycles)


@dataclass(frozen=True)
class Stats:
    epoch: int
    samples_in_epoch: int
    correct_in_epoch: int
    loss_sum: float
    lr: float
    selected: int
    last_epoch_samples: int
    last_epoch_correct: int
    last_epoch_loss: float
    sample_cycles: int
    predict_cycles: int
    bad_frames: int

    @classmethod
    def decode(cls, payload: bytes) -> Stats:
        return cls(*_unpack("<IIIffIIIfIIII", payload, "STATS_RESULT")[:12])


@dataclass(frozen=True)
class Data:
    region: int
    offset: int
    total: int
    values: np.ndarray

    @classmethod
    def decode(cls, payload: bytes) -> Data:
        region, size, offset, count, total = _unpack("<HHIII", payload, "DATA", exact=False)
        dtype = {4: "<f4", 2: "<u2"}.get(size)
        if dtype is None or len(payload) != 16 + size * count:
            raise ProtocolError(f"DATA of {len(payload)} bytes for {count} elements of {size}")
        return cls(region, offset, total, np.frombuffer(payload, dtype, count, 16).copy())


@dataclass(frozen=True)
class ErrorReply:
    code: int
    request: int
    status: int
    message: str

    @classmethod
    def decode(cls, payload: bytes) -> ErrorReply:
        code, request, status = _unpack("<BBh", payload[:4], "ERROR")
        return cls(code, request, status, payload[4:].decode("ascii", "replace"))

    def describe(self) -> str:
        try:
            name = ErrorCode(self.code).name
        except ValueError:
            name = f"code {self.code}"
        try:
            request = MsgType(self.request).name
        except ValueError:
            request = f"0x{self.request:02x}"
        status = f", engine status {self.status}" if self.code == ErrorCode.ENGINE else ""
        return f"{name} for {request}{status}: {self.message}"


REPLY_TYPES = {MsgType.READY: Ready, MsgType.SAMPLE_RESULT: SampleResult,
               MsgType.EPOCH_RESULT: EpochResult, MsgType.PREDICTION: Prediction,
               MsgType.STATS_RESULT: Stats, MsgType.DATA: Data, MsgType.ERROR: ErrorReply}
