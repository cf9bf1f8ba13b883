"""Everything done under one study's lock: ask the scheduler, apply its actions.

A `StudyDriver` lives for one transaction. The caller holds the study row lock
(`get_study(..., lock=True)`), so the scheduler snapshot read here is the one
written back: two API processes never decide for one study at the same time.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from hpo_service.db import repositories as repo
from hpo_service.db.models import RungResult as RungResultRow
from hpo_service.db.models import Study, Trial
from hpo_service.db.rung_port import DbRungPort
from hpo_service.domain.spec import StudySpec
from hpo_service.domain.states import StudyStatus, TrialState
from hpo_service.orchestration.context import Context
from hpo_service.orchestration.study_end import finish_study
from hpo_service.sampling.observations import Observation
from hpo_service.sampling.proposer import Proposer
from hpo_service.scheduling.base import Action, Finish, NewTrial, Promote, Reuse, RungResult, Stop
from hpo_service.scheduling.factory import make_scheduler


class StudyDriver:
    def __init__(self, context: Context, session: Session, study: Study) -> None:
        self._ctx = context
        self._session = session
        self.study = study
        self.spec = StudySpec.model_validate(study.spec)
        self._scheduler = make_scheduler(self.spec.scheduler, self.spec.limits)
        self._port = DbRungPort(session, study.id)
        self._now = context.clock()

    # --- events ----------------------------------------------------------------

    def next_work(self) -> Trial | None:
        """A trial to hand to a worker now (new or promoted), or None; may finish the study."""
        if self.study.status != StudyStatus.RUNNING.value:
            return None
        state, action = self._scheduler.next_work(self.study.scheduler_state, self._port)
        self.study.scheduler_state = state
        if isinstance(action, NewTrial):
            return self._create_trial(action)
        if isinstance(action, Promote):
            self._apply([action])
            return repo.get_trial(self._session, action.trial_id)
        self.finish_if_done()
        return None

    def on_result(self, trial: Trial, value: float, checkpoint_uri: str | None) -> None:
        score = self.spec.objective.direction.score(value)
        # Not flushed here: the rung port flushes before a scheduler reads (DbRungPort), so a
        # decision that reads nothing writes the result, the trial and the study once, at commit.
        self._session.add(
            RungResultRow(
                study_id=self.study.id, trial_id=trial.id, bracket=trial.bracket, rung=trial.rung,
                budget=trial.budget_target, value=value, score=score, promoted=False,
                checkpoint_uri=checkpoint_uri, created_at=self._now,
            )
        )
        trial.state = TrialState.PAUSED.value
        trial.value = value  # the latest rung's value: what the trials table sorts by
        result = RungResult(trial.id, trial.bracket, trial.rung, score)
        state, actions = self._scheduler.on_result(self.study.scheduler_state, self._port, result)
        self.study.scheduler_state = state
        self._apply(actions)
        repo.bump_version(self._session, self.study, self._now)
        self.finish_if_done()

    def on_lost(self, trial: Trial) -> None:
        state, actions = self._scheduler.on_lost(
            self.study.scheduler_state, self._port, trial.id, trial.bracket, trial.rung
        )
        self.study.scheduler_state = state
        self._apply(actions)
        repo.bump_version(self._session, self.study, self._now)
        self.finish_if_done()

    def extend(self, new_max_budget: float) -> list[Promote]:
        """Raise max_budget (iterative deepening): the scheduler reuses the trials trained so far.

        Returns the promotions made at once (continued trials); the study runs again if it had
        completed. Every reused trial gets a decision; the "extend" decision sums up what was saved.
        """
        old_max = self.spec.scheduler.max_budget
        raw = self.study.spec | {"scheduler": self.study.spec["scheduler"] | {"max_budget": new_max_budget}}
        new_spec = StudySpec.model_validate(raw)
        scheduler = make_scheduler(new_spec.scheduler, new_spec.limits)
        state, actions = scheduler.extend(self.study.scheduler_state, self._port, old_max)
        self.study.spec, self.spec, self._scheduler = new_spec.model_dump(mode="json"), new_spec, scheduler
        self.study.scheduler_state = state
        self._apply(actions)
        continued = [a for a in actions if isinstance(a, Promote)]
        kept = [a for a in actions if isinstance(a, Reuse)]
        if self.study.status == StudyStatus.COMPLETED.value:
            self.study.status = StudyStatus.RUNNING.value
        if kept:  # Hyperband's top-up: the old brackets keep their trials and grow to the larger Hyperband's size
            summary = (
                f"{len(kept)} trial(s) keep their results instead of training again, saving "
                f"{sum(a.budget for a in kept):g} budget; their brackets are topped up with new configurations"
                + (f"; {len(continued)} continue from their checkpoints now" if continued else "")
            )
        else:
            summary = (
                f"{len(continued)} trial(s) continue from their checkpoints instead of restarting, saving "
                f"{sum(self._reused_budget(a) for a in continued):g} budget"
            )
        repo.add_decision(
            self._session, self.study.id, None, "extend",
            f"max_budget raised from {old_max:g} to {new_max_budget:g}: {summary}", self._now,
        )
        repo.bump_version(self._session, self.study, self._now)
        self._ctx.on_work_available()
        return continued

    def _reused_budget(self, promotion: Promote) -> float:
        trial = repo.get_trial(self._session, promotion.trial_id)
        return trial.budget_done if trial is not None else 0.0

    def finish_if_done(self) -> None:
        if self.study.status not in (StudyStatus.RUNNING.value, StudyStatus.PAUSED.value):
            return
        # Whether the scheduler would be done with nothing in flight first: usually it is not,
        # and the count of the trials in flight is then not needed.
        if not self._scheduler.is_finished(self.study.scheduler_state, self._port, 0):
            return
        self._session.flush()  # the count below must see this transaction's state changes
        if repo.count_in_state(self._session, self.study.id, repo.IN_FLIGHT) == 0:
            finish_study(self._session, self.study, StudyStatus.COMPLETED, "the scheduler has no more work",
                         self._now)

    # --- actions ---------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Promote):
                self._promote(action)
            elif isinstance(action, Stop):
                self._end(action.trial_id, TrialState.STOPPED, "stop", action.reason)
            elif isinstance(action, Finish):
                self._end(action.trial_id, TrialState.COMPLETED, "finish", action.reason)
            elif isinstance(action, NewTrial):  # synchronous schedulers never emit these here
                self._create_trial(action)
            elif isinstance(action, Reuse):
                trial = repo.get_trial(self._session, action.trial_id)
                attempt = trial.attempt if trial is not None else None
                repo.add_decision(self._session, self.study.id, action.trial_id, "reuse", action.reason, self._now,
                                  attempt)
        if any(isinstance(a, Promote) for a in actions):
            self._ctx.on_work_available()

    def _promote(self, action: Promote) -> None:
        trial = repo.get_trial(self._session, action.trial_id)
        assert trial is not None, f"scheduler promoted unknown trial {action.trial_id}"
        repo.mark_promoted(self._session, trial.id, trial.rung)
        trial.state = TrialState.PENDING.value
        trial.rung = action.to_rung
        trial.budget_target = action.budget
        trial.updated_at = self._now
        repo.add_decision(self._session, self.study.id, trial.id, "promote", action.reason, self._now, trial.attempt)

    def _end(self, trial_id: int, state: TrialState, kind: str, reason: str) -> None:
        trial = repo.get_trial(self._session, trial_id)
        assert trial is not None, f"scheduler ended unknown trial {trial_id}"
        trial.state = state.value
        trial.updated_at = self._now
        repo.add_decision(self._session, self.study.id, trial.id, kind, reason, self._now, trial.attempt)

    def _create_trial(self, action: NewTrial) -> Trial:
        number = self.study.trials_created
        params = self._params_for(action, number)
        trial = Trial(
            study_id=self.study.id, number=number, params=params, seed=self._trial_seed(number),
            state=TrialState.PENDING.value, bracket=action.bracket, rung=action.rung, budget_done=0.0,
            budget_target=action.budget, attempt=1, created_at=self._now, updated_at=self._now,
        )
        self._session.add(trial)  # inserted at the next flush: a lease grant fills in its lease fields first
        self.study.trials_created = number + 1
        return trial

    # --- sampling ----------------------------------------------------------------

    def _params_for(self, action: NewTrial, number: int) -> dict[str, object]:
        if action.copy_of is None:
            params = self._propose(number)
        else:
            source = repo.get_trial(self._session, action.copy_of)
            assert source is not None, f"scheduler copied unknown trial {action.copy_of}"
            params = dict(source.params)
        for name, factor in action.scale.items():
            params[name] = params[name] * factor  # type: ignore[operator]
        params.update(action.overrides)
        return params

    def _propose(self, number: int) -> dict[str, object]:
        proposer = self._ctx.proposers.get_or_create(
            self.study.id, _spec_hash(self.study.spec),
            lambda: Proposer(self.spec.space, self.spec.sampler, self._study_seed()),
        )
        if proposer.reads_observations:
            rows = repo.observations_after(self._session, self.study.id, proposer.last_seq)
            proposer.observe(
                Observation(params=params, rung=self._level(budget), budget=budget, score=score, seq=seq)
                for seq, params, budget, score in rows
            )
        return proposer.propose(number)

    def _level(self, budget: float) -> int:
        """Budget level shared by all brackets (rung 0 of bracket s=3 is level 1 when eta=3).

        Measured from min_budget, which an extension of max_budget never changes.
        """
        eta, low = self.spec.scheduler.eta, self.spec.scheduler.min_budget
        return max(0, round(math.log(max(budget, low) / low, eta)))

    def _study_seed(self) -> int:
        seed = self.spec.sampler.seed
        return seed if seed is not None else self.study.id

    def _trial_seed(self, number: int) -> int:
        return (self._study_seed() * 1_000_003 + number) % 2**31


def _spec_hash(spec: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def grant_lease(trial: Trial, worker_id: str, lease_seconds: float, now: datetime, token: str) -> None:
    trial.state = TrialState.RUNNING.value
    trial.lease_owner = worker_id
    trial.lease_token = token
    trial.lease_expires_at = now + timedelta(seconds=lease_seconds)
    trial.updated_at = now
