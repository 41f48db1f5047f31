"""The generated model.c read as a reviewer reads it: the arena map at its top names every arena
buffer, the passes use those names only, each call reads and writes only buffers the map says are
live at its step, live buffers never share bytes, and the shape structs are filled by field name.
The oracles are the text of model.c itself, the graph's shapes and the kernel headers, never the
memory planner's own numbers.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import torch
from c_build import PROJECT_FLAGS, ROOT, require_gcc
from torch import nn

from medyate_mcu.codegen.generate import c_identifier, render_project
from medyate_mcu.graph import export_onnx, load_onnx
from medyate_mcu.graph.ir import Graph, OpType
from medyate_mcu.method.costs import channel_cost
from medyate_mcu.method.planner import BudgetPlan, minimum_budget, plan_budget
from medyate_mcu.method.trainer import TrainSettings, replace_classifier
from medyate_mcu.zoo import default_model_path

KERNELS = ROOT / "firmware/kernels"
MAP_LINE = re.compile(r"^#define (\w+)\s+(\d+) /\*\s+(\d+)\s+(\d+)-(\d+)\s+(.+) \*/$")
ARENA_USE = re.compile(r"ARENA_(?:F|U8)\(([^()]*)\)")


@dataclass(frozen=True)
class MapEntry:
    offset: int
    size: int
    first: int
    last: int
    holds: str


def pooling_graph(folder: Path) -> Graph:
    """Max-pool, average pool, ReLU, ReLU6, residual Adds, and a Flatten and a ReLU that cannot
    run in place (their input is read twice)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6())
            self.pool = nn.AvgPool2d(2)
            self.head = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            y = self.pool(self.b(y) + y)
            return self.head(torch.flatten(y, 1) + torch.flatten(torch.relu(y), 1))

    torch.manual_seed(0)
    path = folder / "pooling.onnx"
    onnx.save(export_onnx(Net(), torch.zeros(1, 3, 16, 16)), path)
    return load_onnx(path)


def plan_for(graph: Graph) -> BudgetPlan:
    ranking = [node.name for node in graph.nodes_of(OpType.CONV)]
    costs = [channel_cost(graph, graph.node(name)) for name in ranking]
    smallest, _ = minimum_budget(graph, ranking, costs)
    return plan_budget(graph, ranking, 2 * smallest, alpha=1.0)


@pytest.fixture(scope="module", params=["demo", "pooling"])
def generated(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, dict[str, str]]:
    if request.param == "demo":
        graph = replace_classifier(load_onnx(default_model_path()), 10, 0)
    else:
        graph = pooling_graph(tmp_path_factory.mktemp("model"))
    files = render_project(graph, plan_for(graph), TrainSettings(epochs=2), 10, {})
    return graph, files


def arena_map(source: str) -> dict[str, MapEntry]:
    entries = {}
    for line in source.splitlines():
        found = MAP_LINE.match(line)
        if found:
            name, *numbers, holds = found.groups()
            entries[name] = MapEntry(*map(int, numbers), holds)
    return entries


def calls_by_step(source: str) -> dict[int, list[str]]:
    """The code lines of forward() and backward() under each ``/* [step] ... */`` comment."""
    steps: dict[int, list[str]] = {}
    current: int | None = None
    for line in source.splitlines():
        marker = re.match(r"^    /\* \[(\d+)\] ", line)
        if marker:
            current = int(marker.group(1))
            steps.setdefault(current, [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            steps[current].append(line)
    return steps


def test_every_arena_argument_is_a_name_from_the_map(
        generated: tuple[Graph, dict[str, str]]) -> None:
    source = generated[1]["model.c"]
    names = arena_map(source)
    assert names, "no arena map at the top of model.c"
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    used = {arg for line in code.splitlines() if not line.startswith("#define ARENA_")
            for arg in ARENA_USE.findall(line)}
    assert used <= set(names), f"arena arguments not in the map: {sorted(used - set(names))}"
    assert not any(arg.isdigit() for arg in used)
    assert set(names) - used == set(), f"map entries no call uses: {set(names) - used}"
    first_pass = source.index("static void forward")
    assert all(source.index(f"#define {name} ") < first_pass for name in names)


def test_live_buffers_never_share_bytes_and_fit_the_arena(
        generated: tuple[Graph, dict[str, str]]) -> None:
    source = generated[1]["model.c"]
    arena_floats = int(re.search(r"^float mdy_arena\[(\d+)\]", source, re.M).group(1))
    entries = list(arena_map(source).items())
    for name, e in entries:
        assert e.offset + e.size <= 4 * arena_floats, name
        assert e.offset % 4 == 0 and e.first <= e.last, name
    for i, (a, ea) in enumerate(entries):
        for b, eb in entries[i + 1:]:
            live_together = ea.first <= eb.last and eb.first <= ea.last
            share_bytes = ea.offset < eb.offset + eb.size and eb.offset < ea.offset + ea.size
            assert not (live_together and share_bytes), (a, ea, b, eb)


def test_each_call_uses_only_buffers_live_at_its_step(
        generated: tuple[Graph, dict[str, str]]) -> None:
    graph, files = generated
    source = files["model.c"]
    entries = arena_map(source)
    steps = calls_by_step(source)
    # forward steps are the nodes in graph order, then the loss, then the backward steps
    assert sorted(steps)[:len(graph.nodes)] == list(range(len(graph.nodes)))
    assert min(s for s in steps if s >= len(graph.nodes)) == len(graph.nodes) + 1
    for step, lines in steps.items():
        for line in lines:
            for name in ARENA_USE.findall(line):
                entry = entries[name]
                assert entry.first <= step <= entry.last, (step, line, name, entry)


def test_buffers_are_as_large_as_the_tensors_they_hold(
        generated: tuple[Graph, dict[str, str]]) -> None:
    """Sizes read against the graph: an activation or error takes 4 bytes an element, a
    gradient mask a bit an element, a max-pool argmax a byte an output."""
    graph, files = generated
    entries = arena_map(files["model.c"])
    for node in graph.nodes:
        ident = c_identifier(node.name)
        elements = math.prod(graph.shapes[node.output])
        if f"ERR_{ident}" in entries:
            assert entries[f"ERR_{ident}"].size == 4 * elements
        if f"ACT_{ident}" in entries:
            assert entries[f"ACT_{ident}"].size == 4 * elements
        if f"MASK_{ident}" in entries:
            assert entries[f"MASK_{ident}"].size == math.ceil(elements / 8)
        if f"ARGMAX_{ident}" in entries:
            assert entries[f"ARGMAX_{ident}"].size == elements
            assert node.op is OpType.MAX_POOL


def test_shape_structs_are_filled_by_field_name(
        generated: tuple[Graph, dict[str, str]]) -> None:
    graph, files = generated
    source = files["model.c"]
    for node in graph.nodes:
        if node.op not in (OpType.CONV, OpType.MAX_POOL, OpType.AVG_POOL):
            continue
        ident = c_identifier(node.name)
        body = re.search(rf"shape_{ident} = \{{(.*?)\}};", source, re.S)
        assert body is not None, node.name
        fields = dict(re.findall(r"\.(\w+) = (\d+)", body.group(1)))
        c, h, w = graph.shapes[node.inputs[0]]
        oc, oh, ow = graph.shapes[node.output]
        expected = {"in_h": h, "in_w": w, "out_h": oh, "out_w": ow}
        if node.op is OpType.CONV:
            kernel = node.params["weight"].shape[2:]
            expected |= {"in_c": c, "out_c": oc, "groups": c // node.params["weight"].shape[1]}
        else:
            kernel = node.pool.window.kernel
            expected |= {"c": c}
        expected |= {"k_h": kernel[0], "k_w": kernel[1]}
        assert {k: int(fields[k]) for k in expected} == expected, node.name


def test_generated_model_compiles_with_the_kernel_headers(
        generated: tuple[Graph, dict[str, str]], tmp_path: Path) -> None:
    gcc = require_gcc()
    for name, text in generated[1].items():
        (tmp_path / name).write_text(text)
    result = subprocess.run([gcc, *PROJECT_FLAGS, "-pedantic", "-fsyntax-only", f"-I{tmp_path}",
                             f"-I{KERNELS}", f"-I{ROOT / 'firmware/runtime'}",
                             str(tmp_path / "model.c")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# conv_stem.h: the stem's forward, tried first by mdy_conv2d_forward; the stem's errors go
# through conv.h's general backward kernels (and conv_window.h's 3x3 paths)
FAST_FORWARDS = {"mdy_conv3x3_stride2_forward": "mdy_conv2d_backward_input"}


def test_kernel_names_pair_forward_and_backward() -> None:
    """Every mdy_<op>_forward a kernel header declares has its mdy_<op>_backward (whole, or
    split as _backward_input / _backward_weight...) in the same header; the int8 kernels
    (mdy_q8_*) are forward only: the int8 region passes no error (docs/quantization.md §5).
    A forward-only fast path internal to conv.c (FAST_FORWARDS) has its backward in conv.h."""
    conv = set(re.findall(r"\b(mdy_\w+)\s*\(", (KERNELS / "conv.h").read_text()))
    for path, backward in FAST_FORWARDS.items():
        assert backward in conv, f"{path}: its backward {backward} is not in conv.h"
    for header in sorted(KERNELS.glob("*.h")):
        declared = set(re.findall(r"\b(mdy_\w+)\s*\(", header.read_text()))
        for forward in (n for n in declared if n.endswith("_forward")
                        and not n.startswith("mdy_q8_") and n not in FAST_FORWARDS):
            op = forward.removesuffix("_forward")
            assert any(n == f"{op}_backward" or n.startswith(f"{op}_backward_")
                       for n in declared), f"{header.name}: {forward} has no backward"
