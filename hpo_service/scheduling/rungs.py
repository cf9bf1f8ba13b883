"""Rung arithmetic for successive halving, and budget accounting against limits.

Everything here is integer arithmetic wherever the papers' formulas allow it:
``ceil``/``floor`` of ratios are computed on integers and budgets are divided by
exact integer powers of ``eta``, so the tables come out exactly (Hyperband,
Li et al. 2018, Table 1) and the top rung's budget is ``max_budget`` to the bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpo_service.domain.spec import Limits

# Budgets come from people: min 0.1 and max 8.1 mean a ratio of 81, but in binary
# floating point 8.1 / 0.1 == 80.99999999999999, and math.log(243, 3) is
# 4.999999999999999. Powers are compared against ratios with this relative
# slack instead of taking a float logarithm; sums of committed budget use it too.
RELATIVE_SLACK = 1e-9


@dataclass(frozen=True)
class RungPlan:
    """``n`` configurations train to ``budget`` at this rung."""

    n: int
    budget: float


@dataclass(frozen=True)
class BracketPlan:
    """One Hyperband bracket: ``s`` halvings, ``rungs[0]`` is where its trials start."""

    s: int
    rungs: tuple[RungPlan, ...]


def _check_budgets(min_budget: float, max_budget: float, eta: int) -> None:
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ValueError(f"eta must be an integer >= 2, got {eta!r}")
    if not (math.isfinite(min_budget) and math.isfinite(max_budget)) or min_budget <= 0:
        raise ValueError(f"budgets must be finite and > 0, got {min_budget!r} and {max_budget!r}")
    if min_budget > max_budget:
        raise ValueError(f"min_budget ({min_budget}) must be <= max_budget ({max_budget})")
    if not math.isfinite(max_budget / min_budget):
        raise ValueError(f"max_budget / min_budget ({max_budget} / {min_budget}) overflows")


def max_bracket_index(min_budget: float, max_budget: float, eta: int) -> int:
    """``s_max = floor(log_eta(max_budget / min_budget))``, without float logarithms.

    Raises ValueError for ``eta < 2`` or budgets that are not ``0 < min <= max``.
    """
    _check_budgets(min_budget, max_budget, eta)
    ratio = max_budget / min_budget
    s_max = 0
    while eta ** (s_max + 1) <= ratio * (1 + RELATIVE_SLACK):
        s_max += 1
    return s_max


def rung_budget(max_budget: float, eta: int, s: int, rung: int) -> float:
    """Budget at ``rung`` of a bracket with ``s`` halvings: ``max_budget * eta**(rung - s)``.

    Divided by an exact integer power (rather than multiplied by a float
    ``eta**-s``) so that the top rung is exactly ``max_budget``.
    """
    if not 0 <= rung <= s:
        raise ValueError(f"rung {rung} is outside 0..{s}")
    divisor: int = eta ** (s - rung)
    return max_budget / divisor


def bracket_size(s_max: int, eta: int, s: int) -> int:
    """Li et al.'s ``n = ceil((s_max + 1) * eta**s / (s + 1))``: configurations a bracket with ``s`` halvings starts.

    Also used for ``s > s_max``: an old bracket that a raise of max_budget gave more halvings
    than the larger Hyperband's ``s_max`` (a ratio that is not a power of eta) is topped up to it.
    """
    return -(-((s_max + 1) * eta**s) // (s + 1))  # integer ceil


def hyperband_brackets(min_budget: float, max_budget: float, eta: int) -> list[BracketPlan]:
    """The brackets of one Hyperband sweep, most exploratory first (s = s_max .. 0).

    ``n = ceil((s_max + 1) * eta**s / (s + 1))`` configurations start at
    ``r = max_budget * eta**-s``; rung ``i`` keeps ``floor(n * eta**-i)`` of them
    at budget ``r * eta**i``.
    """
    s_max = max_bracket_index(min_budget, max_budget, eta)
    plans = []
    for s in range(s_max, -1, -1):
        n = bracket_size(s_max, eta, s)
        rungs = tuple(
            RungPlan(n=n // eta**i, budget=rung_budget(max_budget, eta, s, i)) for i in range(s + 1)
        )
        plans.append(BracketPlan(s=s, rungs=rungs))
    return plans


# --- budget accounting against limits ------------------------------------------------


def budget_fits(limits: Limits, committed: float, cost: float) -> bool:
    """Whether committing ``cost`` more budget stays within ``limits.total_budget``."""
    if limits.total_budget is None:
        return True
    return committed + cost <= limits.total_budget * (1 + RELATIVE_SLACK)


def may_create_trial(limits: Limits, trials_created: int, committed: float, cost: float) -> bool:
    """Whether one more trial costing ``cost`` is within ``max_trials`` and ``total_budget``."""
    if limits.max_trials is not None and trials_created >= limits.max_trials:
        return False
    return budget_fits(limits, committed, cost)


def format_budget(budget: float) -> str:
    """Short form for reasons people read: 1, 0.5, 2.96296."""
    return f"{budget:g}"


# --- raising max_budget (iterative deepening) ------------------------------------------


def deepening_rungs(old_max_budget: float, new_max_budget: float, eta: int) -> tuple[float, ...]:
    """Budgets of the rungs put on top of a bracket whose top was ``old_max_budget``.

    ``k = max(1, round(log_eta(new / old)))`` rungs: ``old * eta**1 .. old * eta**(k-1)``
    and finally exactly ``new_max_budget``, so a ratio that is not a power of ``eta``
    (16 -> 52 at eta 3) still ends on the new maximum: one rung at 52. Raises
    ValueError unless ``new_max_budget`` is larger (the message says "must grow").
    """
    if not (math.isfinite(old_max_budget) and math.isfinite(new_max_budget)) or old_max_budget <= 0:
        raise ValueError(f"budgets must be finite and > 0, got {old_max_budget!r} and {new_max_budget!r}")
    if new_max_budget <= old_max_budget * (1 + RELATIVE_SLACK):
        raise ValueError(
            f"max_budget must grow: {format_budget(new_max_budget)} is not more than {format_budget(old_max_budget)}"
        )
    steps = max(1, math.floor(math.log(new_max_budget / old_max_budget, eta) + 0.5))
    return tuple(old_max_budget * eta**i for i in range(1, steps)) + (new_max_budget,)


def same_budget(a: float, b: float) -> bool:
    """Equal up to the relative slack budgets written by people need (8.1 / 0.1 and 81)."""
    return abs(a - b) <= RELATIVE_SLACK * max(abs(a), abs(b))
