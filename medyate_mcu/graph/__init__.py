"""Stage 1 of the pipeline: the graph IR, importers (ONNX, PyTorch), passes and the
reference forward pass."""

from medyate_mcu.graph.ir import Graph, Node, OpType, Shape, Window
from medyate_mcu.graph.onnx_import import (
    SUPPORTED_OPS,
    import_onnx_model,
    ir_node_names,
    load_onnx,
)
from medyate_mcu.graph.reference import ReferenceNet
from medyate_mcu.graph.torch_import import export_onnx, import_torch

__all__ = [
    "SUPPORTED_OPS",
    "Graph",
    "Node",
    "OpType",
    "ReferenceNet",
    "Shape",
    "Window",
    "export_onnx",
    "import_onnx_model",
    "import_torch",
    "ir_node_names",
    "load_onnx",
]
