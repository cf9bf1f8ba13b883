"""Seed one Hyperband study at dashboard scale on PostgreSQL with COPY (used by dashboard_scale.py).

The study looks like a real one mid-run: Hyperband sweeps (R=81, eta=3) whose rung
results, promotions and stops follow the rule (the best 1/eta of a rung go up), a
decision with its reason per rung result, about 10 reports per trial (one long
trial has ``long_curve`` of them), and the newest trials pending or running on live
workers. Rows go in with COPY; 1,000,000 reports take well under a minute.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from hpo_service.domain.spec import StudySpec
from hpo_service.scheduling.factory import make_scheduler
from hpo_service.scheduling.rungs import hyperband_brackets

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "lora_rank": {"type": "int", "low": 4, "high": 64, "step": 4},
    "lora_dropout": {"type": "float", "low": 0.0, "high": 0.3},
    "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    "optimizer": {"type": "categorical", "choices": ["adamw", "lion", "adafactor"]},
}
START = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SeedResult:
    study_id: int
    trials: int
    reports: int
    rung_results: int
    decisions: int
    long_trial_id: int  # a finished trial with a long curve
    running_trial_id: int  # a trial a worker holds now


def spec_json(name: str, trials: int) -> dict[str, Any]:
    spec = StudySpec.model_validate({
        "name": name, "objective": {"metric": "loss", "direction": "minimize"}, "search_space": SPACE,
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 81, "eta": 3, "iterations": 1000},
        "sampler": {"kind": "tpe", "seed": 1}, "trainer": {"name": "synthetic", "params": {}},
        "limits": {"max_trials": trials, "max_concurrent": 64},
    })
    return spec.model_dump(mode="json")


def _trial(rng: random.Random, number: int, bracket: int) -> dict[str, Any]:
    p = {"learning_rate": 10 ** rng.uniform(-5, -2), "lora_rank": rng.randrange(4, 65, 4),
         "lora_dropout": rng.uniform(0, 0.3), "warmup_ratio": rng.uniform(0, 0.2),
         "optimizer": rng.choice(["adamw", "lion", "adafactor"])}
    floor = (0.25 + 0.12 * abs(math.log10(p["learning_rate"] / 3e-4)) + 0.002 * abs(p["lora_rank"] - 32)
             + {"adamw": 0.01, "lion": 0.0, "adafactor": 0.05}[p["optimizer"]] + rng.gauss(0, 0.03))
    return {"id": number + 1, "number": number, "params": p, "floor": floor, "bracket": bracket, "rung": 0,
            "budget": 0.0, "target": 1.0, "value": None, "tick": 0, "state": "pending"}


def _loss(floor: float, step: float) -> float:
    return round(floor + 2.0 / (1.0 + step) ** 0.7, 6)


def simulate(trials: int, in_flight: int, rng: random.Random) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Trials (finished ones through whole brackets, then ``in_flight`` new ones) and rung results
    (trial_id, bracket, rung, budget, value, promoted, tick, decision kind, reason) in completion order."""
    plans = hyperband_brackets(1, 81, 3)
    rows: list[dict[str, Any]] = []
    results: list[tuple[Any, ...]] = []
    bracket = 0
    while len(rows) < trials - in_flight:
        plan = plans[bracket % len(plans)]
        size = min(plan.rungs[0].n, trials - in_flight - len(rows))
        alive = [_trial(rng, len(rows) + i, bracket) for i in range(size)]
        rows.extend(alive)
        for index, rung in enumerate(plan.rungs):
            top = index == len(plan.rungs) - 1
            keep = 0 if top else min(plan.rungs[index + 1].n, len(alive) // 3)
            ranked = sorted(alive, key=lambda m: _loss(m["floor"], rung.budget))
            for position, m in enumerate(ranked):
                value = _loss(m["floor"], rung.budget)
                kind = "finish" if top else ("promote" if position < keep else "stop")
                reason = (f"rank {position + 1} of {len(ranked)} at rung {index} (budget {rung.budget:g}): "
                          + ("reached the top rung" if top else f"top {keep} promoted"))
                m.update(rung=index, budget=rung.budget, target=rung.budget, value=value, tick=len(results) + 1,
                         state={"finish": "completed", "promote": "paused", "stop": "stopped"}[kind])
                results.append((m["id"], bracket, index, rung.budget, value, kind == "promote", m["tick"], kind,
                                reason))
            alive = ranked[:keep]
        bracket += 1
    for _ in range(in_flight):  # a fresh bracket, still at its first rung
        rows.append(_trial(rng, len(rows), bracket))
    return rows, results


def seed(conninfo: str, *, trials: int = 100_000, reports: int = 1_000_000, long_curve: int = 20_000,
         running: int = 64, pending: int = 200, seed_value: int = 7) -> SeedResult:
    """Insert the study into an upgraded, empty database; returns what went in."""
    rows, results = simulate(trials, running + pending, random.Random(seed_value))
    for index, m in enumerate(rows[-(running + pending):]):
        if index < running:
            m.update(state="running", owner=worker_id(index), budget=0.0)
    finished = [m for m in rows if m["state"] != "pending"]
    long_trial = next(m for m in rows if m["state"] == "completed")
    per_trial, extra = divmod(max(0, reports - long_curve), max(1, len(finished) - 1))
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        study_id = _insert_study(cur, len(rows), results)
        _copy_trials(cur, study_id, rows)
        _copy_results(cur, study_id, results)
        count = 0
        with cur.copy("COPY reports (trial_id, attempt, step, metrics, created_at) FROM STDIN") as copy:
            for row in _reports(finished, per_trial, extra, long_trial["id"], long_curve):
                copy.write_row(row)
                count += 1
        with cur.copy("COPY workers (worker_id, hostname, resources, current_trial_id, first_seen, last_seen)"
                      " FROM STDIN") as copy:
            for index, m in enumerate(m for m in rows if m["state"] == "running"):
                copy.write_row((m["owner"], m["owner"].rsplit("-", 1)[0], json.dumps({"gpu_slot": index % 8}),
                                m["id"], START, datetime.now(UTC)))
        for table in ("trials", "rung_results", "decisions", "reports"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    running_id = next(m["id"] for m in rows if m["state"] == "running")
    return SeedResult(study_id, len(rows), count, len(results), len(results), long_trial["id"], running_id)


def worker_id(index: int) -> str:
    return f"gpu-node-{index // 8:02d}-{index % 8}"


def _insert_study(cur: psycopg.Cursor[Any], trials: int, results: list[tuple[Any, ...]]) -> int:
    spent = sum(r[3] for r in results)  # upper bound: promotions pay the whole rung budget here
    spec = spec_json("dashboard-scale", trials)
    parsed = StudySpec.model_validate(spec)
    scheduler = make_scheduler(parsed.scheduler, parsed.limits)  # a valid snapshot (its counters are not replayed)
    now = START + timedelta(seconds=len(results) + 60)
    cur.execute(
        "INSERT INTO studies (name, project_id, spec, status, scheduler_state, version, trials_created, budget_spent,"
        " created_at, updated_at) VALUES ('dashboard-scale', (SELECT id FROM projects WHERE name = 'default'),"
        " %s, 'running', %s, %s, %s, %s, %s, %s) RETURNING id",
        (json.dumps(spec), json.dumps(scheduler.initial_state()), len(results), trials, spent, START, now))
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _copy_trials(cur: psycopg.Cursor[Any], study_id: int, rows: list[dict[str, Any]]) -> None:
    columns = ("id, study_id, number, params, seed, state, bracket, rung, budget_done, budget_target, attempt,"
               " lease_owner, lease_token, lease_expires_at, checkpoint_uri, value, created_at, updated_at")
    with cur.copy(f"COPY trials ({columns}) FROM STDIN") as copy:
        for m in rows:
            running = m["state"] == "running"
            at = START + timedelta(seconds=m["tick"])
            owner = m.get("owner") or (worker_id(m["number"] % 64) if m["state"] != "pending" else None)
            copy.write_row((m["id"], study_id, m["number"], json.dumps(m["params"]), m["number"], m["state"],
                            m["bracket"], m["rung"], m["budget"], m["target"], 1, owner,
                            f"token-{m['id']}" if running else None,
                            datetime.now(UTC) + timedelta(hours=1) if running else None,
                            f"file:///ckpt/{m['id']}/{m['budget']:g}" if m["value"] is not None else None,
                            m["value"], at, at))


def _copy_results(cur: psycopg.Cursor[Any], study_id: int, results: list[tuple[Any, ...]]) -> None:
    with cur.copy("COPY rung_results (study_id, trial_id, bracket, rung, budget, value, score, promoted,"
                  " checkpoint_uri, created_at) FROM STDIN") as copy:
        for trial_id, bracket, rung, budget, value, promoted, tick, _kind, _reason in results:
            copy.write_row((study_id, trial_id, bracket, rung, budget, value, value, promoted,
                            f"file:///ckpt/{trial_id}/{budget:g}", START + timedelta(seconds=tick)))
    with cur.copy("COPY decisions (study_id, trial_id, kind, reason, attempt, created_at) FROM STDIN") as copy:
        for trial_id, _bracket, _rung, _budget, _value, _promoted, tick, kind, reason in results:
            copy.write_row((study_id, trial_id, kind, reason, 1, START + timedelta(seconds=tick)))


def _reports(trials: list[dict[str, Any]], per_trial: int, extra: int, long_id: int, long_curve: int
             ) -> Iterator[tuple[Any, ...]]:
    """``per_trial`` reports per trial (one more for the first ``extra``), ``long_curve`` for one."""
    others = 0
    for m in trials:
        if m["id"] == long_id:
            count = long_curve
        else:
            count = per_trial + (1 if others < extra else 0)
            others += 1
        budget = m["budget"] if m["budget"] > 0 else m["target"] / 2  # running trials: half-way
        for i in range(count):
            step = round(budget * (i + 1) / count, 6)
            loss = _loss(m["floor"], step)
            yield (m["id"], 1, step, json.dumps({"loss": loss, "accuracy": round(1 - loss / 3, 6)}),
                   START + timedelta(seconds=m["tick"]))
