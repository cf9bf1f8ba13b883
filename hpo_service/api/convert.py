"""Table rows and use-case results to response schemas."""

from __future__ import annotations

from typing import Any

from hpo_service.api import schemas
from hpo_service.orchestration.context import as_utc
from hpo_service.orchestration.protocol import LeaseGrant
from hpo_service.orchestration.studies import StudySummary, TrialDetail


def study_out(summary: StudySummary) -> schemas.StudyOut:
    study, best = summary.study, summary.best
    return schemas.StudyOut(
        id=study.id, name=study.name, status=study.status, spec=study.spec,
        trials_created=study.trials_created, budget_spent=study.budget_spent,
        trial_counts=summary.trial_counts,
        best=schemas.BestOut(trial_id=best.trial_id, value=best.value, budget=best.budget, rung=best.rung)
        if best else None,
        created_at=as_utc(study.created_at), updated_at=as_utc(study.updated_at),
    )


def trial_out(trial: Any) -> schemas.TrialOut:
    """``trial`` is a stored trial row (read by attribute)."""
    out = schemas.TrialOut.model_validate(trial)
    return out.model_copy(update={
        "created_at": as_utc(trial.created_at), "updated_at": as_utc(trial.updated_at),
        "lease_expires_at": as_utc(trial.lease_expires_at),
    })


def trial_detail_out(detail: TrialDetail) -> schemas.TrialDetailOut:
    return schemas.TrialDetailOut(
        trial=trial_out(detail.trial),
        reports=[schemas.ReportOut.model_validate(r) for r in detail.reports],
        rung_results=[schemas.RungResultOut.model_validate(r) for r in detail.rung_results],
        decisions=[decision_out(d) for d in detail.decisions],
    )


def decision_out(decision: object) -> schemas.DecisionOut:
    out = schemas.DecisionOut.model_validate(decision)
    return out.model_copy(update={"created_at": as_utc(out.created_at)})


def lease_out(grant: LeaseGrant) -> schemas.LeaseOut:
    trial, spec = grant.trial, grant.spec
    expires = as_utc(trial.lease_expires_at)
    assert expires is not None and trial.lease_token is not None
    return schemas.LeaseOut(
        trial_id=trial.id, study_id=trial.study_id, number=trial.number, attempt=trial.attempt,
        lease_token=trial.lease_token, expires_at=expires, lease_seconds=spec.retry.lease_seconds,
        trainer=schemas.TrainerOut(name=spec.trainer.name, params=spec.trainer.params),
        params=trial.params, budget_from=trial.budget_done, budget_to=trial.budget_target,
        checkpoint_in=trial.checkpoint_uri if trial.budget_done > 0 else None, seed=trial.seed,
        objective=spec.objective.metric,
    )
