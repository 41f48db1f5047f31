"""Whole networks: torch -> ONNX file -> IR -> reference forward, checked against onnxruntime."""

from __future__ import annotations

import onnx
import pytest
import torch
from model_builders import INPUT_SHAPE, TEST_MODELS, build_test_model, max_abs_error_vs_onnxruntime

from medyate_mcu.graph import OpType, ReferenceNet, export_onnx, import_torch, load_onnx


@pytest.fixture(scope="module", params=sorted(TEST_MODELS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    module = build_test_model(request.param)
    model = export_onnx(module, torch.zeros(1, *INPUT_SHAPE))
    path = tmp_path_factory.mktemp("models") / f"{request.param}.onnx"
    onnx.save(model, path)
    return request.param, module, model, path


def test_reference_forward_matches_onnxruntime(exported) -> None:
    name, _, model, path = exported
    graph = load_onnx(path)
    assert max_abs_error_vs_onnxruntime(graph, model, samples=8) <= 1e-5, name


def test_reference_forward_matches_the_torch_module(exported) -> None:
    _, module, _, path = exported
    graph = load_onnx(path)
    x = torch.randn(8, *INPUT_SHAPE)
    with torch.no_grad():
        assert (ReferenceNet(graph)(x) - module(x)).abs().max().item() <= 1e-5


def test_passes_leave_no_batch_norm_or_identity(exported) -> None:
    _, _, _, path = exported
    ops = {node.op for node in load_onnx(path).nodes}
    assert OpType.BATCH_NORM not in ops and OpType.IDENTITY not in ops
    assert OpType.CONV in ops and OpType.LINEAR in ops


def test_torch_import_equals_file_import(exported) -> None:
    _, module, _, path = exported
    from_file = load_onnx(path)
    from_module = import_torch(module, torch.zeros(3, *INPUT_SHAPE))  # batch is cut to 1
    assert [n.op for n in from_file.nodes] == [n.op for n in from_module.nodes]
    assert from_file.shapes == from_module.shapes


def test_shapes_match_the_torch_module_activations() -> None:
    """Shape inference against the shapes torch itself produces, layer by layer."""
    module = build_test_model("resnet")
    graph = import_torch(module, torch.zeros(1, *INPUT_SHAPE))
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[1:])))
             for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    module(torch.zeros(1, *INPUT_SHAPE))
    for hook in hooks:
        hook.remove()
    inferred = sorted(graph.shapes[n.output] for n in graph.nodes_of(OpType.CONV))
    assert inferred == sorted(seen)


def test_node_names_come_from_module_paths() -> None:
    graph = import_torch(build_test_model("mobilenetv2"), torch.zeros(1, *INPUT_SHAPE))
    names = [node.name for node in graph.nodes]
    assert "classifier" in names
    assert any(name.startswith("blocks.2.conv") for name in names)
    assert len(set(names)) == len(names)
