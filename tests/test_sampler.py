"""The host reference sampler against docs/design.md §8 (sampler contract) and §4."""

from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medyate_mcu.method.sampler import (
    Pcg32,
    channel_weights,
    draw_channels,
    select_channels,
    trace_draws,
    update_norm_vector,
)

VECTORS = Path(__file__).resolve().parents[1] / "firmware/tests/vectors/sampler_vectors.json"


# --- PCG32 ---------------------------------------------------------------------------------------


def test_pcg32_matches_reference_demo() -> None:
    # pcg-c-basic's pcg32-demo, pcg32_srandom_r(&rng, 42u, 54u), "Round 1" 32bit line.
    rng = Pcg32(42, 54)
    assert [rng.next_u32() for _ in range(6)] == [
        0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293, 0xBFA4784B, 0xCBED606E,
    ]


def test_pcg32_seeding_state_and_later_outputs() -> None:
    rng = Pcg32(42, 54)
    # State and increment after pcg32_srandom(42, 54), as other PCG ports pin them.
    assert (rng.state, rng.inc) == (1753877967969059832, 109)
    outputs = [rng.next_u32() for _ in range(626)]
    # The demo's "Round 5" 32bit line: outputs 620..625 of the same stream.
    assert outputs[620:] == [0xFCEF7CD6, 0x1B488B5A, 0xD0DAF7EA, 0x1D9A70F7, 0x241A37CF,
                             0x9A3857B7]


def test_pcg32_rejects_out_of_range_seeds() -> None:
    with pytest.raises(ValueError, match="initstate"):
        Pcg32(-1, 0)
    with pytest.raises(ValueError, match="initseq"):
        Pcg32(0, 1 << 64)


# --- vectors file, against a naive second implementation ----------------------------------------
#
# The vectors are written by tools/sampler_vectors.py from the module under test; here they are
# checked against code written independently from docs/design.md §8: float32 rounding by packing
# Python floats (exact double results, each rounded once to float32), and a draw that rebuilds the
# remaining channels' cumulative weights from scratch every time.


def _to_f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _naive_weights(norms_bits: list[int], uniform: bool) -> list[int]:
    norms = [struct.unpack("<f", struct.pack("<I", bits))[0] for bits in norms_bits]
    if uniform or not norms or max(norms) == 0:
        return [1] * len(norms)
    largest = max(norms)
    weights = []
    for norm in norms:
        # A float32 quotient, product and sum are exact in double before the single rounding
        # (division: double has more than 2·24 + 2 bits), so each line is one float32 operation.
        q = _to_f32(norm / largest)
        scaled = _to_f32(q * 16777215.0)
        rounded = _to_f32(scaled + 0.5)
        weights.append(max(1, int(rounded)))
    return weights


def _naive_selection(seed: int, epoch: int, costs: list[int], budget: int,
                     weights: list[int]) -> list[int]:
    rng = Pcg32(seed, epoch)  # checked against the published reference outputs above
    remaining = list(range(len(costs)))
    selected: list[int] = []
    left = budget
    while [c for c in remaining if costs[c] <= left]:
        u = rng.next_u32()
        total = sum(weights[c] for c in remaining)
        r = (u * total) // 2**32
        bounds = [sum(weights[c] for c in remaining[:i + 1]) for i in range(len(remaining))]
        channel = remaining[min(i for i, bound in enumerate(bounds) if bound > r)]
        remaining.remove(channel)
        if costs[channel] <= left:
            selected.append(channel)
            left -= costs[channel]
    return selected


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def test_vector_pcg32_streams_match_the_generator() -> None:
    cases = _vectors()["pcg32"]
    assert {"initstate": 42, "initseq": 54} in [
        {k: v for k, v in case.items() if k != "outputs"} for case in cases
    ]
    for case in cases:
        rng = Pcg32(case["initstate"], case["initseq"])
        assert case["outputs"] == [rng.next_u32() for _ in case["outputs"]]


def test_vector_weights_match_a_naive_rounding() -> None:
    cases = _vectors()["weights"]
    assert len(cases) >= 10
    for case in cases:
        expected = _naive_weights(case["norms_f32_bits"], case["uniform"])
        assert case["weights"] == expected, case["name"]
        norms = np.array(case["norms_f32_bits"], dtype=np.uint32).view(np.float32)
        assert channel_weights(norms, case["uniform"]).tolist() == expected, case["name"]


def test_vector_selections_match_a_naive_draw() -> None:
    cases = _vectors()["selections"]
    assert len(cases) >= 10
    for case in cases:
        uniform = case["norms_f32_bits"] is None or case["epoch"] == 1
        weights = ([1] * len(case["costs"]) if case["norms_f32_bits"] is None
                   else _naive_weights(case["norms_f32_bits"], uniform))
        assert case["weights"] == weights, case["name"]
        args = (case["seed"], case["epoch"], case["costs"], case["budget"])
        expected = _naive_selection(*args, weights)
        assert case["selected"] == expected, case["name"]
        assert draw_channels(*args, weights) == expected, case["name"]


def test_vector_bad_norms_are_rejected() -> None:
    for case in _vectors()["bad_norms"]:
        norms = np.array(case["norms_f32_bits"], dtype=np.uint32).view(np.float32)
        with pytest.raises(ValueError, match="corrupted"):
            channel_weights(norms)


def test_naive_draw_matches_on_random_cases() -> None:
    rng = Pcg32(2718, 3)
    for case in range(150):
        n = rng.next_u32() % 30
        costs = [rng.next_u32() % 8 for _ in range(n)]
        weights = [1 + rng.next_u32() % (1 << (rng.next_u32() % 31)) for _ in range(n)]
        budget = rng.next_u32() % (sum(costs) + 3)
        args = (case * 7919, 2 + case % 4, costs, budget)
        assert draw_channels(*args, weights) == _naive_selection(*args, weights)


def test_vectors_cover_the_required_cases() -> None:
    selections = {case["name"]: case for case in _vectors()["selections"]}
    assert selections["fits_nothing"]["selected"] == []
    everything = selections["fits_everything"]
    assert sorted(everything["selected"]) == list(range(len(everything["costs"])))
    big = selections["total_over_2_32"]
    assert len(big["costs"]) > 300
    total = sum(big["weights"])
    assert total > 1 << 32
    draws = trace_draws(big["seed"], big["epoch"], big["costs"], big["budget"], big["weights"])
    # Many draws' products need more than 64 bits: truncating them would change r.
    wide = [d for d in draws if d.u32 * d.total >= 1 << 64]
    assert len(wide) >= 10
    assert all(((d.u32 * d.total) & ((1 << 64) - 1)) >> 32 != d.r for d in wide)
    assert any(not d.selected for d in draws), "the large case should drop drawn channels"
    fma = next(case for case in _vectors()["weights"] if case["name"] == "fma_sensitive")
    # By hand as in test_weights_round_each_operation_separately: 0.5 + 21·2^-24 gives
    # 8388628.5 - 21·2^-24 -> 8388628, + 0.5 a tie -> even 8388628 (fused: 8388629).
    assert fma["weights"] == [16777216, 8388614, 8388628]


# --- weights -------------------------------------------------------------------------------------


def test_weights_worked_by_hand() -> None:
    # max N = 1, so q = N.
    # 1.0:  16777215 + 0.5 = 16777215.5, not a float32 (ulp 1 there); tie -> even 16777216.
    # 0.5:  8388607.5 exact (ulp 0.5 below 2^23); + 0.5 = 8388608.
    # 0.0:  0 + 0.5 -> (uint32) 0 -> max(1, 0) = 1.
    # 0.25: 4194303.75 exact (ulp 0.25); + 0.5 = 4194304.25, ulp 0.5 -> tie -> even 4194304.
    weights = channel_weights(np.array([1.0, 0.5, 0.0, 0.25], dtype=np.float32))
    assert weights.dtype == np.uint32
    assert weights.tolist() == [16777216, 8388608, 1, 4194304]
    # Scaling every norm by 4 (exact in binary) changes nothing.
    assert channel_weights([4.0, 2.0, 0.0, 1.0]).tolist() == [16777216, 8388608, 1, 4194304]


def test_weights_uniform_zero_and_tiny() -> None:
    assert channel_weights([5.0, 0.0, 1.0], uniform=True).tolist() == [1, 1, 1]
    assert channel_weights([float("nan")], uniform=True).tolist() == [1]  # values unused
    assert channel_weights([0.0, 0.0, -0.0]).tolist() == [1, 1, 1]  # max N = 0
    assert channel_weights([]).tolist() == []
    # 2.9e-8 * 16777215 = 0.487 -> +0.5 < 1 -> 0 -> 1; 9e-8 -> 1.51 + 0.5 -> 2.
    assert channel_weights([1.0, 2.9e-8, 9e-8, 1e-30]).tolist() == [16777216, 1, 2, 1]
    assert channel_weights([3.0, 3.0, 1.5]).tolist() == [16777216, 16777216, 8388608]


def test_weights_round_each_operation_separately() -> None:
    # q = 0.5 + 7·2^-24: q·16777215 = 8388614.5 - 7·2^-24 rounds to 8388614, + 0.5 is a tie
    # -> even 8388614. Rounding once (a fused multiply-add) gives 8388615.
    q = 0.5 + 7 * 2.0**-24
    assert np.float32(q) == q
    assert channel_weights([1.0, q]).tolist() == [16777216, 8388614]
    fused = Fraction(q) * 16777215 + Fraction(1, 2)
    assert int(np.float32(float(fused))) == 8388615


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -1.0, -1e-40, 1e39])
def test_bad_norms_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match=r"entry 2 .*finite and non-negative"):
        channel_weights([1.0, 0.5, bad, 2.0])
    with pytest.raises(ValueError, match="corrupted"):
        select_channels(1, 2, [1, 1, 1, 1], 2, norms=[1.0, 0.5, bad, 2.0])


def test_weights_reject_matrix() -> None:
    with pytest.raises(ValueError, match="one-dimensional"):
        channel_weights(np.ones((2, 2)))


# --- selection -----------------------------------------------------------------------------------


def test_selection_worked_by_hand_uniform() -> None:
    # seed 42, epoch 54 = pcg32_srandom(42, 54): outputs 2707161783, 2068313097, 3122475824,
    # 2211639955. Weights all 1, costs [1, 1, 5, 1], budget 3.
    # 1: total 4, r = 2707161783·4 >> 32 = 2 -> pool 0,1,2,3, sums 1,2,3 -> channel 2; cost 5 > 3:
    #    dropped.
    # 2: total 3, r = 2068313097·3 >> 32 = 1 -> pool 0,1,3 -> channel 1; budget 3 -> 2.
    # 3: total 2, r = 3122475824·2 >> 32 = 1 -> pool 0,3 -> channel 3; budget 2 -> 1.
    # 4: total 1, r = 0 -> channel 0; budget 1 -> 0. Pool empty: stop.
    assert select_channels(42, 54, [1, 1, 5, 1], 3) == [1, 3, 0]
    draws = trace_draws(42, 54, [1, 1, 5, 1], 3, [1, 1, 1, 1])
    assert [(d.u32, d.total, d.r, d.channel, d.selected) for d in draws] == [
        (2707161783, 4, 2, 2, False), (2068313097, 3, 1, 1, True),
        (3122475824, 2, 1, 3, True), (2211639955, 1, 0, 0, True),
    ]


def test_selection_worked_by_hand_weighted() -> None:
    # Norms [1, 0.5, 0, 0.25] -> weights [16777216, 8388608, 1, 4194304] (see above), total
    # 29360129; costs all 1, budget 2; seed 42, epoch 54 (a later epoch: weights not uniform).
    # 1: r = 2707161783·29360129 >> 32 = 79482619172750007 >> 32 = 18505989;
    #    sums 16777216, 25165824 -> channel 1. Budget 2 -> 1.
    # 2: total 29360129 - 8388608 = 20971521; r = 2068313097·20971521 >> 32 = 10099185
    #    < 16777216 -> channel 0. Budget 0: nothing fits, stop.
    assert select_channels(42, 54, [1, 1, 1, 1], 2, norms=[1.0, 0.5, 0.0, 0.25]) == [1, 0]


def test_epoch_one_is_uniform_and_epochs_start_at_one() -> None:
    costs = [2] * 10
    assert select_channels(42, 1, costs, 9, norms=list(range(10))) == select_channels(
        42, 1, costs, 9
    )
    with pytest.raises(ValueError, match="numbered from 1"):
        select_channels(42, 0, costs, 9)


def test_epochs_use_independent_streams() -> None:
    costs = [1] * 50
    first = select_channels(9, 3, costs, 10)
    # Epoch 3 depends only on (seed, epoch), not on how many draws epoch 2 made.
    select_channels(9, 2, costs, 40)
    assert select_channels(9, 3, costs, 10) == first
    assert select_channels(9, 4, costs, 10) != first


def _check_trace(seed: int, epoch: int, costs: list[int], budget: int,
                 weights: list[int]) -> list[int]:
    """Replay the contract's steps independently from a trace and return the selection."""
    draws = trace_draws(seed, epoch, costs, budget, weights)
    rng = Pcg32(seed, epoch)
    pool = set(range(len(costs)))
    left = budget
    for draw in draws:
        assert any(costs[c] <= left for c in pool), "drew although nothing fitted"
        assert draw.u32 == rng.next_u32()  # one generator output per draw, none skipped
        assert draw.total == sum(weights[c] for c in pool)
        assert draw.channel in pool
        assert draw.selected == (costs[draw.channel] <= left)
        pool.remove(draw.channel)
        if draw.selected:
            left -= costs[draw.channel]
    assert not any(costs[c] <= left for c in pool), "stopped although something fitted"
    assert left >= 0
    selected = [d.channel for d in draws if d.selected]
    assert sum(costs[c] for c in selected) <= budget
    return selected


def test_budget_respected_and_draw_stops_exactly_when_nothing_fits() -> None:
    rng = Pcg32(77, 1)
    for case in range(200):
        n = 1 + rng.next_u32() % 40
        costs = [1 + rng.next_u32() % 9 for _ in range(n)]
        weights = [1 + rng.next_u32() % 1000 for _ in range(n)]
        budget = rng.next_u32() % (sum(costs) + 5)
        selected = _check_trace(case, 2 + case % 5, costs, budget, weights)
        assert selected == draw_channels(case, 2 + case % 5, costs, budget, weights)
        assert len(set(selected)) == len(selected)


def test_budget_edges() -> None:
    assert select_channels(1, 2, [5, 6, 7], 4, norms=[1.0, 2.0, 3.0]) == []
    assert select_channels(1, 2, [5, 6, 7], 0) == []
    assert select_channels(1, 2, [], 10) == []
    costs = [3, 9, 1, 4]
    assert sorted(select_channels(2, 4, costs, sum(costs), norms=[1, 2, 3, 0])) == [0, 1, 2, 3]
    # Zero-cost channels always fit, so all of them are drawn.
    assert sorted(select_channels(3, 2, [0, 5, 0], 0)) == [0, 2]


def _chi_square(counts: list[int], probabilities: list[float]) -> float:
    draws = sum(counts)
    return sum((c - draws * p) ** 2 / (draws * p) for c, p in zip(counts, probabilities,
                                                                   strict=True))


# Chi-square upper 0.1% point for 7 degrees of freedom (standard tables: 24.32).
CHI2_7DF_P001 = 24.32


def test_selection_frequency_proportional_to_weight() -> None:
    norms = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    weights = channel_weights(norms).tolist()
    probabilities = [w / sum(weights) for w in weights]
    counts = [0] * 8
    epochs = 12000
    for epoch in range(2, epochs + 2):  # budget fits exactly one channel: one draw per epoch
        (channel,) = select_channels(31337, epoch, [4] * 8, 4, norms=norms)
        counts[channel] += 1
    assert _chi_square(counts, probabilities) < CHI2_7DF_P001
    # Channel 7 is drawn about 8 times as often as channel 0.
    assert 6.0 < counts[7] / counts[0] < 10.5


def test_epoch_one_frequency_uniform_over_seeds() -> None:
    counts = [0] * 8
    for seed in range(8000):
        (channel,) = select_channels(seed, 1, [4] * 8, 5, norms=[float(c) for c in range(8)])
        counts[channel] += 1
    assert _chi_square(counts, [1 / 8] * 8) < CHI2_7DF_P001


def test_selection_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="3 costs but 2 weights"):
        draw_channels(1, 2, [1, 1, 1], 2, [1, 1])
    with pytest.raises(ValueError, match="weights must be in 1"):
        draw_channels(1, 2, [1, 1], 2, [1, 0])
    with pytest.raises(ValueError, match="costs must be"):
        draw_channels(1, 2, [1, -1], 2, [1, 1])
    with pytest.raises(ValueError, match="budget"):
        draw_channels(1, 2, [1, 1], -2, [1, 1])
    with pytest.raises(ValueError, match="at most 65536"):
        draw_channels(1, 2, [1] * 65537, 2, [1] * 65537)


# --- norm vector update ---------------------------------------------------------------------------


def test_norm_update_after_epoch_one_explores_optimistically() -> None:
    norms = np.zeros(6, dtype=np.float32)
    # Epoch 1 selected channels 4 and 1 over 4 steps: averages 8/4 = 2 and 3/4 = 0.75.
    new = update_norm_vector(norms, [4, 1], [8.0, 3.0], steps=4, epoch=1)
    assert new.dtype == np.float32
    assert new.tolist() == [2.0, 0.75, 2.0, 2.0, 2.0, 2.0]
    assert norms.tolist() == [0.0] * 6  # input untouched


def test_norm_update_later_epochs_keep_old_values() -> None:
    norms = np.array([2.0, 0.75, 2.0, 2.0, 2.0, 2.0], dtype=np.float32)
    new = update_norm_vector(norms, [2, 0], [1.0, 0.5], steps=2, epoch=2)
    assert new.tolist() == [0.25, 0.75, 0.5, 2.0, 2.0, 2.0]
    # Epoch 3: no exploration step either, even for channels never selected (3, 4, 5).
    newer = update_norm_vector(new, [3], [0.1], steps=1, epoch=3)
    assert newer.tolist() == pytest.approx([0.25, 0.75, 0.5, 0.1, 2.0, 2.0])


def test_norm_update_edges() -> None:
    # Nothing selected in epoch 1: nothing observed, nothing to assign.
    assert update_norm_vector([0.0, 0.0], [], [], steps=3, epoch=1).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="at least one optimizer step"):
        update_norm_vector([0.0], [0], [1.0], steps=0, epoch=2)
    with pytest.raises(ValueError, match="out of range"):
        update_norm_vector([0.0], [1], [1.0], steps=1, epoch=2)
    with pytest.raises(ValueError, match="distinct"):
        update_norm_vector([0.0, 0.0], [1, 1], [1.0, 1.0], steps=1, epoch=2)
    with pytest.raises(ValueError, match="finite"):
        update_norm_vector([0.0], [0], [float("nan")], steps=1, epoch=2)
    with pytest.raises(ValueError, match="2 selected channels but 1"):
        update_norm_vector([0.0, 0.0], [0, 1], [1.0], steps=1, epoch=2)
    with pytest.raises(ValueError, match="numbered from 1"):
        update_norm_vector([0.0], [0], [1.0], steps=1, epoch=0)


def test_norm_update_feeds_the_sampler() -> None:
    # After epoch 1, unseen channels carry the largest norm, so they outweigh seen weak ones.
    new = update_norm_vector(np.zeros(4, dtype=np.float32), [0], [0.25], steps=1, epoch=1)
    new = update_norm_vector(new, [1], [0.0], steps=1, epoch=2)
    assert channel_weights(new).tolist() == [16777216, 1, 16777216, 16777216]
