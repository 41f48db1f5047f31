"""Where the project's data folders (boards/, firmware/, codegen_templates/) are.

In a source checkout (and an editable install) they sit at the repository's top level; a wheel
carries them inside the package as ``medyate_mcu/_data/<name>``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ folder is missing from this installation of medyate-mcu")
