"""After a scenario: read the study's rows and check every promise the service makes.

- every trial is in a final state (`completed` or `stopped`; `failed` counts as lost);
- no trial was completed twice (one `finish` decision at most, one rung result per rung);
- no report was lost or duplicated: the synthetic trainer reports at every budget unit, so a
  trial that trained to budget B has exactly the steps 1..B, once each;
- every report and rung value equals the fault-free run's (when there is one to compare with);
- the best trial is the fault-free run's best;
- the decision log explains every requeue: a trial at attempt n has n - 1 `requeue` decisions,
  each naming its cause (lease expiry of a named worker, or the worker's own report).

Reads the database directly (not the API) so the audit also sees report attempts and the
server's timestamps, which the recovery times are measured with.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, text

from tests.chaos.baseline import Reference

FINAL_STATES = {"completed", "stopped"}
REQUEUE_CAUSES = (
    re.compile(r"^lease of worker .+ expired at \d\d:\d\d:\d\d \(no heartbeat\)"),
    re.compile(r"^worker .+ reported: "),
)
REQUEUE_TAIL = re.compile(r"requeued as attempt (\d+) of \d+ from budget [0-9.e+-]+$")
EPSILON = 1e-9


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class StudyRows:
    status: str
    trials: dict[int, Any]  # id -> row
    reports: dict[int, list[Any]]  # trial id -> rows
    rung_results: dict[int, list[Any]]
    decisions: list[Any]

    def number(self, trial_id: int) -> int:
        return int(self.trials[trial_id].number)

    def progress_after(self, moment: datetime, trial_id: int | None = None) -> datetime | None:
        """When the first segment (of ``trial_id``, or of any trial) completed after ``moment``."""
        rows = self.rung_results.get(trial_id, []) if trial_id is not None else [
            r for rows in self.rung_results.values() for r in rows]
        later = [_utc(r.created_at) for r in rows if _utc(r.created_at) > moment]
        return min(later) if later else None

    def requeues_after(self, moment: datetime, trial_id: int) -> list[Any]:
        return [d for d in self.decisions
                if d.kind == "requeue" and d.trial_id == trial_id and _utc(d.created_at) >= moment]


def read_study(database_url: str, study_id: int) -> StudyRows:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM studies WHERE id = :s"), {"s": study_id}).scalar_one()
            trials = {r.id: r for r in conn.execute(text(
                "SELECT id, number, params, state, bracket, rung, budget_done, budget_target, attempt, "
                "checkpoint_uri, value, error FROM trials WHERE study_id = :s ORDER BY id"), {"s": study_id})}
            reports: dict[int, list[Any]] = defaultdict(list)
            for row in conn.execute(text(
                    "SELECT r.trial_id, r.step, r.attempt, r.metrics, r.created_at FROM reports r "
                    "JOIN trials t ON t.id = r.trial_id WHERE t.study_id = :s ORDER BY r.trial_id, r.step"),
                    {"s": study_id}):
                reports[row.trial_id].append(row)
            rung_results: dict[int, list[Any]] = defaultdict(list)
            for row in conn.execute(text(
                    "SELECT trial_id, rung, budget, value, score, created_at FROM rung_results WHERE study_id = :s "
                    "ORDER BY trial_id, rung"), {"s": study_id}):
                rung_results[row.trial_id].append(row)
            decisions = list(conn.execute(text(
                "SELECT id, trial_id, kind, reason, attempt, created_at FROM decisions WHERE study_id = :s "
                "ORDER BY id"), {"s": study_id}))
    finally:
        engine.dispose()
    return StudyRows(status, trials, dict(reports), dict(rung_results), decisions)


@dataclass
class Audit:
    study_status: str
    trials: int
    states: dict[str, int]
    trials_lost: int = 0
    trials_duplicated: int = 0
    reports_lost: int = 0
    reports_duplicated: int = 0
    values_differing: int = 0
    requeues: int = 0
    requeues_unexplained: int = 0
    requeue_causes: dict[str, int] = field(default_factory=dict)
    best_number: int | None = None
    best_value: float | None = None
    best_matches_reference: bool | None = None
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(message)


def audit_study(rows: StudyRows, reference: Reference | None) -> Audit:
    states = Counter(t.state for t in rows.trials.values())
    audit = Audit(rows.status, len(rows.trials), dict(states))
    if rows.status != "completed":
        audit.problem(f"study is {rows.status}, not completed")
    if reference is not None and len(rows.trials) != reference.trials:
        audit.problem(f"{len(rows.trials)} trials, the fault-free run had {reference.trials}")
    _check_trials(rows, audit)
    _check_reports(rows, reference, audit)
    _check_requeues(rows, audit)
    _check_best(rows, reference, audit)
    return audit


def _check_trials(rows: StudyRows, audit: Audit) -> None:
    finishes = Counter(d.trial_id for d in rows.decisions if d.kind == "finish")
    for trial_id, trial in rows.trials.items():
        if trial.state not in FINAL_STATES:
            audit.trials_lost += 1
            audit.problem(f"trial {trial.number} is {trial.state}: {trial.error or ''}")
        rungs = [int(r.rung) for r in rows.rung_results.get(trial_id, [])]
        twice = finishes[trial_id] > 1 or len(rungs) != len(set(rungs))
        if twice:
            audit.trials_duplicated += 1
            audit.problem(f"trial {trial.number} completed twice: finishes={finishes[trial_id]} rungs={rungs}")
        elif trial.state in FINAL_STATES and rungs != list(range(int(trial.rung) + 1)):
            audit.problem(f"trial {trial.number} at rung {trial.rung} has rung results {rungs}")
        if trial.state == "completed" and finishes[trial_id] != 1:
            audit.problem(f"trial {trial.number} is completed with {finishes[trial_id]} finish decisions")


def _check_reports(rows: StudyRows, reference: Reference | None, audit: Audit) -> None:
    for trial_id, trial in rows.trials.items():
        if trial.state not in FINAL_STATES:
            continue  # counted as lost already
        steps = [float(r.step) for r in rows.reports.get(trial_id, [])]
        expected = [float(s) for s in range(1, int(round(trial.budget_done)) + 1)]
        duplicated = len(steps) - len(set(steps))
        lost = sorted(set(expected) - set(steps))
        extra = sorted(set(steps) - set(expected))
        audit.reports_duplicated += duplicated
        audit.reports_lost += len(lost)
        if lost or duplicated or extra:
            audit.problem(f"trial {trial.number} (budget {trial.budget_done:g}): reports lost {lost[:10]}, "
                          f"duplicated {duplicated}, unexpected {extra[:10]}")
        if reference is None:
            continue
        expected_values = reference.reports.get(int(trial.number), {})
        for report in rows.reports.get(trial_id, []):
            loss = _json(report.metrics).get("loss")
            want = expected_values.get(float(report.step))
            if loss is None or want is None or abs(float(loss) - float(want)) > EPSILON:
                audit.values_differing += 1
                audit.problem(f"trial {trial.number} step {report.step:g}: loss {loss}, fault-free run {want}")
        for result in rows.rung_results.get(trial_id, []):
            want = reference.rung_values.get(int(trial.number), {}).get(int(result.rung))
            if want is None or abs(float(result.value) - want) > EPSILON:
                audit.values_differing += 1
                audit.problem(f"trial {trial.number} rung {result.rung}: {result.value}, fault-free run {want}")


def requeue_cause(reason: str) -> str:
    if reason.startswith("lease of worker"):
        return "lease expired"
    if "checkpoint unusable" in reason:
        return "checkpoint unusable"
    if "worker is shutting down" in reason:
        return "worker shut down"
    if reason.startswith("worker "):
        return "worker reported a failure"
    return "unexplained"


def _check_requeues(rows: StudyRows, audit: Audit) -> None:
    by_trial: dict[int, list[Any]] = defaultdict(list)
    for decision in rows.decisions:
        if decision.kind == "requeue":
            by_trial[decision.trial_id].append(decision)
    causes: Counter[str] = Counter()
    for trial_id, trial in rows.trials.items():
        requeues = by_trial.get(trial_id, [])
        audit.requeues += len(requeues)
        if len(requeues) != int(trial.attempt) - 1:
            audit.requeues_unexplained += abs(int(trial.attempt) - 1 - len(requeues))
            audit.problem(f"trial {trial.number} is at attempt {trial.attempt} with {len(requeues)} requeue decisions")
        for number, decision in enumerate(requeues, start=2):
            tail = REQUEUE_TAIL.search(decision.reason)
            cause = requeue_cause(decision.reason)
            causes[cause] += 1
            if not any(p.match(decision.reason) for p in REQUEUE_CAUSES) or tail is None or cause == "unexplained":
                audit.requeues_unexplained += 1
                audit.problem(f"trial {trial.number}: requeue without a cause: {decision.reason!r}")
            elif int(tail.group(1)) != number:
                audit.problem(f"trial {trial.number}: requeue {number - 1} says attempt {tail.group(1)}")
    audit.requeue_causes = dict(causes)


def _check_best(rows: StudyRows, reference: Reference | None, audit: Audit) -> None:
    results = [r for rs in rows.rung_results.values() for r in rs]
    if not results:
        audit.problem("no rung results at all")
        return
    top = max(float(r.budget) for r in results)
    # As the service picks the incumbent: the best score at the highest budget, ties by trial id.
    best = min((r for r in results if float(r.budget) == top), key=lambda r: (float(r.score), int(r.trial_id)))
    trial_id, value = int(best.trial_id), float(best.value)
    audit.best_number, audit.best_value = rows.number(trial_id), value
    if reference is None:
        return
    params = _json(rows.trials[trial_id].params)
    audit.best_matches_reference = (audit.best_number == reference.best_number and params == reference.best_params
                                    and abs(value - reference.best_value) <= EPSILON)
    if not audit.best_matches_reference:
        audit.problem(f"best trial {audit.best_number} ({value}) differs from the fault-free run's "
                      f"{reference.best_number} ({reference.best_value})")
