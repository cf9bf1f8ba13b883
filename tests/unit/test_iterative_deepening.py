"""Raising max_budget (iterative deepening): bracket bookkeeping, reuse decisions, limits, refusals.

Tables of what `extend` must do to Hyperband and ASHA studies, driven through a minimal
caller that applies actions as the service does, snapshots through JSON. Scores are
deterministic (trial id, or a given table), so every case is exact.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.base import Action, Finish, NewTrial, Promote, RungResult, Scheduler, Stop
from hpo_service.scheduling.factory import make_scheduler
from hpo_service.scheduling.hyperband import BUDGET_EXHAUSTED
from hpo_service.scheduling.ladder import HyperbandGeometry
from hpo_service.scheduling.memory_port import InMemoryRungPort
from hpo_service.scheduling.rungs import deepening_rungs

HB9 = SchedulerSpec(kind="hyperband", min_budget=1, max_budget=9, eta=3)  # brackets s=2 (9), s=1 (5), s=0 (3)
HB27 = HB9.model_copy(update={"max_budget": 27})
ASHA27 = SchedulerSpec(kind="asha", min_budget=1, max_budget=27, eta=3)


class Caller:
    """Applies actions like the service: Promote makes a (paused or completed) trial pending again."""

    def __init__(self, spec: SchedulerSpec, limits: Limits = Limits()) -> None:
        self.spec, self.limits = spec, limits
        self.scheduler: Scheduler = make_scheduler(spec, limits)
        self.port = InMemoryRungPort()
        self.state = self._keep(self.scheduler.initial_state())
        self.where: dict[int, tuple[int, int]] = {}  # trial id -> (bracket, rung it trains toward or reached)
        self.status: dict[int, str] = {}
        self.pending: list[int] = []

    @staticmethod
    def _keep(state: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(state))

    def next_work(self) -> Action | None:
        state, action = self.scheduler.next_work(self.state, self.port)
        self.state = self._keep(state)
        if isinstance(action, NewTrial):
            trial_id = len(self.where) + 1
            self.where[trial_id] = (action.bracket, action.rung)
            self.status[trial_id] = "running"
        elif action is not None:
            self._apply([action])
        return action

    def report(self, trial_id: int, score: float) -> list[Action]:
        bracket, rung = self.where[trial_id]
        result = RungResult(trial_id, bracket, rung, score)
        self.port.record(result)
        self.status[trial_id] = "paused"
        state, actions = self.scheduler.on_result(self.state, self.port, result)
        self.state = self._keep(state)
        return self._apply(actions)

    def extend(self, new_max: float) -> list[Action]:
        old_max, self.spec = self.spec.max_budget, self.spec.model_copy(update={"max_budget": new_max})
        self.scheduler = make_scheduler(self.spec, self.limits)
        state, actions = self.scheduler.extend(self.state, self.port, old_max)
        self.state = self._keep(state)
        return self._apply(actions)

    def _apply(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Promote):
                bracket, rung = self.where[action.trial_id]
                assert self.status[action.trial_id] in ("paused", "completed")
                self.port.mark_promoted(action.trial_id, rung)
                self.where[action.trial_id] = (bracket, action.to_rung)
                self.status[action.trial_id] = "pending"
                self.pending.append(action.trial_id)
            elif isinstance(action, (Stop, Finish)):
                assert self.status[action.trial_id] in ("paused", "completed")
                self.status[action.trial_id] = "completed" if isinstance(action, Finish) else "stopped"
        return actions

    def run(self, score: Callable[[int, float], float] = lambda trial_id, budget: float(trial_id)) -> list[Action]:
        """Hand out and report work (one at a time, promoted trials first) until nothing is left."""
        log: list[Action] = []
        while True:
            if self.pending:
                trial_id = self.pending.pop(0)
            else:
                action = self.next_work()
                if action is None:
                    break
                log.append(action)
                trial_id = len(self.where) if isinstance(action, NewTrial) else self.pending.pop(0)
            log += self.report(trial_id, score(trial_id, self.budget_of(trial_id)))
        assert self.scheduler.is_finished(self.state, self.port, 0)
        return log

    def budget_of(self, trial_id: int) -> float:
        bracket, rung = self.where[trial_id]
        return self.scheduler.rung_budget(bracket, rung, self.state)

    def rungs(self, bracket: int) -> list[float]:
        top = self.scheduler.bracket_s(bracket, self.state)  # type: ignore[attr-defined]
        return [self.scheduler.rung_budget(bracket, rung, self.state) for rung in range(top + 1)]


def reuse(old: str, new: str, rank: int, of: int, rung: int, top: int, promoted: bool = True) -> str:
    """The reason of a decision at a rung that was the top before the raise."""
    why = f"budget raised {old} -> {new}: rank {rank} of {of} at rung {rung} (budget {old}): top {top} promoted"
    return why + (f"; continues from its checkpoint at {old} (saves {old})" if promoted else "")


# --- geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "eta", "expected"),
    [
        (27, 81, 3, (81.0,)),
        (27, 243, 3, (81.0, 243.0)),
        (16, 52, 3, (52.0,)),  # log3(3.25) = 1.07: one rung, exactly at the new max
        (16, 40, 3, (40.0,)),  # log3(2.5) = 0.83 rounds to 1
        (16, 150, 3, (48.0, 150.0)),  # log3(9.4) = 2.04
        (10, 11, 2, (11.0,)),  # a small raise still adds one rung
        (8, 64, 2, (16.0, 32.0, 64.0)),
    ],
)
def test_deepening_rungs(old: float, new: float, eta: int, expected: tuple[float, ...]) -> None:
    assert deepening_rungs(old, new, eta) == expected


@pytest.mark.parametrize(
    ("spec", "raises", "expected"),
    [
        # (first max, raised to ...): per bracket id, its rung budgets and its n0.
        (HB27, [81], [
            ((1, 3, 9, 27, 81), 27), ((3, 9, 27, 81), 12), ((9, 27, 81), 6), ((27, 81), 4),
            ((81,), 5),  # the new Hyperband's s'=0 (R=81: n = s_max + 1 = 5); old s covers s' = s + 1
        ]),
        (HB27, [243], [
            ((1, 3, 9, 27, 81, 243), 27), ((3, 9, 27, 81, 243), 12), ((9, 27, 81, 243), 6), ((27, 81, 243), 4),
            ((81, 243), 9), ((243,), 6),  # s' = 1 and 0 of R=243: ceil(6 * 3 / 2) and 6
        ]),
        (HB27, [81, 243], [
            ((1, 3, 9, 27, 81, 243), 27), ((3, 9, 27, 81, 243), 12), ((9, 27, 81, 243), 6), ((27, 81, 243), 4),
            ((81, 243), 5), ((243,), 6),
        ]),
        (HB27.model_copy(update={"max_budget": 16}), [52], [
            ((16 / 9, 16 / 3, 16, 52), 9), ((16 / 3, 16, 52), 5), ((16, 52), 3),
            ((52,), 4),  # R=52: s_max = 3, so s'=0 starts 4
        ]),
        (HB9.model_copy(update={"iterations": 2}), [27], [
            ((1, 3, 9, 27), 9), ((3, 9, 27), 5), ((9, 27), 3), ((1, 3, 9, 27), 9), ((3, 9, 27), 5), ((9, 27), 3),
            ((27,), 4), ((27,), 4),  # one new bracket per sweep, after every old one
        ]),
    ],
)
def test_raised_bracket_geometry(spec: SchedulerSpec, raises: list[float], expected: list[Any]) -> None:
    caller = Caller(spec)
    for new_max in raises:
        assert caller.extend(new_max) == []  # nothing ran yet: nothing to reuse
    for bracket, (budgets, n0) in enumerate(expected):
        assert caller.rungs(bracket) == pytest.approx(budgets, rel=1e-12)
        created = [caller.next_work() for _ in range(n0)]
        assert created == [NewTrial(bracket, 0, pytest.approx(budgets[0], rel=1e-12))] * n0
    assert caller.next_work() is None


def test_geometry_of_unplanned_brackets_is_an_error() -> None:
    geometry = HyperbandGeometry(1, 3, [(27.0, 4), (81.0, 1)])
    assert geometry.planned == 5 and geometry.most_halvings() == 4
    with pytest.raises(ValueError, match="not one of the study's 5 brackets"):
        geometry.rungs(5)


# --- raising a finished Hyperband study ----------------------------------------------------


def finished_hb9(limits: Limits = Limits()) -> Caller:
    """R=9 run to the end, score = trial id: bracket 0 keeps 1, bracket 1 keeps 10, bracket 2 has 15..17."""
    caller = Caller(HB9, limits)
    caller.run()
    assert [t for t, s in caller.status.items() if s == "completed"] == [1, 10, 15, 16, 17]
    return caller


def test_raising_a_finished_study_continues_the_best_of_every_old_top_rung() -> None:
    caller = finished_hb9()
    committed = caller.state["budget_committed"]
    actions = caller.extend(27)
    assert actions == [
        Promote(1, 3, 27.0, reuse("9", "27", 1, 1, 2, 1)),
        Promote(10, 2, 27.0, reuse("9", "27", 1, 1, 1, 1)),
        Promote(15, 1, 27.0, reuse("9", "27", 1, 3, 0, 1)),
        Stop(16, reuse("9", "27", 2, 3, 0, 1, promoted=False)),
        Stop(17, reuse("9", "27", 3, 3, 0, 1, promoted=False)),
    ]
    assert actions[0].reason == (  # the form the decision log shows
        "budget raised 9 -> 27: rank 1 of 1 at rung 2 (budget 9): top 1 promoted; "
        "continues from its checkpoint at 9 (saves 9)"
    )
    assert caller.state["ladder"] == [{"max_budget": 9.0, "brackets": 3}, {"max_budget": 27.0, "brackets": 1}]
    assert caller.state["open"] == {
        "0": {"n0": 9, "rung": 3, "entered": 1, "lost": []},
        "1": {"n0": 5, "rung": 2, "entered": 1, "lost": []},
        "2": {"n0": 3, "rung": 1, "entered": 1, "lost": []},
    }
    assert caller.state["budget_committed"] == committed + 3 * (27 - 9)
    assert not caller.scheduler.is_finished(caller.state, caller.port, 0)
    log = caller.run()
    assert [a for a in log if isinstance(a, NewTrial)] == [NewTrial(3, 0, 27.0)] * 4
    assert [a for a in log if isinstance(a, Finish)] == [
        Finish(1, "reached the top rung 3 (budget 27)"),
        Finish(10, "reached the top rung 2 (budget 27)"),
        Finish(15, "reached the top rung 1 (budget 27)"),
    ] + [Finish(trial_id, "reached the top rung 0 (budget 27)") for trial_id in (18, 19, 20, 21)]
    assert caller.state["open"] == {} and caller.state["trials_created"] == 21


def test_reopened_top_rung_quota_counts_results_only() -> None:
    # Trial 15 of bracket 2 (s=0) was lost before the raise: 2 results at its top, quota max(1, 2 // 3).
    caller = Caller(HB9)
    for _ in range(17):
        assert isinstance(caller.next_work(), NewTrial)
    state, _ = caller.scheduler.on_lost(caller.state, caller.port, 15, 2, 0)
    caller.state, caller.status[15] = state, "failed"
    for trial_id in [t for t in range(1, 18) if t != 15]:
        caller.report(trial_id, float(trial_id))
    caller.run()
    actions = caller.extend(27)
    assert [a for a in actions if a.trial_id in (16, 17)] == [
        Promote(16, 1, 27.0, reuse("9", "27", 1, 2, 0, 1)),
        Stop(17, reuse("9", "27", 2, 2, 0, 1, promoted=False)),
    ]


# --- raising a running Hyperband study -----------------------------------------------------


def test_raising_with_trials_in_flight_at_the_old_top_decides_that_rung_when_it_settles() -> None:
    caller = Caller(HB9)
    for _ in range(17):
        assert isinstance(caller.next_work(), NewTrial)
    for trial_id in range(1, 10):  # bracket 0, rung 0 settles: 1, 2, 3 promoted toward budget 3
        caller.report(trial_id, float(trial_id))
    assert caller.pending == [1, 2, 3]
    assert caller.report(15, 0.5) == [Finish(15, "reached the top rung 0 (budget 9)")]
    assert caller.report(16, 0.4) == [Finish(16, "reached the top rung 0 (budget 9)")]
    # Trial 17 is still training toward budget 9, bracket 1 is at rung 0, bracket 0 at rung 1.
    assert caller.extend(27) == []  # nothing finished: every old top rung is decided when it settles
    assert caller.report(17, 0.45) == [  # no Finish: 9 is no longer the top
        Promote(16, 1, 27.0, reuse("9", "27", 1, 3, 0, 1)),
        Stop(17, reuse("9", "27", 2, 3, 0, 1, promoted=False)),
        Stop(15, reuse("9", "27", 3, 3, 0, 1, promoted=False)),  # completed at 9, not continued
    ]
    assert caller.status[16] == "pending" and caller.status[15] == "stopped"
    for trial_id in (1, 2, 3):  # bracket 0 goes on with the deepened geometry: 1 -> 3 -> 9 -> 27
        caller.pending.remove(trial_id)
        actions = caller.report(trial_id, float(trial_id))
    assert actions[0] == Promote(1, 2, 9.0, "rank 1 of 3 at rung 1 (budget 3): top 1 promoted")
    caller.pending.remove(1)
    assert caller.report(1, 0.1) == [Promote(1, 3, 27.0, reuse("9", "27", 1, 1, 2, 1))]
    for trial_id in range(10, 15):  # bracket 1 settles its rung 0 under the new geometry too
        caller.report(trial_id, float(trial_id))
    log = caller.run()
    assert {a.trial_id for a in log if isinstance(a, Finish)} == {1, 10, 16, 18, 19, 20, 21}


# --- limits, raising twice, refusals ---------------------------------------------------------


def test_a_raise_respects_the_total_budget() -> None:
    # The R=9 study spends 21 + 21 + 27 = 69; one continuation to 27 costs 18, a new trial 27.
    caller = finished_hb9(Limits(total_budget=69 + 18 + 10))
    actions = caller.extend(27)
    assert actions == [
        Promote(1, 3, 27.0, reuse("9", "27", 1, 1, 2, 1)),
        Stop(10, BUDGET_EXHAUSTED),
        Stop(15, BUDGET_EXHAUSTED),
        Stop(16, reuse("9", "27", 2, 3, 0, 1, promoted=False)),
        Stop(17, reuse("9", "27", 3, 3, 0, 1, promoted=False)),
    ]
    assert caller.state["creation_stopped"] and caller.state["budget_committed"] == 87
    log = caller.run()
    assert log == [Finish(1, "reached the top rung 3 (budget 27)")]


def test_raising_twice() -> None:
    caller = finished_hb9()
    caller.extend(27)
    caller.run()
    actions = caller.extend(81)
    # Every bracket now tops out at 81; the rung at 27 is where this raise reuses.
    assert [(a.trial_id, a.to_rung, a.budget) for a in actions if isinstance(a, Promote)] == [
        (1, 4, 81.0), (10, 3, 81.0), (15, 2, 81.0), (18, 1, 81.0)]
    assert all(a.reason.startswith("budget raised 27 -> 81: ") for a in actions)
    assert caller.rungs(0) == [1, 3, 9, 27, 81] and caller.rungs(3) == [27, 81] and caller.rungs(4) == [81]
    caller.run()
    assert caller.state["ladder"] == [
        {"max_budget": 9.0, "brackets": 3}, {"max_budget": 27.0, "brackets": 1}, {"max_budget": 81.0, "brackets": 1}]
    assert [t for t, s in caller.status.items() if s == "completed"] == [1, 10, 15, 18, 22, 23, 24, 25, 26]


@pytest.mark.parametrize(
    ("spec", "old_max", "new_max", "message"),
    [
        (HB9, 9, 9, "must grow"),
        (HB9, 9, 3, "must grow"),
        (HB9, 27, 81, "made under max_budget 9, not 27"),
        (HB27, 27, 170_000, "halvings, more than 10"),  # a valid spec (ratio < 3**11), but s=3 + 8 new rungs
        (ASHA27, 27, 27, "must grow"),
        (ASHA27, 81, 243, "made under max_budget 27, not 81"),
        (ASHA27, 27, 170_000, "halvings, more than 10"),
        (ASHA27.model_copy(update={"kind": "random"}), 27, 81, "only hyperband and asha"),
    ],
)
def test_refused_raises(spec: SchedulerSpec, old_max: float, new_max: float, message: str) -> None:
    limits = Limits(max_trials=10)
    state = make_scheduler(spec, limits).initial_state()
    raised = spec.model_copy(update={"max_budget": max(new_max, spec.min_budget)})
    with pytest.raises(ValueError, match=message):
        make_scheduler(raised, limits).extend(state, InMemoryRungPort(), old_max)


@pytest.mark.parametrize("spec", [HB9, ASHA27.model_copy(update={"max_budget": 9})])
def test_a_raise_must_go_through_extend(spec: SchedulerSpec) -> None:
    limits = Limits(max_trials=10)
    state = make_scheduler(spec, limits).initial_state()
    raised = make_scheduler(spec.model_copy(update={"max_budget": 27}), limits)
    with pytest.raises(ValueError, match="must go through extend"):
        raised.next_work(state, InMemoryRungPort())


def test_extend_does_not_mutate_the_callers_snapshot() -> None:
    caller = finished_hb9()
    before = copy.deepcopy(caller.state)
    make_scheduler(HB27, Limits()).extend(caller.state, caller.port, 9)
    assert caller.state == before


# --- ASHA ------------------------------------------------------------------------------------


def asha_with_top(results: list[float], spec: SchedulerSpec = ASHA27, limits: Limits = Limits(max_trials=100)) -> Caller:
    """An ASHA study whose top rung holds trials 1..n with these scores (completed there)."""
    caller = Caller(spec, limits)
    top = caller.scheduler.bracket_s(0, caller.state)  # type: ignore[attr-defined]
    for trial_id, score in enumerate(results, start=1):
        caller.where[trial_id], caller.status[trial_id] = (0, top), "completed"
        caller.port.record(RungResult(trial_id, 0, top, score))
    return caller


@pytest.mark.parametrize(
    ("first_max", "new_max", "expected"),
    [
        (27, 81, [1, 3, 9, 27, 81]),  # a power ratio: exactly the geometry of a fresh study at 81
        (16, 52, [16 / 9, 16 / 3, 16, 52]),  # old rungs stay; one new rung at 52
        (27, 243, [1, 3, 9, 27, 81, 243]),
    ],
)
def test_asha_raise_keeps_the_old_rungs(first_max: float, new_max: float, expected: list[float]) -> None:
    caller = Caller(ASHA27.model_copy(update={"max_budget": first_max}), Limits(max_trials=5))
    caller.extend(new_max)
    assert caller.rungs(0) == pytest.approx(expected, rel=1e-12)
    fresh = make_scheduler(ASHA27.model_copy(update={"max_budget": new_max}), Limits(max_trials=5))
    if new_max / first_max in (3, 9):
        assert [fresh.rung_budget(0, rung) for rung in range(len(expected))] == caller.rungs(0)


@pytest.mark.parametrize(
    ("scores", "limits", "expected"),
    [
        ([0.5, 0.2, 0.9], Limits(max_trials=100), [2]),  # floor(3 / 3) = 1 promotable now
        ([0.5, 0.2], Limits(max_trials=100), []),  # floor(2 / 3) = 0: later, if more arrive
        ([0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.7], Limits(max_trials=100), [6, 5]),
        ([0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.7], Limits(max_trials=100, total_budget=54 + 1), [6]),
    ],
)
def test_asha_raise_promotes_what_the_rule_allows_at_the_old_top(
    scores: list[float], limits: Limits, expected: list[int]
) -> None:
    caller = asha_with_top(scores, limits=limits)
    actions = caller.extend(81)
    assert [a.trial_id for a in actions] == expected
    count = len(scores)
    assert actions == [
        Promote(trial_id, 4, 81.0, f"budget raised 27 -> 81: rank {rank} of {count} at rung 3 (budget 27): "
                                   f"top {count // 3} promotable; continues from its checkpoint at 27 (saves 27)")
        for rank, trial_id in enumerate(expected, start=1)
    ]
    assert caller.state["budget_committed"] == 54 * len(expected)
    assert caller.state["ladder"] == [27.0, 81.0]


def test_asha_later_promotions_out_of_the_old_top_follow_the_rule() -> None:
    caller = asha_with_top([0.5, 0.2])
    assert caller.extend(81) == []
    caller.where[3], caller.status[3] = (0, 3), "running"  # a trial in flight toward 27 when it was raised
    assert caller.report(3, 0.3) == []  # no Finish: 27 is no longer the top
    action = caller.next_work()
    assert action == Promote(2, 4, 81.0, "budget raised 27 -> 81: rank 1 of 3 at rung 3 (budget 27): top 1 "
                                         "promotable; continues from its checkpoint at 27 (saves 27)")
    assert caller.report(2, 0.1) == [Finish(2, "reached the top rung 4 (budget 81)")]
