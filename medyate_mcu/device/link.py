"""A session with a device running the serial training firmware, over pyserial.

``PORT`` is a serial device (``/dev/ttyACM0``, ``COM3``) or any pyserial URL, e.g.
``socket://127.0.0.1:4321`` for QEMU started with ``-serial tcp:127.0.0.1:4321,server=on`` or
for the host build of the firmware. Every request waits for its reply (same sequence number)
for at most ``timeout`` seconds; replies to earlier, abandoned requests are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import serial

from medyate_mcu.device import protocol as p
from medyate_mcu.errors import MedyateError

T = TypeVar("T")
READ_CHUNK = 4096
DEVICE_IDLE_S = 0.25  # the device drops a cut frame after this long without a byte (uart.h)


class DeviceError(MedyateError):
    """The device answered with an ERROR frame."""

    def __init__(self, reply: p.ErrorReply) -> None:
        super().__init__(f"the device refused the request: {reply.describe()}")
        self.reply = reply


class LinkTimeout(MedyateError):
    """No (valid) reply in time."""


def check_url(port: str) -> None:
    """A network URL (socket://, rfc2217://) names a host and a TCP port 1..65535."""
    scheme, _, rest = port.partition("://")
    if scheme not in ("socket", "rfc2217"):
        return
    host, _, number = rest.split("/")[0].split("?")[0].rpartition(":")
    example = f"e.g. {scheme}://127.0.0.1:4321"
    if not host or not number:
        raise MedyateError(f"--port {port}: give the host and the TCP port, {example}")
    if not number.isdigit() or not 1 <= int(number) <= 65535:
        raise MedyateError(f"--port {port}: the TCP port must be a number 1..65535, {example}")


class DeviceLink:
    def __init__(self, port: str, baud: int = 115200, timeout: float = 5.0,
                 log: Callable[[str], None] | None = None) -> None:
        check_url(port)
        try:
            self.serial = serial.serial_for_url(port, baudrate=baud, timeout=0.05,
                                                write_timeout=timeout)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise MedyateError(f"cannot open {port}: {exc}") from None
        self.port = port
        self.timeout = timeout
        self.decoder = p.FrameDecoder()
        self.sequence = 0
        self.ready: p.Ready | None = None
        self.skipped: list[str] = []  # what was read but not asked for (kept for diagnostics)
        self.log = log

    # ---- plumbing --------------------------------------------------------------------
    def close(self) -> None:
        self.serial.close()

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_sequence(self) -> int:
        self.sequence = self.sequence % 255 + 1  # 1..255: 0 is the start-up READY's
        return self.sequence

    def send_raw(self, data: bytes) -> None:
        try:
            self.serial.write(data)
            self.serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise MedyateError(f"writing to {self.port} failed: {exc}") from None

    def read_frames(self, deadline: float) -> list[p.Frame | p.BadFrame]:
        """Whatever frames arrive before ``deadline`` (returns as soon as one does)."""
        while True:
            try:
                data = self.serial.read(1)  # waits up to the poll interval for a byte
                if data and self.serial.in_waiting:
                    data += self.serial.read(min(self.serial.in_waiting, READ_CHUNK))
            except (serial.SerialException, OSError) as exc:
                raise MedyateError(f"reading from {self.port} failed: {exc}") from None
            frames = self.decoder.feed(data) if data else []
            if frames or time.monotonic() >= deadline:
                return frames

    def _note(self, text: str) -> None:
        self.skipped.append(text)
        del self.skipped[:-32]
        if self.log:
            self.log(text)

    def request(self, msg_type: p.MsgType, payload: bytes = b"",
                timeout: float | None = None) -> p.Frame:
        """Send one request; its reply frame (ERROR replies raise :class:`DeviceError`)."""
        sequence = self._next_sequence()
        self.send_raw(p.encode_frame(msg_type, sequence, payload))
        return self.wait_reply(msg_type, sequence, timeout)

    def wait_reply(self, msg_type: p.MsgType, sequence: int,
                   timeout: float | None = None) -> p.Frame:
        expected = p.REPLY_TO[msg_type]
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            frames = self.read_frames(deadline)
            for frame in frames:
                if isinstance(frame, p.BadFrame):
                    self._note(f"skipped bytes: {frame.reason}")
                    continue
                if frame.type == p.MsgType.READY and frame.sequence == 0:
                    self.ready = self._decode(p.Ready.decode, frame)  # the device (re)started
                    if expected == p.MsgType.READY:
                        return frame
                    raise MedyateError(f"the device on {self.port} restarted while waiting "
                                       f"for {expected.name}; its training state is lost")
                if frame.sequence != sequence:
                    self._note(f"skipped a stale 0x{frame.type:02x} frame (seq {frame.sequence})")
                    continue
                if frame.type == p.MsgType.ERROR:
                    raise DeviceError(self._decode(p.ErrorReply.decode, frame))
                if frame.type != expected:
                    echo = frame.type == msg_type
                    raise MedyateError(f"{self.port} sent back the request itself: a loopback, "
                                       "not a device" if echo else
                                       f"a malformed reply from {self.port}: expected "
                                       f"{expected.name}, got type 0x{frame.type:02x}")
                return frame
            if time.monotonic() >= deadline:
                raise LinkTimeout(f"no {expected.name} reply from {self.port} within "
                                  f"{self.timeout if timeout is None else timeout:g} s; is the "
                                  "device running the serial firmware (make arm "
                                  "FIRMWARE_APP=serial) at the right baud rate?")

    def _decode(self, decode: Callable[[bytes], T], frame: p.Frame) -> T:
        try:
            return decode(frame.payload)
        except p.ProtocolError as exc:
            raise MedyateError(f"a malformed reply from {self.port}: {exc}") from None

    def _call(self, msg_type: p.MsgType, decode: Callable[[bytes], T], payload: bytes = b"",
              timeout: float | None = None) -> T:
        return self._decode(decode, self.request(msg_type, payload, timeout))

    def flush_receiver(self) -> None:
        """Complete any frame the device is still receiving (it then fails its CRC) with bytes
        that hold no sync, and drop whatever comes back."""
        size = (self.ready.max_payload if self.ready else p.MAX_LENGTH) + p.OVERHEAD
        self.send_raw(bytes(size))
        deadline = time.monotonic() + min(self.timeout, 1.0)
        while self.read_frames(deadline):
            pass

    def resync(self) -> None:
        """Start clean: stay silent for twice the device's idle timeout, so that it drops a
        frame an interrupted host left half-sent, and discard what arrives meanwhile (replies
        to abandoned requests, a start-up READY)."""
        deadline = time.monotonic() + 2 * DEVICE_IDLE_S
        try:
            while time.monotonic() < deadline:
                self.serial.read(max(1, min(self.serial.in_waiting, READ_CHUNK)))
        except (serial.SerialException, OSError) as exc:
            raise MedyateError(f"reading from {self.port} failed: {exc}") from None
        self.decoder = p.FrameDecoder(self.decoder.max_payload)

    # ---- the messages ------------------------------------------------------------------
    def hello(self, timeout: float | None = None) -> p.Ready:
        """Resynchronise, then the answer to HELLO (sent twice: the first may reach a device
        whose UART is not enabled yet, or one still timing out a cut frame)."""
        limit = self.timeout if timeout is None else timeout
        self.resync()
        for _ in range(2):
            sequence = self._next_sequence()
            self.send_raw(p.encode_frame(p.MsgType.HELLO, sequence))
            try:
                frame = self.wait_reply(p.MsgType.HELLO, sequence, limit / 2)
            except LinkTimeout:
                continue
            self.ready = self._decode(p.Ready.decode, frame)
            break
        else:
            raise LinkTimeout(f"no READY from {self.port} within {limit:g} s; is the device "
                              "running the serial firmware at the right baud rate?")
        if self.ready.version != p.VERSION:
            raise MedyateError(f"the device speaks protocol version {self.ready.version}; this "
                               f"medyate-mcu speaks {p.VERSION}: rebuild and flash the firmware")
        self.decoder.max_payload = max(self.ready.max_payload, 64)
        return self.ready

    def reset(self) -> p.Ready:
        self.ready = self._call(p.MsgType.RESET, p.Ready.decode)
        return self.ready

    def _ready(self) -> p.Ready:
        if self.ready is None:
            raise MedyateError("no READY from the device yet: call hello() first")
        return self.ready

    def _sample_format(self) -> p.SampleFormat:
        ready = self._ready()
        if ready.sample_format is None:
            raise MedyateError(f"the device on {self.port} stores samples in format "
                               f"{ready.sample_code}, unknown to this medyate-mcu")
        return ready.sample_format

    def train_sample(self, stored: np.ndarray, label: int) -> p.SampleResult:
        """Train on one sample as the device stores it (READY's format, e.g. uint8 pixels)."""
        payload = p.sample_payload(stored, label, self._sample_format(),
                                   self._ready().input_size)
        return self._call(p.MsgType.SAMPLE, p.SampleResult.decode, payload)

    def end_epoch(self) -> p.EpochResult:
        return self._call(p.MsgType.END_EPOCH, p.EpochResult.decode)

    def predict(self, stored: np.ndarray) -> p.Prediction:
        payload = p.predict_payload(stored, self._sample_format(), self._ready().input_size)
        return self._call(p.MsgType.PREDICT, p.Prediction.decode, payload)

    def stats(self) -> p.Stats:
        return self._call(p.MsgType.STATS, p.Stats.decode)

    def read_region(self, region: int) -> np.ndarray:
        """A whole region (classifier, norms, selection, a candidate layer), chunk by chunk."""
        total = self._call(p.MsgType.READ_WEIGHTS, p.Data.decode,
                           p.read_payload(region, 0, 0)).total
        chunk = max((self._ready().max_payload - 16) // 4, 1)
        parts, offset = [], 0
        while offset < total:
            data = self._call(p.MsgType.READ_WEIGHTS, p.Data.decode,
                              p.read_payload(region, offset, min(chunk, total - offset)))
            if data.region != region or data.offset != offset or data.total != total:
                raise MedyateError(f"the device answered a read of region {region} at {offset} "
                                   f"with region {data.region} at {data.offset}")
            if data.values.size == 0:  # no progress: the read would never end
                raise MedyateError(f"the device answered a read of region {region} at {offset} "
                                   f"with no values (of {total}); is it running this build?")
            parts.append(data.values)
            offset += data.values.size
        if not parts:
            return np.zeros(0, np.float32)
        return np.concatenate(parts)

    def read_weights(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(the candidate layers' weights, flat, in candidate order; the classifier)."""
        ready = self._ready()
        layers = [self.read_region(p.Region.CANDIDATE + i) for i in range(ready.candidates)]
        return layers, self.read_region(p.Region.CLASSIFIER)
