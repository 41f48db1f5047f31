"""Every supported ONNX op, in a hand-built graph, checked against onnxruntime; every
unsupported op or setting gives one clear error."""

from __future__ import annotations

import numpy as np
import pytest
from model_builders import make_model, max_abs_error_vs_onnxruntime
from onnx import helper
from test_import_1d import CASES as CASES_1D

from medyate_mcu.errors import ModelError, UnsupportedOpError
from medyate_mcu.graph import OpType, import_onnx_model

RNG = np.random.default_rng(1)


def weights(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32) * 0.3


def positive(*shape: int) -> np.ndarray:
    return (RNG.random(shape) + 0.5).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.asarray(values, np.int64)


def f32(*values: float) -> np.ndarray:
    return np.asarray(values, np.float32)


def node(op: str, inputs: list[str], output: str = "y", **attrs) -> object:
    return helper.make_node(op, inputs, [output], **attrs)


def bn_params(prefix: str, channels: int) -> dict[str, np.ndarray]:
    return {f"{prefix}_s": positive(channels), f"{prefix}_b": weights(channels),
            f"{prefix}_m": weights(channels), f"{prefix}_v": positive(channels)}


def bn_node(prefix: str, x: str, out: str = "y") -> object:
    return node("BatchNormalization",
                [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], out,
                epsilon=1e-3)


# name -> (nodes, input shape, initializers, opset, IR ops expected after the passes)
CASES = {
    "conv_3x3_padded_strided": (
        [node("Conv", ["x", "w", "b"], pads=[1, 1, 1, 1], strides=[2, 2])],
        [1, 3, 9, 9], {"w": weights(4, 3, 3, 3), "b": weights(4)}, 18, [OpType.CONV]),
    "conv_no_bias_asymmetric_pads": (
        [node("Conv", ["x", "w"], pads=[0, 1, 2, 0])],
        [1, 3, 6, 7], {"w": weights(5, 3, 3, 2)}, 13, [OpType.CONV]),
    "conv_pointwise": (
        [node("Conv", ["x", "w", "b"])], [1, 6, 5, 5],
        {"w": weights(4, 6, 1, 1), "b": weights(4)}, 18, [OpType.CONV]),
    "conv_depthwise": (
        [node("Conv", ["x", "w", "b"], group=6, pads=[1, 1, 1, 1])], [1, 6, 5, 5],
        {"w": weights(6, 1, 3, 3), "b": weights(6)}, 18, [OpType.CONV]),
    "conv_depthwise_multiplier_2": (
        [node("Conv", ["x", "w"], group=3, pads=[1, 1, 1, 1])], [1, 3, 5, 5],
        {"w": weights(6, 1, 3, 3)}, 18, [OpType.CONV]),
    "conv_grouped": (
        [node("Conv", ["x", "w", "b"], group=2, kernel_shape=[3, 3])], [1, 4, 6, 6],
        {"w": weights(6, 2, 3, 3), "b": weights(6)}, 21, [OpType.CONV]),
    "conv_auto_pad_same_upper": (
        [node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2])], [1, 2, 6, 6],
        {"w": weights(3, 2, 4, 4)}, 18, [OpType.CONV]),
    "conv_auto_pad_same_lower": (
        [node("Conv", ["x", "w"], auto_pad="SAME_LOWER")], [1, 2, 5, 5],
        {"w": weights(3, 2, 2, 2)}, 18, [OpType.CONV]),
    "conv_auto_pad_valid": (
        [node("Conv", ["x", "w"], auto_pad="VALID")], [1, 2, 5, 5],
        {"w": weights(3, 2, 3, 3)}, 18, [OpType.CONV]),
    "conv_then_batch_norm_folded": (
        [node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]), bn_node("bn", "c")], [1, 3, 6, 6],
        {"w": weights(4, 3, 3, 3), **bn_params("bn", 4)}, 15, [OpType.CONV]),
    "standalone_batch_norm_as_depthwise_conv": (
        [bn_node("bn", "x")], [1, 3, 4, 4], bn_params("bn", 3), 18, [OpType.CONV]),
    "conv_plus_constant_bias": (
        [node("Conv", ["x", "w"], "c"), node("Add", ["c", "cb"])], [1, 2, 4, 4],
        {"w": weights(3, 2, 1, 1), "cb": weights(1, 3, 1, 1)}, 18, [OpType.CONV]),
    "relu": ([node("Relu", ["x"])], [1, 2, 3, 3], {}, 18, [OpType.RELU]),
    "clip_relu6_inputs": (
        [node("Clip", ["x", "lo", "hi"])], [1, 2, 3, 3],
        {"lo": np.float32(0), "hi": np.float32(6)}, 13, [OpType.RELU6]),
    "clip_relu6_constant_nodes": (
        [helper.make_node("Constant", [], ["lo"], value_float=0.0),
         helper.make_node("Constant", [], ["hi"], value=helper.make_tensor("v", 1, [], [6.0])),
         node("Clip", ["x", "lo", "hi"])], [1, 2, 3, 3], {}, 18, [OpType.RELU6]),
    "clip_min_only_is_relu": (
        [node("Clip", ["x", "lo"])], [1, 2, 3, 3], {"lo": np.float32(0)}, 18, [OpType.RELU]),
    "residual_add": (
        [node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
         node("Add", ["x", "r"])], [1, 3, 4, 4], {"w": weights(3, 3, 3, 3)}, 18,
        [OpType.CONV, OpType.RELU, OpType.ADD]),
    "global_average_pool": (
        [node("GlobalAveragePool", ["x"])], [1, 3, 5, 4], {}, 18, [OpType.GLOBAL_AVG_POOL]),
    "reduce_mean_axes_input_keepdims": (
        [node("ReduceMean", ["x", "axes"])], [1, 3, 4, 4], {"axes": i64(2, 3)}, 18,
        [OpType.GLOBAL_AVG_POOL]),
    "reduce_mean_axes_attr_no_keepdims": (
        [node("ReduceMean", ["x"], axes=[-1, -2], keepdims=0)], [1, 3, 4, 4], {}, 13,
        [OpType.GLOBAL_AVG_POOL, OpType.FLATTEN]),
    "average_pool_count_include_pad": (
        [node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
              count_include_pad=1)], [1, 2, 7, 7], {}, 18, [OpType.AVG_POOL]),
    "average_pool_exclude_pad_asymmetric": (
        [node("AveragePool", ["x"], kernel_shape=[2, 3], pads=[0, 1, 1, 2])], [1, 2, 5, 5], {},
        18, [OpType.AVG_POOL]),
    "max_pool_padded": (
        [node("MaxPool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])],
        [1, 2, 6, 6], {}, 18, [OpType.MAX_POOL]),
    "max_pool_unused_indices": (
        [helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], strides=[2, 2])],
        [1, 2, 4, 4], {}, 18, [OpType.MAX_POOL]),
    "flatten_then_gemm_transposed": (
        [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w", "b"], transB=1)], [1, 2, 2, 2],
        {"w": weights(5, 8), "b": weights(5)}, 18, [OpType.FLATTEN, OpType.LINEAR]),
    "gemm_alpha_beta_untransposed": (
        [node("Gemm", ["x", "w", "b"], alpha=0.5, beta=2.0)], [1, 6],
        {"w": weights(6, 4), "b": weights(1, 4)}, 18, [OpType.LINEAR]),
    "gemm_no_bias": (
        [node("Gemm", ["x", "w"], transB=1)], [1, 6], {"w": weights(3, 6)}, 18,
        [OpType.LINEAR]),
    "reshape_then_matmul_add": (
        [node("Reshape", ["x", "shape"], "f"), node("MatMul", ["f", "w"], "m"),
         node("Add", ["m", "b"])], [1, 2, 3, 3],
        {"shape": i64(1, -1), "w": weights(18, 4), "b": weights(4)}, 18,
        [OpType.FLATTEN, OpType.LINEAR]),
    "reshape_zero_copies_batch": (
        [node("Reshape", ["x", "shape"], "f"), node("MatMul", ["f", "w"])], [1, 2, 2, 2],
        {"shape": i64(0, 8), "w": weights(8, 3)}, 14, [OpType.FLATTEN, OpType.LINEAR]),
    "identity_and_dropout_removed": (
        [node("Identity", ["x"], "i"), node("Dropout", ["i"], "d", ), node("Relu", ["d"])],
        [1, 2, 3, 3], {}, 18, [OpType.RELU]),
    "reshape_to_same_shape_removed": (
        [node("Reshape", ["x", "shape"], "r"), node("Relu", ["r"])], [1, 2, 3, 3],
        {"shape": i64(1, 2, 3, 3)}, 18, [OpType.RELU]),
    "global_pool_squeeze": (
        [node("GlobalAveragePool", ["x"], "g"), node("Squeeze", ["g", "a"], "s"),
         node("Gemm", ["s", "w"], transB=1)], [1, 2, 3, 3], {"a": i64(2, 3), "w": weights(4, 2)},
        18, [OpType.GLOBAL_AVG_POOL, OpType.FLATTEN, OpType.LINEAR]),
    "dead_branch_removed": (
        [node("Relu", ["x"], "unused"), node("MaxPool", ["x"], kernel_shape=[2, 2])],
        [1, 2, 4, 4], {}, 18, [OpType.MAX_POOL]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case: str) -> None:
    nodes, shape, initializers, opset, expected_ops = CASES[case]
    model = make_model(nodes, ["N", *shape[1:]], initializers, opset=opset)
    graph = import_onnx_model(model, name=case)
    assert [n.op for n in graph.nodes] == expected_ops
    assert max_abs_error_vs_onnxruntime(graph, model) <= 1e-5


def test_every_supported_op_is_exercised() -> None:
    used = {n.op_type for cases in (CASES, CASES_1D) for nodes, *_ in cases.values()
            for n in nodes}  # Squeeze/Unsqueeze only in the 1-D cases
    from medyate_mcu.graph import SUPPORTED_OPS
    assert set(SUPPORTED_OPS) <= used


# name -> (nodes, input shape, initializers, words the error must contain)
UNSUPPORTED = {
    "sigmoid": ([node("Sigmoid", ["x"])], [1, 2, 3, 3], {},
                ["'Sigmoid_0'", "Sigmoid is not supported", "Conv"]),
    "custom_domain": ([helper.make_node("Foo", ["x"], ["y"], domain="com.acme")], [1, 2, 3, 3],
                      {}, ["com.acme.Foo is not supported"]),
    "dilated_conv": ([node("Conv", ["x", "w"], dilations=[2, 2])], [1, 2, 6, 6],
                     {"w": weights(2, 2, 3, 3)}, ["(Conv)", "dilations [2, 2]"]),
    "rank5_input": ([node("Relu", ["x"])], [1, 2, 2, 2, 2], {},
                    ["rank 5", "expected (N, C, H, W), (N, C, L)"]),
    "ceil_mode_pool": ([node("MaxPool", ["x"], kernel_shape=[2, 2], ceil_mode=1)], [1, 2, 5, 5],
                       {}, ["ceil_mode=1"]),
    "clip_other_bounds": ([node("Clip", ["x", "lo", "hi"])], [1, 2, 3, 3],
                          {"lo": np.float32(-1), "hi": np.float32(1)}, ["Clip(min=-1.0, max=1.0)"]),
    "reshape_3d": ([node("Reshape", ["x", "s"])], [1, 2, 3, 4], {"s": i64(1, 6, 4)},
                   ["only flattening"]),
    "flatten_axis_2": ([node("Flatten", ["x"], axis=2)], [1, 2, 3, 4], {}, ["axis=2"]),
    "reduce_mean_channels": ([node("ReduceMean", ["x", "a"])], [1, 2, 3, 4], {"a": i64(1)},
                             ["axes [1]"]),
    "broadcast_add_of_activation": (
        [node("Relu", ["x"], "r"), node("Add", ["r", "c"])], [1, 2, 3, 3],
        {"c": f32(1.0)}, ["only as the bias"]),
    "non_per_channel_bias": (
        [node("Conv", ["x", "w"], "c"), node("Add", ["c", "b"])], [1, 2, 3, 3],
        {"w": weights(2, 2, 1, 1), "b": weights(1, 1, 3, 3)}, ["not a per-channel bias"]),
    "gemm_trans_a": ([node("Gemm", ["x", "w"], transA=1)], [1, 4], {"w": weights(1, 2)},
                     ["transA=1"]),
    "batch_norm_training": (
        [helper.make_node("BatchNormalization", ["x", "bn_s", "bn_b", "bn_m", "bn_v"],
                          ["y", "rm", "rv"], training_mode=1)],
        [1, 3, 4, 4], bn_params("bn", 3), ["training_mode=1", "eval mode"]),
    "used_pool_indices": (
        [helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2]),
         node("Relu", ["p"], "y")], [1, 2, 4, 4], {}, ["extra output 'idx'"]),
    "mismatched_residual": (
        [node("MaxPool", ["x"], "p", kernel_shape=[4, 4]), node("Add", ["x", "p"])],
        [1, 2, 4, 4], {}, ["operands differ in shape"]),
    "window_larger_than_input": ([node("MaxPool", ["x"], kernel_shape=[5, 5])], [1, 2, 3, 3],
                                 {}, ["too small"]),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_gives_one_clear_error(case: str) -> None:
    nodes, shape, initializers, words = UNSUPPORTED[case]
    if case == "used_pool_indices":
        model = make_model(nodes, shape, initializers,
                           extra_outputs=[helper.make_tensor_value_info("idx", 7, None)])
        with pytest.raises(ModelError, match="exactly one output"):
            import_onnx_model(model, name=case)
        model = make_model([*nodes, node("Cast", ["idx"], "z", to=1), node("Add", ["y", "z"],
                            "w")], shape, initializers, output="w")
        words = ["Cast is not supported"]
    else:
        model = make_model(nodes, shape, initializers)
    with pytest.raises(ModelError) as info:
        import_onnx_model(model, name=case)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    if case not in ("window_larger_than_input", "mismatched_residual", "rank5_input"):
        assert isinstance(info.value, UnsupportedOpError)
