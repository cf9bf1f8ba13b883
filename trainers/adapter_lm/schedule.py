"""Pure schedule math: budget units <-> optimizer steps, learning rate, rank budgets, reports.

Every schedule here is a function of the *absolute* optimizer step and of ``total_steps``,
the step count of the study's ``max_budget``. None depends on where a slice starts or ends.
That is what makes a rung a prefix of the full run: a trial promoted from 3 to 9 epochs
continues on exactly the curve it would have followed had it been given 9 from the start,
so the scheduler compares trials at rung k on the same schedules they would finish on.
(Laying a cosine over each slice instead would decay the learning rate to zero at every
rung, and a promoted trial would restart from a warm learning rate on top of a cooled model.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ScheduleKind = Literal["cosine", "linear", "constant"]
_TOLERANCE = 1e-9  # absorbs float drift such as 0.1 * 30 = 3.0000000000000004


@dataclass(frozen=True)
class BudgetClock:
    """Maps budget positions (epochs or steps) to optimizer steps and back."""

    steps_per_unit: int

    def __post_init__(self) -> None:
        if self.steps_per_unit < 1:
            raise ValueError(f"steps_per_unit must be >= 1, got {self.steps_per_unit}")

    def step_at(self, budget: float) -> int:
        """Optimizer steps done at ``budget``; rounds down, identically for every caller.

        The tolerance also absorbs ``budget_at``'s rounding to 10 decimals, which
        ``steps_per_unit`` multiplies, so ``step_at(budget_at(s)) == s`` for every step: a
        slice that stopped mid-epoch (a drain) resumes at the step it stopped at.
        """
        return math.floor(budget * self.steps_per_unit + max(_TOLERANCE, 1e-10 * self.steps_per_unit))

    def budget_at(self, step: int) -> float:
        # Rounded so that a position reads the same however the run was split.
        return round(step / self.steps_per_unit, 10)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.floor(total_steps * warmup_ratio + _TOLERANCE)


def lr_factor(
    step: int, total_steps: int, warmup: int, kind: ScheduleKind = "cosine", min_ratio: float = 0.0
) -> float:
    """Multiplier of the base learning rate for the update made at 0-based ``step``.

    Linear warmup over ``warmup`` steps, then ``kind`` decays from 1 to ``min_ratio`` at
    ``total_steps``; steps past the end stay at ``min_ratio`` rather than turning back up.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if kind == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


def cubic_prune_fraction(step: int, start: int, end: int, final_fraction: float) -> float:
    """Fraction of rank components pruned after ``step``: 0 before ``start``, ``final_fraction``
    from ``end`` on, ``final_fraction * progress**3`` in between.

    This is the ramp of Mao et al.'s released code for dynamic-rank LoRA: it prunes slowly
    while the importance scores are still young and faster once they have settled.
    """
    if step < start:
        return 0.0
    if step >= end:
        return final_fraction
    progress = (step - start) / max(1, end - start)
    return final_fraction * progress**3


def report_steps(step_from: int, step_to: int, every: int) -> list[tuple[int, bool]]:
    """Steps to report at in ``(step_from, step_to]``, each with ``on_grid``.

    The grid is absolute (``k * every``), so a run split at a grid point reports where an
    uninterrupted run does; ``step_to`` is always reported and flagged when off the grid.
    """
    first = step_from // every + 1
    positions = [(k * every, True) for k in range(first, step_to // every + 1)]
    if not positions or positions[-1][0] != step_to:
        positions.append((step_to, False))
    return positions
