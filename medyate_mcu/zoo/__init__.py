"""The bundled transfer-learning panel: offline datasets, reference architectures, the
pre-trained demo model that ships with the package, and its evaluation."""

from __future__ import annotations

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
DEFAULT_MODEL = "demo_mbv2.onnx"


def default_model_path() -> Path:
    """The pre-trained demo model shipped inside the package (ONNX, with its metadata)."""
    return MODELS_DIR / DEFAULT_MODEL


__all__ = [
    "DOWNSTREAM_TASKS",
    "SOURCE_TASK",
    "SPECS",
    "Dataset",
    "DatasetSpec",
    "Split",
    "build",
    "cache_dir",
    "default_model_path",
]
