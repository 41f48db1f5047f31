"""The package's imports run one way down the pipeline (docs/design.md §0): graph -> method |
planning -> codegen -> toolchain -> run | device -> cli, with `run` and `device` side by side;
outside the CLI no package import is placed inside a function (where it would hide a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import medyate_mcu

PACKAGE = Path(medyate_mcu.__file__).parent
# Rank of each sub-package; a module may import its own package and lower ranks only. The
# shared leaves (errors, units, boards, resources, outputs) sit under everything; the bundled
# models and data sets (zoo) train with the method's code and serve codegen and above.
RANKS = {"errors": 0, "units": 0, "resources": 0, "boards": 1, "outputs": 1, "graph": 2,
         "quant": 2.5,  # int8 scheme, calibration, integer reference: graph-level, no planning
         "planning": 3, "method": 4, "zoo": 5, "codegen": 6, "toolchain": 7, "run": 8,
         "device": 8, "experiments": 9, "cli": 10}
SIBLINGS = {frozenset({"run", "device"})}  # same rank, neither imports the other


def _part(module: str) -> str:
    """The sub-package of ``medyate_mcu.<part>[...]``."""
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """Every import of a medyate_mcu module in ``path``: (module, node, at top level)."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "medyate_mcu" else \
                [f"medyate_mcu.{alias.name}" for alias in node.names
                 if (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file()]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("medyate_mcu."):
                found.append((name, node, id(node) in top))
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(".".join(path.relative_to(PACKAGE).with_suffix("").parts), path)
            for path in sorted(PACKAGE.rglob("*.py")) if path.parent != PACKAGE]


def test_every_sub_package_has_a_rank() -> None:
    parts = {name.split(".")[0] for name, _ in _modules()}
    parts |= {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert parts <= set(RANKS), parts - set(RANKS)


def test_imports_run_one_way() -> None:
    wrong = []
    for name, path in [*_modules(), *[(p.stem, p) for p in PACKAGE.glob("*.py")]]:
        source = name.split(".")[0]
        if source == "__init__":
            continue
        for module, node, _ in _imports(path):
            target = _part(module)
            if target == source:
                continue
            if RANKS[target] > RANKS[source] or frozenset({source, target}) in SIBLINGS:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {module}")
    assert not wrong, wrong


def test_no_package_import_inside_a_function_outside_the_cli() -> None:
    hidden = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {module}"
              for name, path in _modules() if not name.startswith("cli.")
              for module, node, top in _imports(path) if not top]
    assert not hidden, hidden


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    """The scanner itself: an upward import inside a function is found, with its line."""
    path = tmp_path / "bad.py"
    path.write_text("import medyate_mcu.graph\n\n\ndef f():\n"
                    "    from medyate_mcu.run.verify import verify_build\n")
    found = [(module, node.lineno, top) for module, node, top in _imports(path)]
    assert found == [("medyate_mcu.graph", 1, True), ("medyate_mcu.run.verify", 5, False)]
