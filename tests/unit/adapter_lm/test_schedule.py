"""Schedule math: budget <-> steps, learning-rate shape, rungs as prefixes, report grid."""

from __future__ import annotations

import math

import pytest

from trainers.adapter_lm.schedule import (
    BudgetClock,
    cubic_prune_fraction,
    lr_factor,
    report_steps,
    warmup_steps,
)


@pytest.mark.parametrize(
    ("steps_per_unit", "budget", "step"),
    [(10, 0.0, 0), (10, 1.0, 10), (10, 0.35, 3), (3, 1 / 3, 1), (7, 0.1 * 30, 21), (1, 2.9999999999, 3), (1, 2.5, 2)],
)
def test_step_at_rounds_down_and_absorbs_float_drift(steps_per_unit: int, budget: float, step: int) -> None:
    assert BudgetClock(steps_per_unit).step_at(budget) == step


def test_budget_at_inverts_step_at_on_step_boundaries() -> None:
    clock = BudgetClock(7)
    for step in range(0, 200):
        assert clock.step_at(clock.budget_at(step)) == step


def test_clock_refuses_zero_steps_per_unit() -> None:
    with pytest.raises(ValueError):
        BudgetClock(0)


@pytest.mark.parametrize(
    ("step", "kind", "expected"),
    [
        (0, "cosine", 0.25), (3, "cosine", 1.0), (4, "cosine", 1.0), (54, "cosine", 0.5), (104, "cosine", 0.0),
        (500, "cosine", 0.0), (54, "linear", 0.5), (104, "linear", 0.0), (54, "constant", 1.0), (1, "constant", 0.5),
    ],
)
def test_lr_factor_table(step: int, kind: str, expected: float) -> None:
    # 4 warmup steps, 104 total: the decay spans steps 4..104, its midpoint is step 54.
    assert lr_factor(step, 104, 4, kind, 0.0) == pytest.approx(expected)  # type: ignore[arg-type]


def test_min_lr_ratio_is_the_floor() -> None:
    assert lr_factor(1000, 100, 0, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, 0, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)


def test_rungs_are_prefixes_of_the_max_budget_schedule() -> None:
    """The learning rate of a step depends on the step and max_budget only, never on the slice."""
    clock = BudgetClock(5)
    total = clock.step_at(9.0)
    full = [lr_factor(s, total, warmup_steps(total, 0.1)) for s in range(total)]
    pieces: list[float] = []
    for start, end in [(0.0, 1.0), (1.0, 3.0), (3.0, 9.0)]:
        steps = range(clock.step_at(start), clock.step_at(end))
        pieces += [lr_factor(s, total, warmup_steps(total, 0.1)) for s in steps]
    assert pieces == full
    assert full[-1] < 0.01  # and it anneals by max_budget, not before


def test_cubic_prune_fraction_ramps_from_zero_to_the_final_fraction() -> None:
    values = [cubic_prune_fraction(s, 10, 50, 0.4) for s in range(0, 60)]
    assert values[:11] == [0.0] * 11
    assert values[50:] == [0.4] * 10
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert cubic_prune_fraction(30, 10, 50, 0.4) == pytest.approx(0.4 * 0.5**3)


@pytest.mark.parametrize(
    ("start", "end", "every", "expected"),
    [
        (0, 12, 4, [(4, True), (8, True), (12, True)]),
        (0, 10, 4, [(4, True), (8, True), (10, False)]),
        (3, 9, 4, [(4, True), (8, True), (9, False)]),
        (8, 9, 4, [(9, False)]),
        (0, 3, 5, [(3, False)]),
    ],
)
def test_report_steps_sit_on_the_absolute_grid(
    start: int, end: int, every: int, expected: list[tuple[int, bool]]
) -> None:
    assert report_steps(start, end, every) == expected


def test_split_runs_report_at_the_grid_points_of_an_unsplit_run() -> None:
    whole = [s for s, on_grid in report_steps(0, 30, 4) if on_grid]
    split = [s for a, b in [(0, 9), (9, 27), (27, 30)] for s, on_grid in report_steps(a, b, 4) if on_grid]
    assert whole == split
    assert not math.isnan(lr_factor(0, 1, 0))
