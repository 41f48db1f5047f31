"""The channel sampler of docs/design.md §4 and its sampler contract (§8), the host reference.

Selection is defined on integers so that this module, the host-built C runtime
(``firmware/runtime/sampler.c``) and the Cortex-M build agree bit for bit:

- ``Pcg32``: PCG32 XSH-RR with the reference ``pcg32_srandom(initstate, initseq)`` seeding.
- ``channel_weights``: norms (float32) to integer weights in [1, 2^24].
- ``draw_channels`` / ``select_channels``: one epoch's draw without replacement until the budget
  is full, from a generator seeded with ``(seed, epoch)``. Epochs are numbered from 1; epoch 1 is
  the uniform one.
- ``update_norm_vector``: the norm vector after an epoch, with the optimistic exploration step.

The test vectors the C side is checked against (``firmware/tests/vectors/sampler_vectors.json``)
are written by ``tools/sampler_vectors.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
