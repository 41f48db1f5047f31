"""Build a generated project with the host C compiler (the training program and library, and the
serial firmware, whose UART is then a 127.0.0.1 TCP port or stdin/stdout: the whole serial path
is tested without a board or an emulator), and read the RAM its image declares."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from medyate_mcu.codegen.c_interface import REQUIRED_CFLAGS
from medyate_mcu.codegen.serial import SERIAL_MAIN
from medyate_mcu.errors import MedyateError

LIBRARY = "libmedyate.so"
PROGRAM = "medyate_train"
SERIAL_PROGRAM = "medyate_serial"
SERIAL_C_FLAGS = ("-O2", *REQUIRED_CFLAGS)


def host_compiler() -> str:
    for name in (os.environ.get("CC", ""), "gcc", "cc", "clang"):
        if name and shutil.which(name):
            return name
    raise MedyateError("no C compiler found (gcc, cc or clang); install one, e.g. "
                       "`apt-get install gcc make`")


def make(build_dir: Path, target: str, compiler: str | None = None) -> Path:
    """Run ``make -C build_dir target`` with the host compiler (or ``compiler``); the built
    file's path."""
    if not (build_dir / "Makefile").is_file():
        raise MedyateError(f"{build_dir} has no Makefile: is it a `medyate-mcu compile` output?")
    if shutil.which("make") is None:
        raise MedyateError("`make` is not installed; install it, e.g. `apt-get install make`")
    result = subprocess.run(["make", "-s", "-B", "-C", str(build_dir), target,
                             f"CC={compiler or host_compiler()}"], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-12:]
        raise MedyateError(f"building {target} in {build_dir} failed:\n" + "\n".join(tail))
    return build_dir / (LIBRARY if target == "lib" else PROGRAM)


def build_host_serial(build_dir: Path) -> Path:
    """Compile the serial firmware for this machine (UART = TCP socket or stdin/stdout)."""
    sources = [build_dir / "model.c", build_dir / "input.c", build_dir / SERIAL_MAIN,
               build_dir / "medyate" / "hal" / "uart_host.c",
               *sorted((build_dir / "medyate" / "kernels").glob("*.c")),
               *sorted((build_dir / "medyate" / "runtime").glob("*.c"))]
    missing = [str(s.relative_to(build_dir)) for s in sources if not s.is_file()]
    if missing:
        raise MedyateError(f"{build_dir} lacks {', '.join(missing)}: compile it again with this "
                           "version of medyate-mcu")
    program = build_dir / SERIAL_PROGRAM
    includes = [f"-I{build_dir / d}" for d in (".", "medyate/kernels", "medyate/runtime",
                                               "medyate/hal")]
    result = subprocess.run([host_compiler(), *SERIAL_C_FLAGS, *includes, "-o", str(program),
                             *map(str, sources), "-lm"], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-12:]
        raise MedyateError("building the host serial firmware failed:\n" + "\n".join(tail))
    return program


def symbol_sizes(image: Path, prefix: str = "mdy_") -> dict[str, int]:
    """Sizes of the RAM data objects named ``prefix*`` in an ELF image: objects in writable
    sections (.bss, .data). Constants are left out: .rodata, and .data.rel.ro, where a shared
    library keeps constants that hold addresses (in flash on a microcontroller)."""
    with image.open("rb") as handle:
        elf = ELFFile(handle)
        table = elf.get_section_by_name(".symtab") or elf.get_section_by_name(".dynsym")
        if table is None:
            raise MedyateError(f"{image} has no symbol table")
        writable = {index for index, section in enumerate(elf.iter_sections())
                    if section["sh_flags"] & SH_FLAGS.SHF_WRITE
                    and not section.name.startswith(".data.rel.ro")}
        return {symbol.name: symbol["st_size"] for symbol in table.iter_symbols()
                if symbol.name.startswith(prefix) and symbol["st_info"]["type"] == "STT_OBJECT"
                and isinstance(symbol["st_shndx"], int) and symbol["st_shndx"] in writable}
