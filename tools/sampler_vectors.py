"""Writes the sampler contract's test vectors (docs/design.md §8) from the host reference.

    .venv/bin/python tools/sampler_vectors.py firmware/tests/vectors/sampler_vectors.json

The C runtime is checked against the file (tests/test_sampler_c.py); tests/test_sampler.py checks
it against an independent, naive implementation of the selection.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from medyate_mcu.method.sampler import (
    FIRST_EPOCH,
    MASK32,
    MASK64,
    Pcg32,
    channel_weights,
    select_channels,
)


def _f32_bits(values: ArrayLike) -> list[int]:
    return np.asarray(values, dtype=np.float32).view(np.uint32).tolist()


def _pseudo_norms(count: int, seed: int, low: float, high: float) -> NDArray[np.float32]:
    """Deterministic float32 norms in [low, high) from PCG32 (no dependence on numpy's RNG)."""
    rng = Pcg32(seed, 7)
    unit = np.array([rng.next_u32() >> 8 for _ in range(count)], dtype=np.float64) / 2.0**24
    return (low + unit * (high - low)).astype(np.float32)


def _weight_cases() -> list[tuple[str, Any, bool]]:
    tiny = np.float32(1e-40)  # subnormal
    return [
        ("hand", [1.0, 0.5, 0.0, 0.25], False),
        ("ties", [2.0, 2.0, 1.0, 1.0, 2.0], False),
        ("zeros_and_one", [0.0, 0.0, 3.0, 0.0], False),
        ("all_zero", [0.0, 0.0, 0.0], False),
        ("negative_zero", [-0.0, 0.0, 1.0], False),
        ("tiny_round_to_one", [1.0, 1e-8, 2.9e-8, 3.0e-8, 1e-30, 0.0], False),
        ("dynamic_range", [3.0e38, 1.0e30, 1.0, 1e-20, 1.7e31, 2.5e37], False),
        ("subnormal_max", [tiny, tiny / 2, tiny / 3, 0.0], False),
        ("halfway", [16777215.0, 8388607.0, 1.5, 0.5, 4194303.0, 12582911.0], False),
        # q * 16777215 lands just below k + 0.5 (k even): a fused multiply-add gives k + 1.
        ("fma_sensitive", [1.0, 0.5 + 7 * 2.0**-24, 0.5 + 21 * 2.0**-24], False),
        ("uniform_ignores_values", [5.0, 0.0, 1.0], True),
        ("pseudo_random_64", _pseudo_norms(64, 11, 0.0, 2.0), False),
        ("empty", [], False),
    ]


def _selection_cases() -> list[dict[str, Any]]:
    big = _pseudo_norms(600, 5, 0.5, 1.0)
    big_costs = [1 + (i * 37) % 5 for i in range(600)]
    mixed = [3, 9, 1, 4, 12, 2, 7, 5, 6, 8, 2, 11]
    graded = [float(i % 6) for i in range(12)]
    return [
        {"name": "uniform_epoch1", "seed": 42, "epoch": 1, "costs": [2] * 10, "budget": 9,
         "norms": None},
        {"name": "uniform_epoch1_norms_ignored", "seed": 42, "epoch": 1, "costs": [2] * 10,
         "budget": 9, "norms": [float(i) for i in range(10)]},
        {"name": "hand_uniform", "seed": 42, "epoch": 54, "costs": [1, 1, 5, 1], "budget": 3,
         "norms": None},
        {"name": "hand_weighted", "seed": 42, "epoch": 54, "costs": [1, 1, 1, 1], "budget": 2,
         "norms": [1.0, 0.5, 0.0, 0.25]},
        {"name": "heterogeneous_drops", "seed": 7, "epoch": 3, "costs": mixed, "budget": 20,
         "norms": graded},
        {"name": "heterogeneous_drops_b", "seed": 123456789, "epoch": 9, "costs": mixed,
         "budget": 31, "norms": [1.0] * 6 + [0.01] * 6},
        {"name": "fits_nothing", "seed": 1, "epoch": 2, "costs": [5, 6, 7], "budget": 4,
         "norms": [1.0, 2.0, 3.0]},
        {"name": "zero_budget", "seed": 1, "epoch": 2, "costs": [5, 6, 7], "budget": 0,
         "norms": [1.0, 2.0, 3.0]},
        {"name": "fits_everything", "seed": 2, "epoch": 4, "costs": mixed, "budget": sum(mixed),
         "norms": graded},
        {"name": "all_zero_norms", "seed": 3, "epoch": 5, "costs": [1] * 8, "budget": 3,
         "norms": [0.0] * 8},
        {"name": "empty", "seed": 3, "epoch": 2, "costs": [], "budget": 10, "norms": []},
        {"name": "large_seed", "seed": MASK64, "epoch": MASK32, "costs": [2, 3, 4, 5, 6],
         "budget": 9, "norms": [0.1, 0.2, 0.3, 0.4, 0.5]},
        {"name": "total_over_2_32", "seed": 2024, "epoch": 6, "costs": big_costs,
         "budget": 700, "norms": big},
    ]


def build_vectors() -> dict[str, Any]:
    """The sampler test vectors, as JSON-ready data (norms as float32 bit patterns)."""
    pcg = []
    for initstate, initseq in [(42, 54), (0, 0), (1, 1), (MASK64, MASK64), (2024, 6),
                               (0x853C49E6748FEA9B, 0xDA3E39CB94B95BDB)]:
        rng = Pcg32(initstate, initseq)
        outputs = [rng.next_u32() for _ in range(16)]
        pcg.append({"initstate": initstate, "initseq": initseq, "outputs": outputs})

    weights = [
        {"name": name, "norms_f32_bits": _f32_bits(norms), "uniform": uniform,
         "weights": channel_weights(np.asarray(norms, dtype=np.float32), uniform).tolist()}
        for name, norms, uniform in _weight_cases()
    ]
    bad = [
        {"name": name, "norms_f32_bits": _f32_bits(norms)}
        for name, norms in [
            ("nan", [1.0, float("nan"), 2.0]),
            ("negative", [1.0, 2.0, -0.5]),
            ("positive_infinity", [float("inf"), 1.0]),
            ("negative_infinity", [0.0, float("-inf")]),
            ("negative_tiny", [1.0, -1e-40]),
        ]
    ]
    selections = []
    for case in _selection_cases():
        norms = case["norms"]
        uniform = norms is None or case["epoch"] == FIRST_EPOCH
        case_weights = (np.ones(len(case["costs"]), dtype=np.uint32) if norms is None
                        else channel_weights(norms, uniform))
        selections.append({
            "name": case["name"], "seed": case["seed"], "epoch": case["epoch"],
            "costs": case["costs"], "budget": case["budget"],
            "norms_f32_bits": None if norms is None else _f32_bits(norms),
            "weights": case_weights.tolist(),
            "selected": select_channels(case["seed"], case["epoch"], case["costs"],
                                        case["budget"], norms),
        })
    return {
        "about": "Sampler contract vectors (docs/design.md §8), generated by "
                 "tools/sampler_vectors.py. Norms are float32 bit patterns; "
                 "'selected' is in draw order; 'weights' are uniform when norms is null or "
                 "epoch is 1.",
        "pcg32": pcg,
        "weights": weights,
        "bad_norms": bad,
        "selections": selections,
    }


def write_vectors(path: Path) -> None:
    """Write ``build_vectors()`` to ``path`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_vectors(), indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/sampler_vectors.py",
                                     description="Write the sampler's C test vectors.")
    parser.add_argument("path", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    write_vectors(args.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
