"""1-D (rank-3, ``(N, C, L)``) ONNX models imported onto the 2-D IR with H = 1, checked against
onnxruntime running the original rank-3 model.

Tolerance 1e-5: the IR graph and onnxruntime compute the same float32 ops on the same numbers; they
differ only in summation order and in BatchNorm being folded into the Conv before the sum, each a
few float32 roundings (2^-24 relative) of sums of at most a few hundred terms of size ~1, i.e.
~1e-6 on outputs of size ~1. A wrongly lifted window (a kernel reversed, pads swapped) changes
outputs by ~0.1, which the same check catches (test_a_wrong_lift_is_caught).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_builders import (
    SENSOR_SHAPE,
    make_model,
    onnxruntime_outputs,
    randomize_batch_norms,
    sensor_conv1d_model,
)
from onnx import helper
from torch import nn

from medyate_mcu.errors import ModelError
from medyate_mcu.graph import Graph, OpType, ReferenceNet, Window, export_onnx, import_onnx_model
from medyate_mcu.graph.ir import ConvAttrs

TOLERANCE = 1e-5


class MeanOverL(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1)


class MeanOverDim2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)


class ViewFlat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


class SqueezeLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)


def sensor_model() -> nn.Module:
    """A 6x128 sensor model: strided stem, depthwise and pointwise convs, mean over L."""
    return nn.Sequential(
        nn.Conv1d(6, 16, 5, stride=2, padding=2, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Conv1d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm1d(16), nn.ReLU6(),
        nn.Conv1d(16, 24, 1), nn.ReLU(), MeanOverL(), nn.Linear(24, 4))


TORCH_MODELS: dict[str, tuple[nn.Module, tuple[int, int]]] = {
    "sensor_6x128": (sensor_model(), (6, 128)),
    "regular_maxpool_flatten": (nn.Sequential(
        nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7, 5)), (3, 32)),
    "avgpool_grouped": (nn.Sequential(
        nn.Conv1d(4, 8, 1), nn.ReLU6(), nn.AvgPool1d(3, stride=2, padding=1),
        nn.Conv1d(8, 8, 3, padding=1, groups=4), nn.ReLU(), nn.AvgPool1d(2),
        MeanOverL(), nn.Linear(8, 3)), (4, 20)),
    # torch exports AdaptiveAvgPool1d(1) as Unsqueeze(-2), ReduceMean([-1, -2]), Squeeze(-2)
    "adaptive_pool_flatten": (nn.Sequential(
        nn.Conv1d(3, 8, 3, stride=2, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 4)), (3, 24)),
    "adaptive_pool_output": (nn.Sequential(
        nn.Conv1d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1)), (3, 10)),
    "adaptive_pool_view": (nn.Sequential(
        nn.Conv1d(3, 4, 3), nn.AdaptiveAvgPool1d(1), ViewFlat(), nn.Linear(4, 2)), (3, 16)),
    "adaptive_pool_squeeze": (nn.Sequential(
        nn.Conv1d(3, 4, 3), nn.AdaptiveAvgPool1d(1), SqueezeLast(), nn.Linear(4, 2)), (3, 16)),
    "sensor_builder": (sensor_conv1d_model(), SENSOR_SHAPE),  # test_any_shape_engine's
    "mean_dim2": (nn.Sequential(
        nn.Conv1d(2, 6, 5, padding=2), nn.ReLU6(), MeanOverDim2(), nn.Flatten(), nn.Linear(6, 3)),
        (2, 16)),
}


def compare(graph: Graph, model, channels: int, length: int, samples: int = 4) -> float:
    """Max |ReferenceNet(graph) on x as (N, C, 1, L) - onnxruntime(model) on x as (N, C, L)|."""
    x = np.random.default_rng(0).standard_normal((samples, channels, length)).astype(np.float32)
    with torch.no_grad():
        ours = ReferenceNet(graph)(torch.from_numpy(x.reshape(samples, channels, 1, length)))
    if ours.dim() == 4:  # a (C, 1, L) feature map is ONNX's (C, L)
        assert ours.shape[2] == 1, ours.shape
        ours = ours[:, :, 0]
    theirs = onnxruntime_outputs(model, x)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours.numpy() - theirs).max())


@pytest.fixture(scope="module", params=sorted(TORCH_MODELS))
def exported(request: pytest.FixtureRequest):
    module, (channels, length) = TORCH_MODELS[request.param]
    module = randomize_batch_norms(module)
    model = export_onnx(module, torch.zeros(1, channels, length))
    return request.param, model, channels, length


def test_torch_1d_models_match_onnxruntime(exported) -> None:
    name, model, channels, length = exported
    graph = import_onnx_model(model, name=name)
    assert graph.input_shape == (channels, 1, length)
    assert graph.metadata["input_rank"] == "3"
    assert {OpType.BATCH_NORM, OpType.IDENTITY}.isdisjoint(n.op for n in graph.nodes)
    assert compare(graph, model, channels, length) <= TOLERANCE, name


def test_adaptive_avg_pool_1d_is_the_global_average() -> None:
    """AdaptiveAvgPool1d(1)'s Unsqueeze/ReduceMean/Squeeze leave one global average, no Identity."""
    module, (channels, length) = TORCH_MODELS["adaptive_pool_flatten"]
    graph = import_onnx_model(export_onnx(module.eval(), torch.zeros(1, channels, length)), "a")
    assert [n.op for n in graph.nodes] == [OpType.CONV, OpType.RELU, OpType.GLOBAL_AVG_POOL,
                                           OpType.FLATTEN, OpType.LINEAR]
    assert graph.shapes[graph.nodes[2].output] == (8, 1, 1)


def test_sensor_model_lifts_its_convs() -> None:
    module = randomize_batch_norms(sensor_model())
    graph = import_onnx_model(export_onnx(module, torch.zeros(1, 6, 128)), name="sensor")
    assert graph.input_shape == (6, 1, 128)
    stem, depthwise, pointwise = graph.nodes_of(OpType.CONV)
    assert stem.conv.window == Window(kernel=(1, 5), stride=(1, 2), pads=(0, 2, 0, 2))
    assert stem.params["weight"].shape == (16, 6, 1, 5)
    assert depthwise.conv.groups == 16 and depthwise.params["weight"].shape == (16, 1, 1, 3)
    assert pointwise.params["weight"].shape == (24, 16, 1, 1)
    assert graph.shapes[pointwise.output] == (24, 1, 64)


def weights(*shape: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.asarray(values, np.int64)


def node(op: str, inputs: list[str], output: str = "y", **attrs) -> object:
    return helper.make_node(op, inputs, [output], **attrs)


# name -> (nodes, input shape (N, C, L), initializers, IR ops expected)
CASES = {
    "asymmetric_pads": ([node("Conv", ["x", "w", "b"], pads=[1, 2], strides=[2])], [1, 3, 11],
                        {"w": weights(4, 3, 4), "b": weights(4)}, [OpType.CONV]),
    "same_upper": ([node("Conv", ["x", "w"], auto_pad="SAME_UPPER")], [1, 2, 9],
                   {"w": weights(2, 2, 4)}, [OpType.CONV]),
    "max_pool_pads": ([node("MaxPool", ["x"], kernel_shape=[3], pads=[0, 2], strides=[2])],
                      [1, 2, 10], {}, [OpType.MAX_POOL]),
    "avg_pool_include_pad": ([node("AveragePool", ["x"], kernel_shape=[3], pads=[1, 1],
                                   count_include_pad=1)], [1, 2, 8], {}, [OpType.AVG_POOL]),
    "global_pool_flatten": ([node("GlobalAveragePool", ["x"], "g"), node("Flatten", ["g"])],
                            [1, 3, 7], {}, [OpType.GLOBAL_AVG_POOL, OpType.FLATTEN]),
    "reduce_mean_keepdims_reshape": (
        [node("ReduceMean", ["x", "a"], "m"), node("Reshape", ["m", "s"])], [1, 3, 7],
        {"a": i64(-1), "s": i64(1, -1)}, [OpType.GLOBAL_AVG_POOL, OpType.FLATTEN]),
    "conv_then_constant_bias": (
        [node("Conv", ["x", "w"], "c"), node("Add", ["c", "b"])], [1, 2, 6],
        {"w": weights(3, 2, 3), "b": weights(3, 1)}, [OpType.CONV]),
    "batch_norm_relu_add": (
        [node("BatchNormalization", ["x", "s", "bb", "m", "v"], "n"), node("Relu", ["n"], "r"),
         node("Add", ["r", "x"])], [1, 2, 5],
        {"s": weights(2), "bb": weights(2), "m": weights(2), "v": np.full(2, 0.7, np.float32)},
        [OpType.CONV, OpType.RELU, OpType.ADD]),  # a lone BatchNorm becomes a depthwise 1x1
    "unsqueeze_mean_squeeze_flatten": (
        [node("Unsqueeze", ["x", "u"], "u4"), node("ReduceMean", ["u4", "a"], "m"),
         node("Squeeze", ["m", "u"], "s"), node("Flatten", ["s"])], [1, 3, 7],
        {"u": i64(-2), "a": i64(-1, -2)}, [OpType.GLOBAL_AVG_POOL, OpType.FLATTEN]),
    "unsqueeze_relu_mean_no_keepdims": (
        [node("Unsqueeze", ["x", "u"], "u4"), node("Relu", ["u4"], "r"),
         node("ReduceMean", ["r", "a"], keepdims=0)], [1, 2, 9],
        {"u": i64(2), "a": i64(2, 3)}, [OpType.RELU, OpType.GLOBAL_AVG_POOL, OpType.FLATTEN]),
    "unsqueeze_reshape_back_conv": (
        [node("Unsqueeze", ["x", "u"], "u4"), node("Reshape", ["u4", "s"], "r"),
         node("Conv", ["r", "w"])], [1, 2, 6],
        {"u": i64(2), "s": i64(1, 2, 6), "w": weights(3, 2, 3)}, [OpType.CONV]),
    "squeeze_one_channel_flattens": ([node("Squeeze", ["x", "a"])], [1, 1, 6], {"a": i64(1)},
                                     [OpType.FLATTEN]),
    "squeeze_global_pool_to_features": (
        [node("GlobalAveragePool", ["x"], "g"), node("Squeeze", ["g", "a"], "s"),
         node("Gemm", ["s", "w"], transB=1)], [1, 3, 5],
        {"a": i64(2), "w": weights(2, 3)}, [OpType.GLOBAL_AVG_POOL, OpType.FLATTEN,
                                            OpType.LINEAR]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_1d_op_matches_onnxruntime(case: str) -> None:
    nodes, shape, initializers, expected = CASES[case]
    model = make_model(nodes, ["N", *shape[1:]], initializers)
    graph = import_onnx_model(model, name=case)
    assert [n.op for n in graph.nodes] == expected
    assert graph.input_shape == (shape[1], 1, shape[2])
    assert compare(graph, model, shape[1], shape[2]) <= TOLERANCE


def test_a_wrong_lift_is_caught() -> None:
    """The oracle sees a reversed kernel and swapped pads (what a wrong (k) -> (1, k) map does)."""
    nodes, shape, initializers, _ = CASES["asymmetric_pads"]
    model = make_model(nodes, shape, initializers)
    graph = import_onnx_model(model, name="asym")
    conv = graph.nodes[0]
    conv.params["weight"] = conv.params["weight"][..., ::-1].copy()
    assert compare(graph, model, 3, 11) > 1e-2
    conv.params["weight"] = conv.params["weight"][..., ::-1].copy()
    assert compare(graph, model, 3, 11) <= TOLERANCE
    conv.attrs = ConvAttrs(window=Window(kernel=(1, 4), stride=(1, 2), pads=(0, 2, 0, 1)))
    assert compare(graph, model, 3, 11) > 1e-2


def test_2d_models_record_their_input_rank() -> None:
    model = make_model([node("Relu", ["x"])], ["N", 2, 3, 3])
    assert import_onnx_model(model, name="relu").metadata["input_rank"] == "4"


BAD = {
    "dilation_2": ([node("Conv", ["x", "w"], dilations=[2])], [1, 2, 9], {"w": weights(2, 2, 3)},
                   ["(Conv)", "dilations [2]", "only dilation 1"]),
    "rank_5_input": ([node("Relu", ["x"])], [1, 2, 2, 2, 2], {},
                     ["rank 5", "(N, C, L)"]),
    "mean_over_channels": ([node("ReduceMean", ["x", "a"])], [1, 2, 5], {"a": i64(1)},
                           ["axes [1]", "[2] of an (N, C, L) map"]),
    "squeeze_no_axes": ([node("GlobalAveragePool", ["x"], "g"), node("Squeeze", ["g"])],
                        [1, 2, 6], {}, ["(Squeeze)", "explicit axes"]),
    "unsqueeze_batch": ([node("Unsqueeze", ["x", "a"])], [1, 2, 6], {"a": i64(0)},
                        ["(Unsqueeze)", "axis 0"]),
    "unsqueeze_channels": ([node("Unsqueeze", ["x", "a"])], [1, 2, 6], {"a": i64(3)},
                           ["unsqueeze at axes [3]", "(N, C, L) <-> (N, C, 1, L)"]),
    "mean_over_l_of_lifted": ([node("Unsqueeze", ["x", "u"], "u4"),
                               node("ReduceMean", ["u4", "a"])], [1, 2, 6],
                              {"u": i64(2), "a": i64(3)}, ["axes [3]", "(N, C, 1, L) map"]),
    "reshape_to_3d": ([node("Reshape", ["x", "s"])], [1, 2, 6], {"s": i64(1, 6, 2)},
                      ["(N, 2, 6)", "only flattening"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_1d_input_gets_one_line(case: str) -> None:
    nodes, shape, initializers, words = BAD[case]
    with pytest.raises(ModelError) as info:
        import_onnx_model(make_model(nodes, shape, initializers), name=case)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
