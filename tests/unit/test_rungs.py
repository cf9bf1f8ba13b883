"""Rung math against the papers' tables, budget accounting, and the factory's plan rows."""

from __future__ import annotations

import pytest

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.asha import AshaScheduler
from hpo_service.scheduling.factory import describe_brackets, make_scheduler
from hpo_service.scheduling.hyperband import HyperbandScheduler
from hpo_service.scheduling.random_search import RandomSearchScheduler
from hpo_service.scheduling.rungs import (
    BracketPlan,
    RungPlan,
    budget_fits,
    hyperband_brackets,
    max_bracket_index,
    may_create_trial,
    rung_budget,
)


@pytest.mark.parametrize(
    ("min_budget", "max_budget", "eta", "expected"),
    [
        (1, 81, 3, 4),
        (1, 27, 3, 3),
        (1, 80, 3, 3),
        (1, 82, 3, 4),
        (1, 243, 3, 5),  # math.log(243, 3) == 4.999999999999999
        (1, 1000, 10, 3),  # math.log(1000, 10) == 2.9999999999999996
        (0.1, 8.1, 3, 4),  # 8.1 / 0.1 == 80.99999999999999
        (1, 16, 2, 4),
        (0.5, 8, 2, 4),
        (1, 3**20, 3, 20),
        (5, 5, 3, 0),
        (1, 2, 3, 0),
        (1, 3, 3, 1),
    ],
)
def test_max_bracket_index(min_budget: float, max_budget: float, eta: int, expected: int) -> None:
    assert max_bracket_index(min_budget, max_budget, eta) == expected


@pytest.mark.parametrize(
    ("min_budget", "max_budget", "eta", "message"),
    [
        (1, 81, 1, "eta"),
        (0, 81, 3, "budgets"),
        (-1, 81, 3, "budgets"),
        (1, float("inf"), 3, "budgets"),
        (2, 1, 3, "min_budget"),
        (1e-300, 1e300, 3, "overflows"),
    ],
)
def test_max_bracket_index_rejects(min_budget: float, max_budget: float, eta: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        max_bracket_index(min_budget, max_budget, eta)


def _plan(*brackets: tuple[int, list[tuple[int, float]]]) -> list[BracketPlan]:
    return [BracketPlan(s, tuple(RungPlan(n, budget) for n, budget in rungs)) for s, rungs in brackets]


HYPERBAND_TABLES = {
    # Li et al. 2018, Table 1 (R = 81, eta = 3).
    "paper R=81 eta=3": (
        (1, 81, 3),
        _plan(
            (4, [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)]),
            (3, [(34, 3), (11, 9), (3, 27), (1, 81)]),
            (2, [(15, 9), (5, 27), (1, 81)]),
            (1, [(8, 27), (2, 81)]),
            (0, [(5, 81)]),
        ),
    ),
    "R=27 eta=3": (
        (1, 27, 3),
        _plan(
            (3, [(27, 1), (9, 3), (3, 9), (1, 27)]),
            (2, [(12, 3), (4, 9), (1, 27)]),
            (1, [(6, 9), (2, 27)]),
            (0, [(4, 27)]),
        ),
    ),
    "R=16 eta=2": (
        (1, 16, 2),
        _plan(
            (4, [(16, 1), (8, 2), (4, 4), (2, 8), (1, 16)]),
            (3, [(10, 2), (5, 4), (2, 8), (1, 16)]),
            (2, [(7, 4), (3, 8), (1, 16)]),
            (1, [(5, 8), (2, 16)]),
            (0, [(5, 16)]),
        ),
    ),
    "min=0.5 max=8 eta=2": (
        (0.5, 8, 2),
        _plan(
            (4, [(16, 0.5), (8, 1), (4, 2), (2, 4), (1, 8)]),
            (3, [(10, 1), (5, 2), (2, 4), (1, 8)]),
            (2, [(7, 2), (3, 4), (1, 8)]),
            (1, [(5, 4), (2, 8)]),
            (0, [(5, 8)]),
        ),
    ),
    "R=9 eta=3": (
        (1, 9, 3),
        _plan((2, [(9, 1), (3, 3), (1, 9)]), (1, [(5, 3), (1, 9)]), (0, [(3, 9)])),
    ),
    "min=max": ((10, 10, 3), _plan((0, [(1, 10)]))),
    "R=80 eta=3 (budget not a power of eta)": (
        (1, 80, 3),
        _plan(
            (3, [(27, 80 / 27), (9, 80 / 9), (3, 80 / 3), (1, 80)]),
            (2, [(12, 80 / 9), (4, 80 / 3), (1, 80)]),
            (1, [(6, 80 / 3), (2, 80)]),
            (0, [(4, 80)]),
        ),
    ),
}


@pytest.mark.parametrize("case", list(HYPERBAND_TABLES))
def test_hyperband_brackets(case: str) -> None:
    (min_budget, max_budget, eta), expected = HYPERBAND_TABLES[case]
    assert hyperband_brackets(min_budget, max_budget, eta) == expected


@pytest.mark.parametrize("case", list(HYPERBAND_TABLES))
def test_every_bracket_ends_with_one_configuration_at_max_budget(case: str) -> None:
    (min_budget, max_budget, eta), _ = HYPERBAND_TABLES[case]
    for plan in hyperband_brackets(min_budget, max_budget, eta):
        assert plan.rungs[-1].budget == max_budget  # exact, not approximately
        assert plan.rungs[-1].n >= 1
        assert all(rung.budget >= min_budget for rung in plan.rungs)


@pytest.mark.parametrize(
    ("max_budget", "eta", "s", "rung", "expected"),
    [(81, 3, 4, 0, 1.0), (81, 3, 4, 4, 81.0), (81, 3, 3, 0, 3.0), (8, 2, 4, 0, 0.5), (80, 3, 3, 3, 80.0)],
)
def test_rung_budget(max_budget: float, eta: int, s: int, rung: int, expected: float) -> None:
    assert rung_budget(max_budget, eta, s, rung) == expected


@pytest.mark.parametrize("rung", [-1, 5])
def test_rung_budget_rejects_rungs_outside_the_bracket(rung: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        rung_budget(81, 3, 4, rung)


@pytest.mark.parametrize(
    ("limits", "created", "committed", "cost", "expected"),
    [
        (Limits(), 10**6, 1e12, 1.0, True),
        (Limits(max_trials=3), 2, 0.0, 1.0, True),
        (Limits(max_trials=3), 3, 0.0, 1.0, False),
        (Limits(total_budget=10), 0, 9.0, 1.0, True),
        (Limits(total_budget=10), 0, 9.0, 1.5, False),
        (Limits(total_budget=1.0), 0, 0.7, 0.1 + 0.2, True),  # 0.7 + 0.30000000000000004
        (Limits(max_trials=3, total_budget=10), 1, 9.5, 1.0, False),
    ],
)
def test_may_create_trial(limits: Limits, created: int, committed: float, cost: float, expected: bool) -> None:
    assert may_create_trial(limits, created, committed, cost) is expected
    if limits.max_trials is None or created < limits.max_trials:
        assert budget_fits(limits, committed, cost) is expected


# --- factory ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "limits", "cls"),
    [
        ("hyperband", Limits(), HyperbandScheduler),
        ("asha", Limits(max_trials=10), AshaScheduler),
        ("asha", Limits(total_budget=100), AshaScheduler),
        ("random", Limits(max_trials=10), RandomSearchScheduler),
    ],
)
def test_make_scheduler(kind: str, limits: Limits, cls: type) -> None:
    assert type(make_scheduler(SchedulerSpec(kind=kind), limits)) is cls  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["asha", "random"])
def test_make_scheduler_needs_a_stopping_limit(kind: str) -> None:
    with pytest.raises(ValueError, match=r"limits\.max_trials"):
        make_scheduler(SchedulerSpec(kind=kind), Limits())  # type: ignore[arg-type]


def test_describe_brackets_hyperband_lists_the_paper_table() -> None:
    rows = describe_brackets(SchedulerSpec(kind="hyperband", min_budget=1, max_budget=81, eta=3))
    assert len(rows) == 5 + 4 + 3 + 2 + 1
    assert rows[0] == {"s": 4, "rung": 0, "n": 81, "budget": 1.0}
    assert rows[5] == {"s": 3, "rung": 0, "n": 34, "budget": 3.0}
    assert rows[-1] == {"s": 0, "rung": 0, "n": 5, "budget": 81.0}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("asha", [(0, 1 / 4), (1, 1 / 2), (2, 1.0)]),
        ("random", [(0, 1.0)]),
    ],
)
def test_describe_brackets_single_bracket(kind: str, expected: list[tuple[int, float]]) -> None:
    spec = SchedulerSpec(kind=kind, min_budget=0.25, max_budget=1, eta=2)  # type: ignore[arg-type]
    rows = describe_brackets(spec)
    assert [(row["rung"], row["budget"]) for row in rows] == expected
    assert all(row["n"] is None for row in rows)
