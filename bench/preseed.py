"""Pre-seed the service_overhead study of either system with N finished trials (COPY, seconds).

`bench/service_overhead.py --preseed N` measures both systems on a study that already holds N
finished trials, as a long-running study does, without waiting hours for the workers to make
them. The rows are what the systems themselves would have written for this workload: per
trial, its parameters, 9 intermediate reports and its final value.

- hpo-service: `trials` (completed, bracket 0, rung 0, budget 9), `reports`, `rung_results`
  and `decisions` rows, and the study's counters (`trials_created`, `budget_spent`, the ASHA
  snapshot of the `random` scheduler) moved on as if the trials had run.
- Optuna: `trials` (COMPLETE), `trial_params` (with each distribution's JSON),
  `trial_values`, `trial_intermediate_values`, and the `completed_rung_<k>` system attributes
  that `HyperbandPruner` stores when a trial passes a rung (its pruning decisions read them).
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

START = datetime(2026, 11, 1, tzinfo=UTC)


def sample_params(space: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A random configuration of the JSON search space (float / int / categorical)."""
    params: dict[str, Any] = {}
    for name, dist in space.items():
        if dist["type"] == "categorical":
            params[name] = rng.choice(dist["choices"])
        elif dist["type"] == "int":
            step = dist.get("step") or 1
            params[name] = rng.randrange(dist["low"], dist["high"] + 1, step)
        elif dist.get("log"):
            params[name] = math.exp(rng.uniform(math.log(dist["low"]), math.log(dist["high"])))
        elif dist.get("step"):  # on the grid, as a sampler proposes it (an off-grid value is refused as an observation)
            params[name] = dist["low"] + dist["step"] * rng.randint(0, round((dist["high"] - dist["low"]) / dist["step"]))
        else:
            params[name] = rng.uniform(dist["low"], dist["high"])
    return params


def preseed_ours(conninfo: str, study_id: int, trials: int, steps: int, space: dict[str, Any],
                 loss: Any, seed: int = 0) -> None:
    """Append ``trials`` completed trials to the (new, empty) study ``study_id``."""
    rng = random.Random(seed)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM trials")
        first_id = int(cur.fetchone()[0]) + 1  # type: ignore[index]
        rows = []
        for k in range(trials):
            params = sample_params(space, rng)
            rows.append((first_id + k, k, params, [loss(params, step) for step in range(1, steps + 1)]))
        with cur.copy("COPY trials (id, study_id, number, params, seed, state, bracket, rung, budget_done,"
                      " budget_target, attempt, value, created_at, updated_at) FROM STDIN") as copy:
            for trial_id, number, params, curve in rows:
                at = START + timedelta(seconds=number)
                copy.write_row((trial_id, study_id, number, json.dumps(params), number, "completed", 0, 0,
                                float(steps), float(steps), 1, curve[-1], at, at))
        with cur.copy("COPY reports (trial_id, attempt, step, metrics, created_at) FROM STDIN") as copy:
            for trial_id, number, _params, curve in rows:
                at = START + timedelta(seconds=number)
                for step, value in enumerate(curve, start=1):
                    copy.write_row((trial_id, 1, float(step), json.dumps({"loss": value}), at))
        with cur.copy("COPY rung_results (study_id, trial_id, bracket, rung, budget, value, score, promoted,"
                      " created_at) FROM STDIN") as copy:
            for trial_id, number, _params, curve in rows:
                copy.write_row((study_id, trial_id, 0, 0, float(steps), curve[-1], curve[-1], False,
                                START + timedelta(seconds=number)))
        with cur.copy("COPY decisions (study_id, trial_id, kind, reason, attempt, created_at) FROM STDIN") as copy:
            for trial_id, number, _params, _curve in rows:
                copy.write_row((study_id, trial_id, "finish", f"reached max_budget {steps} (pre-seeded)", 1,
                                START + timedelta(seconds=number)))
        cur.execute("SELECT setval(pg_get_serial_sequence('trials', 'id'), %s)", (first_id + trials,))
        cur.execute("SELECT scheduler_state FROM studies WHERE id = %s", (study_id,))
        state = cur.fetchone()[0]  # type: ignore[index]
        state["trials_created"] = state.get("trials_created", 0) + trials
        state["budget_committed"] = state.get("budget_committed", 0.0) + trials * float(steps)
        cur.execute("UPDATE studies SET trials_created = trials_created + %s, budget_spent = budget_spent + %s,"
                    " scheduler_state = %s, version = version + 1 WHERE id = %s",
                    (trials, trials * float(steps), json.dumps(state), study_id))
        conn.commit()
        cur.execute("ANALYZE")  # as autovacuum would have by now on a study this size
        conn.commit()


def preseed_optuna(conninfo: str, study_name: str, trials: int, steps: int, space: dict[str, Any],
                   loss: Any, distributions_json: dict[str, str], rung_steps: list[int], seed: int = 0) -> None:
    """Append ``trials`` COMPLETE trials to the Optuna study ``study_name`` (made by ``create_study``).

    ``rung_steps``: the steps at which HyperbandPruner's successive halving records a completed
    rung for a trial that reaches them (1, 3, 9 for min_resource 1, eta 3, max 9).
    """
    rng = random.Random(seed)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT study_id FROM studies WHERE study_name = %s", (study_name,))
        study_id = int(cur.fetchone()[0])  # type: ignore[index]
        rows = []
        for number in range(trials):
            params = sample_params(space, rng)
            rows.append((number + 1, number, params, [loss(params, step) for step in range(1, steps + 1)]))
        with cur.copy("COPY trials (trial_id, number, study_id, state, datetime_start, datetime_complete)"
                      " FROM STDIN") as copy:
            for trial_id, number, _params, _curve in rows:
                at = (START + timedelta(seconds=number)).replace(tzinfo=None)
                copy.write_row((trial_id, number, study_id, "COMPLETE", at, at))
        with cur.copy("COPY trial_params (trial_id, param_name, param_value, distribution_json) FROM STDIN") as copy:
            for trial_id, _number, params, _curve in rows:
                for name, value in params.items():
                    internal = space[name]["choices"].index(value) if space[name]["type"] == "categorical" \
                        else float(value)
                    copy.write_row((trial_id, name, internal, distributions_json[name]))
        with cur.copy("COPY trial_values (trial_id, objective, value, value_type) FROM STDIN") as copy:
            for trial_id, _number, _params, curve in rows:
                copy.write_row((trial_id, 0, curve[-1], "FINITE"))
        with cur.copy("COPY trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type)"
                      " FROM STDIN") as copy:
            for trial_id, _number, _params, curve in rows:
                for step, value in enumerate(curve, start=1):
                    copy.write_row((trial_id, step, value, "FINITE"))
        with cur.copy("COPY trial_system_attributes (trial_id, key, value_json) FROM STDIN") as copy:
            for trial_id, _number, _params, curve in rows:
                for rung, step in enumerate(rung_steps):
                    copy.write_row((trial_id, f"completed_rung_{rung}", json.dumps(curve[step - 1])))
        for table, column in (("trials", "trial_id"), ("trial_params", "param_id"),
                              ("trial_values", "trial_value_id"),
                              ("trial_intermediate_values", "trial_intermediate_value_id"),
                              ("trial_system_attributes", "trial_system_attribute_id")):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" (SELECT coalesce(max({column}), 1) FROM {table}))")
        conn.commit()
        cur.execute("ANALYZE")
        conn.commit()
