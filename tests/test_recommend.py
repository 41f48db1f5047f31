"""The budget recommendation against its definition, on hand-made sweep results whose answer is
known by construction; and the board check being `compile --board`'s own."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from arm_support import require_tool

from medyate_mcu.boards import Board, get_board
from medyate_mcu.errors import MedyateError
from medyate_mcu.experiments.budget_sweep import RunResult, SweepConfig
from medyate_mcu.experiments.recommend import (
    board_fits,
    compile_check,
    markdown,
    missing_policies,
    parse_within,
    recommend,
    recommend_task,
    to_json,
)
from medyate_mcu.method.planner import DEFAULT_ALPHA
from medyate_mcu.method.policies import Policy
from medyate_mcu.toolchain.compile import default_ranking_path

K = 1024
BUDGETS = (100 * K, 150 * K, 200 * K, 250 * K)


def runs(task: str, full: Sequence[float], medyate: dict[int, Sequence[float | None]],
         budgets: Sequence[int] = BUDGETS) -> list[RunResult]:
    """Full fine-tuning's accuracy per seed and MeDyate's per budget and seed (None:
    infeasible); a TraDy row beside each, better than MeDyate, which must be ignored."""
    rows = [RunResult(task, None, "full", seed, value, 0, 0, 0, 1.0)
            for seed, value in enumerate(full)]
    for budget in budgets:
        for seed, value in enumerate(medyate[budget]):
            rows.append(RunResult(task, budget, "medyate", seed, value, 2, 0, budget, 1.0))
            rows.append(RunResult(task, budget, "trady", seed, 0.99, 2, 0, budget, 1.0))
    return rows


def config(tasks: Sequence[str], policies: Sequence[Policy] = tuple(Policy)) -> SweepConfig:
    return SweepConfig(tuple(tasks), BUDGETS, tuple(policies), seeds=(0, 1))


def test_within_at_the_second_budget() -> None:
    # full 90%; medyate 80, 88.5 (gap 1.5 pp), 89, 90: the first within 2 pp is 150 KiB
    results = runs("a", [0.89, 0.91], {100 * K: [0.79, 0.81], 150 * K: [0.88, 0.89],
                                       200 * K: [0.89, 0.89], 250 * K: [0.90, 0.90]})
    answer = recommend_task(results, "a", BUDGETS, 2.0)
    assert (answer.budget, answer.within) == (150 * K, True)
    assert answer.medyate == pytest.approx(88.5) and answer.full == pytest.approx(90.0)
    assert answer.gap_pp == pytest.approx(1.5)
    # a margin of 1 pp moves it to 200 KiB (gap 1.0, on the boundary: within)
    assert recommend_task(results, "a", BUDGETS, 1.0).budget == 200 * K
    assert recommend_task(results, "a", BUDGETS, 0.99).budget == 250 * K


def test_gap_exactly_the_margin_counts_as_within() -> None:
    # 0.90 - 0.88 is 2.0000000000000018 pp in binary floating point: still within 2 pp
    results = runs("a", [0.90, 0.90], {b: [0.88, 0.88] for b in BUDGETS})
    assert recommend_task(results, "a", BUDGETS, 2.0).budget == BUDGETS[0]
    assert recommend_task(results, "a", BUDGETS, 1.9).within is False


def test_never_within_gives_the_best_reachable_with_its_gap() -> None:
    results = runs("a", [0.95, 0.95], {100 * K: [0.70, 0.72], 150 * K: [0.80, 0.82],
                                       200 * K: [0.86, 0.84], 250 * K: [0.83, 0.85]})
    answer = recommend_task(results, "a", BUDGETS, 2.0)
    assert (answer.budget, answer.within) == (200 * K, False)
    assert answer.gap_pp == pytest.approx(10.0)
    text = markdown(recommend(results, config(["a"])))
    assert "best reachable 200.0 KiB" in text
    assert "Budget (float32): 200.0 KiB (204800 B) (not within 2 pp" in text


def test_ties_take_the_smallest_budget() -> None:
    results = runs("a", [0.95, 0.95], {100 * K: [0.70, 0.70], 150 * K: [0.80, 0.82],
                                       200 * K: [0.82, 0.80], 250 * K: [0.81, 0.81]})
    answer = recommend_task(results, "a", BUDGETS, 2.0)
    assert (answer.budget, answer.within) == (150 * K, False)


def test_infeasible_budgets_are_skipped_and_a_seed_infeasible_is_infeasible() -> None:
    # medyate cannot run at 100 KiB, and at 150 KiB for one seed: 200 KiB is the first answer
    results = runs("a", [0.90, 0.90], {100 * K: [None, None], 150 * K: [0.90, None],
                                       200 * K: [0.89, 0.89], 250 * K: [0.90, 0.90]})
    assert recommend_task(results, "a", BUDGETS, 2.0).budget == 200 * K
    never = runs("b", [0.90, 0.90], {b: [None, None] for b in BUDGETS})
    answer = recommend_task(never, "b", BUDGETS, 2.0)
    assert answer.budget is None and answer.gap_pp is None
    text = markdown(recommend(never, config(["b"])))
    assert "infeasible at every budget" in text and "Budget (float32): none" not in text


def test_several_tasks_overall_is_the_largest() -> None:
    results = (runs("a", [0.9, 0.9], {100 * K: [0.89, 0.89], 150 * K: [0.9, 0.9],
                                      200 * K: [0.9, 0.9], 250 * K: [0.9, 0.9]})
               + runs("b", [0.9, 0.9], {100 * K: [0.5, 0.5], 150 * K: [0.6, 0.6],
                                        200 * K: [0.89, 0.88], 250 * K: [0.9, 0.9]}))
    answer = recommend(results, config(["a", "b"]), 2.0)
    assert [t.budget for t in answer.tasks] == [100 * K, 200 * K]
    assert answer.overall("float32") == 200 * K
    assert "Overall (float32): 200.0 KiB (204800 B), the largest of the tasks' budgets.\n" \
        in markdown(answer)
    assert '"overall": {\n    "float32": 204800' in to_json(answer)
    # a task that never runs makes the overall answer none
    with_never = results + runs("c", [0.9, 0.9], {b: [None, None] for b in BUDGETS})
    assert recommend(with_never, config(["a", "b", "c"])).overall("float32") is None


def test_missing_policies_say_what_is_needed() -> None:
    assert missing_policies(config(["a"])) is None
    line = missing_policies(config(["a"], [Policy.TRADY, Policy.FULL]))
    assert line is not None and "add medyate to --policies" in line
    line = missing_policies(config(["a"], [Policy.TRADY]))
    assert line is not None and "medyate and full" in line
    with pytest.raises(MedyateError, match="add full"):
        recommend([], config(["a"], [Policy.MEDYATE]))


@pytest.mark.parametrize(("text", "value"), [("2pp", 2.0), ("0.5pp", 0.5), ("3", 3.0),
                                             (" 1.5 pp ", 1.5), ("0", 0.0)])
def test_parse_within(text: str, value: float) -> None:
    assert parse_within(text) == value


@pytest.mark.parametrize("text", ["-1pp", "2%", "pp", "two", "2 p", ""])
def test_parse_within_refuses(text: str) -> None:
    with pytest.raises(MedyateError, match="not a margin"):
        parse_within(text)


def test_board_check_is_compiles() -> None:
    """100 KiB fits the 128 KiB nucleo-f411re with the stack and the application (a built
    image, as `compile --board` measures it); 200 KiB exceeds its RAM, and 125 KiB its RAM less
    the rest of the image: both refused with compile's message. Three boards checked at once
    (threads) each get their own answer, in their order."""
    require_tool("arm-none-eabi-gcc")
    check = compile_check(None, "digits", default_ranking_path(None), "float32", DEFAULT_ALPHA,
                          "closest")
    fits = board_fits(100 * K, [get_board("nucleo-f411re")], check)
    assert fits[0].fits, fits
    refused = board_fits(200 * K, [get_board("nucleo-f411re")], check)
    assert not refused[0].fits and "exceeds nucleo-f411re's RAM" in refused[0].reason
    names = ("nucleo-f411re", "nrf52840-dk", "qemu-netduinoplus2")
    tight = board_fits(125 * K, [get_board(name) for name in names], check)
    assert [fit.board for fit in tight] == list(names)
    assert [fit.fits for fit in tight] == [False, True, False], tight
    assert "does not fit nucleo-f411re" in tight[0].reason
    assert "does not fit qemu-netduinoplus2" in tight[2].reason


def test_boards_markdown_says_no_and_how_a_fit_was_checked() -> None:
    def check(board: Board, budget: int) -> str:
        if board.ram_bytes < budget:
            raise MedyateError(f"exceeds {board.name}'s RAM")
        return "" if board.name == "nrf52840-dk" else "only the RAM was compared"

    boards = [get_board(name) for name in ("nucleo-f411re", "nrf52840-dk", "stm32f746g-disco")]
    fits = board_fits(200 * K, boards, check)
    assert [f.fits for f in fits] == [False, True, True]
    results = runs("a", [0.9, 0.9], {b: [0.9, 0.9] for b in BUDGETS})
    text = markdown(recommend(results, config(["a"])), {"float32": fits})
    assert "Boards that hold it (`compile --board` check): nrf52840-dk, stm32f746g-disco." in text
    assert "- nucleo-f411re: no (exceeds nucleo-f411re's RAM)" in text
    assert "- stm32f746g-disco: yes, but only the RAM was compared" in text
    assert "nrf52840-dk: yes" not in text


def test_board_check_without_the_arm_toolchain_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without arm-none-eabi-gcc, compile compares the budget with the RAM only, and says so:
    the fit carries that note."""
    monkeypatch.setattr("medyate_mcu.toolchain.compile.shutil.which", lambda _: None)
    check = compile_check(None, "digits", default_ranking_path(None), "float32", DEFAULT_ALPHA,
                          "closest")
    (fit,) = board_fits(150 * K, [get_board("stm32f746g-disco")], check)
    assert fit.fits and "arm-none-eabi-gcc is not installed" in fit.reason
