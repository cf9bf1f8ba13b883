"""Random search: every trial trains to max_budget once, until a limit is reached."""

from __future__ import annotations

import json

import pytest

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.asha import AshaScheduler
from hpo_service.scheduling.base import Finish, NewTrial, RungResult
from hpo_service.scheduling.memory_port import InMemoryRungPort
from hpo_service.scheduling.random_search import RandomSearchScheduler

SPEC = SchedulerSpec(kind="random", min_budget=1, max_budget=81, eta=3)


@pytest.mark.parametrize(
    ("limits", "expected_trials"),
    [
        (Limits(max_trials=1), 1),
        (Limits(max_trials=7), 7),
        (Limits(total_budget=81 * 4), 4),
        (Limits(total_budget=81 * 4 - 1), 3),
        (Limits(total_budget=80), 0),
        (Limits(max_trials=2, total_budget=81 * 4), 2),
    ],
)
def test_creates_trials_at_max_budget_until_a_limit(limits: Limits, expected_trials: int) -> None:
    scheduler = RandomSearchScheduler(SPEC, limits)
    state, port = scheduler.initial_state(), InMemoryRungPort()
    actions = []
    while True:
        state, action = scheduler.next_work(json.loads(json.dumps(state)), port)
        if action is None:
            break
        actions.append(action)
    assert actions == [NewTrial(bracket=0, rung=0, budget=81.0)] * expected_trials
    assert state["kind"] == "random" and state["trials_created"] == expected_trials
    assert scheduler.is_finished(state, port, in_flight=0)
    assert not scheduler.is_finished(state, port, in_flight=1)


def test_every_result_finishes_its_trial_and_nothing_is_promoted() -> None:
    scheduler = RandomSearchScheduler(SPEC, Limits(max_trials=5))
    state, port = scheduler.initial_state(), InMemoryRungPort()
    for trial_id in range(1, 4):
        state, _ = scheduler.next_work(state, port)
        result = RungResult(trial_id, 0, 0, float(trial_id))
        port.record(result)
        state, actions = scheduler.on_result(state, port, result)
        assert actions == [Finish(trial_id, "reached the top rung 0 (budget 81)")]
    state, action = scheduler.next_work(state, port)
    assert isinstance(action, NewTrial)  # three results at one rung, still no promotion


def test_lost_trials_change_nothing() -> None:
    scheduler = RandomSearchScheduler(SPEC, Limits(max_trials=5))
    state = scheduler.initial_state()
    assert scheduler.on_lost(state, InMemoryRungPort(), 1, 0, 0) == (state, [])


def test_budget_ignores_min_budget_and_eta() -> None:
    scheduler = RandomSearchScheduler(SPEC.model_copy(update={"min_budget": 0.001, "eta": 2}), Limits(max_trials=1))
    assert scheduler.rung_budget(0, 0) == 81.0
    assert scheduler.top_rung == 0


def test_needs_a_stopping_limit() -> None:
    with pytest.raises(ValueError, match=r"limits\.max_trials"):
        RandomSearchScheduler(SPEC, Limits(max_trials=None))


def test_snapshots_are_not_interchangeable_with_asha() -> None:
    random_state = RandomSearchScheduler(SPEC, Limits(max_trials=1)).initial_state()
    with pytest.raises(ValueError, match="not a asha"):
        AshaScheduler(SPEC, Limits(max_trials=1)).next_work(random_state, InMemoryRungPort())
