"""Build the scheduler a study spec asks for, and describe its rung plan for people."""

from __future__ import annotations

from typing import Any

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.asha import AshaScheduler
from hpo_service.scheduling.base import Scheduler
from hpo_service.scheduling.hyperband import HyperbandScheduler
from hpo_service.scheduling.random_search import RandomSearchScheduler
from hpo_service.scheduling.rungs import hyperband_brackets, max_bracket_index, rung_budget


def make_scheduler(spec: SchedulerSpec, limits: Limits) -> Scheduler:
    """The scheduler for ``spec.kind``.

    Raises ValueError when the spec cannot run: ASHA and random search without
    ``limits.max_trials`` or ``limits.total_budget`` (the message names
    ``limits.max_trials``), or an unknown kind.
    """
    if spec.kind == "hyperband":
        return HyperbandScheduler(spec, limits)
    if spec.kind == "asha":
        return AshaScheduler(spec, limits)
    if spec.kind == "random":
        return RandomSearchScheduler(spec, limits)
    if spec.kind == "mup_transfer":
        from hpo_service.scheduling.mup_transfer import MupTransferScheduler  # it builds its inner kind here

        return MupTransferScheduler(spec, limits)
    raise ValueError(f"unknown scheduler kind {spec.kind!r}; use hyperband, asha or random")


def describe_brackets(spec: SchedulerSpec) -> list[dict[str, Any]]:
    """Rows ``{"s", "rung", "n", "budget"}`` of the rung plan, for a CLI table.

    Hyperband: one sweep, brackets ``s = s_max .. 0`` (every sweep repeats it).
    ASHA and random search have a single bracket (``s`` is its top rung) whose
    rung sizes depend on the limits and on timing, so ``n`` is None.
    """
    if spec.kind == "hyperband":
        return [
            {"s": plan.s, "rung": rung, "n": row.n, "budget": row.budget}
            for plan in hyperband_brackets(spec.min_budget, spec.max_budget, spec.eta)
            for rung, row in enumerate(plan.rungs)
        ]
    top = 0 if spec.kind == "random" else max_bracket_index(spec.min_budget, spec.max_budget, spec.eta)
    return [
        {"s": top, "rung": rung, "n": None, "budget": rung_budget(spec.max_budget, spec.eta, top, rung)}
        for rung in range(top + 1)
    ]
