"""Import a ``torch.nn.Module``: export it to ONNX in memory, then take the ONNX path."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping

import onnx
import torch

from medyate_mcu.errors import ModelError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.graph.onnx_import import import_onnx_model

EXPORT_OPSET = 18


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and deprecation chatter (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(module: torch.nn.Module, example_input: torch.Tensor,
                metadata: Mapping[str, str] | None = None) -> onnx.ModelProto:
    """Export ``module`` (in eval mode, batch size 1) to an ONNX model in memory.

    ``metadata`` is stored in the model's ``metadata_props``.
    """
    example = example_input[:1].detach()
    was_training = module.training
    module.eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True,
                                        opset_version=EXPORT_OPSET, verbose=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"torch could not export {type(module).__name__} to ONNX: {first}") \
            from None
    finally:
        module.train(was_training)
    model = program.model_proto
    strip_debug_metadata(model)
    model.graph.name = model.graph.name or type(module).__name__
    if metadata:
        existing = {prop.key: prop.value for prop in model.metadata_props}
        onnx.helper.set_model_props(model, {**existing, **{k: str(v) for k, v in metadata.items()}})
    return model


# Per-node metadata the exporter writes for debugging: a Python stack trace and the FX node's
# text (about 10 % of a MobileNetV2's file); the importer reads only the name scopes.
DEBUG_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def strip_debug_metadata(model: onnx.ModelProto) -> None:
    """Remove :data:`DEBUG_METADATA` from every node of ``model``, in place."""
    for node in model.graph.node:
        kept = [prop for prop in node.metadata_props if prop.key not in DEBUG_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def import_torch(module: torch.nn.Module, example_input: torch.Tensor) -> Graph:
    """Import a PyTorch module through an in-memory ONNX export."""
    model = export_onnx(module, example_input)
    return import_onnx_model(model, name=type(module).__name__,
                             origin=f"torch module {type(module).__name__}")
