"""Random search: every trial trains straight to ``max_budget``; nothing is promoted.

This is ASHA with a single rung (``s_max = 0``): rung 0 is the top rung, so each
result is a ``Finish``, and trials are created until ``limits.max_trials`` or
``limits.total_budget`` is used up. Sharing ASHA's code keeps the limit
accounting and the snapshot format in one place.

Raising ``max_budget`` is refused. Every trial here trained from scratch to the old
maximum, and the only way to reuse that would be to continue *every* one of them to
the new maximum: a second random search paid in full, with nothing learned from the
first deciding which configurations deserve it. A new study (or a Hyperband/ASHA
study, which can be raised) is the honest answer; the error says so.

Snapshot (JSON)::

    {"kind": "random", "version": 2, "ladder": [81.0], "trials_created": 12, "budget_committed": 972.0}
"""

from __future__ import annotations

from typing import ClassVar

from hpo_service.scheduling.asha import AshaScheduler
from hpo_service.scheduling.base import Action, RungPort, SchedulerState


class RandomSearchScheduler(AshaScheduler):
    """Trials in bracket 0, rung 0, budget ``spec.max_budget``; ``spec.min_budget`` and ``eta`` are unused.

    Raises ValueError when neither ``limits.max_trials`` nor ``limits.total_budget`` is set.
    """

    kind: ClassVar[str] = "random"

    def _base_top(self, max_budget: float) -> int:
        return 0

    def extend(
        self, state: SchedulerState, port: RungPort, old_max_budget: float
    ) -> tuple[SchedulerState, list[Action]]:
        """Always raises ValueError: a random search cannot raise its max_budget (module docstring)."""
        raise ValueError(
            "a random search cannot raise max_budget: only hyperband and asha studies can "
            "(every random trial already trained from scratch to the old maximum; start a new study)"
        )
