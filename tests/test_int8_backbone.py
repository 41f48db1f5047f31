"""The int8 frozen backbone end to end (docs/quantization.md): `compile --backbone int8` on the
bundled model with a ranking that leaves most of the network frozen, host `verify` holding every
int8 output bit-exact to the numpy integer reference and the float part to the float engine's
tolerances; small real errors injected into the generated int8 code fail it; a QDQ model from
onnxruntime's `quantize_static` compiles and verifies; the planned RAM against a lower bound
worked out independently of the planner."""

from __future__ import annotations

import ctypes
import math
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from model_builders import INPUT_SHAPE, build_test_model, write_tail_first_ranking
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from medyate_mcu.codegen.folder import Project
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import export_onnx, load_onnx
from medyate_mcu.graph.ir import Graph, OpType
from medyate_mcu.graph.onnx_import import import_onnx_model
from medyate_mcu.planning.memory import Backbone, engine_memory, int8_layout
from medyate_mcu.quant.blocks import block_buffers, depthwise_scratch
from medyate_mcu.quant.calibrate import calibrate, dequantized_graph
from medyate_mcu.quant.lowering import fusing_conv
from medyate_mcu.quant.qdq import load_quantized
from medyate_mcu.run.engine_lib import CODES, EngineLibrary, MdyModel
from medyate_mcu.run.verify import verify_build
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.toolchain.host import make
from medyate_mcu.zoo import architectures, default_model_path
from medyate_mcu.zoo.tasks import load_task

SAMPLES = 32
BUDGET = 120 * 1024


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory: pytest.TempPathFactory) -> Project:
    folder = tmp_path_factory.mktemp("int8")
    ranking = write_tail_first_ranking(load_onnx(default_model_path()), folder / "tail.lara.json")
    return compile_project(CompileOptions(budget=BUDGET, ranking=ranking, backbone="int8",
                                          epochs=2, embed=32), folder / "build", say=lambda _: None)


def failed(checks: list) -> list[str]:
    return [c.name for c in checks if not c.ok]


def test_the_int8_build_verifies_bit_exact(int8_build: Project) -> None:
    plan = int8_build.reference().plan
    assert plan.memory.backbone is Backbone.INT8 and len(plan.memory.int8_nodes) >= 20
    model_c = (int8_build.folder / "model.c").read_text()
    assert "mdy_q8_block_forward(" in model_c and "mdy_q8_depthwise_inplace_forward(" in model_c
    checks = verify_build(int8_build, epochs=1, samples=SAMPLES)
    assert not failed(checks), [c for c in checks if not c.ok]
    # every int8 op writes a tensor the verifier reads, but a ReLU fused into its conv and the
    # inside of a fused block: each sample, each of those tensors, compared
    graph, memory = plan.memory.schedule.graph, plan.memory
    layout = int8_layout(graph, memory.int8_nodes)
    written = [n for n in graph.nodes if n.name in memory.int8_nodes
               and layout.block_of(n) is None
               and fusing_conv(graph, n, memory.int8_nodes) is None]
    int8 = next(c for c in checks if "int8 forward" in c.name)
    assert int8.measured == f"{SAMPLES * len(written)} tensors, 0 differ"


# name -> (an edit of model.c, the check that must fail). Small real errors: the first
# requantization multiplier 0.1 % high (2^-10), one int32 bias one up (a fraction of an output
# LSB: it shows on some element of some sample), the boundary's dequantization scale 1e-4 high
# (ten times the logits' tolerance, which it reaches through the float part).
def _first_multiplier(text: str) -> tuple[str, str]:
    match = re.search(r"(static const int32_t qm_\w+\[\d+\] = \{\n    )(\d+)", text)
    assert match is not None
    return match.group(0), match.group(1) + str(int(match.group(2)) + (int(match.group(2)) >> 10))


def _first_bias(text: str) -> tuple[str, str]:
    match = re.search(r"(static const int32_t qb_\w+\[\d+\] = \{\n    )(-?\d+)", text)
    assert match is not None
    return match.group(0), match.group(1) + str(int(match.group(2)) + 1)


def _dequantize_scale(text: str) -> tuple[str, str]:
    match = re.search(r"(mdy_dequantize\(\d+u, [^,]+, )([0-9.e+-]+)f", text)
    assert match is not None
    bumped = np.float32(match.group(2)) * np.float32(1.0001)
    return match.group(0), f"{match.group(1)}{float(bumped):.9g}f"


INJECTIONS = {
    "a multiplier one Q31 step up": (_first_multiplier, "int8 forward"),
    "a bias one up": (_first_bias, "int8 forward"),
    "the boundary's scale 1e-4 high": (_dequantize_scale, "forward (logits)"),
}


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_an_injected_int8_error_fails_verify(int8_build: Project, tmp_path: Path,
                                             name: str) -> None:
    edit, check = INJECTIONS[name]
    folder = tmp_path / "build"
    shutil.copytree(int8_build.folder, folder)
    model_c = folder / "model.c"
    text = model_c.read_text()
    old, new = edit(text)
    model_c.write_text(text.replace(old, new, 1))
    checks = verify_build(Project.open(folder), epochs=1, samples=SAMPLES)
    assert any(check in c for c in failed(checks)), (name, failed(checks))


class _Samples(CalibrationDataReader):
    def __init__(self, name: str, x: np.ndarray) -> None:
        self.rows = iter([{name: row[None]} for row in x])

    def get_next(self) -> dict | None:
        return next(self.rows, None)


def test_a_quantize_static_qdq_model_compiles_and_verifies(tmp_path: Path) -> None:
    source = default_model_path()
    graph = load_onnx(source)
    task = load_task("digits", graph, seed=0)
    model = onnx.load(source)
    qdq = tmp_path / "demo_qdq.onnx"
    quantize_static(model, qdq, _Samples(model.graph.input[0].name, task.x_train[:16]),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    ranking = write_tail_first_ranking(load_quantized(qdq)[0], tmp_path / "demo_qdq.lara.json")
    project = compile_project(CompileOptions(model=qdq, data="digits", budget=BUDGET,
                                             ranking=ranking, backbone="int8", epochs=1,
                                             embed=32), tmp_path / "build", say=lambda _: None)
    assert project.reference().quantization.source.lower().find("calibrated") < 0
    checks = verify_build(project, epochs=1, samples=SAMPLES)
    assert not failed(checks), [c for c in checks if not c.ok]


def test_int8_without_data_to_calibrate_is_one_clear_line(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    shutil.copy(default_model_path(), model)
    shutil.copy(default_model_path().with_name("demo_mbv2.lara.json"),
                tmp_path / "model.lara.json")
    with pytest.raises(MedyateError, match="calibrates on the task's data: give --data"):
        compile_project(CompileOptions(model=model, backbone="int8"), tmp_path / "out",
                        say=lambda _: None)
    assert not (tmp_path / "out").exists()


def _independent_lower_bound(graph: Graph, int8_nodes: frozenset[str]) -> int:
    """The most bytes any one int8-region op must hold at once, from the op's own tensors: its
    input(s) and output, at one byte an element (an in-place depthwise holds the larger of the
    two and one input channel; a fused block its input, output, scratch and accumulators), and
    the sample while the first op reads it. Worked out from the graph, not from the planner."""
    layout = int8_layout(graph, int8_nodes)
    absorbed = {n.name for b in layout.blocks for n in b.absorbed}
    in_place = {n.name for n in layout.in_place}
    bound = 0
    for node in graph.nodes:
        if node.name not in int8_nodes or node.name in absorbed:
            continue
        size = math.prod(graph.shapes[node.output])
        inputs = [math.prod(graph.shapes[t]) for t in node.inputs]
        block = next((b for b in layout.blocks if b.project is node), None)
        if block is not None:
            scratch, acc = block_buffers(graph, block)
            need = math.prod(graph.shapes[block.first.inputs[0]]) + scratch + acc + size
        elif node.name in in_place:
            need = max(size, inputs[0]) + depthwise_scratch(graph, node)
        elif node.op in (OpType.RELU, OpType.RELU6, OpType.FLATTEN):
            need = max(size, inputs[0])  # in place
        else:
            need = size + sum(inputs)
        bound = max(bound, need)
    return bound


def test_the_paper_scale_int8_peak_against_an_independent_bound() -> None:
    """MobileNetV2-w0.35 at 128 px (random weights: the peak depends only on shapes) with the
    last depthwise conv as the one candidate: the planned arena holds at least the bound and at
    most 10 % more; the int8 region's peak is the stem's input and output (48 + 64 KiB)."""
    torch.manual_seed(0)
    net = architectures.create("mobilenetv2", 10, 0.35, 128).eval()
    graph = import_onnx_model(export_onnx(net, net.example_input()), name="mbv2", origin="test")
    x = np.random.default_rng(0).standard_normal((4, 3, 128, 128)).astype(np.float32)
    graph = dequantized_graph(graph, calibrate(graph, x))
    last_depthwise = [n.name for n in graph.nodes_of(OpType.CONV)
                      if n.conv.groups > 1][-1]
    memory = engine_memory(graph, frozenset({last_depthwise}), Backbone.INT8)
    bound = _independent_lower_bound(graph, memory.int8_nodes)
    assert bound == 3 * 128 * 128 + 16 * 64 * 64
    assert bound <= memory.arena.size <= 1.1 * max(bound, memory.arena.lower_bound)
    assert not memory.arena.overlaps()


def _quantized_calls(engine: EngineLibrary) -> None:
    model_p = ctypes.POINTER(MdyModel)
    engine.lib.mdy_quantize_input.argtypes = [model_p, ctypes.c_uint32, ctypes.c_uint32,
                                              ctypes.POINTER(ctypes.c_float)]
    engine.lib.mdy_quantize_input.restype = None
    engine.lib.mdy_train_quantized.argtypes = [model_p, ctypes.c_int32,
                                               ctypes.POINTER(ctypes.c_float)]
    engine.lib.mdy_predict_quantized.argtypes = [model_p, ctypes.POINTER(ctypes.c_uint16)]


def test_an_int8_sample_filled_in_pieces_trains_as_the_float_sample(int8_build: Project) -> None:
    """mdy_quantize_input (any number of values at a time) + mdy_train_quantized: the same
    engine state, bit for bit, as mdy_train_sample on the float sample; mdy_predict_quantized
    the same label as mdy_predict. A float-input engine refuses the int8 calls."""
    library = make(int8_build.folder, "lib")
    task = load_task("digits", int8_build.reference().graph, seed=0)
    x, y = task.x_train[:20], task.y_train[:20]
    by_float = EngineLibrary(library, x[0].size, 10)
    by_int8 = EngineLibrary(library, x[0].size, 10)
    _quantized_calls(by_int8)
    by_float.init()
    by_int8.init()
    for sample, label in zip(x, y, strict=True):
        assert by_float.train_sample(sample, int(label))[0] == 0
        flat = np.ascontiguousarray(sample, np.float32).reshape(-1)
        for first in range(0, flat.size, 1000):  # in pieces of 1000 values
            piece = np.ascontiguousarray(flat[first:first + 1000])
            by_int8.lib.mdy_quantize_input(by_int8._model, first, piece.size,
                                           piece.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        assert by_int8.lib.mdy_train_quantized(by_int8._model, int(label), None) == 0
    weights = int8_build.reference().plan.memory.classifier_values
    for name, count in (("mdy_classifier", weights), ("mdy_classifier_grad", weights)):
        assert np.array_equal(by_int8.array(name, np.uint32, count),
                              by_float.array(name, np.uint32, count)), name
    for layer in int8_build.reference().plan.candidates:
        size = int8_build.reference().graph.node(layer).params["weight"].size
        assert np.array_equal(by_int8.candidate_weights(layer, size).view(np.uint32),
                              by_float.candidate_weights(layer, size).view(np.uint32)), layer
    label = ctypes.c_uint16(0)
    assert by_int8.lib.mdy_predict_quantized(by_int8._model, ctypes.byref(label)) == 0
    assert (0, label.value) == by_float.predict(x[-1])

    demo = compile_project(CompileOptions(budget=BUDGET, backbone="float32", epochs=1, embed=0),
                           int8_build.folder.parent / "float", say=lambda _: None)
    plain = EngineLibrary(make(demo.folder, "lib"), x[0].size, 10)
    _quantized_calls(plain)
    plain.init()
    assert plain.lib.mdy_train_quantized(plain._model, 0, None) == CODES["MDY_ERR_STATE"]


def test_max_pool_in_int8_and_an_int8_weight_hidden_linear(tmp_path: Path) -> None:
    """tests/model_builders' PlainCNN (16 px): conv + ReLU + padded max-pool run in int8 before
    the one candidate; the frozen hidden Linear of its head runs on int8 weights in the float
    region; its padded average pool (uneven windows) has no int8 kernel, so the report says the
    whole backbone's error is not measured, and nothing else changes. Verify passes, bit-exact."""
    model = build_test_model("plain_cnn").eval()
    path = tmp_path / "plain.onnx"
    onnx.save(export_onnx(model, torch.zeros(1, *INPUT_SHAPE)), path)
    write_tail_first_ranking(load_onnx(path), tmp_path / "plain.lara.json")
    project = compile_project(CompileOptions(model=path, data="digits", budget=16 * 1024,
                                             backbone="int8", epochs=1, embed=16),
                              tmp_path / "build", say=lambda _: None)
    memory = project.reference().plan.memory
    assert memory.int8_nodes == {"features.0", "features.1", "features.2"}
    model_c = (project.folder / "model.c").read_text()
    assert "mdy_q8_maxpool_forward(" in model_c and "mdy_linear_forward_w8(" in model_c
    assert "cannot run in int8 to measure its error (node 'features.6' (AveragePool)" in \
        (project.folder / "quantization.txt").read_text()
    checks = verify_build(project, epochs=1, samples=SAMPLES)
    assert not failed(checks), [c for c in checks if not c.ok]
    assert f"{SAMPLES * 2} tensors, 0 differ" in [c.measured for c in checks]
