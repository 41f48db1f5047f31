"""Cortex-M builds of a generated project: `make arm` with arm-none-eabi-gcc, then a size report
read from the ELF (pyelftools) and a bound on the training step's stack depth."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from medyate_mcu.boards import Board
from medyate_mcu.codegen.folder import ARM_DIR, Project
from medyate_mcu.codegen.project import DEFAULT_STACK_BYTES
from medyate_mcu.errors import MedyateError
from medyate_mcu.planning.memory import OTHER_PART, POOL_PART, measured_parts
from medyate_mcu.toolchain.host import symbol_sizes
from medyate_mcu.zoo.samples import SampleEncoding

ARM_GCC = "arm-none-eabi-gcc"
ARM_OBJDUMP = "arm-none-eabi-objdump"
ARM_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi"
APPS = ("train", "verify", "serial")
STACK_ROOT = "mdy_train_sample"
STACK_PART = "stack (reserved)"  # the RAM part of a SizeReport that is the reserved stack
ENGINE_PART_LABELS = {  # the engine's RAM parts (planning/memory.py) as the report names them
    "arena": "engine arena", "candidate_weights": "engine candidate weights",
    "classifier": "engine classifier (weights, gradients)",
    "channel_state": "engine channel state", "engine_state": "engine scalars",
    POOL_PART: "engine channel pool", OTHER_PART: "engine other mdy_ symbols"}
EXCEPTION_FRAME_BYTES = 104  # exception entry with FP context: 26 words (+ alignment word)


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MedyateError(f"`{name}` is not installed; install it, e.g. "
                           f"`apt-get install {package}`")
    return path


def build_firmware(project: Project, app: str = "train", stack_bytes: int | None = None) -> Path:
    """Run ``make arm FIRMWARE_APP=app`` in the project's folder; the ELF's path. A linker
    overflow of the board's RAM or flash becomes one line naming the region and the bytes over."""
    if app not in APPS:
        raise MedyateError(f"unknown firmware {app!r}; one of {', '.join(APPS)}")
    board = project.require_board()
    build_dir = project.folder
    require_tool(ARM_GCC, ARM_PACKAGES)
    if shutil.which("make") is None:
        raise MedyateError("`make` is not installed; install it, e.g. `apt-get install make`")
    stack = stack_bytes if stack_bytes is not None else DEFAULT_STACK_BYTES
    if stack <= 0 or stack % 8:
        raise MedyateError(f"stack size {stack} B must be a positive multiple of 8")
    # relinked every time: the ELF's make rule does not depend on STACK_SIZE (objects are reused)
    project.firmware_path(app).unlink(missing_ok=True)
    result = subprocess.run(["make", "-s", "-C", str(build_dir), "arm", f"FIRMWARE_APP={app}",
                             f"STACK_SIZE={stack}"], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        overflows = re.findall(r"region [`']?(\w+)'? overflowed by (\d+) bytes", output)
        if overflows:
            parts = [f"{region} overflowed by {int(count):,} bytes" for region, count in overflows]
            raise MedyateError(
                f"the {app} firmware does not fit {board.name} ({board.ram_bytes:,} B RAM, "
                f"{board.flash_bytes:,} B flash; the RAM also holds the {stack:,} B stack): "
                + ", ".join(parts)
                + ("; embed fewer samples (compile --embed-data)" if any(
                    region.upper() == "FLASH" for region, _ in overflows) else ""))
        tail = output.strip().splitlines()[-12:]
        raise MedyateError(f"building the {app} firmware in {build_dir} failed:\n"
                           + "\n".join(tail))
    return project.firmware_path(app)


@dataclass(frozen=True)
class SizeReport:
    board: Board
    flash: list[tuple[str, int]]  # part, bytes
    ram: list[tuple[str, int]]
    engine_symbols: dict[str, int]  # mdy_ RAM symbols
    engine_bytes: int  # their aligned sum, what the budget bounds
    budget: int
    stack: StackBound | None = None

    @property
    def flash_bytes(self) -> int:
        return sum(size for _, size in self.flash)

    @property
    def ram_bytes(self) -> int:
        return sum(size for _, size in self.ram)

    def problems(self) -> list[str]:
        found = []
        if self.flash_bytes > self.board.flash_bytes:
            found.append(f"flash overflowed by {self.flash_bytes - self.board.flash_bytes:,} "
                         f"bytes ({self.flash_bytes:,} of {self.board.flash_bytes:,})")
        if self.ram_bytes > self.board.ram_bytes:
            found.append(f"RAM overflowed by {self.ram_bytes - self.board.ram_bytes:,} bytes "
                         f"({self.ram_bytes:,} of {self.board.ram_bytes:,}, stack included)")
        if self.engine_bytes > self.budget:
            found.append(f"the engine's RAM exceeds the budget by "
                         f"{self.engine_bytes - self.budget:,} bytes")
        if self.stack and self.stack.bytes is not None:
            reserved = dict(self.ram).get(STACK_PART, 0)
            if self.stack.bytes > reserved:
                found.append(f"the training step may need {self.stack.bytes:,} B of stack, "
                             f"more than the {reserved:,} B reserved (build --stack)")
        return found


def _sections(elf: ELFFile) -> dict[str, int]:
    return {section.name: section["sh_size"] for section in elf.iter_sections()
            if section["sh_flags"] & 0x2}  # SHF_ALLOC


def _ram_extent(elf: ELFFile, board: Board) -> int:
    """Bytes from the start of RAM to the end of the last section placed in it: what the
    linker holds against the board's RAM (section sizes plus the alignment gaps between them)."""
    ends = [section["sh_addr"] + section["sh_size"] for section in elf.iter_sections()
            if section["sh_flags"] & 0x2
            and board.ram_origin <= section["sh_addr"] < board.ram_origin + board.ram_bytes]
    return max(ends, default=board.ram_origin) - board.ram_origin


def size_report(image: Path, board: Board, budget: int) -> SizeReport:
    """Flash and RAM of a firmware image, part by part, from its sections and symbols."""
    with image.open("rb") as handle:
        elf = ELFFile(handle)
        sections = _sections(elf)
        extent = _ram_extent(elf, board)
    engine = symbol_sizes(image)
    engine_parts = measured_parts(engine)
    engine_total = sum(engine_parts.values())
    data, bss, stack = sections.get(".data", 0), sections.get(".bss", 0), sections.get(".stack", 0)
    code = sum(sections.get(name, 0) for name in (".isr_vector", ".text", ".ARM.exidx",
                                                  ".ARM.extab"))
    model_constants = sections.get(".model_rodata", 0)
    embedded = sections.get(".data_rodata", 0)
    flash = [("code", code), ("frozen weights and model constants", model_constants),
             ("embedded data set", embedded), ("other constants", sections.get(".rodata", 0)),
             (".data initial values", data)]
    ram = [(ENGINE_PART_LABELS[part], size) for part, size in engine_parts.items()]
    ram += [("application and C library (.data, .bss)", max(data + bss - engine_total, 0)),
            (STACK_PART, stack)]
    if extent > data + bss + stack:
        ram.append(("alignment between sections", extent - data - bss - stack))
    return SizeReport(board, flash, ram, engine, engine_total, budget)


# ---- embedded samples -------------------------------------------------------------------------

@dataclass(frozen=True)
class EmbeddedSamples:
    """The data set a firmware image carries in flash (data.c): its samples and labels."""

    train: int
    test: int
    encoding: SampleEncoding
    flash_bytes: int  # the arrays' sizes in the image (samples and labels)

    def describe(self) -> str:
        return (f"embedded samples: {self.train} train + {self.test} test, "
                f"{self.encoding.format.value}, {self.flash_bytes:,} B of flash")


SAMPLE_ARRAYS = ("mdy_train_x", "mdy_test_x", "mdy_train_y", "mdy_test_y")  # data.c's constants
_COUNT = re.compile(r"#define MDY_(TRAIN|TEST)_SAMPLES (\d+)u")


def _constant_sizes(image: Path, names: tuple[str, ...]) -> dict[str, int]:
    """Sizes of the named data objects of an ELF image (any section)."""
    with image.open("rb") as handle:
        table = ELFFile(handle).get_section_by_name(".symtab")
        if not isinstance(table, SymbolTableSection):
            raise MedyateError(f"{image} has no symbol table")
        return {symbol.name: symbol["st_size"] for symbol in table.iter_symbols()
                if symbol.name in names and symbol["st_info"]["type"] == "STT_OBJECT"}


def embedded_samples(project: Project, image: Path) -> EmbeddedSamples | None:
    """What the image embeds of the build's data (None: no data.c linked, e.g. the serial
    firmware); the counts are data.h's, the bytes the image's own."""
    sizes = _constant_sizes(image, SAMPLE_ARRAYS)
    header = project.folder / "data.h"
    if not sizes or not header.is_file():
        return None
    counts = {kind: int(count) for kind, count in _COUNT.findall(header.read_text())}
    encoding = project.manifest.encoding or SampleEncoding.identity(1)
    return EmbeddedSamples(counts.get("TRAIN", 0), counts.get("TEST", 0), encoding,
                           sum(sizes.values()))


# ---- stack depth ------------------------------------------------------------------------------

_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_BYTES = re.compile(r"\\n(\d+) bytes \(([a-z,]+)\)")


@dataclass(frozen=True)
class StackBound:
    """An upper bound of the stack a call of ``root`` needs, and the chain that reaches it."""

    root: str
    bytes: int | None  # None: unbounded (recursion or a dynamic frame)
    chain: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _call_graph(build_dir: Path) -> tuple[dict[str, tuple[int, str]], dict[str, set[str]]]:
    """Frames (bytes, qualifier) and callees of every function compiled with
    -fcallgraph-info=su: one .ci file per object."""
    frames: dict[str, tuple[int, str]] = {}
    calls: dict[str, set[str]] = {}
    files = sorted((build_dir / ARM_DIR).rglob("*.ci"))
    if not files:
        raise MedyateError(f"no call-graph files (*.ci) in {build_dir / ARM_DIR}: build first")
    for path in files:
        text = path.read_text()
        for title, label in _NODE.findall(text):
            found = _BYTES.search(label)
            if found:
                frames[title] = (int(found.group(1)), found.group(2))
        for source, target in _EDGE.findall(text):
            calls.setdefault(source, set()).add(target)
    # A static function's title is "file:name"; calls to it inside its file use that title.
    return frames, calls


@cache
def _library_frames(image: Path, mtime: float) -> dict[str, tuple[int, set[str]]]:
    """Frame size and direct callees of each function in the image, from its prologue (push,
    vpush, sub sp) in the disassembly: for C library code, which has no .su/.ci files."""
    del mtime  # part of the cache key
    objdump = require_tool(ARM_OBJDUMP, ARM_PACKAGES)
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(image)], capture_output=True,
                          text=True, check=True).stdout
    functions: dict[str, tuple[int, set[str]]] = {}
    for block in re.split(r"\n(?=[0-9a-f]{8} <)", text):
        header = re.match(r"[0-9a-f]{8} <([^>]+)>:", block)
        if not header:
            continue
        frame, prologue = 0, True
        callees: set[str] = set()
        for line in block.splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            op, args = parts[1].strip(), parts[2].strip() if len(parts) > 2 else ""
            if prologue and op in ("push", "push.w", "stmdb"):
                if op != "stmdb" or args.startswith("sp!"):
                    frame += 4 * _register_count(args)
            elif prologue and op == "vpush":
                frame += (8 if "d" in args else 4) * _register_count(args)
            elif prologue and op in ("sub", "sub.w", "subw") and args.startswith("sp"):
                immediate = re.search(r"#(\d+)", args)
                frame += int(immediate.group(1)) if immediate else 0
            elif op.startswith("b") and prologue and op not in ("bl", "blx"):
                prologue = False
            if op in ("bl", "b.w", "b") and "<" in args:
                target = re.search(r"<([^>+]+)>", args)
                if target and target.group(1) != header.group(1):
                    callees.add(target.group(1))
        functions[header.group(1)] = (frame, callees)
    return functions


def _function_symbols(image: Path) -> set[str]:
    with image.open("rb") as handle:
        table = ELFFile(handle).get_section_by_name(".symtab")
        if not isinstance(table, SymbolTableSection):
            raise MedyateError(f"{image} has no symbol table")
        return {symbol.name for symbol in table.iter_symbols()
                if symbol["st_info"]["type"] == "STT_FUNC"}


def _register_count(args: str) -> int:
    inside = args[args.find("{") + 1:args.find("}")]
    count = 0
    for item in inside.split(","):
        item = item.strip()
        if "-" in item:
            low, high = item.split("-")
            count += int(high[1:]) - int(low[1:]) + 1
        elif item:
            count += 1
    return count


def stack_bound(build_dir: Path, image: Path, root: str = STACK_ROOT) -> StackBound:
    """Worst stack depth of a call of ``root``: the largest sum of frames along any call chain.
    Our code: GCC's own frame sizes and call edges (-fstack-usage, -fcallgraph-info=su). An
    indirect call (the model's forward/backward through the mdy_model descriptor) may reach any
    function nothing calls directly (the address-taken ones). C library functions (memcpy,
    memset...) have no call-graph files: their frames come from their prologues in the
    disassembly, followed through their direct calls."""
    frames, calls = _call_graph(build_dir)
    library = _library_frames(image, image.stat().st_mtime)
    called = {target for targets in calls.values() for target in targets}
    linked = _function_symbols(image)
    entry_points = {"main", "Reset_Handler", "_exit", "_sbrk", "mdy_exit"}
    indirect = sorted(name for name in frames if name not in called
                      and name.split(":")[-1] in linked and name not in entry_points
                      and not name.endswith("_Handler") and "mdy_fault" not in name)
    notes: list[str] = []
    unbounded: list[str] = []
    memo: dict[str, tuple[int, list[str]]] = {}

    def resolve(name: str) -> str:
        if name in frames or name in library:
            return name
        base = name.split(":")[-1]
        return base

    def depth(name: str, path: tuple[str, ...]) -> tuple[int, list[str]]:
        name = resolve(name)
        if name in path:
            unbounded.append(f"recursion through {name}")
            return 0, [name]
        if name in memo:
            return memo[name]
        if name in frames:
            own, qualifier = frames[name]
            if qualifier.startswith("dynamic") and "bounded" not in qualifier:
                unbounded.append(f"{name} has a dynamic frame")
            targets = set(calls.get(name, set()))
            if "__indirect_call" in targets:
                targets.discard("__indirect_call")
                targets.update(indirect)
        elif name in library:
            own, targets = library[name][0], set(library[name][1])
        else:
            notes.append(f"{name}: no frame information (counted as 0)")
            own, targets = 0, set()
        best, chain = 0, []
        for target in sorted(targets):
            sub, sub_chain = depth(target, (*path, name))
            if sub > best:
                best, chain = sub, sub_chain
        memo[name] = (own + best, [name.split(":")[-1], *chain])
        return memo[name]

    if resolve(root) not in frames:
        raise MedyateError(f"{root} is not in the call graph of {build_dir / ARM_DIR}")
    total, chain = depth(root, ())
    # An interrupt (the SysTick cycle counter) can arrive at the deepest point: the core stacks
    # an extended frame (26 words with the FPU context) and runs the handler.
    handler = max((frames[name][0] for name in frames if name.endswith("SysTick_Handler")),
                  default=0)
    total += EXCEPTION_FRAME_BYTES + handler
    notes.append(f"includes {EXCEPTION_FRAME_BYTES + handler} B for an interrupt (FPU context "
                 "frame and the SysTick handler)")
    notes = sorted(set(notes))
    if unbounded:
        return StackBound(root, None, chain, sorted(set(unbounded)) + notes)
    return StackBound(root, total, chain, notes)
