"""Random search: every trial trains straight to ``max_budget``; nothing is promoted.

This is ASHA with a single rung (``s_max = 0``): rung 0 is the top rung, so each
result is a ``Finish``, and trials are created until ``limits.max_trials`` or
``limits.total_budget`` is used up. Sharing ASHA's code keeps the limit
accounting and the snapshot format in one place.

Snapshot (JSON)::

    {"kind": "random", "version": 1, "trials_created": 12, "budget_committed": 972.0}
"""

from __future__ import annotations

from typing import ClassVar

from hpo_service.domain.spec import SchedulerSpec
from hpo_service.scheduling.asha import AshaScheduler


class RandomSearchScheduler(AshaScheduler):
    """Trials in bracket 0, rung 0, budget ``spec.max_budget``; ``spec.min_budget`` and ``eta`` are unused.

    Raises ValueError when neither ``limits.max_trials`` nor ``limits.total_budget`` is set.
    """

    kind: ClassVar[str] = "random"

    def _top_rung(self, spec: SchedulerSpec) -> int:
        return 0
