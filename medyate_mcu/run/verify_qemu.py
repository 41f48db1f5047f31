"""`verify --qemu`: the Cortex-M build of a project under QEMU, byte for byte against the host
build of the same sources, and the host build against the reference.

The chain of trust: Cortex-M C ≡ host C (here: no tolerance) and host C ≈ reference
(`verify_build`, run on the same build, every accepted difference explained).

The verification firmware (qemu_verify.c, generated) reads the samples of every epoch, in the
epoch's order (`epoch_order`), from a file the host wrote, and writes the engine's whole RAM (every
buffer the budget counts: weights, classifier, norms, selection, sampler weights, gradients, the
scalars, the channel pool and the arena) after mdy_init and after each epoch through semihosting
files. The host shared library (`make lib`, a fresh copy, so its RAM starts zeroed as after a
reset) is driven through ctypes with the same samples in the same order, and every byte of every
snapshot must be equal; the first difference is reported by tensor, index and both values.
"""

from __future__ import annotations

import ctypes
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medyate_mcu.boards import Board
from medyate_mcu.codegen.folder import Project
from medyate_mcu.codegen.generate import c_identifier
from medyate_mcu.codegen.project import SNAPSHOT_TYPES
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.planner import BudgetPlan
from medyate_mcu.method.trainer import epoch_order
from medyate_mcu.run.engine_lib import EngineLibrary, MdyState
from medyate_mcu.run.qemu import instructions, run_qemu
from medyate_mcu.run.verify import (
    Check,
    memory_checks,
    verification_data,
    verify_build,
)
from medyate_mcu.toolchain.arm import build_firmware
from medyate_mcu.toolchain.host import make, symbol_sizes

VERIFY_MAGIC, SNAPSHOT_MAGIC = 0x5659444D, 0x5359444D  # qemu_verify.c.j2
INPUT_VERSION, SNAPSHOT_VERSION = 1, 2
SNAPSHOT_HEADER_WORDS = 16
DTYPES = {code: np.dtype({"float": np.float32, "uint32_t": np.uint32, "uint16_t": np.uint16}
                         .get(ctype, np.uint8)) for ctype, code in SNAPSHOT_TYPES.items()}


@dataclass(frozen=True)
class Snapshot:
    """What the firmware wrote after mdy_init (epoch 0) or after an epoch: its header words and
    the engine's RAM, part by part (name -> element type, bytes), in the firmware's order."""

    header: np.ndarray
    parts: dict[str, tuple[np.dtype, bytes]]


@dataclass(frozen=True)
class QemuFigures:
    """What the QEMU run measured besides the state: per training step and the stack."""

    steps: int
    instructions_mean: float
    instructions_min: float
    instructions_max: float
    stack_used: int  # bytes of the reserved stack ever written (painted at reset)
    stack_reserved: int


def write_verify_input(path: Path, x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> None:
    """mdy_verify.in: the header, then each epoch's samples in the epoch's order."""
    header = np.array([VERIFY_MAGIC, INPUT_VERSION, epochs, len(x), x[0].size], np.uint32)
    with path.open("wb") as handle:
        handle.write(header.tobytes())
        for epoch in range(1, epochs + 1):
            for index in epoch_order(len(x), seed, epoch):
                handle.write(np.int32(y[index]).tobytes())
                handle.write(np.ascontiguousarray(x[index], np.float32).tobytes())


def read_snapshot(path: Path) -> Snapshot:
    """A snapshot file the verification firmware wrote."""
    if not path.is_file():
        raise MedyateError(f"the firmware wrote no {path.name}")
    raw = path.read_bytes()
    words = 4 * SNAPSHOT_HEADER_WORDS
    damaged = MedyateError(f"{path.name} ({len(raw)} bytes) is not a version-{SNAPSHOT_VERSION} "
                           "snapshot: firmware and host disagree; compile and build again")
    if len(raw) < words:
        raise damaged
    header = np.frombuffer(raw[:words], np.uint32)
    if header[0] != SNAPSHOT_MAGIC or header[1] != SNAPSHOT_VERSION:
        raise damaged
    parts: dict[str, tuple[np.dtype, bytes]] = {}
    at = words
    for _ in range(int(header[3])):
        if at + 4 > len(raw):
            raise damaged
        length = int.from_bytes(raw[at:at + 4], "little")
        name = raw[at + 4:at + 4 + length].decode("ascii", errors="replace")
        at += 4 + length
        if at + 8 > len(raw):
            raise damaged
        kind, size = (int.from_bytes(raw[at + i:at + i + 4], "little") for i in (0, 4))
        at += 8
        if kind not in DTYPES or at + size > len(raw):
            raise damaged
        parts[name] = (DTYPES[kind], raw[at:at + size])
        at += size
    if at != len(raw):
        raise damaged
    return Snapshot(header, parts)


def host_snapshots(library: Path, names: dict[str, int], x: np.ndarray, y: np.ndarray,
                   classes: int, seed: int, epochs: int) -> list[dict[str, bytes]]:
    """Run the host build on the same samples in the same order as the firmware: the bytes of
    each RAM buffer in ``names`` (symbol -> bytes) after mdy_init and after each epoch (the
    library's RAM starts zeroed, as the firmware's after a reset: `EngineLibrary` loads a copy)."""
    engine = EngineLibrary(library, x[0].size, classes)

    def snapshot() -> dict[str, bytes]:
        return {name: engine.array(name, np.uint8, size).tobytes()
                for name, size in names.items()}

    engine.init()
    snapshots = [snapshot()]
    for epoch in range(1, epochs + 1):
        for index in epoch_order(len(x), seed, epoch):
            status, _ = engine.train_sample(x[index], int(y[index]))
            if status != 0:
                raise MedyateError(f"the host engine rejected training sample {index} in epoch "
                                   f"{epoch} (status {status})")
        engine.end_epoch()
        snapshots.append(snapshot())
    return snapshots


def _value(dtype: np.dtype, raw: bytes, index: int) -> str:
    value = np.frombuffer(raw, dtype)[index]
    if dtype == np.float32:
        return f"{float(value):.9g} (0x{int(np.float32(value).view(np.uint32)):08x})"
    return str(int(value))


def _state_field(offset: int) -> tuple[str, np.dtype]:
    """The field of mdy_state_t at byte ``offset`` and its element type."""
    for field, ctype in MdyState._fields_:
        descriptor = getattr(MdyState, field)
        if descriptor.offset <= offset < descriptor.offset + descriptor.size:
            return field, np.dtype(np.float32 if ctype is ctypes.c_float else np.uint32)
    return f"byte {offset}", np.dtype(np.uint32)


def _where(name: str, index: int, shapes: dict[str, tuple[str, tuple[int, ...]]]) -> str:
    """A readable place: the layer and (out, in, kh, kw) of a candidate weight, the field of the
    engine's scalars (``index`` is then a byte offset), else the flat index."""
    if name in shapes:
        layer, shape = shapes[name]
        position = ", ".join(str(int(i)) for i in np.unravel_index(index, shape))
        return f"{name}[{index}] (weight [{position}] of {layer})"
    if name == "mdy_state":
        return f"mdy_state.{_state_field(index)[0]}"
    return f"{name}[{index}]"


def compare_snapshot(epoch: int, device: Snapshot, host: dict[str, bytes],
                     shapes: dict[str, tuple[str, tuple[int, ...]]]) -> Check:
    """The firmware's snapshot against the host's, byte for byte: the first differing tensor
    (in the firmware's order, trainable state first), its index and both values."""
    when = "after mdy_init" if epoch == 0 else f"after epoch {epoch}"
    total = sum(len(raw) for _, raw in device.parts.values())
    for name, (dtype, raw) in device.parts.items():
        theirs = host[name]
        if raw == theirs:
            continue
        step = dtype.itemsize if name != "mdy_state" else 4
        ours_elements = np.frombuffer(raw, np.uint8).reshape(-1, step)
        host_elements = np.frombuffer(theirs, np.uint8).reshape(-1, step)
        differing = np.flatnonzero((ours_elements != host_elements).any(axis=1))
        index = int(differing[0])
        where = _where(name, index * step if name == "mdy_state" else index, shapes)
        shown = _state_field(index * step)[1] if name == "mdy_state" else dtype
        return Check(f"Cortex-M ≡ host C {when}",
                     f"{where}: Cortex-M {_value(shown, raw, index)} / host "
                     f"{_value(shown, theirs, index)} ({len(differing)} of "
                     f"{len(ours_elements)} elements of {name} differ)", "byte for byte", False)
    return Check(f"Cortex-M ≡ host C {when}", f"{total:,} B identical ({len(device.parts)} "
                 "buffers)", "byte for byte", True)


def coverage_check(device: Snapshot, library: Path) -> Check:
    """The snapshot holds every RAM buffer of the host library's engine, at the same size."""
    host = symbol_sizes(library)
    device_sizes = {name: len(raw) for name, (_, raw) in device.parts.items()}
    missing = sorted(set(host) - set(device_sizes))
    different = sorted(name for name in set(host) & set(device_sizes)
                       if host[name] != device_sizes[name])
    extra = sorted(set(device_sizes) - set(host))
    problems = [f"missing {', '.join(missing)}"] * bool(missing) \
        + [f"sizes differ: {', '.join(different)}"] * bool(different) \
        + [f"not in the host build: {', '.join(extra)}"] * bool(extra)
    return Check("snapshot covers the engine's RAM (host build's mdy_ symbols)",
                 "; ".join(problems) or f"{len(host)} buffers, {sum(host.values()):,} B",
                 "all, same sizes", not problems)


def verify_qemu(project: Project, epochs: int | None = None, samples: int = 96,
                timeout: float = 600.0, on_epoch: Callable[[int], None] | None = None,
                reference_epochs: int | None = None) -> tuple[list[Check], QemuFigures]:
    """Build the verification firmware for the build's emulated board, run it under QEMU for
    ``epochs`` (default: the build's whole run) and compare the engine's RAM after mdy_init and
    after every epoch byte for byte with the host build run on the same samples in the same
    order; then check the host build against the reference (`verify_build`, over
    ``reference_epochs``, at most ``epochs``)."""
    board = project.require_board()
    if board.kind != "emulated":
        raise MedyateError(f"{board.name} is a real board: verify --qemu needs a build for an "
                           "emulated board (compile with --board qemu-mps2-an386, "
                           "qemu-mps2-an500 or qemu-netduinoplus2)")
    graph, plan, settings, _ = project.reference()
    epochs, _, x, y = verification_data(project, epochs, samples)
    image = build_firmware(project, "verify")
    checks = [Check(f"Cortex-M image: {check.name}", check.measured, check.limit, check.ok)
              for check in memory_checks(image, plan)]
    with tempfile.TemporaryDirectory(prefix="medyate-qemu-") as folder:
        work = Path(folder)
        write_verify_input(work / "mdy_verify.in", x, y, settings.seed, epochs)
        run = run_qemu(board, image, cwd=work, timeout=timeout)
        if run.fault:
            raise MedyateError(f"the verification firmware hard-faulted on "
                               f"{board.qemu_machine}: {' '.join(run.fault.split())}")
        if run.status != 0:
            last = run.output.strip().splitlines()[-1:] or ["(no output)"]
            raise MedyateError(f"the verification firmware exited with status {run.status}: "
                               f"{last[0]}")
        snapshots = [read_snapshot(work / f"mdy_snapshot_{epoch}.bin")
                     for epoch in range(epochs + 1)]
    library = make(project.folder, "lib")
    checks.append(coverage_check(snapshots[0], library))
    if checks[-1].ok:
        checks.extend(_byte_checks(snapshots, library, graph, plan, x, y, settings.seed,
                                   on_epoch))
    checks.extend(verify_build(project, epochs=min(reference_epochs or epochs, epochs),
                               samples=samples))
    figures = _figures(snapshots[-1].header, board)
    checks.append(Check("stack used under QEMU (painted at reset)",
                        f"{figures.stack_used} B", f"<= {figures.stack_reserved} B reserved",
                        figures.stack_used < figures.stack_reserved))
    return checks, figures


def _byte_checks(snapshots: list[Snapshot], library: Path, graph: Graph, plan: BudgetPlan,
                 x: np.ndarray, y: np.ndarray, seed: int,
                 on_epoch: Callable[[int], None] | None) -> list[Check]:
    """One row per snapshot, up to the first that differs."""
    sizes = {name: len(raw) for name, (_, raw) in snapshots[0].parts.items()}
    host = host_snapshots(library, sizes, x, y, graph.output_shape[0], seed, len(snapshots) - 1)
    shapes = {f"mdy_w_{c_identifier(name)}": (name, graph.node(name).params["weight"].shape)
              for name in plan.memory.schedule.candidates}
    checks = []
    for epoch, (device, ours) in enumerate(zip(snapshots, host, strict=True)):
        checks.append(compare_snapshot(epoch, device, ours, shapes))
        if on_epoch and epoch:
            on_epoch(epoch)
        if not checks[-1].ok:
            break
    return checks


def _figures(header: np.ndarray, board: Board) -> QemuFigures:
    steps = int(header[4])
    total = int(header[5]) | int(header[6]) << 32
    fastest = int(header[7]) | int(header[8]) << 32
    slowest = int(header[9]) | int(header[10]) << 32
    untouched, reserved = int(header[11]), int(header[12])
    return QemuFigures(steps, instructions(total / max(steps, 1), board),
                       instructions(fastest, board), instructions(slowest, board),
                       reserved - untouched, reserved)
