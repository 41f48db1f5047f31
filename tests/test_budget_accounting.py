"""The budget bounds every byte of engine RAM the linker places (docs/design.md §9).

Property over many budgets (every residue mod 8 around several values, and the exact minimum that
the planner reports), for the bundled demo model and a small user model: the plan never exceeds
the budget and leaves less than one alignment slot unused, and the minimum is exact (it plans,
one byte less is refused). Many plans are cheap, builds are not: a handful of builds at different
residues (host shared libraries, and Cortex-M ELFs) show that the image's engine RAM is the plan,
byte for byte, read from the symbols and their addresses.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from arm_support import require_tool
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from model_builders import INPUT_SHAPE, build_test_model

from medyate_mcu.boards import get_board
from medyate_mcu.codegen.folder import Project
from medyate_mcu.graph import Graph, OpType, export_onnx, load_onnx
from medyate_mcu.method.lara import LaraSettings, LayerRanking, backbone_fingerprint
from medyate_mcu.method.planner import InfeasibleBudgetError, plan_budget
from medyate_mcu.method.trainer import replace_classifier
from medyate_mcu.planning.arena import ALIGNMENT
from medyate_mcu.run.verify import memory_checks
from medyate_mcu.toolchain.arm import build_firmware, size_report
from medyate_mcu.toolchain.compile import CompileOptions, compile_project, default_ranking_path
from medyate_mcu.toolchain.host import make
from medyate_mcu.zoo import default_model_path

CLASSES = 10  # the digits task that the builds embed
SEED = 0


def user_model(folder: Path) -> Path:
    """DepthwiseSeparable (tests/model_builders.py) as .onnx, its ranking beside it (deeper
    layers first: no LaRa run needed to test the accounting)."""
    path = folder / "user.onnx"
    onnx.save(export_onnx(build_test_model("depthwise_separable"), torch.zeros(1, *INPUT_SHAPE)),
              path)
    graph = load_onnx(path)
    convs = [node.name for node in graph.nodes_of(OpType.CONV)]
    LayerRanking(backbone_fingerprint(graph), "shapes", LaraSettings(),
                 {name: float(i) for i, name in enumerate(convs)}).save(
        default_ranking_path(path))
    return path


@pytest.fixture(scope="module", params=["demo", "user"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "demo":
        return default_model_path()
    return user_model(tmp_path_factory.mktemp("user"))


def headed(model: Path) -> tuple[Graph, list[str]]:
    """The graph as `compile --data digits` plans it, and its ranking."""
    graph = load_onnx(model)
    ranking = LayerRanking.load(default_ranking_path(model), graph).ranking
    return replace_classifier(graph, CLASSES, SEED), ranking


def minimum_of(graph: Graph, ranking: list[str]) -> int:
    with pytest.raises(InfeasibleBudgetError) as info:
        plan_budget(graph, ranking, 1000)
    return info.value.minimum


def test_every_budget_is_held_and_the_minimum_is_exact(model: Path) -> None:
    graph, ranking = headed(model)
    minimum = minimum_of(graph, ranking)
    plan_budget(graph, ranking, minimum)
    with pytest.raises(InfeasibleBudgetError):
        plan_budget(graph, ranking, minimum - 1)
    bases = [minimum, minimum + 1000, minimum + 10_000, 2 * minimum, 204_800, 307_200]
    budgets = sorted({base + r for base in bases for r in range(-8, 16) if base + r > 0})
    refused = 0
    for budget in budgets:
        try:
            plan = plan_budget(graph, ranking, budget)
        except InfeasibleBudgetError as exc:
            assert budget < minimum and exc.minimum == minimum
            refused += 1
            continue
        assert budget >= minimum
        parts = [*plan.memory.parts().values(), plan.pool_bytes]
        assert all(part % ALIGNMENT == 0 for part in parts), (budget, parts)
        assert plan.total_bytes == sum(parts) <= budget
        assert budget - plan.total_bytes < ALIGNMENT
        assert plan.pool_bytes >= min(cost.channel_bytes for cost in plan.costs)
    assert refused == 8  # minimum - 8 .. minimum - 1


def compile_build(model: Path, budget: int, out: Path, board: str | None = None) -> Path:
    compile_project(CompileOptions(model=model, budget=budget, board=board, data="digits",
                                   embed=4, seed=SEED), out)
    return out


def engine_ram_of_image(image: Path) -> int:
    """The engine's RAM in a built image, from its symbols: every mdy_ data object in a writable
    section starts on an ALIGNMENT boundary, so it holds its size rounded up to that."""
    with image.open("rb") as handle:
        elf = ELFFile(handle)
        table = elf.get_section_by_name(".symtab")
        assert table is not None
        writable = {i for i, section in enumerate(elf.iter_sections())
                    if section["sh_flags"] & SH_FLAGS.SHF_WRITE
                    and not section.name.startswith(".data.rel.ro")}
        symbols = [(s["st_value"], s["st_size"]) for s in table.iter_symbols()
                   if s.name.startswith("mdy_") and s["st_info"]["type"] == "STT_OBJECT"
                   and isinstance(s["st_shndx"], int) and s["st_shndx"] in writable]
    assert symbols and all(address % ALIGNMENT == 0 for address, _ in symbols)
    return sum(-(-size // ALIGNMENT) * ALIGNMENT for _, size in symbols)


def test_host_images_hold_the_plan_at_every_residue(model: Path, tmp_path: Path) -> None:
    """Host shared libraries at the minimum and at budgets of several residues mod 8: the
    image's engine RAM is the plan byte for byte, and within the budget."""
    graph, ranking = headed(model)
    minimum = minimum_of(graph, ranking)
    for budget in (minimum, minimum + 4 - minimum % 8 + 8, 204_804, 204_807):
        build = compile_build(model, budget, tmp_path / str(budget))
        library = make(build, "lib")
        _, plan, _, _ = Project.open(build).reference()
        assert engine_ram_of_image(library) == plan.total_bytes <= budget
        failed = [check for check in memory_checks(library, plan) if not check.ok]
        assert not failed, failed


@pytest.mark.parametrize("board_name", ["qemu-mps2-an386"])
def test_cortex_m_images_hold_the_plan(model: Path, board_name: str, tmp_path: Path) -> None:
    """Cortex-M ELFs at a budget = 4 (mod 8), the case that used to overflow by 4 B, and at the
    minimum: the ELF's engine RAM is the plan and the build reports no problem."""
    require_tool("arm-none-eabi-gcc")
    graph, ranking = headed(model)
    board = get_board(board_name)
    for budget in (minimum_of(graph, ranking), 204_804):
        build = compile_build(model, budget, tmp_path / str(budget), board_name)
        image = build_firmware(Project.open(build))
        _, plan, _, _ = Project.open(build).reference()
        report = size_report(image, board, budget)
        assert engine_ram_of_image(image) == report.engine_bytes == plan.total_bytes <= budget
        assert report.problems() == []
