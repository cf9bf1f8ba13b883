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
from hpo_service.scheduling.base import Action, Finish, NewTrial, Promote, Reuse, RungResult, Scheduler, Stop
from hpo_service.scheduling.factory import make_scheduler
from hpo_service.scheduling.hyperband import BUDGET_EXHAUSTED
from hpo_service.scheduling.ladder import HyperbandGeometry
from hpo_service.scheduling.memory_port import InMemoryRungPort
from hpo_service.scheduling.rungs import deepening_rungs, hyperband_brackets

HB9 = SchedulerSpec(kind="hyperband", min_budget=1, max_budget=9, eta=3)  # brackets s=2 (9), s=1 (5), s=0 (3)
HB27 = HB9.model_copy(update={"max_budget": 27})
ASHA27 = SchedulerSpec(kind="asha", min_budget=1, max_budget=27, eta=3)


class Caller:
    """Applies actions like the service: Promote makes a (paused, completed, or after a top-up
    stopped) trial pending again; Reuse is only recorded."""

    def __init__(self, spec: SchedulerSpec, limits: Limits = Limits()) -> None:
        self.spec, self.limits = spec, limits
        self.scheduler: Scheduler = make_scheduler(spec, limits)
        self.port = InMemoryRungPort()
        self.state = self._keep(self.scheduler.initial_state())
        self.where: dict[int, tuple[int, int]] = {}  # trial id -> (bracket, rung it trains toward or reached)
        self.status: dict[int, str] = {}
        self.pending: list[int] = []
        self.reused: list[Reuse] = []
        self.topped_up = False  # a raise with top-up happened: stopped trials may be promoted again

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
            self.port.created(trial_id)
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

    def extend(self, new_max: float, top_up: bool | None = None) -> list[Action]:
        """Raise max_budget; ``top_up`` is passed to Hyperband (None: its default, a top-up)."""
        old_max, self.spec = self.spec.max_budget, self.spec.model_copy(update={"max_budget": new_max})
        self.scheduler = make_scheduler(self.spec, self.limits)
        options = {} if top_up is None else {"top_up": top_up}
        state, actions = self.scheduler.extend(self.state, self.port, old_max, **options)  # type: ignore[call-arg]
        self.topped_up |= self.spec.kind == "hyperband" and top_up is not False
        self.state = self._keep(state)
        return self._apply(actions)

    def _apply(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Reuse):
                assert self.status[action.trial_id] != "failed"
                self.reused.append(action)
            elif isinstance(action, Promote):
                bracket, rung = self.where[action.trial_id]
                revived = self.topped_up and self.status[action.trial_id] == "stopped"
                assert self.status[action.trial_id] in ("paused", "completed") or revived
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


@pytest.mark.parametrize("top_up", [True, False])
@pytest.mark.parametrize(
    ("spec", "raises", "expected"),
    [
        # (first max, raised to ...): per bracket id, its rung budgets, its n0 with a top-up (the larger
        # Hyperband's n for the bracket with the same minimum budget) and without (its old size).
        (HB27, [81], [
            ((1, 3, 9, 27, 81), 81, 27), ((3, 9, 27, 81), 34, 12), ((9, 27, 81), 15, 6), ((27, 81), 8, 4),
            ((81,), 5, 5),  # the new Hyperband's s'=0 (R=81: n = s_max + 1 = 5); old s covers s' = s + 1
        ]),
        (HB27, [243], [
            ((1, 3, 9, 27, 81, 243), 243, 27), ((3, 9, 27, 81, 243), 98, 12), ((9, 27, 81, 243), 41, 6),
            ((27, 81, 243), 18, 4),
            ((81, 243), 9, 9), ((243,), 6, 6),  # s' = 1 and 0 of R=243: ceil(6 * 3 / 2) and 6
        ]),
        (HB27, [81, 243], [
            ((1, 3, 9, 27, 81, 243), 243, 27), ((3, 9, 27, 81, 243), 98, 12), ((9, 27, 81, 243), 41, 6),
            ((27, 81, 243), 18, 4), ((81, 243), 9, 5), ((243,), 6, 6),
        ]),
        (HB27.model_copy(update={"max_budget": 16}), [52], [
            ((16 / 9, 16 / 3, 16, 52), 27, 9), ((16 / 3, 16, 52), 12, 5), ((16, 52), 6, 3),
            ((52,), 4, 4),  # R=52: s_max = 3, so s'=0 starts 4
        ]),
        (HB9.model_copy(update={"max_budget": 9.5}), [17], [
            # 9.5 -> 17 adds one rung: old s=2 gets 3 halvings, more than R=17's s_max = 2: n = ceil(3 * 27 / 4)
            ((9.5 / 9, 9.5 / 3, 9.5, 17), 21, 9), ((9.5 / 3, 9.5, 17), 9, 5), ((9.5, 17), 5, 3), ((17,), 3, 3),
        ]),
        (HB9.model_copy(update={"iterations": 2}), [27], [
            ((1, 3, 9, 27), 27, 9), ((3, 9, 27), 12, 5), ((9, 27), 6, 3),
            ((1, 3, 9, 27), 27, 9), ((3, 9, 27), 12, 5), ((9, 27), 6, 3),
            ((27,), 4, 4), ((27,), 4, 4),  # one new bracket per sweep, after every old one
        ]),
    ],
)
def test_raised_bracket_geometry(spec: SchedulerSpec, raises: list[float], expected: list[Any], top_up: bool) -> None:
    caller = Caller(spec)
    for new_max in raises:
        assert caller.extend(new_max, top_up) == []  # nothing ran yet: nothing to reuse
    for bracket, (budgets, n_topped_up, n_old) in enumerate(expected):
        n0 = n_topped_up if top_up else n_old
        assert caller.rungs(bracket) == pytest.approx(budgets, rel=1e-12)
        created = [caller.next_work() for _ in range(n0)]
        assert created == [NewTrial(bracket, 0, pytest.approx(budgets[0], rel=1e-12))] * n0
    assert caller.next_work() is None


def test_a_topped_up_study_has_a_fresh_studys_brackets() -> None:
    for first, raised in ((27, [81]), (27, [243]), (9, [27, 81]), (27, [81, 243])):
        caller = Caller(HB27.model_copy(update={"max_budget": first}))
        for new_max in raised:
            caller.extend(new_max)
        fresh = hyperband_brackets(1, raised[-1], 3)
        scheduler: Any = caller.scheduler
        sizes = [scheduler.bracket_size(bracket, caller.state) for bracket in range(len(fresh))]
        assert sorted(sizes) == sorted(plan.rungs[0].n for plan in fresh)


def test_geometry_of_unplanned_brackets_is_an_error() -> None:
    geometry = HyperbandGeometry(1, 3, [(27.0, 4), (81.0, 1)])
    assert geometry.planned == 5 and geometry.most_halvings() == 4
    with pytest.raises(ValueError, match="not one of the study's 5 brackets"):
        geometry.rungs(5)


# --- top-up (the default): raising a finished Hyperband study -------------------------------


def finished_hb9(limits: Limits = Limits()) -> Caller:
    """R=9 run to the end, score = trial id: bracket 0 keeps 1, bracket 1 keeps 10, bracket 2 has 15..17."""
    caller = Caller(HB9, limits)
    caller.run()
    assert [t for t, s in caller.status.items() if s == "completed"] == [1, 10, 15, 16, 17]
    return caller


def kept(old: str, new: str, bracket: int, rung: int, budget: str, size: int) -> str:
    """The reason of a Reuse."""
    return (f"budget raised {old} -> {new}: kept by bracket {bracket} with its result at rung {rung} "
            f"(budget {budget}); the bracket is topped up to {size} configurations (saves {budget})")


def test_a_top_up_keeps_every_old_trial_and_grows_each_old_bracket() -> None:
    caller = finished_hb9()
    actions = caller.extend(27)
    # One Reuse per old trial, with the budget it trained: bracket 0 (s=2 -> 3 halvings, 9 -> 27
    # configurations), bracket 1 (5 -> 12), bracket 2 (3 -> 6). Nothing is decided yet.
    assert actions == (
        [Reuse(1, 9.0, kept("9", "27", 0, 2, "9", 27))]
        + [Reuse(t, 3.0, kept("9", "27", 0, 1, "3", 27)) for t in (2, 3)]
        + [Reuse(t, 1.0, kept("9", "27", 0, 0, "1", 27)) for t in range(4, 10)]
        + [Reuse(10, 9.0, kept("9", "27", 1, 1, "9", 12))]
        + [Reuse(t, 3.0, kept("9", "27", 1, 0, "3", 12)) for t in range(11, 15)]
        + [Reuse(t, 9.0, kept("9", "27", 2, 0, "9", 6)) for t in (15, 16, 17)]
    )
    assert sum(a.budget for a in caller.reused) == 69 == caller.state["budget_committed"]  # all of it
    assert caller.state["ladder"] == [
        {"max_budget": 9.0, "brackets": 3}, {"max_budget": 27.0, "brackets": 1, "top_up": True, "newest_trial": 17}]
    assert caller.state["open"] == {  # back at rung 0; "stopped": trials stopped before, which may come back
        "0": {"n0": 27, "rung": 0, "entered": 9, "lost": [], "stopped": [2, 3, 4, 5, 6, 7, 8, 9]},
        "1": {"n0": 12, "rung": 0, "entered": 5, "lost": [], "stopped": [11, 12, 13, 14]},
        "2": {"n0": 6, "rung": 0, "entered": 3, "lost": [], "stopped": []},
    }
    # New trials top the lowest bracket up first.
    assert [caller.next_work() for _ in range(18)] == [NewTrial(0, 0, 1.0)] * 18


def test_a_topped_up_rung_keeps_earlier_promotions_and_fills_the_rest_with_the_best() -> None:
    caller = finished_hb9()
    caller.extend(27)
    new = list(range(18, 36))  # bracket 0's 18 new trials score between the old ones: 18 -> 1.5, 19 -> 2.5, ...
    for trial_id in new:
        assert caller.next_work() == NewTrial(0, 0, 1.0)
    actions: list[Action] = []
    for trial_id in new:
        actions += caller.report(trial_id, trial_id - 16.5)
    # Rung 0 (27 entrants): quota 9; 1, 2, 3 were promoted before the raise and keep their places;
    # the other 6 go to the best of the rest, new (18, 19, 20, 21) or stopped before (4, 5).
    why = "at rung 0 (budget 1): top 9 promoted (3 of them before the raise)"
    back = "; stopped here before the raise, resumes from its checkpoint at 1"
    assert [a for a in actions if isinstance(a, Promote)] == [
        Promote(18, 1, 3.0, f"rank 2 of 27 {why}"), Promote(19, 1, 3.0, f"rank 4 of 27 {why}"),
        Promote(20, 1, 3.0, f"rank 6 of 27 {why}"), Promote(4, 1, 3.0, f"rank 7 of 27 {why}{back}"),
        Promote(21, 1, 3.0, f"rank 8 of 27 {why}"), Promote(5, 1, 3.0, f"rank 9 of 27 {why}{back}"),
    ]
    # Every other new trial is stopped; old ones stopped before (6..9) are not stopped twice.
    assert {a.trial_id for a in actions if isinstance(a, Stop)} == set(range(22, 36))
    assert Stop(22, f"rank 10 of 27 {why}") in actions
    assert caller.state["open"]["0"] == {"n0": 27, "rung": 1, "entered": 9, "lost": [], "stopped": [2, 3]}
    # Rung 1 (9 entrants: 1, 2, 3 with results from before, and the 6 promoted): quota 3, trial 1 keeps
    # its place, then 18 (new) and 2 (stopped at rung 1 before the raise).
    actions = []
    for trial_id in (18, 19, 20, 4, 21, 5):
        caller.pending.remove(trial_id)
        actions += caller.report(trial_id, trial_id - 16.5 if trial_id > 17 else float(trial_id))
    assert [(a.trial_id, a.to_rung) for a in actions if isinstance(a, Promote)] == [(18, 2), (2, 2)]
    assert {a.trial_id for a in actions if isinstance(a, Stop)} == {19, 20, 4, 21, 5}  # 3 stays stopped
    caller.pending.remove(18)
    caller.pending.remove(2)
    caller.report(18, 1.5)
    # Rung 2 was the old top: trial 1 completed there and competes with 18 and 2 for the one place.
    assert caller.report(2, 2.0) == [
        Promote(1, 3, 27.0, "rank 1 of 3 at rung 2 (budget 9): top 1 promoted"),
        Stop(18, "rank 2 of 3 at rung 2 (budget 9): top 1 promoted"),
        Stop(2, "rank 3 of 3 at rung 2 (budget 9): top 1 promoted"),
    ]


def scored(order: str) -> Callable[[int, float], float]:
    """"old": the configurations of the study before the raise are the best (score = trial id);
    "new": the ones sampled after it are (score = -trial id)."""
    return (lambda trial_id, budget: float(trial_id)) if order == "old" else (lambda trial_id, budget: -trial_id)


@pytest.mark.parametrize(
    ("order", "bracket", "reused", "topped_up", "entered", "old_entered", "revived"),
    [
        # R=27 -> 81, eta 3, run to the end before and after. Per bracket: trials kept (Reuse), new
        # trials at rung 0, entrants per rung (a fresh R=81 study's: 81/27/9/3/1, 34/11/3/1, 15/5/1,
        # 8/2, 5), how many of them are old, and old trials promoted again after being stopped.
        ("old", 0, 27, 54, [81, 27, 9, 3, 1], [27, 27, 9, 3, 1], 18 + 6 + 2),
        ("old", 1, 12, 22, [34, 11, 3, 1], [12, 11, 3, 1], 7 + 2),
        ("old", 2, 6, 9, [15, 5, 1], [6, 5, 1], 3),
        ("old", 3, 4, 4, [8, 2], [4, 2], 0),  # 46, 47 completed at 27 before: continued, not revived
        ("old", 4, 0, 5, [5], [0], 0),  # the new bracket (s' = 0)
        # New configurations better: the old promotions keep their places, every other place is new.
        ("new", 0, 27, 54, [81, 27, 9, 3, 1], [27, 9, 3, 1, 0], 0),
        ("new", 1, 12, 22, [34, 11, 3, 1], [12, 4, 1, 0], 0),
        ("new", 2, 6, 9, [15, 5, 1], [6, 2, 0], 0),
        ("new", 3, 4, 4, [8, 2], [4, 0], 0),
        ("new", 4, 0, 5, [5], [0], 0),
    ],
)
def test_bracket_bookkeeping_after_a_top_up_from_27_to_81(
    order: str, bracket: int, reused: int, topped_up: int, entered: list[int], old_entered: list[int], revived: int
) -> None:
    caller = Caller(HB27)
    caller.run(scored(order))
    old_trials, committed = len(caller.where), caller.state["budget_committed"]
    stopped_before = {t for t, status in caller.status.items() if status == "stopped"}
    assert (old_trials, committed) == (49, 357)
    caller.extend(81)
    log = caller.run(scored(order))
    mine = {t for t, (b, _) in caller.where.items() if b == bracket}
    reached = [{t for t in mine if caller.where[t][1] >= rung} for rung in range(len(entered))]
    assert len([a for a in caller.reused if a.trial_id in mine]) == reused
    assert len([t for t in mine if t > old_trials]) == topped_up
    assert [len(trials) for trials in reached] == entered
    assert [len([t for t in trials if t <= old_trials]) for trials in reached] == old_entered
    promoted_again = {a.trial_id for a in log if isinstance(a, Promote)} & stopped_before
    assert len(promoted_again & mine) == revived
    # The whole study: a fresh R=81 Hyperband's 143 configurations and 1581 budget, 1224 of it after
    # the raise (the 357 spent before are all reused).
    assert len(caller.where) == 143 and caller.state["budget_committed"] == 1581
    assert sum(a.budget for a in caller.reused) == 357


def test_a_top_up_cut_short_by_max_trials_decides_every_bracket_with_what_it_has() -> None:
    caller = finished_hb9(Limits(max_trials=27))  # 17 old trials: room for 10 new ones
    caller.extend(27)
    assert [caller.next_work() for _ in range(11)] == [NewTrial(0, 0, 1.0)] * 10 + [None]
    assert caller.state["creation_stopped"]
    # Bracket 0 is cut to 19 configurations; brackets 1 and 2 get none and have no trial in flight:
    # they are decided on the next result (trial 18's), with their old trials alone.
    assert caller.report(18, 18.0) == [
        Promote(10, 2, 27.0, "rank 1 of 1 at rung 1 (budget 9): top 1 promoted"),
        Promote(15, 1, 27.0, "rank 1 of 3 at rung 0 (budget 9): top 1 promoted"),
        Stop(16, "rank 2 of 3 at rung 0 (budget 9): top 1 promoted"),
        Stop(17, "rank 3 of 3 at rung 0 (budget 9): top 1 promoted"),
    ]
    for trial_id in range(19, 27):
        caller.report(trial_id, float(trial_id))
    actions = caller.report(27, 27.0)  # bracket 0, rung 0 (19 entrants): quota 6, 1, 2, 3 keep their places
    assert [a.trial_id for a in actions if isinstance(a, Promote)] == [4, 5, 6]
    assert [a.trial_id for a in actions if isinstance(a, Stop)] == list(range(18, 28))
    caller.run()
    assert [t for t, s in caller.status.items() if s == "completed"] == [1, 10, 15]
    assert caller.state["open"] == {} and caller.state["brackets_opened"] == 3  # no room for bracket 3


def test_a_top_up_respects_the_total_budget() -> None:
    # 69 spent; 99 allows bracket 0's 18 new trials (18) and its 6 promotions to 3 (12), nothing more.
    caller = finished_hb9(Limits(total_budget=99))
    caller.extend(27)
    log = caller.run()
    assert caller.state["budget_committed"] == 99 and caller.state["creation_stopped"]
    assert len([a for a in log if isinstance(a, NewTrial)]) == 18
    assert Stop(1, BUDGET_EXHAUSTED) in log and Stop(10, BUDGET_EXHAUSTED) in log  # no room to go on to 27
    assert [t for t, s in caller.status.items() if s == "completed"] == []


# --- top-up: raising a running Hyperband study -----------------------------------------------


def test_a_bracket_running_above_rung_0_settles_that_rung_before_its_top_up() -> None:
    caller = Caller(HB9)
    for _ in range(17):
        assert isinstance(caller.next_work(), NewTrial)
    for trial_id in range(1, 10):  # bracket 0, rung 0 settles: 1, 2, 3 promoted toward budget 3
        caller.report(trial_id, float(trial_id))
    caller.report(15, 0.5)
    caller.report(16, 0.4)  # 15, 16 completed at 9; 17 still training; bracket 1 (10..14) still at rung 0
    actions = caller.extend(27)
    # Kept: bracket 0's nine (1, 2, 3 are on their way to rung 1) and bracket 2's two results.
    assert [(a.trial_id, a.budget) for a in actions] == [(t, 1.0) for t in range(1, 10)] + [(15, 9.0), (16, 9.0)]
    assert caller.state["open"] == {
        "0": {"n0": 9, "rung": 1, "entered": 3, "lost": [], "top_up_to": 27},  # waits for 1, 2, 3
        "1": {"n0": 12, "rung": 0, "entered": 5, "lost": []},  # nothing decided yet: simply larger
        "2": {"n0": 6, "rung": 0, "entered": 3, "lost": []},
    }
    assert [caller.next_work() for _ in range(10)] == [NewTrial(1, 0, 3.0)] * 7 + [NewTrial(2, 0, 9.0)] * 3
    for trial_id in (1, 2, 3):  # bracket 0's rung 1 settles: its top-up starts, undecided trials wait
        caller.pending.remove(trial_id)
        assert caller.report(trial_id, float(trial_id)) == []
    assert caller.state["open"]["0"] == {"n0": 27, "rung": 0, "entered": 9, "lost": [], "stopped": [4, 5, 6, 7, 8, 9]}
    assert caller.next_work() == NewTrial(0, 0, 1.0)
    caller.report(17, 0.45)
    log: list[Action] = []
    for trial_id in [t for t, status in caller.status.items() if status == "running"]:
        log += caller.report(trial_id, float(trial_id))
    log += caller.run()
    assert {a.trial_id for a in log if isinstance(a, Finish)} >= {1}  # old trial 1 went on to 27
    entrants = [len([t for t, (b, r) in caller.where.items() if b == 0 and r >= rung]) for rung in range(4)]
    assert entrants == [27, 9, 3, 1]


# --- top-up: limits, raising twice, old snapshots ---------------------------------------------


def test_topping_up_twice_gives_a_fresh_studys_brackets() -> None:
    caller = finished_hb9()
    caller.extend(27)
    caller.run()
    assert caller.state["budget_committed"] == 357  # a fresh R=27 study's spend
    caller.extend(81)
    caller.run()
    assert caller.state["budget_committed"] == 1581 and len(caller.where) == 143  # a fresh R=81 study's
    sizes = sorted(len([t for t, (b, _) in caller.where.items() if b == bracket]) for bracket in range(5))
    assert sizes == sorted(plan.rungs[0].n for plan in hyperband_brackets(1, 81, 3))
    assert all(a.reason.startswith(("budget raised 9 -> 27: ", "budget raised 27 -> 81: ")) for a in caller.reused)


def _as_version_2(state: dict[str, Any]) -> dict[str, Any]:
    """What the scheduler wrote before top-ups: version 2, no ``top_up`` in the ladder."""
    old = copy.deepcopy(state)
    old["version"] = 2
    for step in old["ladder"]:
        step.pop("top_up", None)
    return old


def test_a_version_2_snapshot_loads_as_raised_without_top_up() -> None:
    caller = finished_hb9()
    caller.extend(27, top_up=False)
    v3 = copy.deepcopy(caller.state)
    v2 = _as_version_2(v3)
    scheduler = make_scheduler(HB27, Limits())
    assert scheduler.next_work(v2, caller.port) == scheduler.next_work(v3, caller.port)
    assert scheduler.next_work(v2, caller.port)[0]["version"] == 3
    # It goes on exactly as the version 3 snapshot does, and can be raised again (with a top-up).
    plain = Caller(HB9)
    plain.run()
    plain.extend(27, top_up=False)
    caller.state = v2
    assert caller.run() == plain.run()
    caller.extend(81)
    plain.extend(81)
    assert caller.run() == plain.run() and caller.state == plain.state


def test_a_version_2_snapshot_of_a_study_never_raised_is_topped_up() -> None:
    caller = finished_hb9()
    caller.state = _as_version_2(caller.state)
    assert caller.extend(27)[0] == Reuse(1, 9.0, kept("9", "27", 0, 2, "9", 27))
    caller.run()
    assert caller.state["budget_committed"] == 357


# --- without top-up: raising a finished Hyperband study ------------------------------------


def test_without_top_up_a_raise_continues_the_best_of_every_old_top_rung() -> None:
    caller = finished_hb9()
    committed = caller.state["budget_committed"]
    actions = caller.extend(27, top_up=False)
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
    assert caller.state["ladder"] == [
        {"max_budget": 9.0, "brackets": 3}, {"max_budget": 27.0, "brackets": 1, "top_up": False, "newest_trial": 17}]
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


def test_without_top_up_a_reopened_top_rung_quota_counts_results_only() -> None:
    # Trial 15 of bracket 2 (s=0) was lost before the raise: 2 results at its top, quota max(1, 2 // 3).
    caller = Caller(HB9)
    for _ in range(17):
        assert isinstance(caller.next_work(), NewTrial)
    state, _ = caller.scheduler.on_lost(caller.state, caller.port, 15, 2, 0)
    caller.state, caller.status[15] = state, "failed"
    for trial_id in [t for t in range(1, 18) if t != 15]:
        caller.report(trial_id, float(trial_id))
    caller.run()
    actions = caller.extend(27, top_up=False)
    assert [a for a in actions if a.trial_id in (16, 17)] == [
        Promote(16, 1, 27.0, reuse("9", "27", 1, 2, 0, 1)),
        Stop(17, reuse("9", "27", 2, 2, 0, 1, promoted=False)),
    ]


# --- without top-up: raising a running Hyperband study -------------------------------------


def test_without_top_up_trials_in_flight_at_the_old_top_are_decided_when_that_rung_settles() -> None:
    caller = Caller(HB9)
    for _ in range(17):
        assert isinstance(caller.next_work(), NewTrial)
    for trial_id in range(1, 10):  # bracket 0, rung 0 settles: 1, 2, 3 promoted toward budget 3
        caller.report(trial_id, float(trial_id))
    assert caller.pending == [1, 2, 3]
    assert caller.report(15, 0.5) == [Finish(15, "reached the top rung 0 (budget 9)")]
    assert caller.report(16, 0.4) == [Finish(16, "reached the top rung 0 (budget 9)")]
    # Trial 17 is still training toward budget 9, bracket 1 is at rung 0, bracket 0 at rung 1.
    assert caller.extend(27, top_up=False) == []  # nothing finished: every old top rung is decided when it settles
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


def test_without_top_up_a_raise_respects_the_total_budget() -> None:
    # The R=9 study spends 21 + 21 + 27 = 69; one continuation to 27 costs 18, a new trial 27.
    caller = finished_hb9(Limits(total_budget=69 + 18 + 10))
    actions = caller.extend(27, top_up=False)
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


def test_without_top_up_raising_twice() -> None:
    caller = finished_hb9()
    caller.extend(27, top_up=False)
    caller.run()
    actions = caller.extend(81, top_up=False)
    # Every bracket now tops out at 81; the rung at 27 is where this raise reuses.
    assert [(a.trial_id, a.to_rung, a.budget) for a in actions if isinstance(a, Promote)] == [
        (1, 4, 81.0), (10, 3, 81.0), (15, 2, 81.0), (18, 1, 81.0)]
    assert all(a.reason.startswith("budget raised 27 -> 81: ") for a in actions)
    assert caller.rungs(0) == [1, 3, 9, 27, 81] and caller.rungs(3) == [27, 81] and caller.rungs(4) == [81]
    caller.run()
    assert caller.state["ladder"] == [
        {"max_budget": 9.0, "brackets": 3},
        {"max_budget": 27.0, "brackets": 1, "top_up": False, "newest_trial": 17},  # trials 1-17 existed at 9 -> 27
        {"max_budget": 81.0, "brackets": 1, "top_up": False, "newest_trial": 21},  # and 18-21 (bracket 3) at 27 -> 81
    ]
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


# --- reuse is for trials that existed at the raise ----------------------------------------


def test_asha_a_trial_created_after_the_raise_reuses_nothing_at_the_old_top() -> None:
    caller = asha_with_top([0.5, 0.2])  # trials 1 and 2 completed at 27 before the raise
    assert caller.extend(81) == []
    assert caller.state["raised_after"] == [2]
    caller.where[3], caller.status[3] = (0, 3), "running"  # created after the raise, it climbed to 27 since
    caller.port.created(3)
    assert caller.report(3, 0.1) == []
    assert caller.next_work() == Promote(3, 4, 81.0, "rank 1 of 3 at rung 3 (budget 27): top 1 promotable")
    for trial_id, score in [(4, 0.6), (5, 0.7), (6, 0.8)]:
        caller.where[trial_id], caller.status[trial_id] = (0, 3), "running"
        caller.port.created(trial_id)
        caller.report(trial_id, score)
    assert caller.next_work() == Promote(  # trial 2 existed at the raise: 81 continues it
        2, 4, 81.0, "budget raised 27 -> 81: rank 2 of 6 at rung 3 (budget 27): top 2 promotable; "
                    "continues from its checkpoint at 27 (saves 27)")


def test_without_top_up_a_bracket_opened_after_the_raise_reuses_nothing() -> None:
    caller = Caller(HB9)
    for _ in range(14):  # brackets 0 (s=2) and 1 (s=1); bracket 2 (s=0, its rung 0 at 9) not opened yet
        assert isinstance(caller.next_work(), NewTrial)
    assert caller.extend(27, top_up=False) == []
    for _ in range(3):
        action = caller.next_work()
        assert isinstance(action, NewTrial) and action.bracket == 2
    assert caller.report(15, 0.5) == [] and caller.report(16, 0.4) == []
    assert caller.report(17, 0.45) == [  # 9 was never going to end them: no "budget raised", nothing saved
        Promote(16, 1, 27.0, "rank 1 of 3 at rung 0 (budget 9): top 1 promoted"),
        Stop(17, "rank 2 of 3 at rung 0 (budget 9): top 1 promoted"),
        Stop(15, "rank 3 of 3 at rung 0 (budget 9): top 1 promoted"),
    ]


def test_a_snapshot_from_before_the_newest_trial_was_kept_marks_every_promotion_at_the_old_top() -> None:
    asha = asha_with_top([0.5, 0.2])
    asha.extend(81)
    del asha.state["raised_after"]  # as stored before it was kept: every raise's newest trial unknown
    asha.where[3], asha.status[3] = (0, 3), "running"
    asha.report(3, 0.1)
    action = asha.next_work()
    assert isinstance(action, Promote) and action.reason.startswith("budget raised 27 -> 81: ")

    hyperband = Caller(HB9)
    for _ in range(14):
        hyperband.next_work()
    hyperband.extend(27, top_up=False)
    del hyperband.state["ladder"][1]["newest_trial"]
    for _ in range(3):
        hyperband.next_work()
    hyperband.report(15, 0.5), hyperband.report(16, 0.4)
    assert hyperband.report(17, 0.45)[0] == Promote(16, 1, 27.0, reuse("9", "27", 1, 3, 0, 1))


@pytest.mark.parametrize(
    ("spec", "corrupt"),
    [
        (ASHA27, {"raised_after": [3]}),  # one per raise: this study was never raised
        (ASHA27, {"raised_after": "3"}),
        (ASHA27, {"raised_after": [True]}),
    ],
)
def test_a_corrupt_record_of_the_newest_trial_is_refused(spec: SchedulerSpec, corrupt: dict[str, Any]) -> None:
    scheduler = make_scheduler(spec, Limits(max_trials=5))
    state = {**scheduler.initial_state(), **corrupt}
    with pytest.raises(ValueError, match="raised_after"):
        scheduler.next_work(state, InMemoryRungPort())


def test_a_corrupt_newest_trial_in_a_hyperband_ladder_is_refused() -> None:
    caller = finished_hb9()
    caller.extend(27, top_up=False)
    state = json.loads(json.dumps(caller.state))
    state["ladder"][1]["newest_trial"] = "17"
    with pytest.raises(ValueError, match="newest_trial"):
        caller.scheduler.next_work(state, caller.port)
