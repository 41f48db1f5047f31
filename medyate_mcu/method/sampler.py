"""The channel sampler of docs/design.md §4 and its sampler contract (§8), the host reference.

Selection is defined on integers so that this module, the host-built C runtime
(``firmware/runtime/sampler.c``) and the Cortex-M build agree bit for bit:

- ``Pcg32``: PCG32 XSH-RR with the reference ``pcg32_srandom(initstate, initseq)`` seeding.
- ``channel_weights``: norms (float32) to integer weights in [1, 2^24].
- ``draw_channels`` / ``select_channels``: one epoch's draw without replacement until the budget
  is full, from a generator seeded with ``(seed, epoch)``. Epochs are numbered from 1; epoch 1 is
  the uniform one.
- ``update_norm_vector``: the norm vector after an epoch, with the optimistic exploration step.

``python -m medyate_mcu.method.sampler --write-vectors PATH`` writes the test vectors the C side is
checked against (``firmware/tests/vectors/sampler_vectors.json``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1
PCG_MULTIPLIER = 6364136223846793005
MAX_CHANNELS = 1 << 16  # the C side writes selected indices as uint16
WEIGHT_SCALE = np.float32(16777215.0)  # 2^24 - 1
HALF = np.float32(0.5)
FIRST_EPOCH = 1


class Pcg32:
    """PCG32 (XSH-RR output, 64-bit LCG state), seeded as the reference ``pcg32_srandom``."""

    __slots__ = ("inc", "state")

    def __init__(self, initstate: int, initseq: int) -> None:
        _check_u64(initstate, "initstate")
        _check_u64(initseq, "initseq")
        self.state = 0
        self.inc = ((initseq << 1) | 1) & MASK64
        self.next_u32()
        self.state = (self.state + initstate) & MASK64
        self.next_u32()

    def next_u32(self) -> int:
        """Advance the state; return the output of the old state."""
        old = self.state
        self.state = (old * PCG_MULTIPLIER + self.inc) & MASK64
        xorshifted = (((old >> 18) ^ old) >> 27) & MASK32
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & MASK32


def channel_weights(norms: ArrayLike, uniform: bool = False) -> NDArray[np.uint32]:
    """Integer draw weights from a norm vector (contract: IEEE float32, each op rounded, no FMA).

    ``w_c = max(1, uint32(float32(float32(N_c / max N) * 16777215) + 0.5))``; all ones when
    ``uniform`` (epoch 1, TraDy) or when ``max N == 0``. Norms are converted to float32 first, as
    the device stores them. With ``uniform`` only the length of ``norms`` is used. Otherwise a
    NaN, infinite or negative norm means a corrupted norm vector: ``ValueError``.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.asarray(norms, dtype=np.float32)
    if values.ndim != 1:
        raise ValueError(f"norm vector must be one-dimensional, got shape {values.shape}")
    _check_count(values.size)
    ones = np.ones(values.size, dtype=np.uint32)
    if uniform:
        return ones
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        index = int(bad[0])
        raise ValueError(
            f"norm vector entry {index} is {float(values[index])!r}: norms must be finite and "
            "non-negative (the norm vector is corrupted)"
        )
    if values.size == 0:
        return ones
    largest = values.max()
    if largest == 0:
        return ones
    quotient = values / largest  # float32 / float32: one rounding
    scaled = quotient * WEIGHT_SCALE  # one rounding
    rounded = scaled + HALF  # one rounding; no fused multiply-add
    return np.maximum(rounded.astype(np.uint32), np.uint32(1))


@dataclass(frozen=True)
class Draw:
    """One draw: generator output, pool total, scaled value ``r``, channel, kept or dropped."""

    u32: int
    total: int
    r: int
    channel: int
    selected: bool


def trace_draws(
    seed: int, epoch: int, costs: Sequence[int], budget: int, weights: Sequence[int]
) -> list[Draw]:
    """Every draw of one epoch, in order (the contract's "Before each draw" / "A draw" steps)."""
    _check_u64(seed, "seed")
    if not FIRST_EPOCH <= epoch <= MASK32:
        raise ValueError(f"epoch must be in 1..2^32-1 (epochs are numbered from 1), got {epoch}")
    if len(costs) != len(weights):
        raise ValueError(f"{len(costs)} costs but {len(weights)} weights")
    _check_count(len(costs))
    cost = [int(c) for c in costs]
    weight = [int(w) for w in weights]
    if any(not 0 <= c <= MASK32 for c in cost):
        raise ValueError("channel costs must be in 0..2^32-1")
    if any(not 1 <= w <= MASK32 for w in weight):
        raise ValueError("channel weights must be in 1..2^32-1")
    if not 0 <= budget <= MASK32:
        raise ValueError(f"budget must be in 0..2^32-1, got {budget}")

    rng = Pcg32(seed, epoch)
    pool = list(range(len(cost)))  # remaining channels, canonical order
    total = sum(weight)
    left = budget
    draws: list[Draw] = []
    while any(cost[c] <= left for c in pool):
        u = rng.next_u32()
        r = (u * total) >> 32  # exact; the C side computes the same 96-bit product
        position = _first_exceeding(pool, weight, r)
        channel = pool.pop(position)
        total -= weight[channel]
        fits = cost[channel] <= left
        if fits:
            left -= cost[channel]
        draws.append(Draw(u, total + weight[channel], r, channel, fits))
    return draws


def _first_exceeding(pool: list[int], weight: list[int], r: int) -> int:
    """Position in ``pool`` of the first channel whose running sum of weights exceeds ``r``."""
    running = 0
    for position, channel in enumerate(pool):
        running += weight[channel]
        if running > r:
            return position
    raise AssertionError("r is below the pool total, so some running sum exceeds it")


def draw_channels(
    seed: int, epoch: int, costs: Sequence[int], budget: int, weights: Sequence[int]
) -> list[int]:
    """Selected channel indices of one epoch, in draw order, from integer weights."""
    return [d.channel for d in trace_draws(seed, epoch, costs, budget, weights) if d.selected]


def select_channels(
    seed: int,
    epoch: int,
    costs: Sequence[int],
    budget: int,
    norms: ArrayLike | None = None,
) -> list[int]:
    """Selected channel indices of one epoch, in draw order (docs/design.md §4).

    Weights are uniform in epoch 1 and when ``norms`` is None (TraDy's uniform resampling),
    else ``channel_weights(norms)``.
    """
    if norms is None:
        weights = np.ones(len(costs), dtype=np.uint32)
    else:
        weights = channel_weights(norms, uniform=epoch == FIRST_EPOCH)
    return draw_channels(seed, epoch, costs, budget, weights.tolist())


def update_norm_vector(
    norms: ArrayLike,
    selected: Sequence[int],
    selected_norm_sums: ArrayLike,
    steps: int,
    epoch: int,
) -> NDArray[np.float32]:
    """The norm vector after ``epoch`` ended (a new array; the inputs are not modified).

    ``selected_norm_sums[k]`` is the sum, over the epoch's ``steps`` optimizer steps, of the L2
    norm of channel ``selected[k]``'s gradient slice. Selected channels get that average; the
    others keep their value. After epoch 1 only, every channel not selected in it (in epoch 1
    that is every never-selected channel) gets the largest average observed, so that unseen
    channels are drawn first (optimistic exploration). No channel selected: nothing observed,
    nothing changes.
    """
    new = np.array(norms, dtype=np.float32)
    sums = np.asarray(selected_norm_sums, dtype=np.float32)
    chosen = np.asarray(selected, dtype=np.int64)
    if new.ndim != 1 or sums.ndim != 1 or chosen.ndim != 1:
        raise ValueError("norms, selected and selected_norm_sums must be one-dimensional")
    if chosen.size != sums.size:
        raise ValueError(f"{chosen.size} selected channels but {sums.size} norm sums")
    if chosen.size and (chosen.min() < 0 or chosen.max() >= new.size):
        raise ValueError(f"selected channel out of range 0..{new.size - 1}")
    if np.unique(chosen).size != chosen.size:
        raise ValueError("selected channels must be distinct")
    if not (np.isfinite(sums).all() and (sums >= 0).all()):
        raise ValueError("gradient norm sums must be finite and non-negative")
    if steps < 1:
        raise ValueError(f"an epoch has at least one optimizer step, got {steps}")
    if epoch < FIRST_EPOCH:
        raise ValueError(f"epochs are numbered from 1, got {epoch}")
    averages = sums / np.float32(steps)
    new[chosen] = averages
    if epoch == FIRST_EPOCH and chosen.size:
        unseen = np.ones(new.size, dtype=bool)
        unseen[chosen] = False
        new[unseen] = averages.max()
    return new


def _check_u64(value: int, name: str) -> None:
    if not 0 <= value <= MASK64:
        raise ValueError(f"{name} must be in 0..2^64-1, got {value}")


def _check_count(count: int) -> None:
    if count > MAX_CHANNELS:
        raise ValueError(f"{count} candidate channels: at most {MAX_CHANNELS} are supported")


# --- test vectors for the C runtime -------------------------------------------------------------


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
        "about": "Sampler contract vectors (docs/design.md §8), generated by python -m "
                 "medyate_mcu.method.sampler --write-vectors. Norms are float32 bit patterns; "
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
    parser = argparse.ArgumentParser(prog="python -m medyate_mcu.method.sampler",
                                     description="Write the sampler's C test vectors.")
    parser.add_argument("--write-vectors", type=Path, required=True, metavar="PATH")
    args = parser.parse_args(argv)
    write_vectors(args.write_vectors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
