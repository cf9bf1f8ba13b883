"""The fault-free reference: the same study run once, in this process, with nothing injected.

A study with a fixed `sampler.seed`, the `random` sampler and Hyperband creates the same
trials with the same parameters in any run (parameters depend only on the trial number,
brackets only on the order of creation), and the synthetic trainer is deterministic per
(params, seed, budget) -- resuming from a checkpoint included. So every report value,
every rung result and the best trial of a chaos run must equal this run's.

One `WorkerLoop` (the code `hpo worker` runs) trains every segment in turn against the
app in this process, on SQLite, without sleeping.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from hpo_service.workers.checkpoints import FileCheckpointStore
from hpo_service.workers.loop import WorkerLoop
from tests.chaos.inprocess import running_app, sdk_client


@dataclass(frozen=True)
class Reference:
    trials: int
    best_number: int
    best_params: dict[str, Any]
    best_value: float
    # trial number -> {step: loss} and {rung: value}
    reports: dict[int, dict[float, float | None]]
    rung_values: dict[int, dict[int, float]]


def values_only(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a spec that decide the results (not its name, timing or retry policy)."""
    spec = copy.deepcopy(spec)
    spec.pop("name", None)
    spec.pop("retry", None)
    spec["trainer"]["params"].pop("sleep_per_unit", None)
    return spec


def reference_for(spec: dict[str, Any]) -> Reference:
    return _reference(json.dumps(values_only(spec), sort_keys=True))


@lru_cache(maxsize=8)
def _reference(key: str) -> Reference:
    spec = json.loads(key)
    spec["name"] = "reference"
    spec["trainer"]["params"]["sleep_per_unit"] = 0.0
    spec["retry"] = {"lease_seconds": 300, "max_attempts": 1}
    with tempfile.TemporaryDirectory(prefix="hpo-reference-") as folder:
        url = f"sqlite:///{Path(folder) / 'reference.db'}"
        with running_app(url) as (test_client, token):
            with sdk_client(test_client, token, retries=0) as client:
                study = client.create_study(spec)
                loop = WorkerLoop(client, FileCheckpointStore(Path(folder) / "checkpoints"), worker_id="reference",
                                  wait_s=0, studies=[study["id"]])
                loop.run(exit_when_idle=True)
                final = client.get_study(study["id"])
                assert final["status"] == "completed", f"the reference run did not complete: {final['status']}"
        return read_reference(url, study["id"])


def read_reference(database_url: str, study_id: int) -> Reference:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            trials = {row.id: row for row in conn.execute(
                text("SELECT id, number, params, state FROM trials WHERE study_id = :s"), {"s": study_id})}
            reports: dict[int, dict[float, float | None]] = {t.number: {} for t in trials.values()}
            for row in conn.execute(text(
                    "SELECT r.trial_id, r.step, r.metrics FROM reports r JOIN trials t ON t.id = r.trial_id "
                    "WHERE t.study_id = :s"), {"s": study_id}):
                metrics = row.metrics if isinstance(row.metrics, dict) else json.loads(row.metrics)
                reports[trials[row.trial_id].number][float(row.step)] = metrics.get("loss")
            rung_values: dict[int, dict[int, float]] = {t.number: {} for t in trials.values()}
            for row in conn.execute(text("SELECT trial_id, rung, value FROM rung_results WHERE study_id = :s"),
                                    {"s": study_id}):
                rung_values[trials[row.trial_id].number][int(row.rung)] = float(row.value)
            best = conn.execute(text(
                "SELECT trial_id, value FROM rung_results WHERE study_id = :s AND budget = "
                "(SELECT max(budget) FROM rung_results WHERE study_id = :s) ORDER BY score, trial_id LIMIT 1"),
                {"s": study_id}).one()
    finally:
        engine.dispose()
    best_trial = trials[best.trial_id]
    params = best_trial.params if isinstance(best_trial.params, dict) else json.loads(best_trial.params)
    return Reference(len(trials), int(best_trial.number), params, float(best.value), reports, rung_values)
