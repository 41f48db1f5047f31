"""Build a generated project with the host C compiler, and read the RAM its image declares."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from medyate_mcu.errors import MedyateError

LIBRARY = "libmedyate.so"
PROGRAM = "medyate_train"


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
