"""ASHA's promotion rule case by case, its limits and snapshots, and the in-memory rung port."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.asha import AshaScheduler
from hpo_service.scheduling.base import Finish, NewTrial, Promote, RungResult
from hpo_service.scheduling.memory_port import InMemoryRungPort

R9 = SchedulerSpec(kind="asha", min_budget=1, max_budget=9, eta=3)  # rungs at budget 1, 3, 9
MANY = Limits(max_trials=1000)


def port_with(results: list[tuple[int, int, float]], promoted: list[tuple[int, int]] = []) -> InMemoryRungPort:
    port = InMemoryRungPort()
    for trial_id, rung, score in results:
        port.record(RungResult(trial_id, 0, rung, score))
    for trial_id, rung in promoted:
        port.mark_promoted(trial_id, rung)
    return port


def rung0(*scores: float) -> list[tuple[int, int, float]]:
    """Results at rung 0 for trials 1, 2, ... in order."""
    return [(trial_id, 0, score) for trial_id, score in enumerate(scores, start=1)]


# --- the promotion rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eta", "results", "promoted", "expected"),
    [
        (3, rung0(5, 3), [], None),  # 2 results: floor(2/3) = 0 promotable
        (3, rung0(5, 3, 4), [], (2, 1)),  # 3 results: the best is promotable
        (3, rung0(5, 3, 4), [(2, 0)], None),  # ... but not twice
        (3, rung0(5, 3, 4, 6, 7), [(2, 0)], None),  # 5 results: second-best not yet
        (3, rung0(5, 3, 4, 6, 7, 8), [(2, 0)], (3, 1)),  # 6 results: second-best now is
        (3, rung0(5, 3, 4, 6, 7, 8), [(2, 0), (3, 0)], None),
        (3, rung0(5, 3, 4, 1), [(2, 0)], (4, 1)),  # a new best is top-1 of 4: promotable
        (3, rung0(1, 1, 1), [], (1, 1)),  # ties go to the lower trial id
        (3, rung0(1, 1, 1), [(1, 0)], None),
        (2, rung0(5, 3), [], (2, 1)),
        (2, rung0(5, 3, 4, 6), [(2, 0)], (3, 1)),
        # The highest rung with a promotable result wins.
        (3, rung0(1, 2, 3, 4, 5, 6) + [(1, 1, 0.3), (2, 1, 0.1), (3, 1, 0.2)], [(1, 0), (2, 0), (3, 0)], (2, 2)),
        (3, rung0(1, 2, 3, 4, 5, 6) + [(1, 1, 0.3)], [(1, 0)], (2, 1)),  # rung 1: 1 result, quota 0
        # Nothing promotes past the top rung (rung 2 for budgets 1..9).
        (3, [(1, 2, 0.1), (2, 2, 0.2), (3, 2, 0.3)], [], None),
    ],
)
def test_promotion_rule(
    eta: int,
    results: list[tuple[int, int, float]],
    promoted: list[tuple[int, int]],
    expected: tuple[int, int] | None,
) -> None:
    scheduler = AshaScheduler(R9.model_copy(update={"eta": eta}), MANY)
    port = port_with(results, promoted)
    _, action = scheduler.next_work(scheduler.initial_state(), port)
    if expected is None:
        assert isinstance(action, NewTrial)
    else:
        assert isinstance(action, Promote)
        assert (action.trial_id, action.to_rung) == expected
        assert action.budget == scheduler.rung_budget(0, expected[1])


def test_promotion_reason_and_budget() -> None:
    scheduler = AshaScheduler(R9, MANY)
    state, action = scheduler.next_work(scheduler.initial_state(), port_with(rung0(5, 3, 4)))
    assert action == Promote(2, 1, 3.0, "rank 1 of 3 at rung 0 (budget 1): top 1 promotable")
    assert state["budget_committed"] == 2.0  # from budget 1 to budget 3


def test_new_trials_start_at_the_bottom_rung() -> None:
    scheduler = AshaScheduler(SchedulerSpec(kind="asha", min_budget=0.5, max_budget=8, eta=2), MANY)
    state, action = scheduler.next_work(scheduler.initial_state(), InMemoryRungPort())
    assert action == NewTrial(bracket=0, rung=0, budget=0.5)
    assert state["trials_created"] == 1 and scheduler.top_rung == 4


@pytest.mark.parametrize(("rung", "finishes"), [(0, False), (1, False), (2, True)])
def test_only_the_top_rung_finishes(rung: int, finishes: bool) -> None:
    scheduler = AshaScheduler(R9, MANY)
    result = RungResult(7, 0, rung, 0.5)
    _, actions = scheduler.on_result(scheduler.initial_state(), port_with([(7, rung, 0.5)]), result)
    assert actions == ([Finish(7, "reached the top rung 2 (budget 9)")] if finishes else [])


def test_lost_trials_change_nothing() -> None:
    scheduler = AshaScheduler(R9, MANY)
    state = scheduler.initial_state()
    assert scheduler.on_lost(state, InMemoryRungPort(), 3, 0, 1) == (state, [])


# --- limits -------------------------------------------------------------------------------


def test_needs_a_stopping_limit() -> None:
    with pytest.raises(ValueError, match=r"limits\.max_trials"):
        AshaScheduler(R9, Limits())


def test_max_trials_caps_creation_but_not_promotion() -> None:
    scheduler = AshaScheduler(R9, Limits(max_trials=3))
    state = scheduler.initial_state()
    port = InMemoryRungPort()
    for _ in range(3):
        state, action = scheduler.next_work(state, port)
        assert isinstance(action, NewTrial)
    state, action = scheduler.next_work(state, port)
    assert action is None
    assert not scheduler.is_finished(state, port, in_flight=3)
    for trial_id, score in [(1, 0.3), (2, 0.1), (3, 0.2)]:
        port.record(RungResult(trial_id, 0, 0, score))
    assert not scheduler.is_finished(state, port, in_flight=0)  # trial 2 is promotable
    state, action = scheduler.next_work(state, port)
    assert isinstance(action, Promote) and action.trial_id == 2
    port.mark_promoted(2, 0)
    assert scheduler.is_finished(state, port, in_flight=0)


@pytest.mark.parametrize(
    ("total_budget", "committed", "results", "expected"),
    [
        (5.0, 3.0, rung0(3, 1, 2), (2, 1)),  # 3 + 2 fits
        (4.5, 3.0, rung0(3, 1, 2), "new"),  # promotion costs 2: skipped; a new trial costs 1
        (3.5, 3.0, rung0(3, 1, 2), None),  # neither fits: nothing to do
        # Rung 1 -> 2 costs 6 and does not fit; the cheaper rung 0 -> 1 promotion does.
        (20.0, 15.0, rung0(*range(1, 13)) + [(1, 1, 0.1), (2, 1, 0.2), (3, 1, 0.3)], (4, 1)),
    ],
)
def test_total_budget_skips_promotions_that_do_not_fit(
    total_budget: float, committed: float, results: list[tuple[int, int, float]], expected: Any
) -> None:
    scheduler = AshaScheduler(R9, Limits(total_budget=total_budget))
    promoted = [(t, 0) for t, rung, _ in results if rung == 1]
    state = {**scheduler.initial_state(), "trials_created": 12, "budget_committed": committed}
    port = port_with(results, promoted)
    _, action = scheduler.next_work(state, port)
    if expected is None:
        assert action is None
        assert scheduler.is_finished(state, port, in_flight=0)
    elif expected == "new":
        assert action == NewTrial(0, 0, 1.0)
    else:
        assert isinstance(action, Promote) and (action.trial_id, action.to_rung) == expected


# --- snapshots ----------------------------------------------------------------------------


def test_snapshot_round_trips_and_continues_identically() -> None:
    scheduler = AshaScheduler(R9, Limits(max_trials=20, total_budget=60))
    logs = []
    for roundtrip in (False, True):
        state, port, log = scheduler.initial_state(), InMemoryRungPort(), []
        trial_rung: dict[int, int] = {}
        while True:
            state, action = scheduler.next_work(state, port)
            state = json.loads(json.dumps(state)) if roundtrip else state
            if action is None:
                break
            log.append(action)
            if isinstance(action, NewTrial):
                trial_id, rung = len(trial_rung) + 1, action.rung
            else:
                assert isinstance(action, Promote)
                trial_id, rung = action.trial_id, action.to_rung
                port.mark_promoted(trial_id, trial_rung[trial_id])
            trial_rung[trial_id] = rung  # every segment reports at once, in order
            port.record(RungResult(trial_id, 0, rung, (trial_id * 37) % 11 / (1 + rung)))
        assert scheduler.is_finished(state, port, in_flight=0)
        logs.append((log, state))
    assert logs[0] == logs[1]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s.update(kind="random"),
        lambda s: s.update(version=0),
        lambda s: s.pop("trials_created"),
        lambda s: s.update(trials_created=True),
        lambda s: s.update(budget_committed=-1.0),
        lambda s: s.update(budget_committed=None),
        lambda s: s.pop("ladder"),
        lambda s: s.update(ladder=[]),
        lambda s: s.update(ladder=[27.0, 9.0]),
        lambda s: s.update(ladder=[27.0]),  # not the spec's max (9): a raise that skipped extend
        lambda s: s.update(ladder=["9"]),
    ],
)
def test_corrupt_snapshot_raises_value_error(corrupt: Any) -> None:
    scheduler = AshaScheduler(R9, MANY)
    state = copy.deepcopy(scheduler.initial_state())
    corrupt(state)
    with pytest.raises(ValueError):
        scheduler.next_work(state, InMemoryRungPort())


# --- InMemoryRungPort ---------------------------------------------------------------------


def test_port_ranks_by_score_then_trial_id() -> None:
    port = port_with([(4, 0, 2.0), (2, 0, 1.0), (3, 0, 1.0), (1, 0, 3.0), (9, 1, 0.0)])
    assert [r.trial_id for r in port.ranked(0, 0)] == [2, 3, 4, 1]
    assert port.count(0, 0) == 4 and port.count(0, 1) == 1 and port.count(1, 0) == 0
    assert [port.count_better(0, 0, r) for r in port.ranked(0, 0)] == [0, 1, 2, 3]
    assert port.count_better(0, 0, RungResult(99, 0, 0, 1.5)) == 2  # works for results not stored
    assert port.best_unpromoted(0, 0) == RungResult(2, 0, 0, 1.0)
    port.mark_promoted(2, 0)
    assert port.is_promoted(2, 0) and not port.is_promoted(2, 1)
    assert port.best_unpromoted(0, 0) == RungResult(3, 0, 0, 1.0)
    assert port.count(0, 0) == 4  # promoted results still count and rank
    assert port.best_unpromoted(5, 5) is None and port.ranked(5, 5) == []


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda p: p.record(RungResult(1, 0, 0, 2.0)), "already has a result"),
        (lambda p: p.record(RungResult(2, 0, 0, float("nan"))), "NaN"),
        (lambda p: p.mark_promoted(1, 1), "no result"),
        (lambda p: (p.mark_promoted(1, 0), p.mark_promoted(1, 0)), "already promoted"),
    ],
)
def test_port_rejects_misuse(operation: Any, message: str) -> None:
    port = port_with([(1, 0, 1.0)])
    with pytest.raises(ValueError, match=message):
        operation(port)
