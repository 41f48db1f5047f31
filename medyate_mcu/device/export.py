"""The weights trained on a device, written back into the source ONNX model.

The build's source model is copied with new initializers for the candidate layers' weights and a
new classifier (its class count is the target task's). The IR folds BatchNorm into the Conv
before it, so where the source keeps a BatchNormalization after a trained Conv, the folded
weight and bias go into the Conv and the BatchNormalization becomes the identity. The written
model is checked with onnxruntime against the host reference forward pass of the trained graph.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import ReferenceNet, ir_node_names
from medyate_mcu.graph.ir import Graph, OpType, classifier_node
from medyate_mcu.outputs import atomic_file
from medyate_mcu.planning.schedule import classifier_size

FORWARD_TOLERANCE = 1e-4


def trained_graph(graph: Graph, layers: dict[str, np.ndarray], classifier: np.ndarray) -> Graph:
    """``graph`` (the build's IR, new head) with the trained values."""
    new = copy.deepcopy(graph)
    for name, values in layers.items():
        node = new.node(name)
        if values.size != node.params["weight"].size:
            raise MedyateError(f"layer {name!r}: {values.size} weights read back, the build has "
                               f"{node.params['weight'].size}")
        node.params["weight"] = np.asarray(values, np.float32).reshape(node.params["weight"].shape)
    head = classifier_node(new)
    size = head.params["weight"].size
    if classifier.size != classifier_size(new):
        raise MedyateError(f"the classifier read back has {classifier.size} values, the build's "
                           f"has {classifier_size(new)}")
    shape = head.params["weight"].shape
    head.params["weight"] = classifier[:size].reshape(shape).astype(np.float32)
    head.params["bias"] = classifier[size:].astype(np.float32)
    return new


def _ir_names(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """The IR name the importer gives each ONNX node (same naming, same order)."""
    return dict(zip(ir_node_names(model), model.graph.node, strict=True))


class _Writer:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph

    def set_input(self, node: onnx.NodeProto, index: int, name: str, value: np.ndarray) -> None:
        tensor = numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name)
        self.graph.initializer.append(tensor)
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = name

    def readers(self, tensor: str) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if tensor in n.input]

    def drop_unused_initializers(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        keep = [init for init in self.graph.initializer if init.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)


def write_trained_onnx(source: Path, graph: Graph, trained: Graph, out: Path,
                       check_input: np.ndarray) -> None:
    """Write ``source`` with ``trained``'s candidate and classifier values to ``out``."""
    model = onnx.load(str(source))
    names = _ir_names(model)
    writer = _Writer(model)
    head = classifier_node(trained)
    for node in trained.nodes:
        if node.op != OpType.CONV or np.array_equal(node.params["weight"],
                                                    graph.node(node.name).params["weight"]):
            continue
        onnx_node = names.get(node.name)
        if onnx_node is None or onnx_node.op_type != "Conv":
            raise MedyateError(f"cannot find the Conv of layer {node.name!r} in {source}")
        writer.set_input(onnx_node, 1, f"medyate.trained.{node.name}.weight", node.params["weight"])
        readers = writer.readers(onnx_node.output[0])
        if len(readers) == 1 and readers[0].op_type == "BatchNormalization":
            bn = readers[0]
            channels = node.params["bias"].size
            epsilon = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
            writer.set_input(onnx_node, 2, f"medyate.trained.{node.name}.bias", node.params["bias"])
            for index, value in ((1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0 - epsilon)):
                writer.set_input(bn, index, f"medyate.identity.{node.name}.{index}",
                                 np.full(channels, value, np.float32))
    _replace_classifier(writer, names, head.name, head.params["weight"], head.params["bias"],
                        source)
    writer.drop_unused_initializers()
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise MedyateError(f"the trained model does not validate: {str(exc).splitlines()[0]}") \
            from None
    _check_forward(model, trained, check_input)
    with atomic_file(out) as partial:
        onnx.save(model, str(partial))


def _replace_classifier(writer: _Writer, names: dict[str, onnx.NodeProto], name: str,
                        weight: np.ndarray, bias: np.ndarray, source: Path) -> None:
    node = names.get(name)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise MedyateError(f"cannot find the classifier {name!r} (Gemm or MatMul) in {source}")
    output = node.output[0]
    if node.op_type == "MatMul":  # the importer fused a constant Add that follows it, if any
        readers = writer.readers(output)
        constants = {init.name for init in writer.graph.initializer}
        if len(readers) == 1 and readers[0].op_type == "Add" \
                and any(i in constants for i in readers[0].input):
            add = readers[0]
            output = add.output[0]
            writer.graph.node.remove(add)
    names_wb = ("medyate.trained.classifier.weight", "medyate.trained.classifier.bias")
    for tensor, value in zip(names_wb, (weight, bias), strict=True):
        writer.graph.initializer.append(
            numpy_helper.from_array(np.ascontiguousarray(value, np.float32), tensor))
    gemm = helper.make_node("Gemm", [node.input[0], *names_wb], [output],
                            name=node.name or name, transB=1)
    index = list(writer.graph.node).index(node)
    writer.graph.node.remove(node)
    writer.graph.node.insert(index, gemm)  # (protobuf inserts a copy)
    classes = weight.shape[0]
    for value in writer.graph.output:
        if value.name == output:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 2:
                dims[1].ClearField("dim_param")
                dims[1].dim_value = classes
    keep = [v for v in writer.graph.value_info if v.name != output]
    del writer.graph.value_info[:]
    writer.graph.value_info.extend(keep)


def _check_forward(model: onnx.ModelProto, trained: Graph, x: np.ndarray) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    batch = np.ascontiguousarray(x[None], np.float32)
    got = session.run(None, {session.get_inputs()[0].name: batch})[0].reshape(-1)
    with torch.no_grad():
        want = ReferenceNet(trained)(torch.from_numpy(batch)).numpy().reshape(-1)
    error = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-12)
    if got.shape != want.shape or not error <= FORWARD_TOLERANCE:  # NaN fails too
        raise MedyateError(f"the written model's output differs from the trained network's "
                           f"(relative error {error:.1e}); not saved")
