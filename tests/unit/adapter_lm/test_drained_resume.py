"""A slice stopped mid-epoch (a drained worker) resumes at the very step it stopped at.

The stop lands between rungs, at a fractional epoch ``budget_at(step)`` (rounded to 10
decimals, sent to the server as JSON and handed back as the retry's ``budget_from``); the retry
must map it back to the same optimizer step, or it refuses the checkpoint ("checkpoint is at
step s, the slice starts at step s-1") and the drained work is lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from tests.unit.adapter_lm.helpers import KIND_PARAMS, Recorder, run_slice
from trainers.adapter_lm.checkpoint import ADAPTER_FILE
from trainers.adapter_lm.data import load_data
from trainers.adapter_lm.model import load_tokenizer
from trainers.adapter_lm.schedule import BudgetClock


@pytest.mark.parametrize("steps_per_unit", [7, 21, 45, 97, 1000, 4096, 99_991])
def test_every_step_round_trips_through_its_budget(steps_per_unit: int) -> None:
    clock = BudgetClock(steps_per_unit)
    for step in range(0, 3 * steps_per_unit + 1, max(1, steps_per_unit // 500)):
        budget = json.loads(json.dumps(clock.budget_at(step)))  # as the server stores and returns it
        assert clock.step_at(budget) == step, (steps_per_unit, step, budget)


def test_a_slice_stopped_mid_epoch_resumes_where_it_stopped(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    config = make_config(budget_unit="epochs", max_budget=1, batch_size=8, report_every=1)
    clock = BudgetClock(load_data(config, load_tokenizer(config)).steps_per_epoch(8, 1))
    # The step whose budget carries the largest rounding error, where a fixed tolerance failed.
    stop = max(range(1, clock.steps_per_unit), key=lambda s: abs(clock.budget_at(s) * clock.steps_per_unit - s))
    config = make_config(budget_unit="epochs", max_budget=1, batch_size=8, report_every=stop)
    params = KIND_PARAMS["lora"]
    budget = clock.budget_at(stop)

    stopped, stopped_rec, stopped_out = run_slice(tmp_path, config, params, 0, 1, recorder=Recorder(stop_at=budget))
    assert stopped.budget_done == budget and [s for s, _ in stopped_rec.reports] == [budget]
    resumed_from = json.loads(json.dumps(stopped.budget_done))
    rest, rest_rec, rest_out = run_slice(tmp_path, config, params, resumed_from, 1, stopped_out)
    whole, whole_rec, whole_out = run_slice(tmp_path, config, params, 0, 1)

    assert f"steps {stop}->{clock.steps_per_unit} of {clock.steps_per_unit} " in rest_rec.logs[0]
    assert rest.metrics["eval_loss"] == whole.metrics["eval_loss"]
    left, right = load_file(str(whole_out / ADAPTER_FILE)), load_file(str(rest_out / ADAPTER_FILE))
    assert left.keys() == right.keys() and all((left[k] == right[k]).all() for k in left)
