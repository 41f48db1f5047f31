"""Writing the generated C project to a folder, all or nothing."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from medyate_mcu.boards import Board, get_board
from medyate_mcu.codegen.c_interface import SAMPLE_CTYPES, sample_format_enum
from medyate_mcu.codegen.generate import (
    engine_ram,
    firmware_sources,
    render_project,
    template_environment,
)
from medyate_mcu.codegen.serial import serial_files
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.planner import BudgetPlan
from medyate_mcu.method.trainer import TrainSettings
from medyate_mcu.outputs import check_output_folder, write_folder
from medyate_mcu.quant.scheme import Quantization
from medyate_mcu.resources import data_dir
from medyate_mcu.zoo.samples import SampleEncoding

MANIFEST = "medyate_build.json"
QUANTIZATION_FILE = "quantization.npz"  # an int8 backbone's scales and int8 weights
DEFAULT_STACK_BYTES = 4096  # reserved after .bss by the Cortex-M linker script (make STACK_SIZE=)
BYTES_PER_LINE = 32
HEAD_NEW, HEAD_KEPT = "new", "pretrained"  # BuildManifest.head: the classifier fine-tuned
# Element types of the parts of a verification snapshot (qemu_verify.c.j2); 0: raw bytes.
SNAPSHOT_TYPES = {"mdy_state_t": 0, "float": 1, "uint32_t": 2, "uint16_t": 3, "uint8_t": 4}


@dataclass(frozen=True)
class EmbeddedData:
    source: str
    train_x: np.ndarray  # stored samples N×C×H×W, of encoding.format
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    encoding: SampleEncoding


@dataclass(frozen=True)
class BuildManifest:
    """What `verify` needs to rebuild the same graph and plan on the host."""

    model_path: str
    model_sha256: str
    classes: int
    budget: int
    alpha: float
    k_rule: str
    ranking_path: str
    settings: dict
    data_source: str | None
    candidates: list[str]
    pool_bytes: int
    fixed_bytes: int
    parts: dict[str, int]
    board: str | None = None  # `compile --board`: the Cortex-M target of `make arm`
    backbone: str = "float32"  # `compile --backbone`: float32 | int8 (QUANTIZATION_FILE)
    samples: dict | None = None  # the stored samples' encoding (SampleEncoding.record)
    sample_format: str = "stored"  # `compile --sample-format`
    head: str = "new"  # HEAD_NEW (re-initialised classifier) or HEAD_KEPT (pre-trained)

    @property
    def encoding(self) -> SampleEncoding | None:
        """How the build's stored samples (embedded, serial frames) become its input."""
        return None if self.samples is None else SampleEncoding.from_record(self.samples)

    def __post_init__(self) -> None:
        """A manifest edited by hand or damaged: every field of its declared type (TypeError
        names the first that is not; `Project.open` turns it into one line)."""
        _check_types(self, get_type_hints(BuildManifest), "")
        _check_types(self.settings, get_type_hints(TrainSettings), "settings.")


def _has_type(value: object, hint: Any) -> bool:
    """``value`` is of the type annotation ``hint`` (a JSON-decoded value: no bools as
    numbers)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_has_type(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _has_type(k, args[0]) and _has_type(v, args[1]) for k, v in value.items())
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, origin or hint)


def _check_types(record: object, hints: dict[str, Any], prefix: str) -> None:
    values = record if isinstance(record, dict) else vars(record)
    for name, value in values.items():
        if name not in hints:
            raise TypeError(f"unknown field {prefix}{name}")
        if not _has_type(value, hints[name]):
            raise TypeError(f"field {prefix}{name} is {value!r}, not of type "
                            f"{getattr(hints[name], '__name__', hints[name])}")


def _rows(x: np.ndarray) -> list[str]:
    if x.dtype == np.float32:
        return [", ".join(_c_float(float(v)) for v in sample.reshape(-1)) for sample in x]
    return [", ".join(str(int(v)) for v in sample.reshape(-1)) for sample in x]


def _c_float(value: float) -> str:
    """A C float literal: ``1.0f``, ``0.456000011f``, ``1e-05f``."""
    text = f"{value:.9g}"
    return text + ("f" if any(c in text for c in ".en") else ".0f")


def render_data(data: EmbeddedData | None, input_shape: tuple[int, ...]) -> dict[str, str]:
    env = template_environment()
    channels = input_shape[0]
    size = int(np.prod(input_shape))
    if data is None:
        empty = np.zeros((0, size), np.float32)
        data = EmbeddedData("no data embedded", empty, np.zeros(0, np.uint8), empty,
                            np.zeros(0, np.uint8), SampleEncoding.identity(channels))
    encoding = data.encoding
    context = {
        "source": data.source, "channels": channels, "input_size": size,
        "train_count": len(data.train_y), "test_count": len(data.test_y),
        "format_text": encoding.describe(), "format_enum": sample_format_enum(encoding.format),
        "ctype": SAMPLE_CTYPES[encoding.format], "scale": _c_float(encoding.scale),
        "sample_bytes": size * encoding.format.bytes,
        "mean": ", ".join(_c_float(v) for v in encoding.mean),
        "std": ", ".join(_c_float(v) for v in encoding.std),
        "train_y": ", ".join(str(int(v)) for v in data.train_y) or "0",
        "test_y": ", ".join(str(int(v)) for v in data.test_y) or "0",
        "train_x": _rows(data.train_x) or ["0"], "test_x": _rows(data.test_x) or ["0"],
    }
    return {name.removesuffix(".j2"): env.get_template(name).render(**context)
            for name in ("data.h.j2", "data.c.j2", "input.h.j2", "input.c.j2")}


def hal_sources() -> list[Path]:
    """The board HAL (start-up, semihosting, cycle counter, UARTs): copied into every project,
    compiled only into Cortex-M firmware."""
    return sorted(data_dir("firmware").glob("hal/*.[ch]"))


def render_board_files(graph: Graph, plan: BudgetPlan, board: Board | None,
                       quantization: Quantization | None = None) -> dict[str, str]:
    """The Makefile (with the Cortex-M targets when there is a board), the board's linker script
    and the QEMU verification firmware."""
    env = template_environment()
    files = {"Makefile": env.get_template("Makefile.j2").render(
        model={"name": graph.name}, board=board, stack_bytes=DEFAULT_STACK_BYTES)}
    if board is None:
        return files
    files["linker.ld"] = env.get_template("linker.ld.j2").render(model_name=graph.name,
                                                                 board=board)
    parts = [{"name": array.name, "ctype": array.ctype, "length": array.length,
              "type": SNAPSHOT_TYPES[array.ctype]}
             for array in engine_ram(graph, plan, quantization)]
    files["qemu_verify.c"] = env.get_template("qemu_verify.c.j2").render(
        model_name=graph.name, parts=parts)
    return files


def write_project(output: Path, graph: Graph, plan: BudgetPlan, settings: TrainSettings,
                  classes: int, metadata: dict[str, str], manifest: BuildManifest,
                  data: EmbeddedData | None, board: Board | None = None,
                  quantization: Quantization | None = None) -> list[Path]:
    """Write the project into ``output`` all or nothing (see medyate_mcu/outputs.py): files of
    an earlier build that compile did not write (``trained.onnx``, the user's own) are kept; a
    non-empty ``output`` that is not an earlier build is refused."""
    check_output_folder(output, MANIFEST)
    if classes > 255 and data is not None:
        raise MedyateError("embedded data stores labels as bytes: at most 255 classes")
    files = render_project(graph, plan, settings, classes, metadata, quantization)
    files.update(render_data(data, graph.input_shape))
    files.update(render_board_files(graph, plan, board, quantization))
    env = template_environment()
    files["main.c"] = env.get_template("main.c.j2").render(model_name=graph.name)
    files[MANIFEST] = json.dumps(asdict(manifest), indent=1)
    files.update(_serial_firmware(graph.name, manifest, files[MANIFEST]))

    def fill(staging: Path) -> None:
        for name, text in files.items():
            (staging / name).write_text(text)
        if quantization is not None:
            quantization.save(staging / QUANTIZATION_FILE)
        firmware_root = firmware_sources()[0].parent.parent
        for source in [*firmware_sources(), *hal_sources()]:
            target = staging / "medyate" / source.relative_to(firmware_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)

    write_folder(output, fill, MANIFEST)
    return sorted(output.rglob("*"))


def _serial_firmware(model_name: str, manifest: BuildManifest,
                     manifest_text: str) -> dict[str, str]:
    """serial_main.c (the device loop `medyate-mcu train` talks to), uart_config.h and, with a
    board, serial.mk (the sources of `make arm FIRMWARE_APP=serial`)."""
    board = get_board(manifest.board) if manifest.board else None
    return serial_files(model_name, manifest.model_sha256, manifest_text, board)
