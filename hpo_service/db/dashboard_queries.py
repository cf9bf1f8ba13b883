"""Read queries behind the dashboard, and the worker-liveness write.

Every query is bounded by what a chart shows, not by the study's size: samples are
taken in SQL (``number % stride``, ``row_number() % stride``), the best-so-far line
keeps only the results that improved it, and report curves are thinned per trial
with a window function before they leave the database. Repositories never commit.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from hpo_service.db.any_of import any_of
from hpo_service.db.models import Decision, Report, RungResult, Study, Trial
from hpo_service.db.models_dashboard import Worker
from hpo_service.domain.states import StudyStatus, TrialState

# A worker row is rewritten at most this often unless its trial changes: the lease
# long-poll asks several times a second, and liveness needs no finer grain.
WORKER_SEEN_RESOLUTION = timedelta(seconds=2)


# --- workers ---------------------------------------------------------------------


def record_worker_seen(
    session: Session, worker_id: str, trial_id: int | None, now: datetime, resources: dict[str, Any] | None
) -> None:
    """Upsert the worker's row: last seen now; its trial if given; its resources if given.

    Called on every lease attempt (``trial_id`` None: keeps the last trial) and grant,
    and on heartbeats. At most one statement, none when this process wrote the same row
    within ``WORKER_SEEN_RESOLUTION`` (an idle worker's long poll asks five times a second),
    and a no-op write when another process did. Takes the workers row lock last, after any
    study or trial lock of the caller, so it adds no lock-order cycle.
    """
    bind = session.get_bind()
    database = bind.engine.url.render_as_string()
    if _written_lately((database, worker_id), trial_id, now):
        return
    dialect = bind.dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    hostname = str((resources or {}).get("hostname") or worker_id.rsplit("-", 1)[0])[:255]
    statement = insert(Worker).values(
        worker_id=worker_id, hostname=hostname, resources=resources or {}, current_trial_id=trial_id,
        first_seen=now, last_seen=now,
    )
    new = statement.excluded
    changes: dict[str, Any] = {"last_seen": new.last_seen}
    stale: ColumnElement[bool] = Worker.last_seen < now - WORKER_SEEN_RESOLUTION
    if trial_id is not None:
        changes["current_trial_id"] = new.current_trial_id
        stale = or_(stale, Worker.current_trial_id.is_(None), Worker.current_trial_id != trial_id)
    if resources:
        changes.update(resources=new.resources, hostname=new.hostname)
    session.execute(statement.on_conflict_do_update(index_elements=["worker_id"], set_=changes, where=stale))


_written: dict[tuple[str, str], tuple[int | None, datetime]] = {}
_written_lock = threading.Lock()


def _written_lately(key: tuple[str, str], trial_id: int | None, now: datetime) -> bool:
    """Whether this process recorded the worker (with this trial) less than the resolution ago;
    remembers this write otherwise. A write lost to a rollback only delays the next one."""
    with _written_lock:
        last = _written.get(key)
        if last is not None and (trial_id is None or trial_id == last[0]) \
                and timedelta(0) <= now - last[1] < WORKER_SEEN_RESOLUTION:
            return True
        if len(_written) > 10_000:
            _written.clear()
        _written[key] = (trial_id if trial_id is not None else (last[0] if last else None), now)
        return False


def list_workers(session: Session, limit: int, project_id: int | None) -> list[Worker]:
    """Workers by last contact; with ``project_id``, those whose last trial is in that project's studies."""
    query = select(Worker)
    if project_id is not None:
        query = query.join(Trial, Trial.id == Worker.current_trial_id).join(Study, Study.id == Trial.study_id) \
            .where(Study.project_id == project_id)
    return list(session.execute(query.order_by(Worker.last_seen.desc()).limit(limit)).scalars())


def running_trials_of(session: Session, worker_ids: Sequence[str]) -> list[tuple[Trial, str]]:
    """(trial, study name) of the running trials leased by these workers."""
    if not worker_ids:
        return []
    query = (
        select(Trial, Study.name).join(Study, Study.id == Trial.study_id)
        .where(Trial.state == "running", any_of(session, Trial.lease_owner, worker_ids))
    )
    return [(trial, name) for trial, name in session.execute(query)]


def worker(session: Session, worker_id: str) -> Worker | None:
    return session.get(Worker, worker_id)


# --- optimization history --------------------------------------------------------


def results_after(session: Session, study_id: int, after_id: int) -> list[tuple[Any, ...]]:
    """(id, trial_id, budget, score, spent) of the study's results newer than ``after_id``, in id
    (completion) order (index ix_rung_results_study_id); ``spent`` is the budget trained for this
    result: its budget less the trial's previous rung's. Core rows: this can be a whole study's
    results, and ORM row handling would cost more than the query."""
    previous = aliased(RungResult)
    query = (
        select(RungResult.id, RungResult.trial_id, RungResult.budget, RungResult.score,
               RungResult.budget - func.coalesce(previous.budget, 0.0))
        .outerjoin(previous, and_(previous.trial_id == RungResult.trial_id, previous.rung == RungResult.rung - 1))
        .where(RungResult.study_id == study_id, RungResult.id > after_id).order_by(RungResult.id)
    )
    return session.connection().execute(query).all()  # type: ignore[return-value]


def settled_result_id(session: Session, study_id: int, after_id: int, before: datetime) -> int | None:
    """The newest result id above ``after_id`` stored before ``before`` (its transaction is over)."""
    query = select(func.max(RungResult.id)).where(
        RungResult.study_id == study_id, RungResult.id > after_id, RungResult.created_at <= before)
    found = session.execute(query).scalar_one_or_none()
    return None if found is None else int(found)


_HISTORY_START = text("""
WITH result AS (
    SELECT r.id, r.trial_id, r.budget, r.score, r.budget - COALESCE(p.budget, 0) AS trained
    FROM rung_results r LEFT JOIN rung_results p ON p.trial_id = r.trial_id AND p.rung = r.rung - 1
    WHERE r.study_id = :study_id AND r.id <= :upto
), ordered AS (
    SELECT id, trial_id, budget, score, ROW_NUMBER() OVER w AS seq, SUM(trained) OVER w AS spent,
           MIN(score) OVER (PARTITION BY budget ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS best
    FROM result WINDOW w AS (ORDER BY id ROWS UNBOUNDED PRECEDING)
)
SELECT seq, trial_id, budget, score, spent, CASE WHEN best IS NULL OR score < best THEN 1 ELSE 0 END
FROM ordered WHERE (seq - 1) % :base = 0 OR seq = :total OR best IS NULL OR score < best ORDER BY seq
""")


def history_start(session: Session, study_id: int, upto: int, base: int) -> tuple[int, list[tuple[Any, ...]]]:
    """(results up to id ``upto``, rows (seq, trial_id, budget, score, spent, improves)): every
    ``base``-th result, the last, and every improvement of its budget level's best, computed in
    one ordered pass in the database, for a history read for the first time."""
    total = session.execute(
        select(func.count()).where(RungResult.study_id == study_id, RungResult.id <= upto)).scalar_one()
    if session.get_bind().dialect.name == "postgresql":  # sort in memory; JIT costs more than it saves here
        session.execute(text("SET LOCAL work_mem = '64MB'"))
        session.execute(text("SET LOCAL jit = off"))
    params = {"study_id": study_id, "upto": upto, "base": base, "total": total}
    return int(total), [tuple(row) for row in session.connection().execute(_HISTORY_START, params)]


def result_count(session: Session, study_id: int) -> int:
    return int(session.execute(select(func.count()).where(RungResult.study_id == study_id)).scalar_one())


def trial_numbers(session: Session, trial_ids: Sequence[int]) -> dict[int, int]:
    if not trial_ids:
        return {}
    query = select(Trial.id, Trial.number).where(any_of(session, Trial.id, trial_ids))
    return {int(i): int(n) for i, n in session.execute(query)}


def recently_updated_running_study_ids(session: Session, limit: int) -> list[int]:
    """The running studies, the most recently updated first."""
    query = select(Study.id).where(Study.status == StudyStatus.RUNNING.value).order_by(Study.updated_at.desc(), Study.id.desc())
    return [int(i) for i in session.execute(query.limit(limit)).scalars()]


# --- trials: top, samples, curves ------------------------------------------------


def best_at_level(session: Session, study_id: int, budget: float, limit: int) -> list[int]:
    """Trial ids of the best results at one budget level (index ix_rung_results_best)."""
    query = (
        select(RungResult.trial_id).where(RungResult.study_id == study_id, RungResult.budget == budget)
        .order_by(RungResult.score, RungResult.trial_id).limit(limit)
    )
    return [int(t) for t in session.execute(query).scalars()]


def sampled_trial_ids(session: Session, study_id: int, stride: int, limit: int, created: int) -> list[int]:
    """Every ``stride``-th trial by number, of the ``created`` trials numbered 0, 1, ... (one probe
    of index uq_trials_study_id each: a filter on ``number % stride`` would walk the whole study)."""
    numbers = list(range(0, created, stride))[:limit]
    if not numbers:
        return []
    query = select(Trial.id).where(Trial.study_id == study_id, any_of(session, Trial.number, numbers))
    return [int(t) for t in session.execute(query.order_by(Trial.number)).scalars()]


def trials_by_id(session: Session, trial_ids: Sequence[int]) -> list[Trial]:
    if not trial_ids:
        return []
    return list(session.execute(select(Trial).where(any_of(session, Trial.id, trial_ids))).scalars())


def thinned_reports(session: Session, trial_ids: Sequence[int], max_points: int) -> list[tuple[Any, ...]]:
    """(trial_id, step, attempt, metrics) of each trial's reports: at most ``max_points`` (>= 2)
    per trial, the first, the last and every s-th in between, s = ceil((n - 1) / (max_points - 1))."""
    if not trial_ids:
        return []
    index = func.row_number().over(partition_by=Report.trial_id, order_by=Report.step) - 1
    count = func.count().over(partition_by=Report.trial_id)
    inner = (
        select(Report.trial_id, Report.step, Report.attempt, Report.metrics, index.label("i"), count.label("n"))
        .where(any_of(session, Report.trial_id, trial_ids)).subquery()
    )
    stride = (inner.c.n + (max_points - 3)) / (max_points - 1)  # integer ceil((n - 1) / (m - 1))
    keep = or_(inner.c.n <= max_points, inner.c.i % stride == 0, inner.c.i == inner.c.n - 1)
    query = (
        select(inner.c.trial_id, inner.c.step, inner.c.attempt, inner.c.metrics).where(keep)
        .order_by(inner.c.trial_id, inner.c.step)
    )
    return [tuple(row) for row in session.execute(query)]


def report_count(session: Session, trial_id: int) -> int:
    return int(session.execute(select(func.count()).where(Report.trial_id == trial_id)).scalar_one())


def attempts_of(session: Session, trial_id: int) -> list[tuple[Any, ...]]:
    """(attempt, reports, first step, last step, first report at, last report at) per attempt."""
    query = (
        select(Report.attempt, func.count(), func.min(Report.step), func.max(Report.step),
               func.min(Report.created_at), func.max(Report.created_at))
        .where(Report.trial_id == trial_id).group_by(Report.attempt).order_by(Report.attempt)
    )
    return [tuple(row) for row in session.execute(query)]


def rung_results_of(session: Session, trial_ids: Sequence[int]) -> list[RungResult]:
    if not trial_ids:
        return []
    query = select(RungResult).where(any_of(session, RungResult.trial_id, trial_ids)).order_by(RungResult.rung)
    return list(session.execute(query).scalars())


def decisions_of(session: Session, trial_ids: Sequence[int], limit: int) -> list[Decision]:
    if not trial_ids:
        return []
    query = select(Decision).where(any_of(session, Decision.trial_id, trial_ids)).order_by(Decision.id).limit(limit)
    return list(session.execute(query).scalars())


# --- hyperband view and observations --------------------------------------------


def _trial_range(column: Any, lo: int, hi: int | None) -> ColumnElement[bool]:
    return and_(column >= lo, column < hi) if hi is not None else column >= lo


def trial_counts_by_rung(session: Session, study_id: int, lo: int = 0,
                         hi: int | None = None) -> list[tuple[int, int, str, int]]:
    """(bracket, rung, state, trials) for the brackets x rungs view, of the trials with ids in
    [lo, hi) (all by default; a range scans the primary key)."""
    query = (
        select(Trial.bracket, Trial.rung, Trial.state, func.count())
        .where(Trial.study_id == study_id, _trial_range(Trial.id, lo, hi))
        .group_by(Trial.bracket, Trial.rung, Trial.state)
    )
    return [(int(b), int(r), str(s), int(n)) for b, r, s, n in session.connection().execute(query)]


def rung_totals(session: Session, study_id: int, lo: int = 0,
                hi: int | None = None) -> list[tuple[int, int, float, int, int, float]]:
    """(bracket, rung, budget, results, promoted, best score) per rung and budget, of the results of
    trials with ids in [lo, hi) (index uq_rung_results_trial_rung for a range)."""
    query = (
        select(RungResult.bracket, RungResult.rung, RungResult.budget, func.count(),
               func.sum(case((RungResult.promoted, 1), else_=0)), func.min(RungResult.score))
        .where(RungResult.study_id == study_id, _trial_range(RungResult.trial_id, lo, hi))
        .group_by(RungResult.bracket, RungResult.rung, RungResult.budget)
    )
    rows = session.connection().execute(query)
    return [(int(b), int(r), float(u), int(n), int(p or 0), float(x)) for b, r, u, n, p, x in rows]


def first_open_trial_id(session: Session, study_id: int) -> int | None:
    """The oldest trial that is not in a final state (index ix_trials_study_state), or None."""
    open_states = [state.value for state in TrialState if not state.is_final]
    query = select(func.min(Trial.id)).where(Trial.study_id == study_id, Trial.state.in_(open_states))
    found = session.execute(query).scalar_one_or_none()
    return None if found is None else int(found)


def newest_trial_id_before(session: Session, study_id: int, before: datetime) -> int | None:
    """The newest trial id created before ``before`` (its transaction is over)."""
    query = select(func.max(Trial.id)).where(Trial.study_id == study_id, Trial.created_at <= before)
    found = session.execute(query).scalar_one_or_none()
    return None if found is None else int(found)


def results_at(
    session: Session, study_id: int, budget: float, limit: int, *, stride: int = 1, best_first: bool = False
) -> list[tuple[Any, ...]]:
    """(trial_id, number, params, value, score) of results at one budget level: the best
    first, or every ``stride``-th by result id (index ix_rung_results_best either way)."""
    query = (
        select(RungResult.trial_id, Trial.number, Trial.params, RungResult.value, RungResult.score)
        .join(Trial, Trial.id == RungResult.trial_id)
        .where(RungResult.study_id == study_id, RungResult.budget == budget)
    )
    if best_first:
        query = query.order_by(RungResult.score, RungResult.trial_id)
    else:
        query = query.where(RungResult.id % stride == 0).order_by(RungResult.id)
    return [tuple(row) for row in session.execute(query.limit(limit))]
