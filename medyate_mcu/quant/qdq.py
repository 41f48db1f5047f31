"""Reading a QDQ ONNX model (docs/quantization.md §7), as onnxruntime's ``quantize_static``
writes it: the float graph of its dequantized values plus the :class:`Quantization` in the file.

The proto is rewritten before the normal import: a DequantizeLinear of a constant becomes a float
initializer of the dequantized values (weights and int32 biases); a QuantizeLinear ->
DequantizeLinear pair on an activation is removed and its readers read the tensor itself.
onnxruntime removes a Relu/Clip that follows a quantized op when activations are asymmetric (the
op's output Q then has the range [0, max], zero point at the type's minimum); the rewrite puts a
ReLU back (ReLU6 when the quantized range ends at or below 6) wherever the QDQ model clamps at 0
an op output the float graph could make negative, so that the float graph computes what the QDQ
model computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from medyate_mcu.errors import ModelError
from medyate_mcu.graph.ir import Graph, OpType, classifier_node
from medyate_mcu.graph.onnx_import import import_onnx_model, ir_node_names, read_onnx
from medyate_mcu.quant.scheme import INT8_MIN, WEIGHT_MAX, Quantization, TensorQuant, WeightQuant

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QOPERATOR_OPS = ("ConvInteger", "MatMulInteger", "QGemm", "DynamicQuantizeLinear",
                 "DynamicQuantizeMatMul", "QAttention", "QGlobalAveragePool")
INT8_OPS = ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "GlobalAveragePool", "AveragePool",
            "MaxPool", "Flatten", "Reshape", "ReduceMean", "Identity", "Dropout")
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
SIGN_PRESERVING = ("MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten",
                   "Reshape", "Identity", "Dropout")  # non-negative in, non-negative out
RELU6_TOP = 6.0 * (1 + 2.0**-20)  # a range [0, 6] rounded through a float32 scale
_8BIT = {onnx.TensorProto.INT8: 0, onnx.TensorProto.UINT8: 128}  # type -> offset to int8


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds QuantizeLinear/DequantizeLinear or QOperator-format ops."""
    return any(_is_qoperator(node) or node.op_type in QDQ_OPS for node in model.graph.node)


def load_quantized(source: str | Path | onnx.ModelProto) -> tuple[Graph, Quantization | None]:
    """Read an ONNX model: a float model gives ``(graph, None)``; a QDQ model gives the float
    graph of its dequantized values and the Quantization in the file, keyed by the graph's
    tensor and node names."""
    if isinstance(source, onnx.ModelProto):
        model, name, origin = source, "model", "model"  # the graph's own name wins if set
    else:
        model, name, origin = read_onnx(source), Path(source).stem, str(source)
    if not is_quantized(model):
        return import_onnx_model(model, name, origin), None
    rewritten = _Rewriter(model, origin).run()
    graph = import_onnx_model(rewritten.model, name, origin)
    names = ir_node_names(rewritten.model)
    weights = {names[index]: quant for index, quant in rewritten.weights.items()}
    quantization = _keyed(graph, rewritten.tensors, weights, origin)
    for node in graph.nodes:
        if node.name in quantization.weights:
            node.params["weight"] = quantization.weights[node.name].dequantize()
    return graph, quantization


@dataclass
class _Rewritten:
    model: onnx.ModelProto
    tensors: dict[str, TensorQuant] = field(default_factory=dict)  # by ONNX tensor name
    weights: dict[int, WeightQuant] = field(default_factory=dict)  # by index of its node


def _is_qoperator(node: onnx.NodeProto) -> bool:
    return node.op_type.startswith("QLinear") or node.op_type in QOPERATOR_OPS


def _type_name(data_type: int) -> str:
    return onnx.TensorProto.DataType.Name(data_type).lower()


class _Rewriter:
    """Turns a QDQ proto into a float proto plus the quantization parameters it held."""

    def __init__(self, model: onnx.ModelProto, origin: str) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.origin = origin
        graph = self.model.graph
        self.nodes = list(graph.node)  # one Python object per node: ids below stay valid
        self.names = dict(zip(map(id, self.nodes), ir_node_names(model), strict=True))
        self.inits = {init.name: init for init in graph.initializer}
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for tensor in node.input:
                self.readers.setdefault(tensor, []).append(node)
        self.outputs = {output.name for output in graph.output}
        self.result = _Rewritten(self.model)
        self.removed: set[int] = set()  # id() of the Q/DQ nodes dropped
        self.floats: dict[str, np.ndarray] = {}  # new float initializers
        self.renames: dict[str, str] = {}
        self.touched: set[int] = set()  # id() of nodes reading or writing a Q/DQ activation
        self.weight_of: dict[int, WeightQuant] = {}  # id() of a weighted node -> its weights

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.origin}: {message}")

    def name(self, node: onnx.NodeProto) -> str:
        """The node's name as the importer gives it (module path where torch recorded one)."""
        return self.names.get(id(node), node.name or node.op_type)

    def run(self) -> _Rewritten:
        for node in self.nodes:
            if _is_qoperator(node):
                raise self.fail(f"node {self.name(node)!r} is {node.op_type} (the "
                                "QOperator format); re-quantize with "
                                "quant_format=QuantFormat.QDQ")
        for node in self.nodes:
            if node.op_type == "QuantizeLinear":
                self._quantize(node)
        for node in self.nodes:
            if node.op_type == "DequantizeLinear" and id(node) not in self.removed:
                self._dequantize(node)
        self._check_ops()
        self._rebuild()
        self._restore_activations()
        graph = self.model.graph
        del graph.node[:]
        graph.node.extend(self.nodes)
        self.result.weights = {index: self.weight_of[id(node)]
                               for index, node in enumerate(self.nodes)
                               if id(node) in self.weight_of}
        return self.result

    # ---- parameters ------------------------------------------------------------------------
    def _array(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            return None
        if name in self.floats:
            return self.floats[name]
        if name not in self.inits:
            raise self.fail(f"{node.op_type} {self.name(node)!r}: input {name!r} must be an "
                            "initializer")
        return numpy_helper.to_array(self.inits[name])

    def _data_type(self, node: onnx.NodeProto) -> int:
        """The quantized type of a Q/DQ node: its zero point's, else Q's ``output_dtype``, else
        the DQ input's, else uint8 (ONNX's default)."""
        if len(node.input) > 2 and node.input[2] in self.inits:
            return self.inits[node.input[2]].data_type
        for attr in node.attribute:
            if attr.name == "output_dtype" and attr.i:
                return int(attr.i)
        if node.op_type == "DequantizeLinear" and node.input[0] in self.inits:
            return self.inits[node.input[0]].data_type
        return onnx.TensorProto.UINT8

    def _axis(self, node: onnx.NodeProto, rank: int) -> int:
        axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 1)
        return axis % rank if rank else 0

    # ---- activations -------------------------------------------------------------------------
    def _quantize(self, q: onnx.NodeProto) -> None:
        tensor = q.input[0]
        dqs = self.readers.get(q.output[0], [])
        if not dqs or any(r.op_type != "DequantizeLinear" for r in dqs) or \
                q.output[0] in self.outputs:
            other = next((r.op_type for r in dqs if r.op_type != "DequantizeLinear"), "nothing")
            raise self.fail(f"the QuantizeLinear of {tensor!r} feeds {other}; only "
                            "QuantizeLinear -> DequantizeLinear pairs are supported")
        if tensor in self.inits:  # a float weight stored with a Q -> DQ pair
            values = self._quantized_constant(q)
            for dq in dqs:
                self._constant(dq, values)
            self.removed.update(map(id, [q, *dqs]))
            return
        quant = self._tensor_quant(q, tensor)
        if self.result.tensors.setdefault(tensor, quant) != quant:
            raise self.fail(f"activation {tensor!r} is quantized twice with different scales "
                            "or zero points; one (s, z) per tensor is supported")
        self.removed.update(map(id, [q, *dqs]))
        producer = self.producer.get(tensor)
        if producer is not None:
            self.touched.add(id(producer))
        for dq in dqs:
            for reader in self.readers.get(dq.output[0], []):
                self.touched.add(id(reader))
                reader.input[:] = [tensor if t == dq.output[0] else t for t in reader.input]
                self.readers.setdefault(tensor, []).append(reader)
            if dq.output[0] in self.outputs:
                self.renames[tensor] = dq.output[0]

    def _tensor_quant(self, q: onnx.NodeProto, tensor: str) -> TensorQuant:
        data_type = self._data_type(q)
        if data_type not in _8BIT:
            raise self.fail(f"activation {tensor!r} is quantized as {_type_name(data_type)}; "
                            "only 8-bit activations (int8, or uint8 converted exactly) are "
                            "supported: re-quantize with activation_type=QuantType.QInt8")
        scale = self._array(q, 1)
        zero = self._array(q, 2)
        assert scale is not None
        if scale.size != 1 or (zero is not None and zero.size != 1):
            raise self.fail(f"activation {tensor!r} has per-channel scales; only one scale "
                            "per activation tensor is supported")
        z = 0 if zero is None else int(zero.reshape(()))
        return TensorQuant(float(np.float32(scale.reshape(()))), z - _8BIT[data_type])

    # ---- constants: weights and biases ----------------------------------------------------------
    def _quantized_constant(self, q: onnx.NodeProto) -> np.ndarray:
        """ONNX QuantizeLinear of a float initializer: ``saturate(rint(x / s) + z)``."""
        x, scale, zero = self._array(q, 0), self._array(q, 1), self._array(q, 2)
        assert x is not None and scale is not None
        dtype = helper.tensor_dtype_to_np_dtype(self._data_type(q))
        info = np.iinfo(dtype)
        shape = self._broadcast_shape(q, x.ndim, scale.size)
        offset = 0 if zero is None else zero.reshape(shape).astype(np.int64)
        ratio = np.rint(x.astype(np.float32) / scale.astype(np.float32).reshape(shape))
        return np.clip(ratio + offset, info.min, info.max).astype(dtype)

    def _broadcast_shape(self, node: onnx.NodeProto, rank: int, size: int) -> tuple[int, ...]:
        if size == 1:
            return (1,) * rank
        shape = [1] * rank
        shape[self._axis(node, rank)] = size
        return tuple(shape)

    def _constant(self, dq: onnx.NodeProto, values: np.ndarray) -> None:
        """A DequantizeLinear of a constant: a float initializer, and the weights of the Conv,
        Gemm or MatMul that reads it as its weight."""
        scale, zero = self._array(dq, 1), self._array(dq, 2)
        assert scale is not None
        shape = self._broadcast_shape(dq, values.ndim, scale.size)
        offset = np.zeros(shape, np.int64) if zero is None else zero.reshape(shape)
        readers = self.readers.get(dq.output[0], [])
        weighted = [r for r in readers if r.op_type in WEIGHTED_OPS and r.input[1] == dq.output[0]]
        if weighted:
            quant = self._weight_quant(weighted[0], dq, values, scale, offset)
            for reader in weighted:
                self.weight_of[id(reader)] = quant
        centred = (values.astype(np.int64) - offset).astype(np.float32)
        self.floats[dq.output[0]] = (scale.astype(np.float32).reshape(shape) * centred
                                     ).astype(np.float32)
        self.removed.add(id(dq))

    def _dequantize(self, dq: onnx.NodeProto) -> None:
        if dq.input[0] not in self.inits:
            raise self.fail(f"the DequantizeLinear of {dq.input[0]!r} has no QuantizeLinear "
                            "before it; only QuantizeLinear -> DequantizeLinear pairs and "
                            "dequantized initializers are supported")
        self._constant(dq, numpy_helper.to_array(self.inits[dq.input[0]]))

    def _weight_quant(self, layer: onnx.NodeProto, dq: onnx.NodeProto, values: np.ndarray,
                      scale: np.ndarray, zero: np.ndarray) -> WeightQuant:
        """The layer's WeightQuant in the IR's layout (output channel first)."""
        what = f"the weights of {layer.op_type} {self.name(layer)!r}"
        data_type = self._data_type(dq)
        if data_type == onnx.TensorProto.UINT8:
            raise self.fail(f"{what} are uint8; only symmetric int8 weights are supported: "
                            "re-quantize with weight_type=QuantType.QInt8")
        if data_type != onnx.TensorProto.INT8:
            raise self.fail(f"{what} are {_type_name(data_type)}; only 8-bit (int8) weights are "
                            "supported")
        if np.any(zero != 0):
            raise self.fail(f"{what} have a non-zero zero point (asymmetric); only symmetric "
                            "int8 weights (zero point 0) are supported")
        if int(values.min(initial=0)) < -WEIGHT_MAX:
            raise self.fail(f"{what} use -128; symmetric int8 weights lie in [-127, 127]")
        attrs = {a.name: helper.get_attribute_value(a) for a in layer.attribute}
        transposed = layer.op_type == "MatMul" or \
            (layer.op_type == "Gemm" and not attrs.get("transB", 0))
        if layer.op_type == "Gemm" and float(attrs.get("alpha", 1.0)) != 1.0:
            raise self.fail(f"{what}: Gemm alpha={attrs['alpha']} on quantized weights is "
                            "unsupported (fold alpha into the weights before quantizing)")
        channel_axis = 1 if transposed else 0
        if scale.size != 1 and self._axis(dq, values.ndim) != channel_axis:
            raise self.fail(f"{what} are quantized per channel along axis "
                            f"{self._axis(dq, values.ndim)}; only per output channel")
        q = values.T if transposed else values
        scales = np.broadcast_to(scale.astype(np.float32).reshape(-1), (q.shape[0],))
        return WeightQuant(np.ascontiguousarray(q, np.int8), scales.copy())

    # ---- checks and the rewritten proto -------------------------------------------------------
    def _check_ops(self) -> None:
        for node in self.nodes:
            if id(node) in self.removed:
                continue
            conv = self.producer.get(node.input[0]) if node.input else None
            if node.op_type == "BatchNormalization" and conv is not None and \
                    id(conv) in self.weight_of:
                raise self.fail(f"BatchNormalization {self.name(node)!r} follows the "
                                f"quantized Conv {self.name(conv)!r}; fold it before quantizing "
                                "(onnxruntime's quant_pre_process)")
            if id(node) in self.touched and node.op_type not in INT8_OPS:
                raise self.fail(f"node {self.name(node)!r}: {node.op_type} is "
                                "quantized in the file but has no int8 kernel here (int8 ops: "
                                f"{', '.join(INT8_OPS)})")

    def _rebuild(self) -> None:
        graph = self.model.graph
        kept = [n for n in self.nodes if id(n) not in self.removed]
        for node in kept:
            node.input[:] = [self.renames.get(t, t) for t in node.input]
            node.output[:] = [self.renames.get(t, t) for t in node.output]
        self.result.tensors = {self.renames.get(t, t): q for t, q in self.result.tensors.items()}
        used = {t for n in kept for t in n.input}
        inits = [i for i in graph.initializer if i.name in used and i.name not in self.floats]
        inits += [numpy_helper.from_array(v, k) for k, v in self.floats.items() if k in used]
        self.nodes = kept
        del graph.initializer[:]
        graph.initializer.extend(inits)
        del graph.value_info[:]
        inputs = [i for i in graph.input if i.name in used or i.name not in self.inits]
        del graph.input[:]
        graph.input.extend(inputs)

    def _restore_activations(self) -> None:
        """Put back the Relu/Clip onnxruntime removed: after every op output the QDQ model
        clamps at 0 (zero point at the int8 minimum) that the float graph could make negative."""
        tensors = self.result.tensors
        non_negative: set[str] = set()
        nodes: list[onnx.NodeProto] = []
        for node in self.nodes:
            nodes.append(node)
            out = node.output[0]
            if self._is_activation(node) or \
                    (node.op_type in SIGN_PRESERVING and node.input[0] in non_negative) or \
                    (node.op_type == "Add" and set(node.input) <= non_negative):
                non_negative.add(out)
                continue
            quant = tensors.get(out)
            if quant is None or quant.zero_point != INT8_MIN or out in self.outputs or \
                    all(map(self._is_activation, self._live_readers(out))):
                continue  # no clamp at 0, the classifier's output, or a kept Relu/Clip does it
            before = f"{out}__before_relu"
            node.output[0] = before
            tensors[before] = quant
            nodes.append(self._activation_node(before, out, quant))
            non_negative.add(out)
        self.nodes = nodes

    def _is_activation(self, node: onnx.NodeProto) -> bool:
        """A Relu, or a Clip whose lower bound is at least 0."""
        if node.op_type == "Relu":
            return True
        low = node.input[1] if node.op_type == "Clip" and len(node.input) > 1 else ""
        value = self.floats.get(low, numpy_helper.to_array(self.inits[low])
                                if low in self.inits else None)
        return value is not None and float(value.reshape(())) >= 0.0

    def _live_readers(self, tensor: str) -> list[onnx.NodeProto]:
        return [r for r in self.readers.get(tensor, []) if id(r) not in self.removed]

    def _activation_node(self, x: str, y: str, quant: TensorQuant) -> onnx.NodeProto:
        """ReLU6 when the quantized range ``[0, s · 255]`` ends at or below 6, else ReLU."""
        top = quant.scale * (127 - quant.zero_point)
        if top > RELU6_TOP:
            return helper.make_node("Relu", [x], [y], name=f"{y}__relu")
        low, high = f"{y}__clip_min", f"{y}__clip_max"
        self.model.graph.initializer.extend([
            numpy_helper.from_array(np.array(0.0, np.float32), low),
            numpy_helper.from_array(np.array(6.0, np.float32), high)])
        return helper.make_node("Clip", [x, low, high], [y], name=f"{y}__relu6")


def _keyed(graph: Graph, tensors: dict[str, TensorQuant], weights: dict[str, WeightQuant],
           origin: str) -> Quantization:
    """The file's parameters under the graph's names, checked complete: every tensor but the
    classifier's output has a TensorQuant, every Conv and Linear but the classifier weights."""
    found = {t: tensors[t] for t in graph.shapes if t in tensors}
    for node in graph.nodes_of(OpType.FLATTEN):  # a shape-only op: the same (s, z) both sides
        x, y = node.inputs[0], node.output
        if x not in found and y in found:
            found[x] = found[y]
        elif y not in found and x in found:
            found[y] = found[x]
    head = classifier_node(graph)
    for tensor in graph.shapes:
        if tensor not in found and tensor != head.output:
            producer = graph.producer(tensor)
            what = f"output of {producer.op.value} {producer.name!r}" if producer else "input"
            raise ModelError(f"{origin}: tensor {tensor!r} ({what}) has no QuantizeLinear -> "
                             "DequantizeLinear pair; quantize every op of the backbone")
    for node in graph.nodes_of(OpType.CONV, OpType.LINEAR):
        if node is not head and node.name not in weights:
            raise ModelError(f"{origin}: {node.op.value} {node.name!r} has float weights; "
                             "quantize the weights of every Conv and Gemm")
    kept = {name: quant for name, quant in weights.items() if name != head.name}
    return Quantization(found, kept, f"QDQ model {origin}")
