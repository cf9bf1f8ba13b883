"""Ending a study: what happens to the trials that are still waiting."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from hpo_service.db import repositories as repo
from hpo_service.db.models import Study
from hpo_service.domain.states import StudyStatus, TrialState


def finish_study(
    session: Session, study: Study, status: StudyStatus, reason: str, now: datetime,
    stop_states: Sequence[str] = (TrialState.PAUSED.value,),
) -> None:
    """Set the final status; trials in ``stop_states`` end as stopped, each with a decision.

    The trials are locked first: a pending one may be claimed by a lease right now (claims
    take the trial's lock, not the study's), and a claimed trial is running, not stopped.
    """
    for trial in repo.trials_in_state(session, study.id, stop_states, lock=True):
        previous = trial.state
        trial.state = TrialState.STOPPED.value
        trial.lease_token = None
        trial.lease_expires_at = None
        trial.updated_at = now
        repo.add_decision(session, study.id, trial.id, "stop", f"{reason} while the trial was {previous}", now)
    study.status = status.value
    repo.add_decision(session, study.id, None, status.value, reason, now)
    repo.bump_version(session, study, now)
