"""Bad input and faults (issue 9, section 6): each case ends in one ``error:`` line and exit 1
with no output written, or does what the user meant (a recompiled build keeps the user's
files; a build without data compiles with -Werror). Device faults are played by a scripted
fake device on a TCP socket, which pyserial's socket:// reaches exactly as QEMU or a board."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from c_build import require_gcc
from click.testing import CliRunner, Result
from model_builders import make_model
from onnx import helper, numpy_helper
from PIL import Image

from medyate_mcu import outputs
from medyate_mcu.cli.main import main
from medyate_mcu.codegen.c_interface import sample_format_code
from medyate_mcu.codegen.folder import Project
from medyate_mcu.codegen.project import MANIFEST
from medyate_mcu.codegen.serial import build_hash
from medyate_mcu.device import protocol as p
from medyate_mcu.graph.ir import classifier_node
from medyate_mcu.zoo import default_model_path

COMPILE = ["compile", "--budget", "300kB", "--data", "digits", "--embed-data", "8",
           "--epochs", "1", "--batch-size", "4"]


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(result: Result, *fragments: str) -> str:
    """The result is exit 1, no traceback, and one ``error: ...`` line holding ``fragments``,
    the last (``train`` shows its progress before it)."""
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "build"
    result = run(*COMPILE, "-o", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model and its ranking, copied (so a build of it names no --data)."""
    folder = tmp_path_factory.mktemp("model")
    source = default_model_path()
    for suffix in (".onnx", ".lara.json"):
        (folder / f"m{suffix}").write_bytes(source.with_suffix(suffix).read_bytes())
    return folder / "m.onnx"


# ---- compile: outputs -------------------------------------------------------------------

def test_recompiling_keeps_the_files_compile_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "B"
    assert run(*COMPILE, "-o", out).exit_code == 0
    (out / "trained.onnx").write_bytes(b"the user's trained model")
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("keep me")
    (out / "model.c").write_text("stale")  # compile's own file: replaced
    result = run(*COMPILE, "--seed", "1", "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "trained.onnx").read_bytes() == b"the user's trained model"
    assert (out / "notes" / "todo.txt").read_text() == "keep me"
    assert (out / "model.c").read_text() != "stale"
    assert json.loads((out / MANIFEST).read_text())["settings"]["seed"] == 1
    # a file the first build wrote and the second does not is gone (here: none kept by name)
    assert not list(tmp_path.glob(".B-*")), "no staging or backup folder is left"
    # folders get the umask's mode, like mkdir's
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask


def test_a_failed_write_keeps_the_old_build(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "B"
    assert run(*COMPILE, "-o", out).exit_code == 0
    (out / "trained.onnx").write_text("mine")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    original = Path.write_text

    def full_disk(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if self.name == "data.c":
            raise OSError(28, "No space left on device", str(self))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    one_error(run(*COMPILE, "-o", out), f"cannot write {out}", "No space left on device")
    monkeypatch.undo()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["B"]


def test_ctrl_c_while_writing_keeps_the_old_build(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "B"
    assert run(*COMPILE, "-o", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    original = Path.write_text

    def interrupted(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if self.name == "main.c":
            raise KeyboardInterrupt
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", interrupted)
    result = run(*COMPILE, "--seed", "2", "-o", out)
    monkeypatch.undo()
    assert result.exit_code == 1 and result.output.strip() == "Aborted!"  # click's Ctrl-C
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["B"]


def test_ctrl_c_waits_for_the_swap_of_old_and_new(tmp_path: Path) -> None:
    """SIGINT in the middle of the two renames is delivered after both."""
    old, new = tmp_path / "out", tmp_path / "staging"
    old.mkdir()
    new.mkdir()
    (new / "file").write_text("new")
    original = Path.rename
    calls = []

    def rename(self: Path, target: Path) -> Path:
        calls.append(self.name)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, target)

    # Python's own SIGINT handler, even when the suite was started with SIGINT ignored (a
    # background job of a non-interactive shell inherits SIG_IGN)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Path, "rename", rename)
            with pytest.raises(KeyboardInterrupt):
                outputs._swap(old, new)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == ["out", "staging"] and (old / "file").read_text() == "new"


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, check=False)
    return done.returncode == 0


def test_unwritable_outputs_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_error(run(*COMPILE, "-o", tmp_path / "file" / "sub"), "is a file")
    one_error(run(*COMPILE, "-o", "/proc/medyate-build"), "cannot write", "/proc")
    mounts = []
    try:
        if not _mount_tmpfs(tmp_path / "ro", "size=64k,ro"):
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounts.append(tmp_path / "ro")
        one_error(run(*COMPILE, "-o", tmp_path / "ro" / "B"), "Read-only file system")
        assert _mount_tmpfs(tmp_path / "tiny", "size=64k")
        mounts.append(tmp_path / "tiny")
        one_error(run(*COMPILE, "-o", tmp_path / "tiny" / "B"), "No space left on device")
        assert list((tmp_path / "tiny").iterdir()) == [], "nothing half-written"
        one_error(run(*COMPILE, "-o", tmp_path / "tiny"), "mount point")
    finally:
        for mount in mounts:
            subprocess.run(["umount", str(mount)], check=False)


# ---- compile: projects that must build ------------------------------------------------------

@pytest.mark.parametrize("how", ["--embed-data 0", "no --data"])
def test_a_build_without_data_compiles_with_werror(how: str, demo_copy: Path,
                                                   tmp_path: Path) -> None:
    require_gcc()
    out = tmp_path / "B"
    args = [*COMPILE, "--embed-data", "0"] if how == "--embed-data 0" else \
        ["compile", str(demo_copy), "--budget", "300kB", "--epochs", "1"]
    result = run(*args, "-o", out)
    assert result.exit_code == 0, result.output
    assert "0 embedded training samples" in result.output and "medyate-mcu train" in result.output
    made = subprocess.run(["make", "-s", "-C", str(out), "host"], capture_output=True,
                          text=True, check=False)
    assert made.returncode == 0, made.stderr
    ran = subprocess.run([str(out / "medyate_train")], capture_output=True, text=True,
                         check=False)
    assert ran.returncode == 1 and ran.stdout.startswith("error: this build embeds no training")
    made = subprocess.run(["make", "-s", "-C", str(out), "lib"], capture_output=True, text=True,
                          check=False)
    assert made.returncode == 0, made.stderr


@pytest.mark.parametrize(("budget", "shown"), [("1025MB", "1025.00 MiB"),
                                               ("3072MB", "3072.00 MiB"),
                                               ("4096MB", "4096.00 MiB"),
                                               ("5000000000", "4768.37 MiB")])
def test_budgets_beyond_a_32_bit_target_are_refused(budget: str, shown: str,
                                                    tmp_path: Path) -> None:
    result = run(*COMPILE, "--budget", budget, "-o", tmp_path / "B")
    assert result.exit_code == 2 and "above the 1 GiB" in result.output and shown in result.output
    assert not (tmp_path / "B").exists()


def _with_initializer_value(model: Path, out: Path, value: float) -> str:
    proto = onnx.load(str(model))
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 8:
            array = array.copy()
            array.flat[3] = value
            init.CopyFrom(numpy_helper.from_array(array, init.name))
            onnx.save(proto, str(out))
            return init.name
    raise AssertionError("no float initializer")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused_at_import(value: float, demo_copy: Path,
                                                  tmp_path: Path) -> None:
    model = tmp_path / "bad.onnx"
    name = _with_initializer_value(demo_copy, model, value)
    one_error(run("compile", model, "--data", "digits", "-o", tmp_path / "B"),
              f"tensor {name!r}", "non-finite", "flat index 3")
    assert not (tmp_path / "B").exists() and not (tmp_path / "bad.lara.json").exists()


# ---- compile: data ------------------------------------------------------------------------

def test_bad_labels_and_one_class_data_are_refused(demo_copy: Path, tmp_path: Path) -> None:
    images = np.zeros((4, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "huge.npz", x=images, y=np.array([0, 1, 2, 2**40]))
    one_error(run("compile", demo_copy, "--data", tmp_path / "huge.npz", "-o", tmp_path / "B"),
              "label 1099511627776 is out of range")
    np.savez(tmp_path / "one.npz", x=images, y=np.zeros(4, np.int64))
    one_error(run("compile", demo_copy, "--data", tmp_path / "one.npz", "-o", tmp_path / "B"),
              "only one class")
    one_error(run(*COMPILE, "--classes", "3", "-o", tmp_path / "B"),
              "--classes 3 contradicts --data digits, which has 10 classes")
    assert not (tmp_path / "B").exists()


def test_a_one_output_classifier_needs_classes(tmp_path: Path) -> None:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    rng = np.random.default_rng(0)
    model = make_model(nodes, [1, 3, 8, 8], {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b": np.zeros(4, np.float32), "fw": rng.standard_normal((1, 4)).astype(np.float32),
        "fb": np.zeros(1, np.float32)})
    onnx.save(model, str(tmp_path / "one.onnx"))
    one_error(run("compile", tmp_path / "one.onnx", "-o", tmp_path / "B"),
              "classifier has 1 output", "--classes")
    assert not (tmp_path / "B").exists()


def test_an_image_bomb_is_refused(demo_copy: Path, tmp_path: Path) -> None:
    for name, size in (("a", (12000, 12000)), ("b", (32, 32))):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("L", size).save(tmp_path / "data" / name / "x.png")
    one_error(run("compile", demo_copy, "--data", tmp_path / "data", "-o", tmp_path / "B"),
              "x.png: the image is too large", "144000000 pixels")


def test_mistyped_manifest_fields_are_one_line(build: Path, tmp_path: Path) -> None:
    for field, value in (("budget", "300kB"), ("candidates", 5), ("settings", {"epochs": "3"}),
                         ("board", 7)):
        copy = tmp_path / f"B-{field}"
        copy.mkdir()
        data = json.loads((build / MANIFEST).read_text())
        data[field] = value
        (copy / MANIFEST).write_text(json.dumps(data))
        one_error(run("verify", copy), "is damaged", "field")
        one_error(run("train", copy, "--port", "loop://"), "is damaged", "field")


# ---- the device link ----------------------------------------------------------------------

def test_bad_port_urls_are_one_line(build: Path) -> None:
    one_error(run("train", build, "--port", "socket://127.0.0.1"), "give the host and the TCP")
    one_error(run("train", build, "--port", "socket://127.0.0.1:99999"), "1..65535")
    one_error(run("train", build, "--port", "loop://", "--timeout", "1"), "loopback")


Reply = Callable[[p.Frame], bytes | None]


class FakeDevice:
    """A TCP server that answers each request frame with what ``reply`` returns."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self.server.accept()
        except OSError:
            return
        decoder = p.FrameDecoder()
        with connection:
            while data := connection.recv(65536):
                for frame in decoder.feed(data):
                    answer = self.reply(frame) if isinstance(frame, p.Frame) else None
                    if answer:
                        connection.sendall(answer)

    def close(self) -> None:
        self.server.close()


class Device:
    """The replies of a device running ``build`` that trains nothing: its initial weights."""

    def __init__(self, build: Path) -> None:
        project = Project.open(build)
        manifest = project.manifest
        graph, plan, _, _ = project.reference()
        head = classifier_node(graph)
        self.regions = {p.Region.CLASSIFIER: np.concatenate(
            [head.params["weight"].reshape(-1), head.params["bias"]]).astype(np.float32)}
        for index, name in enumerate(plan.memory.schedule.candidates):
            self.regions[p.Region.CANDIDATE + index] = \
                graph.node(name).params["weight"].reshape(-1).astype(np.float32)
        size, stored = int(np.prod(graph.input_shape)), project.task().encoding.format
        self.ready = p.Ready(p.VERSION, 0, bytes.fromhex(manifest.model_sha256)[:8],
                             build_hash((build / MANIFEST).read_text()), manifest.budget, 0,
                             plan.pool_bytes, size, manifest.classes,
                             len(plan.memory.schedule.candidates), 0, 1, 1, 1040,
                             sample_format_code(stored), size * stored.bytes, "fake")
        self.loss = 0.5

    def reply(self, frame: p.Frame) -> bytes | None:
        kind, sequence = p.MsgType(frame.type), frame.sequence
        if kind in (p.MsgType.HELLO, p.MsgType.RESET):
            return p.encode_frame(p.MsgType.READY, sequence, self.ready.encode())
        if kind == p.MsgType.SAMPLE:
            payload = struct.pack("<fBBHIII", self.loss, 1, 0, 0, 1, 1, 0)
        elif kind == p.MsgType.END_EPOCH:
            payload = struct.pack("<IIIfIIf", 1, 2, 2, self.loss, 1, 1, 0.1)
        elif kind == p.MsgType.READ_WEIGHTS:
            region, _, offset, count = struct.unpack("<HHII", frame.payload)
            payload = self.data(region, offset, count)
        else:
            return None
        return p.encode_frame(kind | 0x80, sequence, payload)

    def data(self, region: int, offset: int, count: int) -> bytes:
        values = self.regions[region]
        chunk = values[offset:offset + count]
        return struct.pack("<HHIII", region, 4, offset, chunk.size, values.size) + \
            chunk.astype("<f4").tobytes()


@pytest.fixture
def device(build: Path) -> Iterator[Device]:
    yield Device(build)


def train_on(build: Path, reply: Reply, tmp_path: Path) -> tuple[Result, Path]:
    fake = FakeDevice(reply)
    target = tmp_path / "trained.onnx"
    try:
        result = run("train", build, "--port", fake.url, "--samples", "2", "--epochs", "1",
                     "--test-samples", "0",
                     "--timeout", "3", "-o", target)
    finally:
        fake.close()
    return result, target


def test_the_fake_device_trains(build: Path, device: Device, tmp_path: Path) -> None:
    """The oracle of the fault tests below: without a fault, `train` succeeds."""
    result, target = train_on(build, device.reply, tmp_path)
    assert result.exit_code == 0, result.output
    assert target.is_file()


def test_non_finite_values_from_the_device_save_nothing(build: Path, device: Device,
                                                        tmp_path: Path) -> None:
    device.regions[p.Region.CLASSIFIER] = device.regions[p.Region.CLASSIFIER].copy()
    device.regions[p.Region.CLASSIFIER][7] = np.nan
    result, target = train_on(build, device.reply, tmp_path)
    one_error(result, "non-finite", "the classifier", "nothing was saved")
    assert not target.exists() and not list(tmp_path.iterdir())
    device.regions[p.Region.CLASSIFIER][7] = 0.0
    device.loss = float("inf")
    result, target = train_on(build, device.reply, tmp_path)
    one_error(result, "non-finite", "the loss")
    assert not target.exists()


def test_an_unwritable_trained_model_is_one_line(build: Path, device: Device) -> None:
    fake = FakeDevice(device.reply)
    try:
        result = run("train", build, "--port", fake.url, "--samples", "2", "--epochs", "1",
                     "--test-samples", "0",
                     "--timeout", "3", "-o", "/proc/medyate/trained.onnx")
    finally:
        fake.close()
    one_error(result, "cannot", "/proc/medyate")


def test_a_read_that_makes_no_progress_stops(build: Path, device: Device,
                                             tmp_path: Path) -> None:
    device.data = lambda region, offset, count: struct.pack(  # type: ignore[method-assign]
        "<HHIII", region, 4, offset, 0, 100)
    result, target = train_on(build, device.reply, tmp_path)
    one_error(result, "with no values (of 100)")
    assert not target.exists()


def test_a_device_with_another_model_is_refused(build: Path, device: Device,
                                                tmp_path: Path) -> None:
    device.ready = p.Ready(**{**device.ready.__dict__, "model_hash": bytes(8)})
    result, _ = train_on(build, device.reply, tmp_path)
    one_error(result, "runs a build of another model", "0000000000000000")


@pytest.mark.parametrize(("fault", "message"), [
    ("short READY", "READY of 10 bytes"),
    ("wrong reply type", "expected SAMPLE_RESULT, got type 0x86"),
    ("1-byte ERROR", "ERROR of 1 bytes"),
])
def test_malformed_replies_are_one_line(fault: str, message: str, build: Path, device: Device,
                                        tmp_path: Path) -> None:
    def reply(frame: p.Frame) -> bytes | None:
        if fault == "short READY" and frame.type == p.MsgType.HELLO:
            return p.encode_frame(p.MsgType.READY, frame.sequence, bytes(10))
        if fault == "wrong reply type" and frame.type == p.MsgType.SAMPLE:
            return p.encode_frame(p.MsgType.STATS_RESULT, frame.sequence, bytes(52))
        if fault == "1-byte ERROR" and frame.type == p.MsgType.SAMPLE:
            return p.encode_frame(p.MsgType.ERROR, frame.sequence, b"\x01")
        return device.reply(frame)

    result, target = train_on(build, reply, tmp_path)
    one_error(result, "malformed reply", message)
    assert not target.exists()
