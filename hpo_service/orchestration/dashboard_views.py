"""What the dashboard's use cases return, and the pure steps that build it from rows.

Charts ship rows as arrays under a ``columns`` header: a few thousand points cost a
fraction of the same as objects, and the browser feeds them to the charts as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hpo_service.orchestration.context import as_utc


@dataclass(frozen=True)
class TrialRow:
    id: int
    number: int
    state: str
    bracket: int
    rung: int
    budget_done: float
    budget_target: float
    attempt: int
    value: float | None
    params: dict[str, Any]
    lease_owner: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class DecisionRow:
    id: int
    trial_id: int | None
    kind: str
    reason: str
    attempt: int | None
    created_at: datetime | None


@dataclass(frozen=True)
class History:
    metric: str
    direction: str
    total: int = field(metadata={"description": "results (finished trial segments) in the study"})
    stride: int
    levels: list[float]
    points: list[list[int | float]]
    best: list[list[int | float]]
    columns: list[str] = field(default_factory=lambda: ["seq", "trial_id", "number", "budget", "value",
                                                        "budget_spent"])


@dataclass(frozen=True)
class RungMark:
    rung: int
    budget: float
    value: float
    outcome: str  # promoted | stopped | finished | failed | waiting
    reason: str | None


@dataclass(frozen=True)
class Curve:
    trial_id: int
    number: int
    bracket: int
    rung: int
    state: str
    top: bool
    value: float | None
    points: list[list[float | None]]  # [step, metric value]
    rungs: list[RungMark]
    events: list[DecisionRow]  # requeues and failures


@dataclass(frozen=True)
class Curves:
    metric: str
    direction: str
    total_trials: int
    stride: int
    curves: list[Curve]


@dataclass(frozen=True)
class ParamAxis:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


@dataclass(frozen=True)
class Parallel:
    metric: str
    direction: str
    budget: float | None
    levels: list[tuple[float, int]]
    observations: int
    stride: int
    params: list[ParamAxis]
    rows: list[list[Any]]  # [trial_id, number, value, *params in `params` order]


@dataclass(frozen=True)
class Importance:
    evaluator: str
    budget: float | None
    observations: int
    used: int
    importances: dict[str, float]
    message: str | None
    pending: bool = False  # being computed in the background: ask again


@dataclass(frozen=True)
class RungCell:
    bracket: int  # the bracket id; when grouped, the first bracket of its geometry
    brackets: int  # how many brackets the cell sums (1 unless grouped)
    rung: int
    budget: float
    entered: int
    in_flight: int
    waiting: int
    finished: int
    promoted: int
    stopped: int
    completed: int
    failed: int
    best_value: float | None


@dataclass(frozen=True)
class HyperbandView:
    grouped: bool = field(metadata={"description": "brackets of the same geometry summed into one row"})
    brackets: int
    cells: list[RungCell]


@dataclass(frozen=True)
class TablePage:
    items: list[TrialRow]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class Attempt:
    attempt: int
    reports: int
    first_step: float | None
    last_step: float | None
    first_report_at: datetime | None
    last_report_at: datetime | None
    ended_by: DecisionRow | None


@dataclass(frozen=True)
class WorkerRow:
    worker_id: str
    hostname: str | None
    resources: dict[str, Any]
    gpu_slot: str | None
    running: TrialRow | None
    study_id: int | None
    study_name: str | None
    last_trial_id: int | None
    first_seen: datetime | None
    last_seen: datetime | None
    heartbeat_age_s: float | None
    live: bool


@dataclass(frozen=True)
class TrialOverview:
    trial: TrialRow
    study_id: int
    study_name: str
    metric: str
    direction: str
    reports_total: int
    curve: list[list[Any]]  # [step, attempt, metrics], thinned to max_points
    rungs: list[RungMark]
    decisions: list[DecisionRow]
    attempts: list[Attempt]
    worker: WorkerRow | None
    checkpoint_uri: str | None
    seed: int
    adapter_download_url: str | None = field(
        default=None, metadata={"description": "the adapter's download, when the API exports this trial's"})


@dataclass(frozen=True)
class Heads:
    report_id: int
    decision_id: int
    studies_changed_at: str | None
    studies: int
    workers_seen_at: str | None
    versions: dict[int, tuple[int, str]]


@dataclass(frozen=True)
class Changes:
    reports: list[dict[str, Any]]
    decisions: list[DecisionRow]
    more: bool


def worker_row(worker: Any, running: tuple[Any, str] | None, now: datetime | None,
               stale_after_s: float = 0.0) -> WorkerRow:
    last_seen = as_utc(worker.last_seen)
    age = (now - last_seen).total_seconds() if now and last_seen else None
    trial, study_name = running if running else (None, None)
    resources = worker.resources or {}
    slot = next((resources[k] for k in ("gpu_slot", "gpu", "CUDA_VISIBLE_DEVICES") if k in resources), None)
    return WorkerRow(
        worker.worker_id, worker.hostname, resources, None if slot is None else str(slot),
        trial_row(trial) if trial else None, trial.study_id if trial else None, study_name,
        worker.current_trial_id, as_utc(worker.first_seen), last_seen, age,
        age is not None and age <= stale_after_s,
    )


def trial_row(trial: Any) -> TrialRow:
    return TrialRow(trial.id, trial.number, trial.state, trial.bracket, trial.rung, trial.budget_done,
                    trial.budget_target, trial.attempt, trial.value, trial.params, trial.lease_owner,
                    as_utc(trial.updated_at))


def decision_row(decision: Any) -> DecisionRow:
    return DecisionRow(decision.id, decision.trial_id, decision.kind, decision.reason, decision.attempt,
                       as_utc(decision.created_at))
