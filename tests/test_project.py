"""`compile_project` as a library call and the `Project` it returns, against what the written
folder itself says: the manifest read back, the plan rebuilt from it, the generated data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from medyate_mcu.codegen.folder import Project
from medyate_mcu.codegen.project import MANIFEST
from medyate_mcu.errors import MedyateError
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.zoo import default_model_path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path]:
    folder = tmp_path_factory.mktemp("project")
    model = folder / "demo.onnx"
    shutil.copy(default_model_path(), model)
    shutil.copy(default_model_path().with_suffix(".lara.json"), folder / "demo.lara.json")
    said: list[str] = []
    project = compile_project(CompileOptions(model=model, budget=200 * 1024, data="digits",
                                             embed=12, epochs=2), folder / "b", say=said.append)
    assert said == []  # the ranking is beside the model: no LaRa, nothing to tell
    return project, model


def test_the_returned_project_is_the_folder(compiled: tuple[Project, Path]) -> None:
    project, _ = compiled
    opened = Project.open(project.folder)
    assert opened.manifest == project.manifest
    assert opened.manifest_text == (project.folder / MANIFEST).read_text()
    assert json.loads(opened.manifest_text)["budget"] == 200 * 1024
    rebuilt, carried = opened.reference(), project.reference()
    assert rebuilt.plan.memory.schedule.candidates == carried.plan.memory.schedule.candidates
    assert rebuilt.plan.pool_bytes == carried.plan.pool_bytes
    assert rebuilt.settings == carried.settings and carried.settings.epochs == 2
    data_h = (project.folder / "data.h").read_text()
    assert re.search(r"#define MDY_TRAIN_SAMPLES (\d+)u", data_h).group(1) == "12"
    assert project.embedded_samples == 12 and opened.embedded_samples is None


def test_a_host_build_has_no_board(compiled: tuple[Project, Path]) -> None:
    project, _ = compiled
    assert project.board is None
    with pytest.raises(MedyateError, match="compiled without --board"):
        project.require_board()
    assert project.firmware_path("serial") == project.folder / "arm" / "medyate_serial.elf"


def test_open_refuses_what_is_not_a_build(tmp_path: Path) -> None:
    with pytest.raises(MedyateError, match=re.escape(f"has no {MANIFEST}")):
        Project.open(tmp_path)
    (tmp_path / MANIFEST).write_text('{"budget": "300kB"}')
    with pytest.raises(MedyateError, match="is damaged"):
        Project.open(tmp_path)


def test_the_reference_refuses_a_changed_model(compiled: tuple[Project, Path],
                                               tmp_path: Path) -> None:
    project, model = compiled
    copy = tmp_path / "b"
    shutil.copytree(project.folder, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    changed = tmp_path / "changed.onnx"
    changed.write_bytes(model.read_bytes() + b"\0")
    manifest["model_path"] = str(changed)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(MedyateError, match="changed since the build"):
        Project.open(copy).reference()
