"""The serial firmware built for the host (uart_host.c on a 127.0.0.1 TCP socket), driven over
pyserial's socket:// URL exactly as a board or QEMU is: training through `medyate-mcu train`
against the same C driven through ctypes and against the host reference trainer; the trained
ONNX model against the device's own predictions; samples sent as uint8 pixels, float32 and int8
values (protocol v2) train as the reference does on their decoded values; bad frames answered
with ERROR frames while the device keeps working."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from c_build import require_gcc
from click.testing import CliRunner
from serial_support import HostRun, half_a_sample, host_engine_run, reference_losses

from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import Project
from medyate_mcu.device import protocol as p
from medyate_mcu.device.link import DEVICE_IDLE_S, DeviceError, DeviceLink, LinkTimeout
from medyate_mcu.device.session import TrainSession
from medyate_mcu.method.trainer import SelectionRule, SparseTrainer, epoch_order
from medyate_mcu.run.verify import (
    LOSS_TOLERANCE,
)
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.toolchain.host import build_host_serial
from medyate_mcu.zoo.tasks import stratified_sample

SAMPLES = 24
EPOCHS = 2


def _serial_build(factory: pytest.TempPathFactory, sample_format: str) -> Path:
    require_gcc()
    out = factory.mktemp(f"serial-{sample_format}") / "build"
    compile_project(CompileOptions(budget=300 * 1024, data="digits", embed=8, epochs=3,
                                   batch_size=8, sample_format=sample_format), out)
    build_host_serial(out)
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits stored as they come: uint8 pixels."""
    return _serial_build(tmp_path_factory, "stored")


@pytest.fixture(scope="module")
def builds(build: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same model and data with samples stored (and sent) as uint8, float32 and int8."""
    return {"uint8": build, "float32": _serial_build(tmp_path_factory, "float32"),
            "int8": _serial_build(tmp_path_factory, "int8")}


@pytest.fixture
def device(build: Path) -> Iterator[str]:
    with serve(build) as url:
        yield url


@contextmanager
def serve(build: Path) -> Iterator[str]:
    """A fresh host firmware process; its socket:// URL."""
    process = subprocess.Popen([str(build / "medyate_serial")], stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, env={**os.environ, "MDY_UART": "tcp:0"})
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\s*", line)
    assert match, line
    try:
        yield f"socket://127.0.0.1:{match.group(1)}"
    finally:
        process.kill()
        process.wait()
        process.stderr.close()


def test_train_matches_the_ctypes_engine_and_the_reference(build: Path, device: str,
                                                            tmp_path: Path) -> None:
    target = tmp_path / "trained.onnx"
    result = CliRunner().invoke(main, ["train", str(build), "--port", device, "--samples",
                                       str(SAMPLES), "--epochs", str(EPOCHS), "-o", str(target),
                                       "--timeout", "20"])
    assert result.exit_code == 0, result.output
    assert "input 3072 values as uint8 samples, 3,072 B a frame" in result.output
    losses = [float(v) for v in re.findall(r"epoch \d+: loss ([0-9.]+)", result.output)]
    assert len(losses) == EPOCHS

    # the same C through ctypes, same data, same order: an independent run of the engine
    run = host_engine_run(build, SAMPLES, EPOCHS)
    manifest, graph, plan, settings, data = (run.manifest, run.graph, run.plan, run.settings,
                                             run.data)
    x, y, engine, engine_losses = run.x, run.y, run.engine, run.losses
    np.testing.assert_allclose(losses, engine_losses, rtol=0, atol=5.1e-5)  # printed: 4 decimals

    # epoch 1 starts from the same state on both sides: the reference trainer's loss
    reference = SparseTrainer(graph, list(plan.memory.schedule.candidates), plan.pool_bytes,
                              SelectionRule(resample=True, weighted=True), settings)
    record = reference.train_epoch(x, y, 1)
    assert abs(engine_losses[0] - record.loss) <= LOSS_TOLERANCE * abs(record.loss)

    # the weights written into the ONNX file are the engine's, and the file runs
    with DeviceLink(device, timeout=20) as link:
        link.hello()
        layers, classifier = link.read_weights()
    for name, values in zip(plan.memory.schedule.candidates, layers, strict=True):
        np.testing.assert_array_equal(
            values, engine.candidate_weights(name, graph.node(name).params["weight"].size))
    np.testing.assert_array_equal(classifier, engine.array("mdy_classifier", np.float32,
                                                           classifier.size))
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {session.get_inputs()[0].name: sample[None]})[0]
                             for sample in data.x_test[:6]])
    assert logits.shape == (6, manifest.classes)
    labels = []
    for sample in data.x_test[:6]:
        status, label = engine.predict(sample)
        assert status == 0
        labels.append(label)
    assert logits.argmax(axis=1).tolist() == labels
    # the after-training test accuracy `train` printed is the trained engine's on the same 100
    # stratified test samples (--test-samples default)
    tests = stratified_sample(data.y_test, 100, settings.seed)
    right = [engine.predict(data.x_test[i])[1] == data.y_test[i] for i in tests]
    printed = re.search(r"test accuracy after training: ([0-9.]+) %", result.output)
    assert printed and float(printed.group(1)) == round(100 * float(np.mean(right)), 1)


def _train_over(link: DeviceLink, run: HostRun, epochs: int) -> np.ndarray:
    """The device's per-sample losses for ``run``'s stored samples in its order."""
    losses = []
    for epoch in range(1, epochs + 1):
        for index in epoch_order(len(run.y), run.settings.seed, epoch):
            losses.append(link.train_sample(run.stored[index], int(run.y[index])).loss)
        link.end_epoch()
    return np.asarray(losses, np.float32)


@pytest.mark.parametrize("stored_as", ["uint8", "float32", "int8"])
def test_each_sample_format_trains_as_the_reference(builds: dict[str, Path],
                                                    stored_as: str) -> None:
    """A full session with samples sent as the build stores them: the device's per-sample
    losses are the ctypes engine's on the decoded values, bit for bit (the same C; the device's
    in-place decoder is sample.c's formula), the first batch's (pre-trained weights) are the
    reference network's within the derived bound, epoch 1's mean loss the reference trainer's
    within LOSS_TOLERANCE; PREDICT takes the same stored samples."""
    run = host_engine_run(builds[stored_as], SAMPLES, EPOCHS)
    assert run.stored.dtype == np.dtype(stored_as)
    with serve(builds[stored_as]) as url, DeviceLink(url, timeout=20) as link:
        ready = link.hello()
        assert (ready.sample_format, ready.sample_bytes) == (stored_as, run.stored[0].nbytes)
        link.reset()
        losses = _train_over(link, run, EPOCHS)
        labels = [link.predict(sample).label for sample in run.stored[:4]]
        size = ready.sample_bytes
        for frame, expected in ((p.encode_frame(p.MsgType.SAMPLE, 70, bytes(size + 3)),
                                 f"SAMPLE needs label + stored sample = {size + 4} bytes"),
                                (p.encode_frame(p.MsgType.PREDICT, 71, bytes(size + 1)),
                                 f"PREDICT needs the stored sample = {size} bytes")):
            assert _expect_error(link, frame, p.ErrorCode.BAD_PAYLOAD).message == expected
    assert np.array_equal(losses.view(np.uint32), run.sample_losses.view(np.uint32))
    assert labels == [run.engine.predict(x)[1] for x in run.x[:4]]

    first = epoch_order(len(run.y), run.settings.seed, 1)[:run.settings.batch_size]
    reference, bound = reference_losses(run, first)
    # measured: at most 3 % of the bound (2.1e-5 at losses near 2.4) in every format
    assert np.all(np.abs(losses[:len(first)] - reference) <= bound)
    trainer = SparseTrainer(run.graph, list(run.plan.memory.schedule.candidates),
                            run.plan.pool_bytes, SelectionRule(resample=True, weighted=True),
                            run.settings)
    record = trainer.train_epoch(run.x, run.y, 1)
    assert abs(run.losses[0] - record.loss) <= LOSS_TOLERANCE * abs(record.loss)


def test_one_int8_step_off_is_caught(builds: dict[str, Path]) -> None:
    """The injected error: int8 samples decoded one step off (a zero point off by one) move
    the first batch's losses beyond the bound the comparison above allows."""
    run = host_engine_run(builds["int8"], SAMPLES, 1)
    first = epoch_order(len(run.y), run.settings.seed, 1)[:run.settings.batch_size]
    reference, bound = reference_losses(run, first)
    shifted = np.clip(run.stored.astype(np.int16) + 1, -128, 127).astype(np.int8)
    with serve(builds["int8"]) as url, DeviceLink(url, timeout=20) as link:
        link.hello()
        link.reset()
        losses = [link.train_sample(shifted[i], int(run.y[i])).loss for i in first]
    assert np.any(np.abs(np.asarray(losses) - reference) > bound)  # measured: 211x (2.5e-3)


def test_float32_samples_reach_the_engine_unchanged(builds: dict[str, Path]) -> None:
    """float32 samples are the input as they are: a NaN in one is the engine's refusal."""
    data = Project.open(builds["float32"]).task()
    sample = data.stored_train[0].copy()
    assert np.array_equal(sample, data.x_train[0])
    sample.flat[5] = np.nan
    with serve(builds["float32"]) as url, DeviceLink(url, timeout=20) as link:
        link.hello()
        with pytest.raises(DeviceError, match="non-finite"):
            link.train_sample(sample, 0)
        assert link.stats().samples_in_epoch == 0
        with pytest.raises(ValueError, match="the device stores float32"):
            link.train_sample(data.stored_train[0].astype(np.float64), 0)


def test_a_device_storing_another_format_is_refused_in_one_line(builds: dict[str, Path]) -> None:
    """The int8 build's folder against a device running the float32 build: READY's format and
    byte count differ from the manifest's, and `train` says so before anything is sent."""
    with serve(builds["float32"]) as url:
        result = CliRunner().invoke(main, ["train", str(builds["int8"]), "--port", url,
                                           "--samples", "2", "--timeout", "10"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "takes float32 samples, 12,288 B a frame" in lines[0]
    assert "sends int8 samples, 3,072 B a frame" in lines[0]
    assert "490 B a frame" in CliRunner().invoke(main, ["train", "--help"]).output


def _expect_error(link: DeviceLink, frame: bytes, code: p.ErrorCode) -> p.ErrorReply:
    link.send_raw(frame)
    sequence = struct.unpack_from("<B", frame, 5)[0] if len(frame) > 5 else 0
    with pytest.raises(DeviceError) as caught:
        link.wait_reply(p.MsgType.STATS, sequence, timeout=10)
    assert caught.value.reply.code == code, caught.value.reply
    return caught.value.reply


def test_bad_frames_get_error_frames_and_the_device_keeps_working(build: Path,
                                                                   device: str) -> None:
    data = Project.open(build).task()
    x = data.stored_train[0]  # uint8 pixels
    with DeviceLink(device, timeout=10) as link:
        ready = link.hello()
        assert (ready.version, ready.input_size, ready.board) == (2, x.size, "host")
        assert (ready.sample_format, ready.sample_bytes) == ("uint8", x.size)
        stats = p.encode_frame(p.MsgType.STATS, 50)

        flipped = bytearray(stats)
        flipped[-2] ^= 0x40
        _expect_error(link, bytes(flipped), p.ErrorCode.BAD_CRC)

        oversize = b"\xa5\x5a" + struct.pack("<HBB", ready.max_payload + 1, p.MsgType.SAMPLE, 51)
        reply = _expect_error(link, oversize, p.ErrorCode.BAD_LENGTH)
        assert reply.request == p.MsgType.SAMPLE

        _expect_error(link, p.encode_frame(0x42, 52), p.ErrorCode.UNKNOWN_TYPE)
        reply = _expect_error(link, p.encode_frame(p.MsgType.SAMPLE, 53, b"\x00" * 9),
                              p.ErrorCode.BAD_PAYLOAD)
        assert reply.message == f"SAMPLE needs label + stored sample = {4 + x.size} bytes"
        _expect_error(link, p.encode_frame(p.MsgType.READ_WEIGHTS, 54,
                                           p.read_payload(0x1FF, 0, 1)), p.ErrorCode.BAD_REGION)
        _expect_error(link, p.encode_frame(p.MsgType.READ_WEIGHTS, 55,
                                           p.read_payload(p.Region.CLASSIFIER, 0, 10 ** 6)),
                      p.ErrorCode.BAD_REGION)

        # the engine's own refusal: nothing trained, the device goes on
        with pytest.raises(DeviceError, match="label out of range"):
            link.train_sample(x, ready.classes)
        assert link.stats().samples_in_epoch == 0

        # garbage before the sync bytes is skipped
        link.send_raw(b"\x00\xa5\xff garbage \xa5" + p.encode_frame(p.MsgType.STATS, 56))
        assert p.Stats.decode(link.wait_reply(p.MsgType.STATS, 56).payload).bad_frames == 3

        # a truncated frame: no reply; the host flushes the receiver and goes on
        link.send_raw(p.encode_frame(p.MsgType.SAMPLE, 57,
                                     p.sample_payload(x, 1, ready.sample_format, x.size))[:40])
        with pytest.raises(LinkTimeout):
            link.wait_reply(p.MsgType.SAMPLE, 57, timeout=0.5)
        link.flush_receiver()
        result = link.train_sample(x, int(data.y_train[0]))
        assert np.isfinite(result.loss) and result.samples_in_epoch == 1
        assert link.stats().bad_frames == 4


def test_a_frame_cut_short_is_dropped_when_the_link_goes_idle(build: Path, device: str) -> None:
    """A host that stops mid-SAMPLE: the device drops the frame after its idle timeout (no
    reply), counts it, and answers the next request on the same connection."""
    with DeviceLink(device, timeout=10) as link:
        link.hello()
        link.send_raw(half_a_sample(build))
        with pytest.raises(LinkTimeout):
            link.wait_reply(p.MsgType.SAMPLE, 60, timeout=4 * DEVICE_IDLE_S)
        stats = link.stats()  # no flush: the request's bytes would otherwise complete the frame
        assert (stats.bad_frames, stats.samples_in_epoch) == (1, 0)


def test_train_works_after_a_host_stopped_mid_sample(build: Path, device: str,
                                                     tmp_path: Path) -> None:
    """Ctrl-C or an unplugged cable during a SAMPLE, then `train` again: it trains."""
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", int(device.rsplit(":", 1)[1]))) as client:
            client.sendall(half_a_sample(build))
        result = CliRunner().invoke(main, ["train", str(build), "--port", device, "--samples",
                                           "2", "--epochs", "1", "-o",
                                           str(tmp_path / "trained.onnx"), "--timeout", "10"])
        assert result.exit_code == 0, result.output


def test_the_host_waits_out_the_devices_idle_timeout() -> None:
    """link.py's DEVICE_IDLE_S is firmware/hal/uart.h's MDY_UART_IDLE_MS."""
    header = (Path(__file__).parent.parent / "firmware" / "hal" / "uart.h").read_text()
    match = re.search(r"#define MDY_UART_IDLE_MS (\d+)u", header)
    assert match and int(match.group(1)) == round(DEVICE_IDLE_S * 1000)


def test_wrong_build_and_missing_device_are_one_line_errors(build: Path, device: str,
                                                           tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(build, other)
    manifest = other / "medyate_build.json"
    manifest.write_text(manifest.read_text() + "\n")  # another build hash
    with pytest.raises(Exception, match="runs another build"):
        TrainSession.open(Project.open(other), device, samples=4, timeout=10)
    result = CliRunner().invoke(main, ["train", str(build), "--port", "socket://127.0.0.1:9",
                                       "--timeout", "1"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: cannot open socket://127.0.0.1:9")
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["train", str(build), "--port", device, "--epochs", "9"])
    assert result.exit_code == 1 and "learning-rate schedule has 3 epochs" in result.output
