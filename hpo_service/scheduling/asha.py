"""Asynchronous successive halving (ASHA; Li et al. 2020, Algorithm 2, early-stopping rate 0).

One bracket (id 0) with rungs ``k = 0 .. s_max`` at budget
``max_budget * eta**(k - s_max)``. Whenever a worker asks for work, the highest
rung with a promotable result wins: a result is promotable when it is not
promoted yet and fewer than ``floor(count / eta)`` results of its rung rank
ahead of it. Otherwise a new trial starts at rung 0. Nobody waits for a rung to
fill, so no worker idles while there is budget left; the price is that early
promotions are made on few results.

A result that wins its rung but whose promotion does not fit
``limits.total_budget`` is skipped (a cheaper promotion lower down or a new
trial may still fit); such a trial stays paused until the study ends, when the
caller stops every paused trial.

Snapshot (JSON)::

    {"kind": "asha", "version": 1, "trials_created": 40, "budget_committed": 96.0}

Everything else ASHA needs is in the rung results behind ``RungPort``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.base import (
    Action,
    Finish,
    NewTrial,
    Promote,
    RungPort,
    RungResult,
    SchedulerState,
)
from hpo_service.scheduling.rungs import (
    budget_fits,
    format_budget,
    max_bracket_index,
    may_create_trial,
    rung_budget,
)

VERSION = 1
BRACKET = 0


class AshaScheduler:
    """ASHA until ``limits.max_trials`` trials or ``limits.total_budget`` are used up.

    Raises ValueError when neither limit is set: ASHA never stops on its own.
    """

    kind: ClassVar[str] = "asha"

    def __init__(self, spec: SchedulerSpec, limits: Limits) -> None:
        if limits.max_trials is None and limits.total_budget is None:
            raise ValueError(
                f"the {self.kind} scheduler never stops on its own: "
                "set limits.max_trials (or limits.total_budget)"
            )
        self._max_budget = spec.max_budget
        self._eta = spec.eta
        self._limits = limits
        self._top = self._top_rung(spec)

    def _top_rung(self, spec: SchedulerSpec) -> int:
        return max_bracket_index(spec.min_budget, spec.max_budget, spec.eta)

    @property
    def top_rung(self) -> int:
        return self._top

    def rung_budget(self, bracket: int, rung: int) -> float:
        return rung_budget(self._max_budget, self._eta, self._top, rung)

    # --- Scheduler ------------------------------------------------------------------

    def initial_state(self) -> SchedulerState:
        return {"kind": self.kind, "version": VERSION, "trials_created": 0, "budget_committed": 0.0}

    def next_work(self, state: SchedulerState, port: RungPort) -> tuple[SchedulerState, Action | None]:
        state = self._load(state)
        promotion = self._find_promotion(state, port)
        if promotion is not None:
            state["budget_committed"] += self._promotion_cost(promotion.to_rung)
            return state, promotion
        if self._may_create(state):
            budget = self.rung_budget(BRACKET, 0)
            state["trials_created"] += 1
            state["budget_committed"] += budget
            return state, NewTrial(bracket=BRACKET, rung=0, budget=budget)
        return state, None

    def on_result(
        self, state: SchedulerState, port: RungPort, result: RungResult
    ) -> tuple[SchedulerState, list[Action]]:
        state = self._load(state)
        if result.rung < self._top:
            return state, []  # paused; promoted later by next_work, or stopped at the end
        budget = format_budget(self._max_budget)
        return state, [Finish(result.trial_id, f"reached the top rung {self._top} (budget {budget})")]

    def on_lost(
        self, state: SchedulerState, port: RungPort, trial_id: int, bracket: int, rung: int
    ) -> tuple[SchedulerState, list[Action]]:
        # A lost trial simply never reports; nothing waits for it.
        return self._load(state), []

    def is_finished(self, state: SchedulerState, port: RungPort, in_flight: int) -> bool:
        state = self._load(state)
        if in_flight > 0 or self._may_create(state):
            return False
        return self._find_promotion(state, port) is None

    # --- promotion rule -------------------------------------------------------------

    def _find_promotion(self, state: SchedulerState, port: RungPort) -> Promote | None:
        """The best promotable result of the highest rung that has one (and fits the budget)."""
        for rung in range(self._top - 1, -1, -1):
            candidate = port.best_unpromoted(BRACKET, rung)
            if candidate is None:
                continue
            count = port.count(BRACKET, rung)
            quota = count // self._eta
            ahead = port.count_better(BRACKET, rung, candidate)
            if ahead >= quota:
                continue
            if not budget_fits(self._limits, state["budget_committed"], self._promotion_cost(rung + 1)):
                continue
            why = (
                f"rank {ahead + 1} of {count} at rung {rung} "
                f"(budget {format_budget(self.rung_budget(BRACKET, rung))}): top {quota} promotable"
            )
            return Promote(candidate.trial_id, rung + 1, self.rung_budget(BRACKET, rung + 1), why)
        return None

    def _promotion_cost(self, to_rung: int) -> float:
        return self.rung_budget(BRACKET, to_rung) - self.rung_budget(BRACKET, to_rung - 1)

    def _may_create(self, state: SchedulerState) -> bool:
        cost = self.rung_budget(BRACKET, 0)
        return may_create_trial(self._limits, state["trials_created"], state["budget_committed"], cost)

    def _load(self, state: SchedulerState) -> SchedulerState:
        """A validated copy: callers' snapshots are never mutated."""
        if not isinstance(state, dict) or state.get("kind") != self.kind or state.get("version") != VERSION:
            raise ValueError(f"not a {self.kind} scheduler snapshot of version {VERSION}")
        created: Any = state.get("trials_created")
        committed: Any = state.get("budget_committed")
        if isinstance(created, bool) or not isinstance(created, int) or created < 0:
            raise ValueError(f"corrupt {self.kind} snapshot: trials_created={created!r}")
        if isinstance(committed, bool) or not isinstance(committed, (int, float)) or committed < 0:
            raise ValueError(f"corrupt {self.kind} snapshot: budget_committed={committed!r}")
        return {"kind": self.kind, "version": VERSION, "trials_created": created, "budget_committed": float(committed)}
