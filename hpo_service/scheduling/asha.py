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

Raising max_budget (``extend``, iterative deepening): the rungs stay where they are
and ``rungs.deepening_rungs`` puts new ones on top (``R*eta .. R*eta**(k-1)`` and exactly
``R'``), so for a power ratio the geometry is the new spec's ``max_budget *
eta**(k - s_max)`` and for any other ratio (16 -> 52) the top rung is ``R'`` all the same.
The old top rung becomes an ordinary rung: its results are promotable by the rule
above, and ``extend`` hands out at once those that are promotable now (the top
``floor(n / eta)``, best first, as far as ``limits.total_budget`` allows), including
trials that completed there; later ones follow through ``next_work``. A promotion
out of a rung that was the top before a raise says that it continues from a
checkpoint and what that saves.

Snapshot (JSON)::

    {"kind": "asha", "version": 2, "ladder": [27.0, 81.0], "raised_after": [38],
     "trials_created": 40, "budget_committed": 96.0}

``ladder`` lists the max budgets the study has had, oldest first (the last is the
spec's); ``raised_after`` the id of the newest trial at each raise (``RungPort.newest_trial_id``;
absent in snapshots from before it was kept, then None: unknown), so that only trials that
existed at a raise are said to reuse a checkpoint. Everything else ASHA needs is in the rung
results behind ``RungPort``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hpo_service.domain.spec import MAX_RUNGS, Limits, SchedulerSpec
from hpo_service.scheduling.base import (
    Action,
    Finish,
    NewTrial,
    Promote,
    RungPort,
    RungResult,
    SchedulerState,
)
from hpo_service.scheduling.ladder import Ladder, Rungs
from hpo_service.scheduling.rungs import (
    budget_fits,
    deepening_rungs,
    format_budget,
    max_bracket_index,
    may_create_trial,
    rung_budget,
    same_budget,
)

VERSION = 2
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
        self._min_budget = spec.min_budget
        self._max_budget = spec.max_budget
        self._eta = spec.eta
        self._limits = limits
        self._top = self._base_top(spec.max_budget)
        self._rung_cache: dict[tuple[tuple[float, ...], tuple[int | None, ...]], Rungs] = {}

    def _base_top(self, max_budget: float) -> int:
        """Top rung index of a study that started with ``max_budget``."""
        return max_bracket_index(self._min_budget, max_budget, self._eta)

    @property
    def top_rung(self) -> int:
        """The top rung of a study under this spec that was never raised."""
        return self._top

    def _rungs(self, state: SchedulerState | None) -> Rungs:
        ladder = (float(self._max_budget),) if state is None else tuple(state["ladder"])
        newest = () if state is None else tuple(state["raised_after"])
        key = (ladder, newest)
        if key not in self._rung_cache:
            first, top = ladder[0], self._base_top(ladder[0])
            base = [rung_budget(first, self._eta, top, rung) for rung in range(top + 1)]
            self._rung_cache[key] = Ladder(self._eta, ladder, newest=newest).stack(base, 0)
        return self._rung_cache[key]

    def bracket_s(self, bracket: int, state: SchedulerState | None = None) -> int:
        """Top rung index of the single bracket (rungs added by raises included)."""
        return self._rungs(None if state is None else self._load(state)).top

    def rung_budget(self, bracket: int, rung: int, state: SchedulerState | None = None) -> float:
        return self._rungs(None if state is None else self._load(state)).budget(rung)

    # --- Scheduler ------------------------------------------------------------------

    def initial_state(self) -> SchedulerState:
        return {
            "kind": self.kind, "version": VERSION, "ladder": [float(self._max_budget)], "raised_after": [],
            "trials_created": 0, "budget_committed": 0.0,
        }

    def next_work(self, state: SchedulerState, port: RungPort) -> tuple[SchedulerState, Action | None]:
        state = self._load(state)
        rungs = self._rungs(state)
        promotion = self._find_promotion(state, port, rungs)
        if promotion is not None:
            state["budget_committed"] += self._promotion_cost(rungs, promotion.to_rung)
            return state, promotion
        if self._may_create(state, rungs):
            budget = rungs.budget(0)
            state["trials_created"] += 1
            state["budget_committed"] += budget
            return state, NewTrial(bracket=BRACKET, rung=0, budget=budget)
        return state, None

    def on_result(
        self, state: SchedulerState, port: RungPort, result: RungResult
    ) -> tuple[SchedulerState, list[Action]]:
        state = self._load(state)
        top = self._rungs(state).top
        if result.rung < top:
            return state, []  # paused; promoted later by next_work, or stopped at the end
        budget = format_budget(self._max_budget)
        return state, [Finish(result.trial_id, f"reached the top rung {top} (budget {budget})")]

    def on_lost(
        self, state: SchedulerState, port: RungPort, trial_id: int, bracket: int, rung: int
    ) -> tuple[SchedulerState, list[Action]]:
        # A lost trial simply never reports; nothing waits for it.
        return self._load(state), []

    def is_finished(self, state: SchedulerState, port: RungPort, in_flight: int) -> bool:
        state = self._load(state)
        rungs = self._rungs(state)
        if in_flight > 0 or self._may_create(state, rungs):
            return False
        return self._find_promotion(state, port, rungs) is None

    def extend(
        self, state: SchedulerState, port: RungPort, old_max_budget: float
    ) -> tuple[SchedulerState, list[Action]]:
        """Put rungs up to the spec's max_budget on top; promote what the rule allows at the old top now.

        Raises ValueError when the spec's max_budget is not larger than ``old_max_budget``,
        when ``state`` was not made under ``old_max_budget``, or when the study would get
        more than ``MAX_RUNGS`` halvings.
        """
        state = self._load(state, expected_max=old_max_budget)
        old_top = self._rungs(state).top
        deepening_rungs(state["ladder"][-1], self._max_budget, self._eta)  # raises unless it grows
        state["ladder"].append(float(self._max_budget))
        state["raised_after"].append(port.newest_trial_id())
        rungs = self._rungs(state)
        if rungs.top > MAX_RUNGS:
            raise ValueError(
                f"raising max_budget from {format_budget(old_max_budget)} to {format_budget(self._max_budget)} "
                f"would give {rungs.top} halvings, more than {MAX_RUNGS}; raise it in smaller steps or start a new study"
            )
        ranked = port.ranked(BRACKET, old_top)  # nothing at a top rung was ever promoted
        quota = len(ranked) // self._eta
        cost = self._promotion_cost(rungs, old_top + 1)
        actions: list[Action] = []
        for rank, result in enumerate(ranked[:quota], start=1):
            if not budget_fits(self._limits, state["budget_committed"], cost):
                break
            state["budget_committed"] += cost
            actions.append(self._promote(rungs, result.trial_id, old_top, rank, len(ranked), quota))
        return state, actions

    # --- promotion rule -------------------------------------------------------------

    def _find_promotion(self, state: SchedulerState, port: RungPort, rungs: Rungs) -> Promote | None:
        """The best promotable result of the highest rung that has one (and fits the budget)."""
        for rung in range(rungs.top - 1, -1, -1):
            candidate = port.best_unpromoted(BRACKET, rung)
            if candidate is None:
                continue
            count = port.count(BRACKET, rung)
            quota = count // self._eta
            ahead = port.count_better(BRACKET, rung, candidate)
            if ahead >= quota:
                continue
            if not budget_fits(self._limits, state["budget_committed"], self._promotion_cost(rungs, rung + 1)):
                continue
            return self._promote(rungs, candidate.trial_id, rung, ahead + 1, count, quota)
        return None

    def _promote(self, rungs: Rungs, trial_id: int, rung: int, rank: int, count: int, quota: int) -> Promote:
        raised, reuse = rungs.reuse_note(rung, trial_id)
        why = (
            f"{raised}rank {rank} of {count} at rung {rung} "
            f"(budget {format_budget(rungs.budget(rung))}): top {quota} promotable{reuse}"
        )
        return Promote(trial_id, rung + 1, rungs.budget(rung + 1), why)

    def _promotion_cost(self, rungs: Rungs, to_rung: int) -> float:
        return rungs.budget(to_rung) - rungs.budget(to_rung - 1)

    def _may_create(self, state: SchedulerState, rungs: Rungs) -> bool:
        cost = rungs.budget(0)
        return may_create_trial(self._limits, state["trials_created"], state["budget_committed"], cost)

    def _load(self, state: SchedulerState, expected_max: float | None = None) -> SchedulerState:
        """A validated copy: callers' snapshots are never mutated.

        The ladder's newest max budget must be ``expected_max`` (default: the spec's).
        """
        if not isinstance(state, dict) or state.get("kind") != self.kind or state.get("version") != VERSION:
            raise ValueError(f"not a {self.kind} scheduler snapshot of version {VERSION}")
        created: Any = state.get("trials_created")
        committed: Any = state.get("budget_committed")
        if isinstance(created, bool) or not isinstance(created, int) or created < 0:
            raise ValueError(f"corrupt {self.kind} snapshot: trials_created={created!r}")
        if isinstance(committed, bool) or not isinstance(committed, (int, float)) or committed < 0:
            raise ValueError(f"corrupt {self.kind} snapshot: budget_committed={committed!r}")
        ladder = _load_ladder(self.kind, state.get("ladder"))
        raised_after = _load_raised_after(self.kind, state.get("raised_after"), len(ladder) - 1)
        expected = self._max_budget if expected_max is None else expected_max
        if not same_budget(ladder[-1], expected):
            raise ValueError(
                f"the {self.kind} snapshot was made under max_budget {format_budget(ladder[-1])}, "
                f"not {format_budget(expected)}: a raise must go through extend"
            )
        return {
            "kind": self.kind, "version": VERSION, "ladder": ladder, "raised_after": raised_after,
            "trials_created": created, "budget_committed": float(committed),
        }


def _load_ladder(kind: str, raw: Any) -> list[float]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"corrupt {kind} snapshot: ladder={raw!r}")
    ladder: list[float] = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > (ladder[-1] if ladder else 0):
            raise ValueError(f"corrupt {kind} snapshot: ladder={raw!r} (positive, increasing max budgets)")
        ladder.append(float(value))
    return ladder


def _load_raised_after(kind: str, raw: Any, raises: int) -> list[int | None]:
    """The newest trial id at each raise; a snapshot from before they were kept has none (None each)."""
    if raw is None:
        return [None] * raises
    if not isinstance(raw, list) or len(raw) != raises or not all(
        value is None or (isinstance(value, int) and not isinstance(value, bool)) for value in raw
    ):
        raise ValueError(f"corrupt {kind} snapshot: raised_after={raw!r} (one trial id or null per raise)")
    return list(raw)
