"""Import an ONNX model (opset 13-21) into the graph IR.

Each supported ONNX op maps to one IR op (a few fuse: MatMul + Add becomes a Linear, a constant
Add after a Conv/Linear becomes its bias, ReduceMean over H and W becomes GlobalAveragePool).
Anything else stops with a :class:`ModelError` that names the node, its op and what is supported.

1-D models (input ``(N, C, L)``) map onto the 2-D IR with H = 1: the per-sample input shape is
``(C, 1, L)``, rank-3 Conv weights ``(O, C/G, k)`` become ``(O, C/G, 1, k)``, 1-D windows
(``kernel_shape [k]``, ``strides [s]``, ``pads [b, e]``) become ``(1, k)``, ``(1, s)`` and
``(0, b, 0, e)``, and ReduceMean over the L axis becomes the global average over H x W. What
torch exports for ``AdaptiveAvgPool1d(1)`` (Unsqueeze to ``(N, C, 1, L)``, ReduceMean over
``[-1, -2]``, Squeeze back) maps to the same global average: Squeeze, Unsqueeze and Reshape that
only move between the ``(N, C, L)`` and ``(N, C, 1, L)`` views of one tensor are identities. Such a
graph records ``graph.metadata["input_rank"] = "3"`` so later stages can take ``(C, L)`` samples
(reshaped to ``(C, 1, L)``); a 2-D or vector model records ``"4"`` or ``"2"``.
"""

from __future__ import annotations

import ast
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from medyate_mcu.errors import ModelError, UnsupportedOpError
from medyate_mcu.graph.ir import (
    BatchNormAttrs,
    ConvAttrs,
    Graph,
    Node,
    OpType,
    PoolAttrs,
    Shape,
    Window,
)
from medyate_mcu.graph.passes import output_shape, run_default_passes

MIN_OPSET, MAX_OPSET = 13, 21

SUPPORTED_OPS: tuple[str, ...] = (
    "Conv", "BatchNormalization", "Relu", "Clip", "Add", "GlobalAveragePool", "AveragePool",
    "MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Gemm", "MatMul", "ReduceMean",
    "Identity", "Dropout", "Constant",
)


def load_onnx(path: str | Path) -> Graph:
    """Read an ``.onnx`` file and import it (passes applied, shapes inferred)."""
    path = Path(path)
    return import_onnx_model(read_onnx(path), name=path.stem, origin=str(path))


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ``.onnx`` file, with one clear line for a missing, empty or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file (give the path of an .onnx model)")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: the file is empty, not an ONNX model")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types on bad bytes
        raise ModelError(
            f"{path}: not a readable ONNX model ({_first_line(exc)}); "
            "is the file complete and really .onnx?"
        ) from None
    return model


def import_onnx_model(model: onnx.ModelProto, name: str, origin: str = "model") -> Graph:
    """Import an in-memory ONNX model (passes applied, shapes inferred)."""
    if not model.graph.node:
        raise ModelError(f"{origin}: contains no graph nodes; not an ONNX model")
    opset = _default_opset(model, origin)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(
            f"{origin}: ONNX opset {opset} is not supported (supported: {MIN_OPSET}-{MAX_OPSET}); "
            "re-export the model with opset_version=18"
        )
    importer = _OnnxImporter(model, name, origin)
    importer.check_ops_supported()
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{origin}: invalid ONNX model: {_first_line(exc)}") from None
    graph = importer.run()
    _check_finite(importer.constants, origin)
    return run_default_passes(graph)


def ir_node_names(model: onnx.ModelProto) -> list[str]:
    """The IR name the importer gives each node of ``model`` (by module path, node name or op
    type and index, made unique), in node order; ops it removes or fuses get one too."""
    namer = _OnnxImporter(model, "model", "model")
    return [namer._unique_name(node, index) for index, node in enumerate(model.graph.node)]


def _check_finite(constants: dict[str, np.ndarray], origin: str) -> None:
    """Refuse NaN or infinite weights: the engine would train on them and C has no literal for
    them."""
    for name, array in constants.items():
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            bad = np.flatnonzero(~np.isfinite(array.reshape(-1)))
            raise ModelError(f"{origin}: tensor {name!r} holds {bad.size} non-finite value(s) "
                             f"(the first, {array.reshape(-1)[bad[0]]}, at flat index "
                             f"{int(bad[0])}); a model to fine-tune needs finite weights")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _module_path_name(onnx_node: onnx.NodeProto, used: set[str]) -> str | None:
    """The PyTorch module path torch's exporter recorded for a node (``features.3.conv.0``),
    with the aten op appended when the module already named another node."""
    props = {prop.key: prop.value for prop in onnx_node.metadata_props}
    try:
        scopes = ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "None"))
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        return None
    path = scopes[-2] if len(scopes) >= 2 else ""  # scopes are cumulative: '', 'a', 'a.b', op
    if path and path not in used:
        return path
    return f"{path}.{scopes[-1]}" if path else scopes[-1] or None


def _lift_1d(attrs: dict[str, Any]) -> dict[str, Any]:
    """A 1-D window's attributes on the 2-D IR (H = 1): ``strides [s]`` -> ``[1, s]``,
    ``pads [b, e]`` -> ``[0, b, 0, e]``."""
    lifted = dict(attrs)
    if "strides" in attrs:
        lifted["strides"] = [1, *attrs["strides"]]
    if "pads" in attrs:
        begin, end = attrs["pads"]
        lifted["pads"] = [0, begin, 0, end]
    return lifted


def _default_opset(model: onnx.ModelProto, origin: str) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelError(f"{origin}: declares no default-domain ONNX opset")


class _OnnxImporter:
    def __init__(self, model: onnx.ModelProto, name: str, origin: str) -> None:
        self.model = model
        self.onnx_graph = model.graph
        exporter_default = model.graph.name in ("", "main_graph", "torch_jit", "torch-jit-export")
        self.name = name if exporter_default else model.graph.name
        self.origin = origin
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in model.graph.initializer
        }
        self.readers: Counter[str] = Counter(
            tensor for node in model.graph.node for tensor in node.input if tensor
        )
        self.readers.update(output.name for output in model.graph.output)
        self.nodes: list[Node] = []
        self.shapes: dict[str, Shape] = {}
        self.producer: dict[str, Node] = {}
        self.used_names: set[str] = set()
        self.input_rank = 4
        self.lifted: set[str] = set()  # 1-D model tensors the ONNX graph sees as (N, C, 1, L)
        self.handlers: dict[str, Callable[[onnx.NodeProto, dict[str, Any]], None]] = {
            "Conv": self._conv,
            "BatchNormalization": self._batch_norm,
            "Relu": self._relu,
            "Clip": self._clip,
            "Add": self._add,
            "GlobalAveragePool": self._global_average_pool,
            "AveragePool": self._pool,
            "MaxPool": self._pool,
            "Flatten": self._flatten,
            "Reshape": self._reshape,
            "Squeeze": self._squeeze,
            "Unsqueeze": self._unsqueeze,
            "Gemm": self._gemm,
            "MatMul": self._matmul,
            "ReduceMean": self._reduce_mean,
            "Identity": self._identity,
            "Dropout": self._identity,
            "Constant": self._constant,
        }

    # ---- graph boundary -------------------------------------------------------------------
    def check_ops_supported(self) -> None:
        """Stop at the first node whose op the importer has no handler for."""
        for index, onnx_node in enumerate(self.onnx_graph.node):
            if onnx_node.domain in ("", "ai.onnx") and onnx_node.op_type in self.handlers:
                continue
            name = _module_path_name(onnx_node, set()) or onnx_node.name \
                or f"{onnx_node.op_type}_{index}"
            domain = f"{onnx_node.domain}." if onnx_node.domain else ""
            raise UnsupportedOpError(
                f"node {name!r}: op {domain}{onnx_node.op_type} is not supported "
                f"(supported ops: {', '.join(SUPPORTED_OPS)})"
            )

    def run(self) -> Graph:
        self.check_ops_supported()
        input_name = self._read_input()
        output_name = self._read_output()
        for index, onnx_node in enumerate(self.onnx_graph.node):
            self.current_name = self._unique_name(onnx_node, index)
            attrs = {a.name: helper.get_attribute_value(a) for a in onnx_node.attribute}
            self.handlers[onnx_node.op_type](onnx_node, attrs)
        if output_name not in self.shapes:
            raise ModelError(f"{self.origin}: the output {output_name!r} is not computed from "
                             "the input (a constant output?)")
        metadata = {prop.key: prop.value for prop in self.model.metadata_props}
        metadata["input_rank"] = str(self.input_rank)
        return Graph(
            name=self.name,
            input=input_name,
            output=output_name,
            nodes=self.nodes,
            shapes=dict(self.shapes),
            metadata=metadata,
        )

    def _read_input(self) -> str:
        inputs = [i for i in self.onnx_graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise ModelError(f"{self.origin}: the model must have exactly one input, it has "
                             f"{len(inputs)} ({names})")
        value = inputs[0]
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type != onnx.TensorProto.FLOAT:
            kind = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
            raise ModelError(f"{self.origin}: input {value.name!r} is {kind}; only float32 "
                             "inputs are supported")
        dims = list(tensor_type.shape.dim)
        if len(dims) not in (2, 3, 4):
            raise ModelError(f"{self.origin}: input {value.name!r} has rank {len(dims)}; "
                             "expected (N, C, H, W), (N, C, L) or (N, F)")
        self.input_rank = len(dims)
        shape: list[int] = []
        for axis, dim in enumerate(dims):
            fixed = dim.HasField("dim_value") and dim.dim_value > 0
            if axis == 0:
                if fixed and dim.dim_value != 1:
                    raise ModelError(f"{self.origin}: input {value.name!r} has a fixed batch "
                                     f"size of {dim.dim_value}; export it with batch size 1")
                continue  # a symbolic batch axis is fine: the device processes one sample
            if not fixed:
                label = dim.dim_param or "?"
                raise ModelError(
                    f"{self.origin}: input {value.name!r} has a dynamic dimension {label!r} at "
                    f"axis {axis}; re-export the model with a fixed input size"
                )
            shape.append(int(dim.dim_value))
        if self.one_d:
            shape.insert(1, 1)  # (C, L) -> (C, 1, L)
        self.shapes[value.name] = tuple(shape)
        return value.name

    @property
    def one_d(self) -> bool:
        """Whether the model is 1-D: its input is (N, C, L), imported as (C, 1, L)."""
        return self.input_rank == 3

    def _read_output(self) -> str:
        outputs = list(self.onnx_graph.output)
        if len(outputs) != 1:
            names = ", ".join(repr(o.name) for o in outputs)
            raise ModelError(f"{self.origin}: the model must have exactly one output, it has "
                             f"{len(outputs)} ({names})")
        return outputs[0].name

    # ---- helpers ----------------------------------------------------------------------------
    def _unique_name(self, onnx_node: onnx.NodeProto, index: int) -> str:
        base = _module_path_name(onnx_node, self.used_names) or onnx_node.name \
            or f"{onnx_node.op_type}_{index}"
        name, suffix = base, 1
        while name in self.used_names:
            suffix += 1
            name = f"{base}_{suffix}"
        self.used_names.add(name)
        return name

    def _error(self, onnx_node: onnx.NodeProto, message: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"node {self.current_name!r} ({onnx_node.op_type}): {message}")

    def _activation(self, onnx_node: onnx.NodeProto, index: int) -> str:
        tensor = onnx_node.input[index] if index < len(onnx_node.input) else ""
        if tensor not in self.shapes:
            what = "a constant" if tensor in self.constants else "not computed from the input"
            raise self._error(onnx_node, f"input {index} ({tensor!r}) is {what}; "
                              "expected an activation")
        return tensor

    def _constant_input(self, onnx_node: onnx.NodeProto, index: int,
                        required: bool = True) -> np.ndarray | None:
        tensor = onnx_node.input[index] if index < len(onnx_node.input) else ""
        if not tensor:
            if required:
                raise self._error(onnx_node, f"input {index} is missing")
            return None
        if tensor not in self.constants:
            raise self._error(onnx_node, f"input {index} ({tensor!r}) must be a constant "
                              "(an initializer); computed or graph-input weights are unsupported")
        return self.constants[tensor]

    def _emit(self, op: OpType, inputs: list[str], output: str, attrs: Any = None,
              params: dict[str, np.ndarray] | None = None, name: str | None = None) -> Node:
        node = Node(name=name or self.current_name, op=op, inputs=inputs, output=output,
                    attrs=attrs, params={k: np.asarray(v, np.float32)
                                         for k, v in (params or {}).items()})
        self.shapes[output] = output_shape(node, [self.shapes[t] for t in inputs])
        if inputs[0] in self.lifted and len(self.shapes[output]) == 3:
            self.lifted.add(output)  # an op on the (N, C, 1, L) view keeps that view
        self.nodes.append(node)
        self.producer[output] = node
        return node

    def _onnx_shape(self, tensor: str) -> Shape:
        """``tensor``'s shape as the ONNX model sees it, batch axis included: a 1-D model's
        (C, 1, L) feature map is (1, C, L) there, unless an Unsqueeze made it (1, C, 1, L)."""
        shape = self.shapes[tensor]
        if self.one_d and len(shape) == 3 and tensor not in self.lifted:
            return (1, shape[0], shape[2])
        return (1, *shape)

    def _only_output(self, onnx_node: onnx.NodeProto) -> str:
        extra = [name for name in onnx_node.output[1:] if name and self.readers[name]]
        if extra:
            raise self._error(onnx_node, f"its extra output {extra[0]!r} is used; only the "
                              "first output is supported")
        return onnx_node.output[0]

    def _window(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any], kernel: tuple[int, int],
                input_hw: tuple[int, int]) -> Window:
        rank = 1 if self.one_d else 2
        if len(kernel) != rank:
            raise self._error(onnx_node, f"{len(kernel)}-D windows are unsupported in a "
                              f"{'1-D' if self.one_d else '2-D'} model; only {rank}-D")
        if any(d != 1 for d in attrs.get("dilations", [])):
            raise self._error(onnx_node, f"dilations {list(attrs['dilations'])} unsupported; "
                              "only dilation 1")
        if self.one_d:
            attrs = _lift_1d(attrs)
            kernel = (1, kernel[0])
        if attrs.get("ceil_mode", 0):
            raise self._error(onnx_node, "ceil_mode=1 is unsupported; export with ceil_mode=0")
        strides = tuple(attrs.get("strides", [1, 1]))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad in ("NOTSET", ""):
            pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
        elif auto_pad == "VALID":
            pads = (0, 0, 0, 0)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            begin_end = []
            for size, k, s in zip(input_hw, kernel, strides, strict=True):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                small, large = total // 2, total - total // 2
                begin_end.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
            pads = (begin_end[0][0], begin_end[1][0], begin_end[0][1], begin_end[1][1])
        else:
            raise self._error(onnx_node, f"auto_pad={auto_pad!r} is unsupported")
        return Window(kernel=(int(kernel[0]), int(kernel[1])),
                      stride=(int(strides[0]), int(strides[1])),
                      pads=tuple(int(p) for p in pads))  # type: ignore[arg-type]

    # ---- op handlers ------------------------------------------------------------------------
    def _conv(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        x = self._activation(onnx_node, 0)
        weight = self._constant_input(onnx_node, 1)
        assert weight is not None
        expected = 3 if self.one_d else 4
        if weight.ndim != expected:
            raise self._error(onnx_node, f"weight of rank {weight.ndim}: a "
                              f"{'1-D' if self.one_d else '2-D'} model takes rank-{expected} "
                              "convolution weights")
        bias = self._constant_input(onnx_node, 2, required=False)
        if bias is None:
            bias = np.zeros(weight.shape[0], np.float32)
        shape = self.shapes[x]
        kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
        if self.one_d:
            weight = weight[:, :, None, :]  # (O, C/G, k) -> (O, C/G, 1, k)
        window = self._window(onnx_node, attrs, kernel, shape[1:3] if len(shape) == 3 else (0, 0))
        self._emit(OpType.CONV, [x], onnx_node.output[0],
                   ConvAttrs(window=window, groups=int(attrs.get("group", 1))),
                   {"weight": weight, "bias": bias})

    def _batch_norm(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if attrs.get("training_mode", 0):
            raise self._error(onnx_node, "training_mode=1; export the model in eval mode")
        x = self._activation(onnx_node, 0)
        params = {key: self._constant_input(onnx_node, index)
                  for index, key in enumerate(("scale", "bias", "mean", "var"), start=1)}
        self._emit(OpType.BATCH_NORM, [x], self._only_output(onnx_node),
                   BatchNormAttrs(epsilon=float(attrs.get("epsilon", 1e-5))),
                   params)  # type: ignore[arg-type]

    def _relu(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        self._emit(OpType.RELU, [self._activation(onnx_node, 0)], onnx_node.output[0])

    def _clip(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        bounds = []
        for index, key in ((1, "min"), (2, "max")):
            value = self._constant_input(onnx_node, index, required=False)
            if value is None and key in attrs:  # opset < 11 style, kept for hand-made graphs
                value = np.asarray(attrs[key])
            bounds.append(None if value is None else float(np.asarray(value).reshape(())))
        low, high = bounds
        if low == 0.0 and high == 6.0:
            op = OpType.RELU6
        elif low == 0.0 and high is None:
            op = OpType.RELU
        else:
            raise self._error(onnx_node, f"Clip(min={low}, max={high}) is unsupported; "
                              "only Clip(0, 6) (ReLU6) and Clip(0, inf) (ReLU)")
        self._emit(op, [self._activation(onnx_node, 0)], onnx_node.output[0])

    def _add(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        operands = list(onnx_node.input)
        constant = [t in self.constants for t in operands]
        if not any(constant):
            a, b = self._activation(onnx_node, 0), self._activation(onnx_node, 1)
            self._emit(OpType.ADD, [a, b], onnx_node.output[0])
            return
        if all(constant):
            raise self._error(onnx_node, "adds two constants; fold constants before export")
        x = operands[constant.index(False)]
        value = self.constants[operands[constant.index(True)]]
        self._fold_bias(onnx_node, x, value)

    def _fold_bias(self, onnx_node: onnx.NodeProto, x: str, value: np.ndarray) -> None:
        """Fold ``x + constant`` into the bias of the Conv/Linear that writes ``x``."""
        producer = self.producer.get(x)
        if producer is None or producer.op not in (OpType.CONV, OpType.LINEAR) \
                or self.readers[x] != 1:
            raise self._error(onnx_node, "adding a constant is supported only as the bias of a "
                              "Conv, Gemm or MatMul whose output has no other reader")
        shape = self.shapes[x]
        if self.one_d and len(shape) == 3 and value.ndim >= 2 and x not in self.lifted:
            value = np.expand_dims(value, -2)  # aligned to (N, C, L) -> to (N, C, 1, L)
        try:
            full = np.broadcast_to(np.asarray(value, np.float32), (1, *shape))[0]
        except ValueError:
            full = None
        per_channel = None if full is None else full.reshape(shape[0], -1)[:, 0]
        if full is None or not np.array_equal(
                full, np.broadcast_to(per_channel.reshape(-1, *[1] * (len(shape) - 1)), shape)):
            raise self._error(onnx_node, f"constant of shape {value.shape} is not a per-channel "
                              f"bias for an output of shape {shape}")
        producer.params["bias"] = producer.params["bias"] + per_channel
        self.producer.pop(x)
        self.shapes[onnx_node.output[0]] = self.shapes.pop(x)
        producer.output = onnx_node.output[0]
        self.producer[producer.output] = producer

    def _global_average_pool(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        self._emit(OpType.GLOBAL_AVG_POOL, [self._activation(onnx_node, 0)], onnx_node.output[0])

    def _pool(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        x = self._activation(onnx_node, 0)
        shape = self.shapes[x]
        if len(shape) != 3:
            raise self._error(onnx_node, f"needs a (C, H, W) feature map, got {shape}")
        window = self._window(onnx_node, attrs, tuple(attrs["kernel_shape"]), shape[1:3])
        op = OpType.MAX_POOL if onnx_node.op_type == "MaxPool" else OpType.AVG_POOL
        pool = PoolAttrs(window=window,
                         count_include_pad=bool(attrs.get("count_include_pad", 0)))
        self._emit(op, [x], self._only_output(onnx_node), pool)

    def _flatten(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if attrs.get("axis", 1) != 1:
            raise self._error(onnx_node, f"axis={attrs['axis']} is unsupported; only axis=1")
        self._emit(OpType.FLATTEN, [self._activation(onnx_node, 0)], onnx_node.output[0])

    def _reshape(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        x = self._activation(onnx_node, 0)
        target = self._constant_input(onnx_node, 1)
        assert target is not None
        source = self._onnx_shape(x)
        resolved = [source[i] if d == 0 and not attrs.get("allowzero", 0) else int(d)
                    for i, d in enumerate(target.reshape(-1).tolist())]
        if resolved.count(-1) == 1:
            known = math.prod(d for d in resolved if d != -1)
            resolved[resolved.index(-1)] = math.prod(source) // max(known, 1)
        self._view(onnx_node, x, tuple(resolved), f"reshape of (N, "
                   f"{', '.join(map(str, source[1:]))}) to {list(target.reshape(-1))}")

    def _view(self, onnx_node: onnx.NodeProto, x: str, target: Shape, what: str) -> None:
        """``x`` seen with the ONNX shape ``target`` (batch axis included): the same view, the
        other view of a 1-D model's map ((N, C, L) <-> (N, C, 1, L)), or flattened."""
        source, shape = self._onnx_shape(x), self.shapes[x]
        output = onnx_node.output[0]
        if target == source:
            self._emit(OpType.IDENTITY, [x], output)
        elif self.one_d and len(shape) == 3 and target == (1, *shape):
            self._emit(OpType.IDENTITY, [x], output)
            self.lifted.add(output)
        elif self.one_d and len(shape) == 3 and target == (1, shape[0], shape[2]) \
                and shape[1] == 1:
            self._emit(OpType.IDENTITY, [x], output)
            self.lifted.discard(output)
        elif target == (1, math.prod(source)):
            self._emit(OpType.FLATTEN, [x], output)
        else:
            raise self._error(onnx_node, f"{what} is unsupported; only flattening to "
                              "(N, features)" + (" or (N, C, L) <-> (N, C, 1, L)"
                                                 if self.one_d else ""))

    def _axes(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> list[int]:
        """The ``axes`` of a Squeeze/Unsqueeze (input 1, or the pre-opset-13 attribute)."""
        axes_input = self._constant_input(onnx_node, 1, required=False)
        axes = attrs.get("axes") if axes_input is None else axes_input.reshape(-1).tolist()
        if not axes:
            raise self._error(onnx_node, "needs explicit axes (without them the batch axis "
                              "would be squeezed too)")
        return [int(a) for a in axes]

    def _squeeze(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        x = self._activation(onnx_node, 0)
        source = self._onnx_shape(x)
        axes = sorted(a % len(source) for a in self._axes(onnx_node, attrs))
        if 0 in axes or any(source[a] != 1 for a in axes):
            raise self._error(onnx_node, f"squeeze of axes {axes} of (N, "
                              f"{', '.join(map(str, source[1:]))}); only axes of size 1 after N")
        target = tuple(d for i, d in enumerate(source) if i not in axes)
        self._view(onnx_node, x, target, f"squeeze of axes {axes}")

    def _unsqueeze(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        x = self._activation(onnx_node, 0)
        target = list(self._onnx_shape(x))
        raw = self._axes(onnx_node, attrs)
        axes = sorted(a % (len(target) + len(raw)) for a in raw)
        if 0 in axes:
            raise self._error(onnx_node, "unsqueeze at axis 0; only axes after the batch axis")
        for axis in axes:
            target.insert(axis, 1)
        self._view(onnx_node, x, tuple(target), f"unsqueeze at axes {axes}")

    def _gemm(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if attrs.get("transA", 0):
            raise self._error(onnx_node, "transA=1 is unsupported")
        x = self._activation(onnx_node, 0)
        b = self._constant_input(onnx_node, 1)
        assert b is not None
        weight = float(attrs.get("alpha", 1.0)) * (b if attrs.get("transB", 0) else b.T)
        c = self._constant_input(onnx_node, 2, required=False)
        bias = np.zeros(weight.shape[0], np.float32) if c is None else \
            float(attrs.get("beta", 1.0)) * np.broadcast_to(np.asarray(c).reshape(-1),
                                                            (weight.shape[0],))
        self._emit(OpType.LINEAR, [x], onnx_node.output[0], None,
                   {"weight": weight, "bias": bias})

    def _matmul(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        x = self._activation(onnx_node, 0)
        b = self._constant_input(onnx_node, 1)
        assert b is not None
        if b.ndim != 2 or len(self.shapes[x]) != 1:
            raise self._error(onnx_node, f"only (N, F) x (F, out) products are supported, got "
                              f"(N, {', '.join(map(str, self.shapes[x]))}) x {b.shape}")
        self._emit(OpType.LINEAR, [x], onnx_node.output[0], None,
                   {"weight": b.T, "bias": np.zeros(b.shape[1], np.float32)})

    def _reduce_mean(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        x = self._activation(onnx_node, 0)
        axes_input = self._constant_input(onnx_node, 1, required=False)
        axes = attrs.get("axes") if axes_input is None else axes_input.reshape(-1).tolist()
        feature_map = len(self.shapes[x]) == 3
        rank = len(self._onnx_shape(x))
        spatial = [2] if rank == 3 else [2, 3]
        normalized = sorted(a % rank for a in (axes or []))
        if not feature_map or normalized != spatial:
            layout = "(N, C, L)" if rank == 3 else "(N, C, 1, L)" if self.one_d else \
                "(N, C, H, W)"
            raise self._error(onnx_node, f"ReduceMean over axes {axes} is unsupported; only "
                              f"the spatial axes {spatial} of an {layout} map")
        if attrs.get("keepdims", 1):
            self._emit(OpType.GLOBAL_AVG_POOL, [x], onnx_node.output[0])
        else:
            pooled = f"{onnx_node.output[0]}__pooled"
            self._emit(OpType.GLOBAL_AVG_POOL, [x], pooled)
            self._emit(OpType.FLATTEN, [pooled], onnx_node.output[0],
                       name=f"{self.current_name}__flatten")

    def _identity(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        self._emit(OpType.IDENTITY, [self._activation(onnx_node, 0)], self._only_output(onnx_node))

    def _constant(self, onnx_node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if len(attrs) != 1:
            raise self._error(onnx_node, "needs exactly one value attribute")
        (key, value), = attrs.items()
        if key == "value":
            array = numpy_helper.to_array(value)
        elif key in ("value_float", "value_floats"):
            array = np.asarray(value, np.float32)
        elif key in ("value_int", "value_ints"):
            array = np.asarray(value, np.int64)
        else:
            raise self._error(onnx_node, f"constant attribute {key!r} is unsupported")
        self.constants[onnx_node.output[0]] = array
