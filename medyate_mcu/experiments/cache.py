"""The cell cache: OUTPUT/cells/<key>.json, one finished cell each, written atomically. The key
hashes everything a cell's result depends on, so a changed model, data or setting never reuses a
stale cell; a killed sweep resumes with the cells it finished."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from medyate_mcu.experiments.cells import Cell, RunResult, SweepConfig
from medyate_mcu.experiments.prepare import TaskInputs
from medyate_mcu.graph.ir import Graph
from medyate_mcu.outputs import write_text_atomic

CACHE_FORMAT = "medyate-sweep-cell-1"  # change when a cell computes differently
LOG = logging.getLogger(__name__)


def graph_fingerprint(graph: Graph) -> str:
    """SHA-256 of the whole graph: structure, shapes, metadata and every parameter."""
    digest = hashlib.sha256(json.dumps(
        [graph.name, graph.input, graph.output, sorted(graph.shapes.items()),
         sorted(graph.metadata.items())]).encode())
    for node in graph.nodes:
        digest.update(json.dumps([node.name, node.op.value, node.inputs, node.output,
                                  repr(node.attrs)]).encode())
        for name in sorted(node.params):
            array = np.ascontiguousarray(node.params[name])
            digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def cell_key(model: str, inputs: TaskInputs, config: SweepConfig, cell: Cell,
             threads: int) -> str:
    """The cache key of ``cell``: ``model`` (:func:`graph_fingerprint`), the task's and its
    proxy's data, every setting that changes a result, the thread count and the cell."""
    payload = {
        "format": CACHE_FORMAT, "model": model, "data": inputs.data_hash,
        "proxy": [inputs.proxy.name, inputs.proxy_hash],
        "train": asdict(config.train) | {"seed": None}, "lara": asdict(config.lara),
        "alpha": repr(config.alpha), "k_rule": config.k_rule.value,
        "calibration_samples": config.calibration_samples,
        "train_per_class": config.train_per_class, "threads": threads, "cell": asdict(cell),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


class CellCache:
    """Finished cells of the sweeps written to ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str) -> RunResult | None:
        """The cached result, or None (absent; corrupt: with a warning, to be recomputed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data["key"] != key:
                raise ValueError(f"key {data['key']!r}")
            return RunResult(**data["result"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOG.warning("warning: corrupt sweep cache file %s (%s): recomputing the cell",
                        path, exc)
            return None

    def store(self, key: str, result: RunResult) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path(key), json.dumps({"key": key, "result": asdict(result)},
                                                     indent=1))
