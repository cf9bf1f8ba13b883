"""Synchronous Hyperband: bracket creation, rung decisions, lost trials, limits, snapshots."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.base import Action, Finish, NewTrial, Promote, RungResult, Stop
from hpo_service.scheduling.hyperband import HyperbandScheduler
from hpo_service.scheduling.memory_port import InMemoryRungPort

R9 = SchedulerSpec(min_budget=1, max_budget=9, eta=3)  # brackets: s=2 (9,1)(3,3)(1,9); s=1 (5,3)(1,9); s=0 (3,9)
R81 = SchedulerSpec(min_budget=1, max_budget=81, eta=3)


class Study:
    """A minimal caller: applies actions and keeps the snapshot as the service would (JSON)."""

    def __init__(self, spec: SchedulerSpec = R9, limits: Limits = Limits(), roundtrip: bool = True) -> None:
        self.scheduler = HyperbandScheduler(spec, limits)
        self.roundtrip = roundtrip
        self.port = InMemoryRungPort()
        self.state = self._keep(self.scheduler.initial_state())
        self.position: dict[int, tuple[int, int]] = {}  # trial id -> (bracket, rung it trains toward)
        self.in_flight: set[int] = set()

    def _keep(self, state: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(state)) if self.roundtrip else state

    def next_work(self) -> NewTrial | None:
        """Ask for work; a new trial gets the next id and is in flight."""
        state, action = self.scheduler.next_work(self.state, self.port)
        self.state = self._keep(state)
        if action is not None:
            assert isinstance(action, NewTrial), action
            trial_id = len(self.position) + 1
            self.position[trial_id] = (action.bracket, action.rung)
            self.in_flight.add(trial_id)
        return action

    def create(self, count: int = 1) -> list[int]:
        for _ in range(count):
            assert self.next_work() is not None
        return list(self.position)[-count:]

    def report(self, trial_id: int, score: float) -> list[Action]:
        bracket, rung = self.position[trial_id]
        result = RungResult(trial_id, bracket, rung, score)
        self.port.record(result)
        self.in_flight.discard(trial_id)
        state, actions = self.scheduler.on_result(self.state, self.port, result)
        self.state = self._keep(state)
        return self._apply(actions)

    def lose(self, trial_id: int) -> list[Action]:
        bracket, rung = self.position[trial_id]
        self.in_flight.discard(trial_id)
        state, actions = self.scheduler.on_lost(self.state, self.port, trial_id, bracket, rung)
        self.state = self._keep(state)
        return self._apply(actions)

    def _apply(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Promote):
                bracket, rung = self.position[action.trial_id]
                self.port.mark_promoted(action.trial_id, rung)
                self.position[action.trial_id] = (bracket, action.to_rung)
                self.in_flight.add(action.trial_id)
        return actions

    def finished(self) -> bool:
        return self.scheduler.is_finished(self.state, self.port, len(self.in_flight))


def promoted(actions: list[Action]) -> list[int]:
    return [action.trial_id for action in actions if isinstance(action, Promote)]


def stopped(actions: list[Action]) -> list[int]:
    return [action.trial_id for action in actions if isinstance(action, Stop)]


# --- creation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (R81, [(0, 1.0, 81), (1, 3.0, 34), (2, 9.0, 15), (3, 27.0, 8), (4, 81.0, 5)]),
        (R9, [(0, 1.0, 9), (1, 3.0, 5), (2, 9.0, 3)]),
        (
            R9.model_copy(update={"iterations": 2}),
            [(0, 1.0, 9), (1, 3.0, 5), (2, 9.0, 3), (3, 1.0, 9), (4, 3.0, 5), (5, 9.0, 3)],
        ),
        (SchedulerSpec(min_budget=5, max_budget=5), [(0, 5.0, 1)]),
    ],
)
def test_creates_brackets_in_order_without_waiting(spec: SchedulerSpec, expected: list[tuple[int, float, int]]) -> None:
    study = Study(spec)
    for bracket, budget, count in expected:
        study.create(count)
        assert {study.position[i] for i in list(study.position)[-count:]} == {(bracket, 0)}
        assert study.scheduler.rung_budget(bracket, 0) == budget
    assert study.next_work() is None
    assert not study.finished()


def test_bracket_ids_cycle_through_s_per_sweep() -> None:
    scheduler = HyperbandScheduler(R81.model_copy(update={"iterations": 3}), Limits())
    assert [scheduler.bracket_s(b) for b in range(11)] == [4, 3, 2, 1, 0, 4, 3, 2, 1, 0, 4]


# --- rung decisions ---------------------------------------------------------------------


def test_rung_zero_waits_until_the_bracket_has_created_all_trials() -> None:
    study = Study()
    first, second = study.create(2)
    assert study.report(first, 1.0) == []
    assert study.report(second, 2.0) == []  # every created trial reported, but 7 more are due


@pytest.mark.parametrize(
    ("scores", "expected_promoted"),
    [
        ([9, 8, 7, 6, 5, 4, 3, 2, 1], [9, 8, 7]),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3]),
        ([5, 5, 5, 5, 5, 5, 5, 5, 5], [1, 2, 3]),  # ties go to the lower trial id
        ([3, 1, 4, 1, 5, 9, 2, 6, 5], [2, 4, 7]),
        ([-1e9, float("inf"), 0, 0, 0, 0, 0, 0, -0.5], [1, 9, 3]),
    ],
)
def test_settled_rung_promotes_the_top_third(scores: list[float], expected_promoted: list[int]) -> None:
    study = Study()
    ids = study.create(9)
    for trial_id, score in zip(ids[:-1], scores[:-1]):
        assert study.report(trial_id, score) == []
    actions = study.report(ids[-1], scores[-1])
    assert promoted(actions) == expected_promoted  # best first
    assert sorted(stopped(actions)) == sorted(set(ids) - set(expected_promoted))
    assert all(a.to_rung == 1 and a.budget == 3.0 for a in actions if isinstance(a, Promote))


def test_decision_reasons_are_readable() -> None:
    study = Study()
    ids = study.create(9)
    actions: list[Action] = []
    for trial_id in ids:
        actions = study.report(trial_id, float(trial_id))
    assert actions[0] == Promote(1, 1, 3.0, "rank 1 of 9 at rung 0 (budget 1): top 3 promoted")
    assert actions[3] == Stop(4, "rank 4 of 9 at rung 0 (budget 1): top 3 promoted")


def test_bracket_runs_to_its_top_rung_and_finishes_one() -> None:
    study = Study()
    ids = study.create(9)
    actions: list[Action] = []
    for trial_id in ids:
        actions = study.report(trial_id, float(trial_id))
    assert promoted(actions) == [1, 2, 3]
    assert study.report(3, 0.3) == []
    assert study.report(1, 0.1) == []
    actions = study.report(2, 0.2)
    assert actions == [
        Promote(1, 2, 9.0, "rank 1 of 3 at rung 1 (budget 3): top 1 promoted"),
        Stop(2, "rank 2 of 3 at rung 1 (budget 3): top 1 promoted"),
        Stop(3, "rank 3 of 3 at rung 1 (budget 3): top 1 promoted"),
    ]
    assert study.report(1, 0.01) == [Finish(1, "reached the top rung 2 (budget 9)")]
    assert study.state["open"] == {}


# --- lost trials ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lost", "expected_promoted"),
    [
        ([9], [1, 2, 3]),  # the loss settles the rung; quota counts it: 9 entered -> top 3
        ([1], [2, 3, 4]),
        ([1, 2, 3, 4, 5, 6, 7], [8, 9]),  # fewer results than the quota: all promoted
        (list(range(1, 10)), []),  # nothing to promote: the bracket is done
    ],
)
def test_lost_trials_count_as_settled(lost: list[int], expected_promoted: list[int]) -> None:
    study = Study()
    ids = study.create(9)
    actions: list[Action] = []
    for trial_id in ids:
        actions = study.lose(trial_id) if trial_id in lost else study.report(trial_id, float(trial_id))
    assert promoted(actions) == expected_promoted
    assert ("0" in study.state["open"]) is bool(expected_promoted)


def test_losing_every_promoted_trial_ends_the_bracket() -> None:
    study = Study()
    ids = study.create(9)
    for trial_id in ids:
        study.report(trial_id, float(trial_id))
    assert study.lose(1) == []
    assert study.lose(1) == []  # a repeated loss is counted once
    assert study.lose(2) == []
    assert study.lose(3) == []
    assert "0" not in study.state["open"]


def test_a_stale_loss_for_a_decided_rung_is_ignored() -> None:
    study = Study()
    ids = study.create(9)
    for trial_id in ids:
        study.report(trial_id, float(trial_id))
    state, actions = study.scheduler.on_lost(study.state, study.port, 9, 0, 0)
    assert actions == [] and state == study.state


# --- limits -----------------------------------------------------------------------------


def test_max_trials_cuts_the_last_bracket_short() -> None:
    study = Study(limits=Limits(max_trials=10))
    ids = study.create(10)
    assert study.position[10] == (1, 0)
    assert study.next_work() is None
    for trial_id in ids[:9]:
        study.report(trial_id, float(trial_id))
    # Bracket 1 planned 5 trials but got 1; it still settles and promotes max(1, 1 // 3).
    assert study.report(10, 0.5) == [Promote(10, 1, 9.0, "rank 1 of 1 at rung 0 (budget 3): top 1 promoted")]
    assert not study.finished()
    assert study.report(10, 0.4) == [Finish(10, "reached the top rung 1 (budget 9)")]
    for trial_id in (1, 2, 3):
        study.report(trial_id, float(trial_id))
    study.report(1, 1.0)
    assert study.finished()


def test_promotion_that_does_not_fit_the_budget_is_a_stop() -> None:
    study = Study(limits=Limits(total_budget=10))  # 9 trials at budget 1, then nothing fits
    ids = study.create(9)
    assert study.next_work() is None
    actions: list[Action] = []
    for trial_id in ids:
        actions = study.report(trial_id, float(trial_id))
    assert promoted(actions) == []
    assert actions[:3] == [Stop(trial_id, "total budget exhausted") for trial_id in (1, 2, 3)]
    assert study.finished()


def test_budget_committed_by_promotions_cuts_the_bracket_being_filled() -> None:
    # 9 x 1 (bracket 0) + 2 x 3 (bracket 1) + 3 promotions x 2 = 21: bracket 1 stops at 2 trials.
    study = Study(limits=Limits(total_budget=21))
    first = study.create(9)
    second = study.create(2)
    for trial_id in second:
        assert study.report(trial_id, float(trial_id)) == []
    for trial_id in first[:-1]:
        study.report(trial_id, float(trial_id))
    actions = study.report(first[-1], 9.0)
    assert promoted(actions) == [1, 2, 3]
    assert actions[-2:] == [
        Stop(10, "total budget exhausted"),
        Stop(11, "rank 2 of 2 at rung 0 (budget 3): top 1 promoted"),
    ]
    assert study.state["creation_stopped"] and study.state["budget_committed"] == 21.0
    assert study.next_work() is None


def test_budget_below_the_first_rung_creates_nothing() -> None:
    study = Study(limits=Limits(total_budget=0.5))
    assert study.next_work() is None
    assert study.finished()


def test_single_rung_bracket_finishes_and_is_finished_waits_for_trials_in_flight() -> None:
    study = Study(SchedulerSpec(min_budget=5, max_budget=5))
    (trial_id,) = study.create(1)
    assert study.next_work() is None
    assert not study.finished()
    assert study.report(trial_id, 1.0) == [Finish(trial_id, "reached the top rung 0 (budget 5)")]
    assert not study.scheduler.is_finished(study.state, study.port, in_flight=1)
    assert study.finished()


# --- snapshots --------------------------------------------------------------------------


def _scripted_run(roundtrip: bool) -> tuple[list[Action], dict[str, Any]]:
    study = Study(R9.model_copy(update={"iterations": 2}), Limits(max_trials=25), roundtrip=roundtrip)
    log: list[Action] = []
    while (action := study.next_work()) is not None:
        log.append(action)
        for waiting in sorted(study.in_flight)[:-2]:  # keep two in flight, report the rest
            log += study.report(waiting, (waiting * 7919) % 13 + study.position[waiting][1])
    while study.in_flight:
        waiting = min(study.in_flight)
        log += study.lose(waiting) if waiting % 5 == 0 else study.report(waiting, float(waiting % 4))
    assert study.finished()
    return log, study.state


def test_snapshot_round_trips_through_json_and_continues_identically() -> None:
    plain_log, plain_state = _scripted_run(roundtrip=False)
    json_log, json_state = _scripted_run(roundtrip=True)
    assert plain_log == json_log
    assert json.loads(json.dumps(plain_state)) == plain_state == json_state


def test_calls_do_not_mutate_the_callers_snapshot() -> None:
    study = Study()
    study.create(8)
    before = copy.deepcopy(study.state)
    study.scheduler.next_work(before, study.port)
    study.scheduler.on_lost(before, study.port, 1, 0, 0)
    assert before == study.state


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s.update(kind="asha"),
        lambda s: s.update(version=1),  # before iterative deepening: no ladder
        lambda s: s.update(version=4),
        lambda s: s.update(ladder=[{"max_budget": 3.0, "brackets": 3}, {"max_budget": 9.0, "brackets": 1,
                                                                         "top_up": "yes"}]),
        lambda s: s["open"]["0"].update(stopped=[None]),  # old trials stopped before a top-up: ids
        lambda s: s["open"]["0"].update(stopped=3),
        lambda s: s["open"]["0"].update(top_up_to=-1),  # a running bracket's size once topped up
        lambda s: s.pop("open"),
        lambda s: s.pop("ladder"),
        lambda s: s.update(ladder=[]),
        lambda s: s.update(ladder=[{"max_budget": 9.0, "brackets": 3}, {"max_budget": 3.0, "brackets": 1}]),
        lambda s: s.update(ladder=[{"max_budget": 27.0, "brackets": 3}]),  # not the spec's max: extend skipped
        lambda s: s["ladder"][0].update(brackets=0),  # fewer planned than opened
        lambda s: s["ladder"][0].pop("max_budget"),
        lambda s: s.update(trials_created=-1),
        lambda s: s.update(trials_created=1.5),
        lambda s: s.update(budget_committed="9"),
        lambda s: s.update(creation_stopped=0),
        lambda s: s["open"].update({"7": {"n0": 1, "rung": 0, "entered": 0, "lost": []}}),
        lambda s: s["open"]["0"].update(lost=[None]),
        lambda s: s["open"]["0"].pop("n0"),
        lambda s: s.update(open=[]),
    ],
)
def test_corrupt_snapshot_raises_value_error(corrupt: Any) -> None:
    study = Study()
    study.create(1)
    state = copy.deepcopy(study.state)
    corrupt(state)
    with pytest.raises(ValueError):
        study.scheduler.next_work(state, study.port)
    with pytest.raises(ValueError):
        study.scheduler.is_finished(state, study.port, 0)
