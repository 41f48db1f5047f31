"""The bundled transfer-learning panel: offline datasets, reference architectures, the
pre-trained models that ship with the package (by name), and their evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medyate_mcu.zoo.datasets import (
    DOWNSTREAM_TASKS,
    SOURCE_TASK,
    SPECS,
    Dataset,
    DatasetSpec,
    Split,
    build,
    cache_dir,
)

MODELS_DIR = Path(__file__).parent / "models"


@dataclass(frozen=True)
class BundledModel:
    """A pre-trained model shipped in ``MODELS_DIR``, with its LaRa ranking beside it."""

    file: str
    summary: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "demo-mbv2": BundledModel("demo_mbv2.onnx", "the default: MCUNet-style MobileNetV2, 32 px, "
                                                "65k parameters"),
    "mbv2-w0.35-128": BundledModel("mbv2_w035_128.onnx", "MobileNetV2 width 0.35, 128 px, "
                                                         "469k parameters (the paper's scale)"),
    "ds-cnn-kws": BundledModel("ds_cnn_kws.onnx", "keyword-spotting DS-CNN on 1×49×10 MFCCs, "
                                                  "12 classes, 22.6k parameters"),
}
DEFAULT_MODEL_NAME = "demo-mbv2"
DEFAULT_MODEL = BUNDLED_MODELS[DEFAULT_MODEL_NAME].file


def bundled_model_path(name: str) -> Path | None:
    """The file of the bundled model called ``name``, or None if no bundled model has it."""
    model = BUNDLED_MODELS.get(name)
    return None if model is None else MODELS_DIR / model.file


def default_model_path() -> Path:
    """The pre-trained demo model shipped inside the package (ONNX, with its metadata)."""
    return MODELS_DIR / DEFAULT_MODEL


__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MODEL_NAME",
    "DOWNSTREAM_TASKS",
    "SOURCE_TASK",
    "SPECS",
    "BundledModel",
    "Dataset",
    "DatasetSpec",
    "Split",
    "build",
    "bundled_model_path",
    "cache_dir",
    "default_model_path",
]
