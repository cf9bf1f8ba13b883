"""Queries. Repositories never commit: the use case owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from hpo_service.db.any_of import any_of
from hpo_service.db.models import Decision, Report, RungResult, Study, Trial
from hpo_service.domain.queries import TrialFilter
from hpo_service.domain.states import StudyStatus, TrialState

IN_FLIGHT = (TrialState.PENDING.value, TrialState.RUNNING.value)


def _locking(query: Select[Any]) -> Select[Any]:
    """``SELECT ... FOR UPDATE`` whose row replaces what this session loaded before.

    The lock may be granted only after another transaction changed the row (a lease expiry
    revoking the token the caller is about to check). SQLAlchemy would otherwise hand back
    the object it already holds, with the values read before the wait.
    """
    return query.with_for_update().execution_options(populate_existing=True)


# --- studies -------------------------------------------------------------------


def get_study(session: Session, study_id: int, *, lock: bool = False) -> Study | None:
    query = select(Study).where(Study.id == study_id)
    if lock:
        # The per-study lock: decisions that touch the whole study are serialised.
        query = _locking(query)
    return session.execute(query).scalar_one_or_none()


def get_study_by_name(session: Session, project_id: int, name: str) -> Study | None:
    query = select(Study).where(Study.project_id == project_id, Study.name == name)
    return session.execute(query).scalar_one_or_none()


def project_of_study(session: Session, study_id: int) -> int | None:
    return session.execute(select(Study.project_id).where(Study.id == study_id)).scalar_one_or_none()


def list_studies(
    session: Session, *, status: str | None, name_contains: str | None, limit: int, offset: int,
    project_id: int | None = None,
) -> tuple[list[Study], int]:
    query = select(Study)
    if project_id is not None:
        query = query.where(Study.project_id == project_id)
    if status:
        query = query.where(Study.status == status)
    if name_contains:
        query = query.where(Study.name.contains(name_contains, autoescape=True))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(Study.id.desc()).limit(limit).offset(offset)).scalars()
    return list(rows), int(total)


def sampler_kinds_of_live_studies(session: Session) -> list[str]:
    """The sampler kind of every running or paused study (distinct)."""
    live = (StudyStatus.RUNNING.value, StudyStatus.PAUSED.value)
    specs = session.execute(select(Study.spec).where(Study.status.in_(live))).scalars()
    return sorted({str(spec.get("sampler", {}).get("kind", "tpe")) for spec in specs})


def running_study_ids(session: Session, only: Sequence[int] | None, project_id: int | None = None) -> list[int]:
    query = select(Study.id).where(Study.status == StudyStatus.RUNNING.value).order_by(Study.id)
    if project_id is not None:
        query = query.where(Study.project_id == project_id)
    if only:
        query = query.where(any_of(session, Study.id, only))
    return list(session.execute(query).scalars())


def bump_version(session: Session, study: Study, now: datetime) -> None:
    study.version += 1
    study.updated_at = now


# --- trials --------------------------------------------------------------------


def trial_leased_by_request(session: Session, worker_id: str, request_key: str) -> Trial | None:
    """The running trial (locked) that ``worker_id``'s lease request ``request_key`` was granted, if any.

    Asked on every lease that sends a key, and almost always the answer is none: so first one
    narrow unlocked query over the running trials (the state index), then the locked row only
    when there is one, checked again once locked.
    """
    held = Trial.state == TrialState.RUNNING.value, Trial.lease_owner == worker_id, Trial.lease_request == request_key
    trial_id = session.execute(select(Trial.id).where(*held).limit(1)).scalar()
    if trial_id is None:
        return None
    return session.execute(_locking(select(Trial).where(Trial.id == trial_id, *held))).scalar_one_or_none()


def get_trial(session: Session, trial_id: int, *, lock: bool = False) -> Trial | None:
    if not lock:
        # A trial this transaction already loaded comes from the session without a query (an
        # unlocked SELECT would hand back that same object, its attributes unchanged).
        return session.get(Trial, trial_id)
    return session.execute(_locking(select(Trial).where(Trial.id == trial_id))).scalar_one_or_none()


def study_id_of_trial(session: Session, trial_id: int) -> int | None:
    return session.execute(select(Trial.study_id).where(Trial.id == trial_id)).scalar_one_or_none()


def lease_view(session: Session, trial_id: int) -> Any:
    """(lease_token, state, attempt, study_id, study_status, project_id) in one query, for the hot report path."""
    query = (
        select(Trial.lease_token, Trial.state, Trial.attempt, Trial.study_id, Study.status, Study.project_id)
        .join(Study, Study.id == Trial.study_id)
        .where(Trial.id == trial_id)
    )
    return session.execute(query).first()


def claim_pending(session: Session, study_id: int) -> Trial | None:
    """Lock the oldest pending trial of a study; rows another transaction holds are skipped.

    None once the study is no longer running: the caller read its status earlier without a
    lock, and a pause or cancel may have committed since (this statement sees it).
    """
    running = select(Study.id).where(Study.id == study_id, Study.status == StudyStatus.RUNNING.value).exists()
    query = (
        select(Trial)
        .where(Trial.study_id == study_id, Trial.state == TrialState.PENDING.value, running)
        .order_by(Trial.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return session.execute(query).scalar_one_or_none()


def count_states(session: Session, study_id: int) -> dict[str, int]:
    query = select(Trial.state, func.count()).where(Trial.study_id == study_id).group_by(Trial.state)
    return {state: int(count) for state, count in session.execute(query)}


def count_in_state(session: Session, study_id: int, states: Sequence[str]) -> int:
    query = select(func.count()).select_from(Trial).where(Trial.study_id == study_id, Trial.state.in_(states))
    return int(session.execute(query).scalar_one())


def expired_trial_ids(session: Session, now: datetime, limit: int = 100) -> list[tuple[int, int]]:
    query = (
        select(Trial.id, Trial.study_id)
        .where(Trial.state == TrialState.RUNNING.value, Trial.lease_expires_at < now)
        .order_by(Trial.lease_expires_at)
        .limit(limit)
    )
    return [(int(a), int(b)) for a, b in session.execute(query)]


def studies_with_running_trials(session: Session) -> list[int]:
    query = (
        select(Trial.study_id).where(Trial.state == TrialState.RUNNING.value)
        .group_by(Trial.study_id).order_by(Trial.study_id)
    )
    return [int(study_id) for study_id in session.execute(query).scalars()]


def extend_running_leases(session: Session, study_id: int, until: datetime) -> int:
    """Move every running lease of the study that expires before ``until`` to ``until``; returns how many.

    The token and owner stay: the holder keeps its lease. A running trial without an expiry
    (none should exist) is left alone."""
    result = session.execute(
        update(Trial)
        .where(Trial.study_id == study_id, Trial.state == TrialState.RUNNING.value, Trial.lease_expires_at < until)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], result).rowcount)


def trials_in_state(
    session: Session, study_id: int, states: Sequence[str], *, lock: bool = False
) -> list[Trial]:
    """The study's trials in ``states``; ``lock``: locked, and only those still in them once locked.

    (PostgreSQL re-checks the condition on a row it had to wait for, so a trial claimed
    meanwhile by a lease drops out instead of being overwritten.)
    """
    query = select(Trial).where(Trial.study_id == study_id, Trial.state.in_(states)).order_by(Trial.id)
    return list(session.execute(_locking(query) if lock else query).scalars())


def list_trials(
    session: Session, study_id: int, filters: TrialFilter, *, limit: int, offset: int
) -> tuple[list[Trial], int]:
    query: Select[tuple[Trial]] = select(Trial).where(Trial.study_id == study_id)
    if filters.state:
        query = query.where(Trial.state == filters.state)
    if filters.bracket is not None:
        query = query.where(Trial.bracket == filters.bracket)
    if filters.rung is not None:
        query = query.where(Trial.rung == filters.rung)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    column = Trial.value if filters.order.lstrip("-") == "value" else Trial.number
    ordering = column.desc() if filters.order.startswith("-") else column.asc()
    query = query.order_by(ordering.nulls_last(), Trial.id).limit(limit).offset(offset)
    return list(session.execute(query).scalars()), int(total)


# --- reports -------------------------------------------------------------------


def insert_reports(session: Session, rows: list[dict[str, Any]], *, replace_older_attempts: bool = False) -> None:
    """Insert reports. One whose (trial, step) exists already is skipped when it comes from the same
    attempt (a retry is a no-op); with ``replace_older_attempts`` it replaces a stored one of an
    earlier attempt: a requeued trial trains the steps after its checkpoint again, and its curve (and
    the objective a completion without it reads from the last report) must be that attempt's, not
    the dead one's. First attempts leave it off: no earlier attempt exists, and the plain statement
    is cheaper (the upsert on every report: 0.78-0.81 -> 0.96-1.07 ms of CPU per report in process,
    bench/request_cost.py alternated twice)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    # The worker protocol's hottest statement, so: rows as parameters, not `.values(rows)` (a statement
    # that embeds its rows is compiled anew on every call; SQLAlchemy cannot cache it), and on the table,
    # not the ORM class (no ORM bulk-insert bookkeeping for rows nobody loads back). Measured per
    # one-row report transaction: 1.1 -> 0.6 ms of CPU (bench/request_cost.py shows the whole call).
    statement = insert(Report.__table__)
    if not replace_older_attempts:
        session.execute(statement.on_conflict_do_nothing(index_elements=["trial_id", "step"]), rows)
        return
    statement = statement.on_conflict_do_update(
        index_elements=["trial_id", "step"],
        set_={"metrics": statement.excluded.metrics, "attempt": statement.excluded.attempt,
              "created_at": statement.excluded.created_at},
        where=Report.__table__.c.attempt < statement.excluded.attempt,
    )
    session.execute(statement, rows)


def reports_of(session: Session, trial_id: int) -> list[Report]:
    query = select(Report).where(Report.trial_id == trial_id).order_by(Report.step)
    return list(session.execute(query).scalars())


def last_report(session: Session, trial_id: int, attempt: int, after_step: float) -> Report | None:
    """The latest report of the trial's ``attempt`` past ``after_step`` (the slice's start): earlier
    attempts' reports describe training thrown away when the trial was requeued, and reports up to
    the slice's start belong to the slices before it."""
    query = (select(Report).where(Report.trial_id == trial_id, Report.attempt == attempt, Report.step > after_step)
             .order_by(Report.step.desc()).limit(1))
    return session.execute(query).scalar_one_or_none()


# --- rung results --------------------------------------------------------------


def mark_promoted(session: Session, trial_id: int, rung: int) -> None:
    session.flush()  # a bulk UPDATE skips the unit of work: the result row may not be written yet
    session.execute(
        update(RungResult).where(RungResult.trial_id == trial_id, RungResult.rung == rung).values(promoted=True)
    )


def rung_results_of(session: Session, trial_id: int) -> list[RungResult]:
    query = select(RungResult).where(RungResult.trial_id == trial_id).order_by(RungResult.rung)
    return list(session.execute(query).scalars())


def checkpoint_references(
    session: Session, study_id: int, after_trial_id: int, limit: int
) -> list[tuple[int, str, int, list[str]]]:
    """(trial id, state, attempt, checkpoint URIs it refers to) of the study's next ``limit`` trials
    after ``after_trial_id``: the trial's own and those of its rung results (the best adapter's
    export and the fall-back after an unusable checkpoint read the older ones)."""
    trials = session.execute(
        select(Trial.id, Trial.state, Trial.attempt, Trial.checkpoint_uri)
        .where(Trial.study_id == study_id, Trial.id > after_trial_id).order_by(Trial.id).limit(limit)
    ).all()
    if not trials:
        return []
    uris: dict[int, set[str]] = {trial_id: {uri} if uri else set() for trial_id, _, _, uri in trials}
    results = session.execute(
        select(RungResult.trial_id, RungResult.checkpoint_uri).where(
            RungResult.study_id == study_id, RungResult.trial_id.between(trials[0][0], trials[-1][0]),
            RungResult.checkpoint_uri.is_not(None),
        )
    )
    for trial_id, uri in results:
        if trial_id in uris:
            uris[trial_id].add(uri)
    return [(trial_id, state, attempt, sorted(uris[trial_id])) for trial_id, state, attempt, _ in trials]


def rung_summary(session: Session, study_id: int) -> list[tuple[int, int, float, int, int, float]]:
    """(bracket, rung, budget, results, promoted, best score) per rung, for the brackets table."""
    query = (
        select(
            RungResult.bracket, RungResult.rung, func.max(RungResult.budget), func.count(),
            func.sum(case((RungResult.promoted, 1), else_=0)), func.min(RungResult.score),
        )
        .where(RungResult.study_id == study_id)
        .group_by(RungResult.bracket, RungResult.rung)
        .order_by(RungResult.bracket, RungResult.rung)
    )
    return [(int(b), int(r), float(bu), int(n), int(p or 0), float(s)) for b, r, bu, n, p, s in session.execute(query)]


def best_result(session: Session, study_id: int) -> RungResult | None:
    """The incumbent: the best score among results at the highest budget reached so far."""
    top_budget = select(func.max(RungResult.budget)).where(RungResult.study_id == study_id).scalar_subquery()
    query = (
        select(RungResult)
        .where(RungResult.study_id == study_id, RungResult.budget == top_budget)
        .order_by(RungResult.score, RungResult.trial_id)
        .limit(1)
    )
    return session.execute(query).scalar_one_or_none()


def observations_after(session: Session, study_id: int, after_id: int) -> list[tuple[Any, ...]]:
    """(seq, params, budget, score) of results newer than ``after_id``, for the samplers."""
    query = (
        select(RungResult.id, Trial.params, RungResult.budget, RungResult.score)
        .join(Trial, Trial.id == RungResult.trial_id)
        .where(RungResult.study_id == study_id, RungResult.id > after_id)
        .order_by(RungResult.id)
    )
    return [tuple(row) for row in session.execute(query)]


# --- decisions -----------------------------------------------------------------


def add_decision(
    session: Session, study_id: int, trial_id: int | None, kind: str, reason: str, now: datetime,
    attempt: int | None = None,
) -> None:
    session.add(
        Decision(study_id=study_id, trial_id=trial_id, kind=kind, reason=reason, attempt=attempt, created_at=now)
    )


def list_decisions(
    session: Session, study_id: int, *, trial_id: int | None, after_id: int, limit: int
) -> list[Decision]:
    query = select(Decision).where(Decision.study_id == study_id, Decision.id > after_id)
    if trial_id is not None:
        query = query.where(Decision.trial_id == trial_id)
    return list(session.execute(query.order_by(Decision.id).limit(limit)).scalars())
