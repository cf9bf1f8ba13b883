"""The muP-transfer schedule, simulated: tune at proxy widths, transfer the top-k, check the LR."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from hpo_service.domain.spec import Limits, SchedulerSpec
from hpo_service.scheduling.base import Finish, NewTrial, Promote, RungResult, Stop
from hpo_service.scheduling.factory import make_scheduler
from hpo_service.scheduling.memory_port import InMemoryRungPort
from hpo_service.scheduling.mup_transfer import CHECK_BRACKET, STRIDE, TARGET_BRACKET


def loss(params: dict[str, Any], budget: float) -> float:
    """muP-like: the best learning rate (1e-2) does not depend on width; wider is better."""
    return (math.log10(params["lr"]) + 2) ** 2 + 1 / params["width"] + 1 / (1 + budget)


@dataclass
class Sim:
    spec: SchedulerSpec
    port: InMemoryRungPort = field(default_factory=InMemoryRungPort)
    trials: dict[int, dict[str, Any]] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.scheduler = make_scheduler(self.spec, Limits())
        self.state = self.scheduler.initial_state()
        self.rng = random.Random(0)

    def _start(self, trial_id: int) -> None:
        bracket = self.trials[trial_id]["bracket"]
        self.port.in_flight_by_bracket[bracket] = self.port.in_flight_by_bracket.get(bracket, 0) + 1

    def _train(self, trial_id: int) -> None:
        trial = self.trials[trial_id]
        self.port.in_flight_by_bracket[trial["bracket"]] -= 1
        result = RungResult(trial_id, trial["bracket"], trial["rung"], loss(trial["params"], trial["budget"]),
                            trial["budget"])
        self.port.record(result)
        self.state, actions = self.scheduler.on_result(self.state, self.port, result)
        for action in actions:
            if isinstance(action, Promote):
                self.port.mark_promoted(action.trial_id, self.trials[action.trial_id]["rung"])
                self.trials[action.trial_id].update(rung=action.to_rung, budget=action.budget)
                self._start(action.trial_id)
                self.queue.append(action.trial_id)
            elif isinstance(action, (Stop, Finish)):
                self.finished.add(action.trial_id)

    def run(self) -> None:
        self.queue: list[int] = []
        for _ in range(2000):
            self.state, action = self.scheduler.next_work(self.state, self.port)
            if isinstance(action, NewTrial):
                if action.copy_of is None:
                    params = {"lr": 10 ** self.rng.uniform(-4, 0)}
                else:
                    params = dict(self.trials[action.copy_of]["params"])
                for name, factor in action.scale.items():
                    params[name] *= factor
                params.update(action.overrides)
                trial_id = len(self.trials)
                self.trials[trial_id] = {"params": params, "bracket": action.bracket, "rung": action.rung,
                                         "budget": action.budget, "copy_of": action.copy_of}
                self._start(trial_id)
                self.queue.append(trial_id)
            elif isinstance(action, Promote):
                raise AssertionError("synchronous Hyperband promotes in on_result, not next_work")
            elif not self.queue:
                assert self.scheduler.is_finished(self.state, self.port, 0)
                return
            if self.queue:
                self._train(self.queue.pop(0))
        raise AssertionError("the schedule did not finish")


def make_spec(check: bool = True) -> SchedulerSpec:
    return SchedulerSpec.model_validate({
        "kind": "mup_transfer", "min_budget": 1, "max_budget": 9, "eta": 3,
        "transfer": {"param": "width", "proxy": [32, 64], "target": 256, "top_k": 2,
                     "check": {"param": "lr", "factor": 2.0, "steps": 1} if check else None},
    })


def test_stages_run_in_order_with_the_right_widths() -> None:
    sim = Sim(make_spec())
    sim.run()
    stage1 = [t for t in sim.trials.values() if t["bracket"] < TARGET_BRACKET]
    assert {t["params"]["width"] for t in stage1} == {32, 64}
    for proxy, width in enumerate((32, 64)):
        assert all(t["params"]["width"] == width for t in stage1 if t["bracket"] // STRIDE == proxy)
    # Hyperband R=9, eta=3 per proxy: 9 + 5 + 3 trials.
    assert len(stage1) == 2 * 17
    transferred = [t for t in sim.trials.values() if t["bracket"] == TARGET_BRACKET]
    assert len(transferred) == 2
    for trial in transferred:
        source = sim.trials[trial["copy_of"]]
        assert source["params"]["width"] == 64, "top-k come from the widest proxy"
        assert trial["params"] == {**source["params"], "width": 256}, "hyperparameters carried over unchanged"
        assert trial["budget"] == 9
    best_source = min(transferred, key=lambda t: loss(t["params"], 9))
    check = [t for t in sim.trials.values() if t["bracket"] == CHECK_BRACKET]
    assert sorted(t["params"]["lr"] / best_source["params"]["lr"] for t in check) == pytest.approx([0.5, 2.0])
    assert all(t["params"]["width"] == 256 for t in check)
    assert sim.state["stage"] == 4 and len(sim.finished) == len(sim.trials)


def test_without_a_check_the_schedule_ends_after_stage_2() -> None:
    sim = Sim(make_spec(check=False))
    sim.run()
    assert not [t for t in sim.trials.values() if t["bracket"] == CHECK_BRACKET]
    assert sim.state["stage"] == 4


@pytest.mark.parametrize(("transfer", "message"), [
    ({"proxy": [256], "target": 128}, "smaller than the target"),
    ({"proxy": [], "target": 128}, "proxy"),
])
def test_bad_transfer_sections(transfer: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulerSpec.model_validate({"kind": "mup_transfer", "transfer": transfer})


def test_transfer_section_only_with_its_kind() -> None:
    with pytest.raises(ValueError, match="only it may have one"):
        SchedulerSpec.model_validate({"kind": "hyperband", "transfer": {"proxy": [32], "target": 64}})
    with pytest.raises(ValueError, match="needs a `transfer` section"):
        SchedulerSpec.model_validate({"kind": "mup_transfer"})
