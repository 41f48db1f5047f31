"""The serial firmware on an emulated Cortex-M4 (QEMU mps2-an386, its CMSDK UART0 a TCP server
on 127.0.0.1): `train`'s session over that link trains bit for bit as the same C built for this
machine and driven through ctypes (and the first batch as the reference network within the
derived bound); one bit of one pixel sent flipped is caught at that very sample; the UART's
idle timeout (SysTick) drops a cut frame; `simulate --serial` serves the port until Ctrl-C and
leaves no QEMU behind; QEMU's failures are one line each."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from arm_support import compile_for, require_tool
from c_build import require_gcc
from click.testing import CliRunner
from serial_support import HostRun, half_a_sample, host_engine_run, reference_losses

from medyate_mcu.cli.main import main
from medyate_mcu.codegen.folder import Project
from medyate_mcu.device import protocol as p
from medyate_mcu.device.link import DEVICE_IDLE_S, LinkTimeout
from medyate_mcu.device.session import TrainSession
from medyate_mcu.errors import MedyateError
from medyate_mcu.method.trainer import epoch_order
from medyate_mcu.run.qemu_serial import serial_qemu

SAMPLES, EPOCHS = 8, 1  # one batch of 8: the build's batch size
BOARD = "qemu-mps2-an386"


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm", "make"):
        require_tool(tool)
    require_gcc()  # the host engine the device is compared with
    out = compile_for(None, BOARD, "200kB", tmp_path_factory.mktemp("qemu-serial") / "b",
                      samples=8, epochs=2)
    made = subprocess.run(["make", "-s", "-C", str(out), "arm", "FIRMWARE_APP=serial"],
                          capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    return out


@pytest.fixture(scope="module")
def host(build: Path) -> HostRun:
    return host_engine_run(build, SAMPLES, EPOCHS)


def _session(project: Project, url: str, monkeypatch: pytest.MonkeyPatch,
             stored: np.ndarray | None = None) -> tuple[np.ndarray, float, TrainSession]:
    """One `train` session (the API `medyate-mcu train` uses), its samples optionally replaced:
    the per-sample losses the device reported, in training order, and the epoch's mean loss.
    The session stays open (the caller closes it)."""
    session = TrainSession.open(project, url, samples=SAMPLES, epochs=EPOCHS, timeout=20)
    if stored is not None:
        session.stored = stored
    losses: list[float] = []
    send = session.link.train_sample

    def recorded(sample: np.ndarray, label: int) -> p.SampleResult:
        result = send(sample, label)
        losses.append(result.loss)
        return result

    monkeypatch.setattr(session.link, "train_sample", recorded)
    (record,) = list(session.train())
    return np.asarray(losses, np.float32), record.loss, session


def test_training_over_the_emulated_uart_is_the_host_engine_bit_for_bit(
        build: Path, host: HostRun, monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project.open(build)
    started = time.monotonic()
    with serial_qemu(project.require_board(), project.firmware_path("serial")) as qemu:
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", qemu.url)
        losses, mean, session = _session(project, qemu.url, monkeypatch)
        with session:
            assert session.ready.board == BOARD
            layers, classifier = session.link.read_weights()
            # the UART's idle timeout under QEMU (SysTick in real time): a SAMPLE cut half-way
            # gets no reply, is dropped after 250 ms and counted, and the link goes on (2 s of
            # silence: QEMU hands the guest a byte at a time, later on a loaded machine)
            bad = session.link.stats().bad_frames
            session.link.send_raw(half_a_sample(build))
            with pytest.raises(LinkTimeout):
                session.link.wait_reply(p.MsgType.SAMPLE, 60, timeout=8 * DEVICE_IDLE_S)
            assert session.link.stats().bad_frames == bad + 1

        # a second host on the same, still running board, RESET by the session: one bit of one
        # pixel of the 4th sample sent flipped (16 levels of 255): the losses before it are
        # still the engine's bit for bit, that sample's is not (measured: 2.6e-5 lower, ~100
        # ulps; the batch's later samples are unaffected, the weights change at its end)
        position = 3
        stored = session.stored.copy()
        stored[epoch_order(SAMPLES, host.settings.seed, 1)[position]].flat[100] ^= 0x10
        corrupt, _, second = _session(project, qemu.url, monkeypatch, stored)
        second.link.close()
    elapsed = time.monotonic() - started

    # the Cortex-M C over the link ≡ the host C through ctypes: the same bits
    assert np.array_equal(losses.view(np.uint32), host.sample_losses.view(np.uint32))
    assert mean == np.float32(host.losses[0])
    names = session.candidates
    for name, values in zip(names, layers, strict=True):
        expected = host.engine.candidate_weights(name, session.graph.node(name).params["weight"]
                                                 .size)
        np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(classifier, host.engine.array("mdy_classifier", np.float32,
                                                                classifier.size))
    # the first batch (pre-trained weights) against the reference network, within the bound
    # derived in test_device_link._reference_losses (2 FORWARD_TOLERANCE max|z|); measured:
    # at most 3.4 % of it
    first = epoch_order(SAMPLES, host.settings.seed, 1)
    reference, bound = reference_losses(host, first)
    assert np.all(np.abs(losses - reference) <= bound)

    same = corrupt.view(np.uint32) == host.sample_losses.view(np.uint32)
    assert same[:position].all() and not same[position], (corrupt, host.sample_losses)
    assert elapsed < 45, elapsed  # measured: 10 s (QEMU start, two sessions, the idle test)


def _qemu_children(pid: int) -> list[int]:
    """The QEMU processes whose parent is ``pid`` (from /proc: Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text(errors="replace")
        except OSError:  # gone meanwhile
            continue
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
        if "qemu" in name and int(fields.split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_simulate_serial_serves_train_until_ctrl_c(build: Path, host: HostRun,
                                                   tmp_path: Path) -> None:
    """The user's path: `simulate --serial` in one terminal, `train --port` in another, Ctrl-C:
    QEMU stopped and reaped, the command exits 0. The port asked for is the one served."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", "from medyate_mcu.cli.main import main; main()",
               "simulate", str(build), "--serial", "--port-number", str(port)]
    # Ctrl-C reaches the command as at a terminal, even when the suite runs with SIGINT ignored
    # (a background job of a non-interactive shell passes SIG_IGN on to its children)
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           stdin=subprocess.DEVNULL,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert cli.stdout is not None
    try:
        lines: list[str] = []
        for line in cli.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops QEMU"):
                break
        text = "".join(lines)
        url = re.search(r"^serial port: (socket://127\.0\.0\.1:\d+)$", text, re.MULTILINE)
        assert url and url.group(1).endswith(f":{port}"), text
        assert f"train it:    medyate-mcu train {build} --port {url.group(1)}\n" in text
        (qemu,) = _qemu_children(cli.pid)
        target = tmp_path / "trained.onnx"
        result = CliRunner().invoke(main, ["train", str(build), "--port", url.group(1),
                                           "--samples", str(SAMPLES), "--epochs", str(EPOCHS),
                                           "-o", str(target), "--timeout", "20"])
        assert result.exit_code == 0, result.output
        printed = re.search(r"epoch 1: loss ([0-9.]+)", result.output)
        assert printed and abs(float(printed.group(1)) - host.losses[0]) <= 5.1e-5  # 4 decimals
        assert target.is_file()
        cli.send_signal(signal.SIGINT)
        rest = cli.communicate(timeout=15)[0]
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, rest
    assert "stopped QEMU" in rest
    assert not Path(f"/proc/{qemu}").exists()  # reaped: neither running nor a zombie


def test_qemu_failures_are_one_line(build: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project.open(build)
    board, image = project.require_board(), project.firmware_path("serial")
    missing = tmp_path / "arm" / "missing.elf"
    with pytest.raises(MedyateError, match=r"does not exist: build the serial firmware first"), \
            serial_qemu(board, missing):
        pass
    with socket.socket() as taken:  # the port asked for is in use: QEMU exits, its words shown
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(MedyateError) as failure, \
                serial_qemu(board, image, port=taken.getsockname()[1]):
            pass
    message = str(failure.value)
    assert message.startswith("QEMU exited with status 1 before opening its serial port: ")
    assert "Address already in use" in message and "\n" not in message

    other = tmp_path / "real"  # the same build, said to be for a real board
    shutil.copytree(build, other, ignore=shutil.ignore_patterns("arm"))
    manifest = other / "medyate_build.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()),
                                    "board": "nrf52840-dk"}))
    result = CliRunner().invoke(main, ["simulate", str(other), "--serial"])
    assert result.exit_code == 1
    assert result.output.startswith("error: nrf52840-dk is a real board; simulate runs")
    assert len(result.output.strip().splitlines()) == 1

    monkeypatch.setenv("PATH", os.fspath(tmp_path))  # no qemu-system-arm on the PATH
    with pytest.raises(MedyateError, match=r"`qemu-system-arm` is not installed; install it"), \
            serial_qemu(board, image):
        pass
