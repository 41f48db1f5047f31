"""The int8 region as the float reference sees it (docs/quantization.md §5): run by the numpy
integer reference, its tensors that float nodes read handed over dequantized."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from medyate_mcu.graph.ir import Graph
from medyate_mcu.quant.int_reference import run_int8
from medyate_mcu.quant.lowering import int8_region, output_quant
from medyate_mcu.quant.scheme import Quantization


class Int8Prefix:
    """Callable for ``ReferenceNet(prefix=...)``: a batch -> the dequantized boundary tensors.

    The region is frozen, so each sample's int8 values are computed once and kept (keyed by the
    sample's bytes); :meth:`int8_values` gives them to the verifier, which holds the C engine's
    int8 outputs to them bit for bit."""

    def __init__(self, graph: Graph, quantization: Quantization,
                 candidates: tuple[str, ...] | list[str]) -> None:
        self.graph = graph
        self.quantization = quantization
        self.region = int8_region(graph, candidates)
        self.nodes = frozenset(node.name for node in self.region)
        self.boundary = [node for node in self.region
                         if any(c.name not in self.nodes for c in graph.consumers(node.output))]
        self._cache: dict[bytes, dict[str, np.ndarray]] = {}

    def int8_values(self, sample: np.ndarray) -> dict[str, np.ndarray]:
        """Every int8 tensor of the region for one float32 sample (see ``run_int8``)."""
        sample = np.ascontiguousarray(sample, np.float32)
        key = hashlib.sha1(sample.tobytes()).digest()
        if key not in self._cache:
            self._cache[key] = run_int8(self.graph, self.quantization, self.region, sample)
        return self._cache[key]

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.region:
            return {}
        samples = [self.int8_values(row) for row in x.detach().numpy()]
        values = {}
        for node in self.boundary:
            quant = output_quant(self.graph, self.quantization, node, self.nodes)
            values[node.output] = torch.from_numpy(
                np.stack([quant.dequantize(s[node.output]) for s in samples]))
        return values
