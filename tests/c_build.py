"""Build C sources into a shared library for ctypes-based tests.

``build_library`` compiles the given files with the project's C flags into a temporary shared
library and loads it. Without gcc the calling test is skipped, except in CI (``CI=true``)
where a missing compiler is a failure: the C side must never go untested there silently.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from medyate_mcu.codegen.c_interface import REQUIRED_CFLAGS

ROOT = Path(__file__).resolve().parents[1]

# The project's flags for firmware C: the ones every engine build takes.
PROJECT_FLAGS: tuple[str, ...] = REQUIRED_CFLAGS


def require_gcc() -> str:
    """Path of gcc; skip the test when it is missing (fail when ``CI=true``)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gcc is required in CI to test the C firmware")
        pytest.skip("gcc is not installed")
    return gcc


def compile_objects(sources: Sequence[Path], flags: Sequence[str], out_dir: Path) -> None:
    """Compile each source to an object file only (a warnings check); raise with gcc's output."""
    gcc = require_gcc()
    for source in sources:
        _run([gcc, *flags, "-c", str(source), "-o", str(out_dir / f"{source.stem}.o")])


def build_library(sources: Sequence[Path], out_dir: Path, name: str = "lib",
                  extra_flags: Sequence[str] = ("-O2",)) -> ctypes.CDLL:
    """Compile ``sources`` with the project flags into ``out_dir/<name>.so`` and load it."""
    gcc = require_gcc()
    out = out_dir / f"{name}.so"
    _run([gcc, *PROJECT_FLAGS, *extra_flags, "-shared", "-fPIC",
          *(str(s) for s in sources), "-o", str(out), "-lm"])
    return ctypes.CDLL(str(out))


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}\n{result.stdout}{result.stderr}")
