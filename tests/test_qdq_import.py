"""Reading QDQ ONNX models (docs/quantization.md §7) as onnxruntime's ``quantize_static`` writes
them (QDQ format, per-channel int8 weights, int8 or uint8 activations).

Oracles: onnxruntime itself (its DequantizeLinear of each weight, bit for bit; its int8 tensors
of the whole QDQ model, op by op against the numpy integer reference on the same int8 inputs);
the scales and zero points stored in the file; and the source float model, imported without
quantization (same ops; weights within half a quantization step).

Tolerances. Weights, biases, scales and zero points: equal. Op by op (§9): at most 1 LSB, as
onnxruntime requantizes with a float32 multiplier and rounds half to even where we use a Q31
multiplier and round half away from zero; the two differ only where the exact value lies within
~2^-22 (relative) of a half-way point, so at most 1% of the elements may differ. Against the
float source: per-channel symmetric weights are ``s[o] · rint(w / s[o])``, within ``s[o] / 2``
of ``w``; int32 biases within ``s_in · s_w[o] / 2``; plus the float32 rounding of onnxruntime's
BatchNorm folding against ours, at most 2^-20 relative.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_builders import INPUT_SHAPE, build_test_model
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from medyate_mcu.errors import MedyateError, ModelError
from medyate_mcu.graph import Graph, OpType, export_onnx, load_onnx
from medyate_mcu.graph.ir import Node
from medyate_mcu.quant import qdq
from medyate_mcu.quant.int_reference import run_node
from medyate_mcu.quant.lowering import fused_activation, fusing_conv, int8_region, lower_node
from medyate_mcu.quant.qdq import load_quantized
from medyate_mcu.quant.scheme import Quantization, TensorQuant

CALIBRATION_SAMPLES = 16
RELATIVE_FOLDING = 2.0**-20
# case -> (test model, activation type, keep the Relu/Clip in the file)
CASES = {
    "mobilenetv2": ("mobilenetv2", QuantType.QInt8, False),
    "mobilenetv2-uint8": ("mobilenetv2", QuantType.QUInt8, False),
    "resnet": ("resnet", QuantType.QInt8, False),
    "resnet-kept-relu": ("resnet", QuantType.QInt8, True),
    "plain_cnn": ("plain_cnn", QuantType.QInt8, False),
    "depthwise_separable": ("depthwise_separable", QuantType.QInt8, False),
}


class _Samples(CalibrationDataReader):
    def __init__(self, name: str, samples: np.ndarray) -> None:
        self.batches = iter([{name: samples[i:i + 1]} for i in range(len(samples))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize(model: onnx.ModelProto, folder: Path, activation: QuantType,
             keep_activations: bool = False) -> Path:
    """``quant_pre_process`` (folds BatchNorm) then ``quantize_static`` in QDQ format."""
    prepared, quantized = folder / "prepared.onnx", folder / "quantized.onnx"
    quant_pre_process(model, str(prepared))
    rng = np.random.default_rng(1)
    samples = rng.standard_normal((CALIBRATION_SAMPLES, *INPUT_SHAPE)).astype(np.float32)
    quantize_static(str(prepared), str(quantized), _Samples(model.graph.input[0].name, samples),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=activation,
                    weight_type=QuantType.QInt8,
                    extra_options={"QDQKeepRemovableActivations": keep_activations})
    return quantized


@dataclass
class Case:
    name: str
    keep: bool
    source: Graph  # the float model, imported as is
    model: onnx.ModelProto  # the QDQ file
    graph: Graph
    quantization: Quantization


@functools.cache
def exported(network: str) -> onnx.ModelProto:
    return export_onnx(build_test_model(network), torch.zeros(1, *INPUT_SHAPE))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qdq")


def quantized_file(workdir: Path, key: str) -> Path:
    """The QDQ file of case ``key``, written once per module."""
    network, activation, keep = CASES[key]
    folder = workdir / key
    if not (folder / "quantized.onnx").exists():
        folder.mkdir()
        quantize(exported(network), folder, activation, keep)
    return folder / "quantized.onnx"


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest, workdir: Path) -> Case:
    path = quantized_file(workdir, request.param)
    graph, quantization = load_quantized(path)
    assert quantization is not None
    source = load_onnx_proto(exported(CASES[request.param][0]), path.parent)
    return Case(request.param, CASES[request.param][2], source, onnx.load(path), graph,
                quantization)


def load_onnx_proto(model: onnx.ModelProto, folder: Path) -> Graph:
    onnx.save(model, folder / "float.onnx")
    return load_onnx(folder / "float.onnx")


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def weighted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


def session(model: onnx.ModelProto, outputs: list[str],
            level: ort.GraphOptimizationLevel) -> ort.InferenceSession:
    """``model`` with ``outputs`` made graph outputs too."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    known = {o.name for o in extended.graph.output}
    extended.graph.output.extend(helper.make_empty_tensor_value_info(name)
                                 for name in outputs if name not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    return ort.InferenceSession(extended.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


# ---- what the file holds ----------------------------------------------------------------------

def test_weights_and_biases_are_onnxruntimes_dequantized_values_bit_for_bit(case: Case) -> None:
    nodes = weighted_nodes(case.model)
    names = [name for node in nodes for name in node.input[1:3]]
    run = session(case.model, names, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    x = np.zeros((1, *INPUT_SHAPE), np.float32)
    values = dict(zip([o.name for o in run.get_outputs()],
                      run.run(None, {run.get_inputs()[0].name: x}), strict=True))
    layers = case.graph.nodes_of(OpType.CONV, OpType.LINEAR)
    assert len(layers) == len(nodes)
    for layer, node in zip(layers, nodes, strict=True):
        transposed = node.op_type == "Gemm" and not any(
            a.name == "transB" and a.i for a in node.attribute)
        weight = values[node.input[1]].T if transposed else values[node.input[1]]
        assert np.array_equal(layer.params["weight"], weight), layer.name
        assert np.array_equal(layer.params["bias"], values[node.input[2]]), layer.name


def test_weight_quantization_is_the_files(case: Case) -> None:
    head = case.graph.producer(case.graph.output)
    assert set(case.quantization.weights) == \
        {n.name for n in case.graph.nodes_of(OpType.CONV, OpType.LINEAR)} - {head.name}
    layers = case.graph.nodes_of(OpType.CONV, OpType.LINEAR)
    for layer, node in zip(layers, weighted_nodes(case.model), strict=True):
        if layer is head:
            continue
        dq = next(n for n in case.model.graph.node if n.output[0] == node.input[1])
        quant = case.quantization.weights[layer.name]
        assert np.array_equal(quant.values, initializer(case.model, dq.input[0]))
        assert np.array_equal(quant.scales, initializer(case.model, dq.input[1]))
        assert not initializer(case.model, dq.input[2]).any()


def test_activation_scales_and_zero_points_are_the_files(case: Case) -> None:
    graph, tensors = case.graph, case.quantization.tensors
    assert set(graph.shapes) - {graph.output} <= set(tensors)
    checked = 0
    for q in case.model.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in graph.shapes or \
                q.input[0] == graph.output:
            continue
        zero = initializer(case.model, q.input[2])
        offset = 128 if zero.dtype == np.uint8 else 0
        assert tensors[q.input[0]].scale == float(initializer(case.model, q.input[1]))
        assert tensors[q.input[0]].zero_point == int(zero) - offset
        checked += 1
    assert checked >= len(graph.nodes) // 2


def test_the_float_graph_is_the_source_model(case: Case) -> None:
    """Same ops, windows and shapes as the float model; weights and biases within half a
    quantization step. onnxruntime removes each Relu/Clip after a quantized op (unless asked to
    keep them): the import puts back a ReLU6 where the quantized range ends at or below 6."""
    assert len(case.graph.nodes) == len(case.source.nodes)
    tensors = case.quantization.tensors
    for mine in case.graph.nodes:
        theirs = counterpart(case.source, mine.output)
        if theirs.op is OpType.RELU and mine.op is OpType.RELU6 and not case.keep:
            quant = tensors[mine.output]
            assert quant.zero_point == -128 and 255 * quant.scale <= qdq.RELU6_TOP, mine.name
        else:
            assert mine.op is theirs.op, (mine.name, theirs.name)
        assert mine.attrs == theirs.attrs, mine.name
        assert case.graph.shapes[mine.output] == case.source.shapes[theirs.output]
        if mine.op not in (OpType.CONV, OpType.LINEAR):
            continue
        scales = case.quantization.weights[mine.name].scales.astype(np.float64) \
            if mine.name in case.quantization.weights else None
        if scales is None:  # the classifier: per-channel scales from the file's weights
            continue
        shape = (-1,) + (1,) * (theirs.params["weight"].ndim - 1)
        w_error = np.abs(mine.params["weight"].astype(np.float64) - theirs.params["weight"])
        w_bound = scales.reshape(shape) * (0.5 + 127 * RELATIVE_FOLDING)
        assert np.all(w_error <= w_bound), mine.name
        s_in = tensors[mine.inputs[0]].scale
        b_error = np.abs(mine.params["bias"].astype(np.float64) - theirs.params["bias"])
        b_bound = s_in * scales / 2 + np.abs(theirs.params["bias"]) * RELATIVE_FOLDING + 1e-9
        assert np.all(b_error <= b_bound), mine.name


def counterpart(source: Graph, tensor: str) -> Node:
    """The source node that writes the tensor ``tensor`` names (onnxruntime keeps the names;
    the op before a restored activation writes ``<activation output>__before_relu``)."""
    if tensor.endswith("__before_relu"):
        activation = source.producer(tensor.removesuffix("__before_relu"))
        assert activation is not None
        tensor = activation.inputs[0]
    node = source.producer(tensor)
    assert node is not None, tensor
    return node


def test_without_the_restored_activations_the_graph_is_not_the_source(
        monkeypatch: pytest.MonkeyPatch, workdir: Path, tmp_path: Path) -> None:
    """The injected error: skip putting back the removed Relu/Clip. The per-op int8 comparison
    cannot see it (the quantized range clamps at 0), the float graph does."""
    path = quantized_file(workdir, "mobilenetv2")
    monkeypatch.setattr(qdq._Rewriter, "_restore_activations", lambda self: None)
    graph, _ = load_quantized(path)
    expected = [n.op for n in load_onnx_proto(exported("mobilenetv2"), tmp_path).nodes]
    assert OpType.RELU6 in expected and OpType.RELU6 not in [n.op for n in graph.nodes]


def onnxruntime_int8_tensors(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """onnxruntime's int8 value (uint8 shifted by -128) of every quantized activation of the
    QDQ ``model`` on one sample, by the name of the float tensor it quantizes."""
    quantized = [q for q in model.graph.node if q.op_type == "QuantizeLinear"]
    run = session(model, [q.output[0] for q in quantized],
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    results = dict(zip([o.name for o in run.get_outputs()],
                       run.run(None, {run.get_inputs()[0].name: x[None]}), strict=True))
    return {q.input[0]: (results[q.output[0]][0].astype(np.int32)
                         - (128 if results[q.output[0]].dtype == np.uint8 else 0))
            for q in quantized}


def lsb_differences(graph: Graph, quantization: Quantization,
                    theirs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """|ours - theirs| of each op of the int8 region (no candidates) that has an int8 kernel,
    ours by the numpy integer reference on onnxruntime's int8 inputs of that op."""
    region = int8_region(graph, [])
    found = {}
    for node in region:
        target = (fused_activation(graph, node, region) or node).output
        if fusing_conv(graph, node, region) or target not in theirs or \
                any(t not in theirs for t in node.inputs):
            continue
        try:
            params = lower_node(graph, quantization, node, region)
        except MedyateError:  # no int8 kernel (a padded average pool, a hidden Linear)
            assert node.op in (OpType.AVG_POOL, OpType.LINEAR), node.name
            continue
        weights = quantization.weights[node.name].values if node.op is OpType.CONV else None
        args = [theirs[t].astype(np.int8) for t in node.inputs]
        ours = run_node(node, params, args, weights).astype(np.int32)
        found[node.name] = np.abs(ours - theirs[target].reshape(ours.shape))
    return found


def test_each_int8_op_within_one_lsb_of_onnxruntime(case: Case) -> None:
    """Measured: 0.03-0.1% of the elements differ by 1 LSB, none by 2."""
    samples = np.random.default_rng(2).standard_normal((2, *INPUT_SHAPE)).astype(np.float32)
    checked, differing, total = set(), 0, 0
    for sample in samples:
        theirs = onnxruntime_int8_tensors(case.model, sample)
        for name, diff in lsb_differences(case.graph, case.quantization, theirs).items():
            assert diff.max() <= 1, (name, int(diff.max()))
            differing += int(np.count_nonzero(diff))
            total += diff.size
            checked.add(name)
    assert len(checked) >= 4 and differing <= 0.01 * total, (len(checked), differing, total)


def test_a_zero_point_off_by_two_is_caught(case: Case) -> None:
    """The injected error: one conv output's zero point moved by 2 LSB."""
    sample = np.random.default_rng(3).standard_normal(INPUT_SHAPE).astype(np.float32)
    theirs = onnxruntime_int8_tensors(case.model, sample)
    conv = case.graph.nodes_of(OpType.CONV)[-1]
    target = (fused_activation(case.graph, conv, case.graph.nodes) or conv).output
    quant = case.quantization.tensors[target]
    moved = TensorQuant(quant.scale, quant.zero_point + (2 if quant.zero_point < 120 else -2))
    wrong = Quantization({**case.quantization.tensors, target: moved},
                         case.quantization.weights, "injected")
    assert lsb_differences(case.graph, wrong, theirs)[conv.name].max() >= 2


def test_a_float_model_reads_as_before(tmp_path: Path) -> None:
    source = exported("resnet")
    graph, quantization = load_quantized(source)
    assert quantization is None
    assert [n.op for n in graph.nodes] == [n.op for n in load_onnx_proto(source, tmp_path).nodes]


# ---- hand-made QDQ graphs: the refused schemes and the restored activation --------------------

def qdq_conv(weight_type: int = TensorProto.INT8, weight_zero: tuple[int, int] = (0, 0),
             activation_type: int = TensorProto.INT8, conv_zero: int = 3,
             conv_scale: float = 0.05, between: str | None = None) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(2 -> 2, 1x1, per-channel int8 weights, int32 bias) [-> between] -> Q/DQ
    -> GlobalAveragePool -> Q/DQ -> Flatten -> Gemm (float) -> y."""
    np_type = helper.tensor_dtype_to_np_dtype(activation_type)
    offset = 128 if activation_type == TensorProto.UINT8 else 0
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
        numpy_helper.from_array(np.array(0, np_type), "x_z"),
        numpy_helper.from_array((np.array([[[[5]], [[-7]]], [[[127]], [[0]]]]) + (
            128 if weight_type == TensorProto.UINT8 else 0)).astype(
                helper.tensor_dtype_to_np_dtype(weight_type)), "w_q"),
        numpy_helper.from_array(np.array([0.01, 0.002], np.float32), "w_s"),
        numpy_helper.from_array(np.array(weight_zero,
                                         helper.tensor_dtype_to_np_dtype(weight_type)), "w_z"),
        numpy_helper.from_array(np.array([40, -9], np.int32), "b_q"),
        numpy_helper.from_array(np.array([0.0002, 0.00004], np.float32), "b_s"),
        numpy_helper.from_array(np.array(conv_scale, np.float32), "c_s"),
        numpy_helper.from_array(np.array(conv_zero, np_type), "c_z"),
        numpy_helper.from_array(np.array(0.01, np.float32), "p_s"),
        numpy_helper.from_array(np.array(-1 + offset, np_type), "p_z"),
        numpy_helper.from_array(np.ones((3, 2), np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(3, np.float32), "fc_b"),
    ]
    conv_out = "conv" if between is None else "pre"
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b"], axis=0),
        helper.make_node("Conv", ["x_dq", "w", "b"], [conv_out], name="conv"),
    ]
    if between == "BatchNormalization":
        inits += [numpy_helper.from_array(np.full(2, v, np.float32), k)
                  for k, v in (("g", 1.0), ("beta", 0.0), ("mu", 0.0), ("var", 1.0))]
        nodes.append(helper.make_node("BatchNormalization", ["pre", "g", "beta", "mu", "var"],
                                      ["conv"], name="bn"))
    elif between is not None:
        nodes += [helper.make_node("QuantizeLinear", ["pre", "c_s", "c_z"], ["pre_q"]),
                  helper.make_node("DequantizeLinear", ["pre_q", "c_s", "c_z"], ["pre_dq"]),
                  helper.make_node(between, ["pre_dq"], ["conv"], name="between")]
    nodes += [
        helper.make_node("QuantizeLinear", ["conv", "c_s", "c_z"], ["conv_q"]),
        helper.make_node("DequantizeLinear", ["conv_q", "c_s", "c_z"], ["conv_dq"]),
        helper.make_node("GlobalAveragePool", ["conv_dq"], ["pool"]),
        helper.make_node("QuantizeLinear", ["pool", "p_s", "p_z"], ["pool_q"]),
        helper.make_node("DequantizeLinear", ["pool_q", "p_s", "p_z"], ["pool_dq"]),
        helper.make_node("Flatten", ["pool_dq"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 2, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def test_a_hand_made_qdq_model_reads_as_written() -> None:
    graph, quantization = load_quantized(qdq_conv())
    assert quantization is not None
    assert [n.op for n in graph.nodes] == [OpType.CONV, OpType.GLOBAL_AVG_POOL, OpType.FLATTEN,
                                           OpType.LINEAR]
    conv = graph.nodes[0]
    assert np.array_equal(quantization.weights[conv.name].values[:, :, 0, 0], [[5, -7], [127, 0]])
    scales = np.float32([[0.01], [0.002]])  # s[o] · q in float32
    assert np.array_equal(conv.params["weight"][:, :, 0, 0],
                          scales * np.float32([[5, -7], [127, 0]]))
    assert np.array_equal(conv.params["bias"], np.float32([40 * np.float32(0.0002),
                                                           -9 * np.float32(0.00004)]))
    assert (quantization.tensors["x"].scale, quantization.tensors["x"].zero_point) == \
        (float(np.float32(0.02)), 0)
    assert quantization.tensors["conv"].zero_point == 3
    assert quantization.tensors["flat"] == quantization.tensors["pool"]  # through Flatten


def test_float_weights_through_a_quantize_dequantize_pair() -> None:
    """Weights stored in float with their own Q -> DQ pair (as other quantizers write them):
    q = saturate(rint(w / s)) as ONNX QuantizeLinear computes it."""
    model = qdq_conv()
    weight = np.array([[0.049, -0.071], [0.2541, 0.001]], np.float32).reshape(2, 2, 1, 1)
    model.graph.initializer.append(numpy_helper.from_array(weight, "w_float"))
    model.graph.node.insert(0, helper.make_node("QuantizeLinear", ["w_float", "w_s", "w_z"],
                                                ["w_q2"], axis=0))
    dq = next(n for n in model.graph.node if n.output[0] == "w")
    dq.input[0] = "w_q2"
    graph, quantization = load_quantized(model)
    assert quantization is not None
    values = quantization.weights[graph.nodes[0].name].values[:, :, 0, 0]
    assert values.tolist() == [[5, -7], [127, 0]]  # 4.9 -> 5, -7.1 -> -7, 127.05 -> 127, 0.5 -> 0


@pytest.mark.parametrize(("scale", "op"), [(6 / 255, OpType.RELU6), (7 / 255, OpType.RELU)])
def test_a_clamp_at_zero_puts_back_the_removed_activation(scale: float, op: OpType) -> None:
    """A conv output quantized with the zero point at -128 is clamped at 0 by the QDQ model:
    ReLU6 when its range [0, 255 s] ends at 6 or below, else ReLU."""
    graph, quantization = load_quantized(qdq_conv(conv_zero=-128, conv_scale=scale))
    assert [n.op for n in graph.nodes][:2] == [OpType.CONV, op]
    assert quantization is not None
    assert quantization.tensors[graph.nodes[0].output] == quantization.tensors["conv"]


def test_a_kept_relu_is_not_doubled() -> None:
    graph, _ = load_quantized(qdq_conv(conv_zero=-128, between="Relu"))
    assert [n.op for n in graph.nodes][:3] == [OpType.CONV, OpType.RELU, OpType.GLOBAL_AVG_POOL]


def test_uint8_activations_become_int8_exactly() -> None:
    graph, quantization = load_quantized(qdq_conv(activation_type=TensorProto.UINT8,
                                                  conv_zero=131))
    assert quantization is not None
    assert quantization.tensors["x"].zero_point == -128
    assert quantization.tensors["conv"].zero_point == 3
    assert [n.op for n in graph.nodes][1] is OpType.GLOBAL_AVG_POOL


def _qlinear_conv() -> onnx.ModelProto:
    model = qdq_conv()
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.op_type = "QLinearConv"
    return model


def _float_weights() -> onnx.ModelProto:
    model = qdq_conv()
    model.graph.initializer.append(numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32),
                                                           "w_float"))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.input[1] = "w_float"
    return model


def _unquantized_pool() -> onnx.ModelProto:
    model = qdq_conv()
    kept = [n for n in model.graph.node if "pool" not in n.input[0] or n.op_type == "Flatten"]
    kept[-2].input[0] = "pool"  # the Flatten reads the pool's float output
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def _two_scales() -> onnx.ModelProto:
    model = qdq_conv()
    model.graph.node.extend([
        helper.make_node("QuantizeLinear", ["x", "c_s", "x_z"], ["x_q2"]),
        helper.make_node("DequantizeLinear", ["x_q2", "c_s", "x_z"], ["x_dq2"])])
    return model


REFUSED = {
    "asymmetric weights": (lambda: qdq_conv(weight_zero=(0, 3)),
                           "non-zero zero point (asymmetric)"),
    "uint8 weights": (lambda: qdq_conv(weight_type=TensorProto.UINT8, weight_zero=(128, 128)),
                      "are uint8; only symmetric int8 weights"),
    "int16 activations": (lambda: qdq_conv(activation_type=TensorProto.INT16),
                          "activation 'x' is quantized as int16; only 8-bit"),
    "QLinearConv": (_qlinear_conv, "re-quantize with quant_format=QuantFormat.QDQ"),
    "BatchNorm after a quantized conv": (lambda: qdq_conv(between="BatchNormalization"),
                                         "follows the quantized Conv 'conv'; fold it before"),
    "no int8 kernel": (lambda: qdq_conv(between="Sigmoid"),
                       "Sigmoid is quantized in the file but has no int8 kernel here"),
    "float weights": (_float_weights, "has float weights"),
    "two scales": (_two_scales, "activation 'x' is quantized twice with different scales"),
    "unquantized tensor": (_unquantized_pool, "tensor 'pool' (output of GlobalAveragePool "
                           "'GlobalAveragePool_1') has no QuantizeLinear -> DequantizeLinear"),
}


@pytest.mark.parametrize("scheme", sorted(REFUSED))
def test_a_refused_scheme_gets_one_line(scheme: str) -> None:
    build, message = REFUSED[scheme]
    with pytest.raises(ModelError) as error:
        load_quantized(build())
    text = str(error.value)
    assert message in text and "\n" not in text, text
