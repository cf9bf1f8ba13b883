"""Event-driven simulations: many workers, random durations, a synthetic objective, no sleeping.

A small driver applies actions the way the service does (a promoted trial trains on
from its rung's budget; Stop and Finish are final; a finished study stops every trial
still paused) and checks every decision against the rule, with its own bookkeeping:
Hyperband decides a rung once, when all its entrants reported or were lost, promoting
the top ``max(1, entered // eta)``; ASHA promotes a trial only while it is in the top
``floor(n / eta)`` of its rung, and once. Everything is seeded: each case is one run.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any

import pytest

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.base import Action, Finish, NewTrial, Promote, RungResult, Scheduler, Stop
from hpo_service.scheduling.factory import make_scheduler
from hpo_service.scheduling.hyperband import BUDGET_EXHAUSTED
from hpo_service.scheduling.memory_port import InMemoryRungPort
from hpo_service.scheduling.rungs import hyperband_brackets, max_bracket_index

FINAL = ("completed", "stopped", "failed")
Key = tuple[int, int]  # (bracket, rung)


@dataclass
class SimTrial:
    trial_id: int
    bracket: int
    rung: int
    budget_target: float
    quality: float  # the score it converges to
    slope: float  # how much worse it looks at small budgets
    budget_done: float = 0.0
    status: str = "pending"


class Simulation:
    def __init__(
        self, spec: SchedulerSpec, limits: Limits, workers: int, seed: int, loss_rate: float = 0.0,
        roundtrip: bool = True,
    ) -> None:
        self.spec, self.limits, self.loss_rate, self.roundtrip = spec, limits, loss_rate, roundtrip
        self.scheduler: Scheduler = make_scheduler(spec, limits)
        self.s_max = 0 if spec.kind == "random" else max_bracket_index(spec.min_budget, spec.max_budget, spec.eta)
        self.rng = random.Random(seed)
        self.port = InMemoryRungPort()
        self.state = self._keep(self.scheduler.initial_state())
        self.trials: dict[int, SimTrial] = {}
        self.pending: deque[int] = deque()  # promoted by on_result, waiting for a worker
        self.events: list[tuple[float, int, int]] = []  # (time, tie-breaking sequence, trial id)
        self.sequence = itertools.count()
        self.idle, self.now = workers, 0.0
        self.log: list[Action] = []
        self.entered: dict[Key, set[int]] = defaultdict(set)
        self.results: dict[Key, dict[int, float]] = defaultdict(dict)
        self.lost: dict[Key, set[int]] = defaultdict(set)
        self.decided: set[Key] = set()
        self.promoted_from: set[tuple[int, int]] = set()  # (trial id, rung)
        self.budget_committed = 0.0

    def _keep(self, state: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(state)) if self.roundtrip else state

    def top_rung(self, bracket: int) -> int:
        return self.s_max - bracket % (self.s_max + 1) if self.spec.kind == "hyperband" else self.s_max

    # --- the event loop ---------------------------------------------------------------

    def run(self) -> Simulation:
        while True:
            self._hand_out_work()
            if not self.events:
                break
            self.now, _, trial_id = heapq.heappop(self.events)
            self.idle += 1
            self._segment_done(self.trials[trial_id])
        assert not self.pending
        assert self.scheduler.is_finished(self.state, self.port, 0), "stuck: nothing in flight, not finished"
        for trial in self.trials.values():  # the caller stops every trial still paused
            if trial.status == "paused":
                self._final(trial, "stopped")
        assert all(trial.status in FINAL for trial in self.trials.values())
        assert self.budget_committed == pytest.approx(self.state["budget_committed"])
        assert self.state["trials_created"] == len(self.trials)
        assert self.limits.max_trials is None or len(self.trials) <= self.limits.max_trials
        assert self.limits.total_budget is None or self.budget_committed <= self.limits.total_budget * (1 + 1e-9)
        return self

    def _hand_out_work(self) -> None:
        while self.idle:
            if self.pending:
                self._start(self.trials[self.pending.popleft()])
                continue
            state, action = self.scheduler.next_work(self.state, self.port)
            self.state = self._keep(state)
            if action is None:
                in_flight = len(self.events)
                assert in_flight == 0 or not self.scheduler.is_finished(self.state, self.port, in_flight)
                return
            self.log.append(action)
            if isinstance(action, NewTrial):
                self._start(self._create(action))
            elif isinstance(action, Promote):
                self._check_async_promotion(action)
                self._start(self._promote(action))
            else:
                raise AssertionError(f"next_work returned {action}")

    def _create(self, action: NewTrial) -> SimTrial:
        assert (action.bracket, 0) not in self.decided, "trial created in a bracket whose rung 0 was decided"
        trial_id = len(self.trials) + 1
        trial = SimTrial(trial_id, action.bracket, action.rung, action.budget, self.rng.random(), 4 * self.rng.random())
        self.trials[trial_id] = trial
        self.entered[(trial.bracket, trial.rung)].add(trial_id)
        self.budget_committed += action.budget
        return trial

    def _start(self, trial: SimTrial) -> None:
        assert trial.status == "pending" and self.idle > 0
        trial.status = "running"
        duration = (trial.budget_target - trial.budget_done) * self.rng.uniform(0.5, 2.0)
        heapq.heappush(self.events, (self.now + duration, next(self.sequence), trial.trial_id))
        self.idle -= 1

    def _segment_done(self, trial: SimTrial) -> None:
        assert trial.status == "running"
        trial.budget_done = trial.budget_target
        key = (trial.bracket, trial.rung)
        if self.rng.random() < self.loss_rate:
            self._final(trial, "failed")
            self.lost[key].add(trial.trial_id)
            state, actions = self.scheduler.on_lost(self.state, self.port, trial.trial_id, *key)
        else:
            score = trial.quality + trial.slope / trial.budget_done
            result = RungResult(trial.trial_id, trial.bracket, trial.rung, score)
            self.port.record(result)
            self.results[key][trial.trial_id] = score
            trial.status = "paused"
            state, actions = self.scheduler.on_result(self.state, self.port, result)
        self.state = self._keep(state)
        self.log += actions
        self._apply(actions)

    # --- applying and checking actions ---------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        decisions: dict[Key, list[Promote | Stop]] = defaultdict(list)
        for action in actions:
            if isinstance(action, (Promote, Stop)):
                decisions[(self.trials[action.trial_id].bracket, self.trials[action.trial_id].rung)].append(action)
        for key, group in decisions.items():
            self._check_rung_decision(key, group)
        for action in actions:
            if isinstance(action, NewTrial):
                raise AssertionError(f"on_result/on_lost returned {action}")
            trial = self.trials[action.trial_id]
            if isinstance(action, Finish):
                assert trial.rung == self.top_rung(trial.bracket)
                self._final(trial, "completed")
            elif isinstance(action, Stop):
                self._final(trial, "stopped")
            else:
                self.pending.append(self._promote(action).trial_id)

    def _promote(self, action: Promote) -> SimTrial:
        trial = self.trials[action.trial_id]
        assert trial.status == "paused" and (trial.trial_id, trial.rung) not in self.promoted_from
        assert action.to_rung == trial.rung + 1 <= self.top_rung(trial.bracket)
        assert action.budget == self.scheduler.rung_budget(trial.bracket, action.to_rung)
        self.port.mark_promoted(trial.trial_id, trial.rung)
        self.promoted_from.add((trial.trial_id, trial.rung))
        self.budget_committed += action.budget - trial.budget_target
        trial.rung, trial.budget_target, trial.status = action.to_rung, action.budget, "pending"
        self.entered[(trial.bracket, trial.rung)].add(trial.trial_id)
        return trial

    def _final(self, trial: SimTrial, status: str) -> None:
        assert trial.status not in FINAL, f"trial {trial.trial_id} ended twice"
        assert status == "failed" or trial.status == "paused"
        trial.status = status

    def ranked(self, key: Key) -> list[int]:
        return [trial_id for trial_id, _ in sorted(self.results[key].items(), key=lambda item: (item[1], item[0]))]

    def _check_rung_decision(self, key: Key, group: list[Promote | Stop]) -> None:
        """Synchronous Hyperband: one decision per rung, when settled, promoting the top k."""
        assert self.spec.kind == "hyperband", f"{self.spec.kind} decided a whole rung: {group}"
        assert key not in self.decided, f"rung {key} decided twice"
        self.decided.add(key)
        assert set(self.results[key]) | self.lost[key] == self.entered[key], f"rung {key} not settled"
        assert sorted(a.trial_id for a in group) == sorted(self.results[key]), "every result gets one decision"
        quota = max(1, len(self.entered[key]) // self.spec.eta)
        promoted = [a.trial_id for a in group if isinstance(a, Promote)]
        unfunded = [a.trial_id for a in group if isinstance(a, Stop) and a.reason == BUDGET_EXHAUSTED]
        assert promoted + unfunded == self.ranked(key)[:quota]

    def _check_async_promotion(self, action: Promote) -> None:
        """ASHA: the trial is in the top floor(n / eta) of its rung now (and promoted once: `_promote`)."""
        assert self.spec.kind == "asha", f"{self.spec.kind} promoted from next_work"
        ranked = self.ranked((0, self.trials[action.trial_id].rung))
        assert ranked.index(action.trial_id) < len(ranked) // self.spec.eta

    def promotable_left_behind(self) -> list[int]:
        """Unpromoted results ranked inside their rung's quota (ASHA must leave none)."""
        return [
            trial_id
            for (bracket, rung), results in self.results.items()
            if rung < self.top_rung(bracket)
            for position, trial_id in enumerate(self.ranked((bracket, rung)))
            if (trial_id, rung) not in self.promoted_from and position < len(results) // self.spec.eta
        ]


# --- Hyperband --------------------------------------------------------------------------

PAPER = SchedulerSpec(kind="hyperband", min_budget=1, max_budget=81, eta=3)


@pytest.mark.parametrize("workers", [1, 7, 32])
def test_hyperband_reproduces_the_paper_per_bracket_counts(workers: int) -> None:
    sim = Simulation(PAPER, Limits(), workers, seed=workers).run()
    for bracket, plan in enumerate(hyperband_brackets(1, 81, 3)):
        assert [len(sim.entered[(bracket, rung)]) for rung in range(plan.s + 1)] == [r.n for r in plan.rungs]
    assert len(sim.trials) == 81 + 34 + 15 + 8 + 5
    assert Counter(t.status for t in sim.trials.values()) == {"completed": 1 + 1 + 1 + 2 + 5, "stopped": 133}


def test_hyperband_keeps_workers_busy_across_brackets() -> None:
    one = Simulation(PAPER, Limits(), 1, seed=5).run()
    many = Simulation(PAPER, Limits(), 7, seed=5).run()
    # Brackets overlap, so seven workers finish much sooner than one, not just a little.
    assert many.now < one.now / 3


@pytest.mark.parametrize(
    ("spec", "limits", "workers", "loss_rate", "seed"),
    [
        (PAPER.model_copy(update={"iterations": 2}), Limits(), 7, 0.05, 1),
        (PAPER, Limits(), 32, 0.2, 2),
        (PAPER, Limits(max_trials=100), 7, 0.0, 3),
        (PAPER, Limits(max_trials=100), 32, 0.05, 4),
        (PAPER, Limits(total_budget=500), 7, 0.0, 5),
        (PAPER, Limits(total_budget=900), 32, 0.05, 6),
        (SchedulerSpec(min_budget=1, max_budget=16, eta=2, iterations=3), Limits(max_trials=150), 7, 0.05, 7),
        (SchedulerSpec(min_budget=0.5, max_budget=8, eta=2), Limits(total_budget=120.5), 1, 0.0, 8),
        (SchedulerSpec(min_budget=4, max_budget=4, iterations=10), Limits(), 3, 0.1, 9),
    ],
)
def test_hyperband_decisions_follow_the_rule(
    spec: SchedulerSpec, limits: Limits, workers: int, loss_rate: float, seed: int
) -> None:
    sim = Simulation(spec, limits, workers, seed, loss_rate).run()
    plans = hyperband_brackets(spec.min_budget, spec.max_budget, spec.eta)
    planned = spec.iterations * sum(plan.rungs[0].n for plan in plans)
    if limits.max_trials is not None:
        assert len(sim.trials) == min(planned, limits.max_trials)
    elif limits.total_budget is None:
        assert len(sim.trials) == planned
    # Every rung that got results was decided, or is a top rung (whose results all finished).
    assert all(rung == sim.top_rung(bracket) or (bracket, rung) in sim.decided for bracket, rung in sim.results)


# --- ASHA and random search ---------------------------------------------------------------

ASHA = SchedulerSpec(kind="asha", min_budget=1, max_budget=81, eta=3)


@pytest.mark.parametrize(
    ("spec", "limits", "workers", "loss_rate", "seed"),
    [
        (ASHA, Limits(max_trials=200), 1, 0.0, 11),
        (ASHA, Limits(max_trials=200), 7, 0.0, 12),
        (ASHA, Limits(max_trials=300), 32, 0.05, 13),
        (ASHA, Limits(total_budget=1500), 7, 0.0, 14),
        (ASHA, Limits(max_trials=400, total_budget=2000), 32, 0.1, 15),
        (ASHA.model_copy(update={"eta": 2, "max_budget": 16}), Limits(max_trials=120), 7, 0.0, 16),
    ],
)
def test_asha_promotions_follow_the_rule(
    spec: SchedulerSpec, limits: Limits, workers: int, loss_rate: float, seed: int
) -> None:
    sim = Simulation(spec, limits, workers, seed, loss_rate).run()
    assert any(isinstance(action, Promote) for action in sim.log)
    if limits.total_budget is None:
        assert len(sim.trials) == limits.max_trials
        assert sim.promotable_left_behind() == []
    else:  # creation ended because the next trial did not fit (or max_trials)
        budget_r0 = sim.scheduler.rung_budget(0, 0)
        assert sim.budget_committed + budget_r0 > limits.total_budget or len(sim.trials) == limits.max_trials


@pytest.mark.parametrize(
    ("limits", "workers", "loss_rate", "expected_trials"),
    [(Limits(max_trials=30), 7, 0.0, 30), (Limits(max_trials=30), 32, 0.2, 30), (Limits(total_budget=2000), 3, 0, 24)],
)
def test_random_search_trains_each_trial_once_to_max_budget(
    limits: Limits, workers: int, loss_rate: float, expected_trials: int
) -> None:
    sim = Simulation(ASHA.model_copy(update={"kind": "random"}), limits, workers, 21, loss_rate).run()
    assert len(sim.trials) == expected_trials
    assert all(trial.budget_done == 81 for trial in sim.trials.values())
    assert "stopped" not in Counter(trial.status for trial in sim.trials.values())


@pytest.mark.parametrize(
    ("spec", "limits"),
    [(PAPER.model_copy(update={"iterations": 2}), Limits(max_trials=200)), (ASHA, Limits(max_trials=150))],
)
def test_json_snapshots_continue_identically(spec: SchedulerSpec, limits: Limits) -> None:
    plain = Simulation(spec, limits, 7, seed=31, loss_rate=0.05, roundtrip=False).run()
    through_json = Simulation(spec, limits, 7, seed=31, loss_rate=0.05, roundtrip=True).run()
    assert plain.log == through_json.log
    assert plain.state == through_json.state
