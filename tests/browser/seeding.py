"""Seed a database with real studies, driven through the service's own use cases.

Everything a dashboard shows (rung results, promotions, stops, a requeue, worker
rows) comes from the real protocol, not from hand-written rows.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from hpo_service.db.engine import make_engine, make_session_factory
from hpo_service.db.migrate import upgrade
from hpo_service.domain.spec import StudySpec
from hpo_service.orchestration.context import Context
from hpo_service.orchestration.protocol import TrialProtocol
from hpo_service.orchestration.studies import StudyService
from hpo_service.settings import Settings

SPEC: dict[str, Any] = {
    "name": "dashboard-demo",
    "objective": {"metric": "loss", "direction": "minimize"},
    "search_space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "rank": {"type": "int", "low": 2, "high": 32},
        "optimizer": {"type": "categorical", "choices": ["adamw", "lion", "sgd"]},
    },
    "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
    "sampler": {"kind": "tpe", "seed": 5},
    "trainer": {"name": "synthetic", "params": {}},
    "retry": {"lease_seconds": 300, "max_attempts": 3},
}


@dataclass(frozen=True)
class Seeded:
    study_id: int
    segments: int
    reports: int
    requeued_trial: int | None


def loss(params: dict[str, Any], step: float) -> float:
    """A learning curve whose floor depends on the parameters (best near lr=3e-3, rank 16, lion)."""
    floor = 0.2 + 0.15 * abs(math.log10(params["lr"] / 3e-3)) + 0.004 * abs(params["rank"] - 16)
    floor += {"adamw": 0.02, "lion": 0.0, "sgd": 0.12}[params["optimizer"]]
    return round(floor + 1.5 / (1.0 + step), 6)


def spec(**changes: Any) -> StudySpec:
    raw = copy.deepcopy(SPEC)
    raw.update(changes)
    return StudySpec.model_validate(raw)


def run_study(studies: StudyService, protocol: TrialProtocol, study_spec: StudySpec, *,
              segments: int | None = None, requeue_one: bool = True, workers: int = 3) -> Seeded:
    """Create a study and run up to ``segments`` trial segments (all, if None) through the protocol."""
    study = studies.create(study_spec)
    done = reports = 0
    requeued: int | None = None
    while segments is None or done < segments:
        grant = protocol.lease(f"seed-{done % workers}", [study.id])
        if grant is None:
            break
        trial, token = grant.trial, grant.trial.lease_token or ""
        if requeue_one and requeued is None and trial.budget_done > 0:
            protocol.fail(trial.id, token, "CUDA out of memory (seeded)", retryable=True)
            requeued = trial.id
            continue
        steps = [float(s) for s in range(int(trial.budget_done) + 1, int(trial.budget_target) + 1)]
        batch = [(s, {"loss": loss(trial.params, s), "accuracy": round(1 - loss(trial.params, s) / 2, 6)})
                 for s in steps]
        protocol.report(trial.id, token, batch)
        reports += len(batch)
        protocol.complete(trial.id, token, {}, f"file:///tmp/ckpt/{trial.id}/{trial.budget_target:g}")
        done += 1
    return Seeded(study.id, done, reports, requeued)


class SeedService:
    """The use cases on one database, for seeding (the caller disposes it)."""

    def __init__(self, url: str) -> None:
        upgrade(url)
        self.engine = make_engine(url)
        context = Context(engine=self.engine, sessions=make_session_factory(self.engine),
                          settings=Settings(database_url=url))
        self.studies = StudyService(context)
        self.protocol = TrialProtocol(context)

    def close(self) -> None:
        self.engine.dispose()


def seed_demo(url: str) -> dict[str, Seeded]:
    """A finished Hyperband study, a paused one half-way, and a running one with pending work."""
    service = SeedService(url)
    try:
        main = run_study(service.studies, service.protocol,
                         spec(scheduler={**SPEC["scheduler"], "iterations": 3}))
        paused = run_study(service.studies, service.protocol, spec(name="paused-sweep"), segments=8,
                           requeue_one=False)
        service.studies.pause(paused.study_id)
        running = run_study(service.studies, service.protocol, spec(name="live-sweep"), segments=5,
                            requeue_one=False)
        return {"main": main, "paused": paused, "running": running}
    finally:
        service.close()
