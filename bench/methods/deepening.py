"""Iterative deepening as a benchmark method: start small, raise ``max_budget`` whenever the study finishes.

The user of iterative deepening does not know the maximum budget in advance. They submit the
Hyperband + TPE study they would have submitted at 52 epochs, but with ``max_budget`` 52/9 (5.78
epochs: rungs 1.93 and 5.78); whenever the study completes with budget left, they raise
``max_budget`` eta-fold (``PATCH /api/v1/studies/{id}`` -> ``StudyService.extend`` ->
``Scheduler.extend``) and let it go on: 52/9 -> 52/3 -> 52, the ladder ending on the surrogate's
52 epochs. After each raise the old brackets grow a rung on top and are topped up to the larger
Hyperband's sizes (Brandt et al.'s efficient variant, the service's default): their trials keep
their results, new TPE-proposed configurations fill their bottom rungs, and an old trial promoted
again continues from its checkpoint and pays only its new epochs (the ledger of
bench/methods/budget.py, exactly as for every other method); the new brackets of the larger
Hyperband (``s' = 0``: full trainings at the new maximum) are added once per sweep.
The run ends when the next segment does not fit the budget (or, never at this budget, when the
study completes at 52).

A study must be able to finish before the budget runs out, and the API raises only ``max_budget``,
so the study's ``iterations`` (sweeps per ladder step) is the one limit of every stage. It is set
from the run's budget and the rung geometry alone, the way a user sizes a study to a budget, and
nothing is tuned on any task: ``iterations = ceil(total / cost of the whole ladder with one
sweep)``, 8 for 5,200 epochs (one sweep costs 698 epochs, 22 + 116 + 560 by stage: with the
top-ups the ladder ends with a fresh sweep at 52, whose cost it is; a Hyperband schedule's cost
does not depend on the scores, so it is measured once on a dry run with constant scores). The last stage
is then the one that the budget ends. ``limits.total_budget`` is the run's budget, as for the
other service methods.

Why not ASHA: an ASHA study ends on its own only at ``limits.max_trials``, which a raise does not
change, so every configuration is sampled before the first raise and the later stages only
promote; and ASHA's asynchronous promotions make a stage's cost depend on the scores. Sized like
synchronous successive halving over 2, 6, 18, 52 epochs (878 trials for 5,200 epochs), it spent
the whole budget in its first two stages on the one task it was tried on (1,685 evaluations, no
trial reached 52 epochs), so it was not taken.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from bench.lcbench import MAX_EPOCHS
from bench.methods.budget import Ledger, Segment
from bench.methods.service import ETA, Backend, MemoryBackend, run_sequential, study_spec

# What the sample-efficiency report says of the method.
DEFINITION = (
    "hpo-service's Hyperband + TPE started at `max_budget` 52/9 (5.78 epochs); whenever the study completes "
    "with budget left, `max_budget` is raised eta-fold through the service (`PATCH /api/v1/studies/{id}`, "
    "`Scheduler.extend`): 52/9 -> 52/3 -> 52. Old brackets grow a rung and are topped up to the larger "
    "Hyperband's sizes (old trials keep their results; those promoted again continue "
    "from their checkpoints and pay only their new epochs), and each raise adds the larger Hyperband's new "
    "`s' = 0` brackets. `iterations` (sweeps per stage, the one limit that lets a stage end) is sized from the "
    "budget alone: ceil(budget / 698 epochs, the cost of one sweep of the whole ladder), 8 for 5,200 epochs, so "
    "the last stage is the one the budget ends; nothing is tuned on any task (bench/methods/deepening.py)"
)

# 52/9 -> 52/3 -> 52: exact divisions, so each raise is exactly eta-fold and the last is exactly 52.
LADDER = tuple(MAX_EPOCHS / ETA**k for k in (2, 1, 0))


def hyperband_iterations(total_epochs: int) -> int:
    """The study's ``iterations``: the sweeps whose whole ladder costs the budget (at least 1, at most 1000)."""
    return min(1000, max(1, math.ceil(total_epochs / hyperband_sweep_cost())))


def deepen(backend: Backend, objective: Any, ledger: Ledger, ladder: tuple[float, ...] = LADDER,
           trace: list[tuple[int, float, float, float]] | None = None) -> int:
    """Run the study; each time it completes with budget left, raise max_budget to the next rung of the ladder.

    Returns the number of raises. ``trace`` as for ``run_sequential``.
    """
    raises = 0
    for step, max_budget in enumerate(ladder):
        if step > 0:
            backend.extend(max_budget)
            raises += 1
        if not run_sequential(backend, objective, ledger, trace):
            break  # the next segment did not fit: the budget is spent
    return raises


# --- the dry run that sizes the study -----------------------------------------------------------


class _ConstantObjective:
    """Every configuration scores the same: Hyperband's schedule does not depend on the scores."""

    def train(self, params: Any, start: int, end: int) -> Segment:
        return Segment(accuracy=50.0, seconds=0.0)


@functools.cache
def hyperband_sweep_cost() -> int:
    """Epochs that the whole ladder costs with ``iterations = 1`` and no budget limit."""
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}  # the schedule does not depend on the space
    spec = study_spec("dry-run", "hyperband", "random", 0, space, 1e9, max_budget=LADDER[0], iterations=1)
    ledger = Ledger(total_epochs=10**9)
    deepen(MemoryBackend(spec), _ConstantObjective(), ledger)
    return ledger.spent
