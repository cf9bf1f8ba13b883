"""Queries behind the dashboard's live events: what changed, and what is new since a cursor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hpo_service.db.any_of import any_of
from hpo_service.db.models import Decision, Report, Study, Trial
from hpo_service.db.models_dashboard import Worker


def heads(session: Session, study_ids: Sequence[int]) -> tuple[tuple[Any, ...], dict[int, tuple[int, str]]]:
    """One indexed query: newest report / decision id, studies' and workers' last change,
    and (version, status) of each study in ``study_ids``."""
    glob = select(
        select(func.max(Report.id)).scalar_subquery().label("report"),
        select(func.max(Decision.id)).scalar_subquery().label("decision"),
        select(func.max(Study.updated_at)).scalar_subquery().label("studies_at"),
        select(func.count(Study.id)).scalar_subquery().label("studies"),
        select(func.max(Worker.last_seen)).scalar_subquery().label("workers_at"),
    ).subquery()
    query = select(glob, Study.id, Study.version, Study.status).select_from(glob).outerjoin(
        Study, any_of(session, Study.id, study_ids)
    )
    rows = session.execute(query).all()
    versions = {int(r.id): (int(r.version), str(r.status)) for r in rows if r.id is not None}
    first = rows[0]
    return (first.report or 0, first.decision or 0, first.studies_at, first.studies, first.workers_at), versions


def reports_after(session: Session, study_id: int, after_id: int, limit: int) -> list[tuple[Any, ...]]:
    """(id, trial_id, number, step, attempt, metrics, created_at) of the study's reports newer than ``after_id``."""
    query = (
        select(Report.id, Report.trial_id, Trial.number, Report.step, Report.attempt, Report.metrics,
               Report.created_at)
        .join(Trial, Trial.id == Report.trial_id)
        .where(Report.id > after_id, Trial.study_id == study_id).order_by(Report.id).limit(limit)
    )
    return [tuple(row) for row in session.execute(query)]


def study_decisions(session: Session, study_id: int, kind: str, limit: int) -> list[Decision]:
    """Decisions about the study itself (no trial), e.g. its budget raises (index ix_decisions_trial)."""
    query = select(Decision).where(Decision.trial_id.is_(None), Decision.study_id == study_id, Decision.kind == kind)
    return list(session.execute(query.order_by(Decision.id).limit(limit)).scalars())


def decisions_after(session: Session, study_id: int, after_id: int, limit: int) -> list[Decision]:
    query = select(Decision).where(Decision.study_id == study_id, Decision.id > after_id)
    return list(session.execute(query.order_by(Decision.id).limit(limit)).scalars())
