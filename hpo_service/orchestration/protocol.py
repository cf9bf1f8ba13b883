"""The worker protocol: lease, heartbeat, report, complete, fail, and lease expiry.

Fencing: every call names the lease token it was given. A token that is no
longer the trial's current one (the lease expired and was re-issued, or the
trial was requeued) gets `StaleLease` (HTTP 409) and changes nothing.

Lock order, to stay deadlock-free on PostgreSQL: the study row first, then the
trial row. Claiming a pending trial takes only the trial row, with SKIP LOCKED,
so it never waits -- unless the study caps ``max_concurrent``: then the study row is
locked first, so that counting the running trials and claiming one is a single step.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.orm import Session

from hpo_service.db import repositories as repo
from hpo_service.db.dashboard_queries import record_worker_seen
from hpo_service.db.models import Study, Trial
from hpo_service.domain.spec import StudySpec
from hpo_service.domain.states import StudyStatus, TrialState
from hpo_service.errors import Conflict, InvalidInput, NotFound, StaleLease
from hpo_service.orchestration.context import Context, as_utc
from hpo_service.orchestration.studies import load_study, load_trial
from hpo_service.orchestration.study_driver import StudyDriver, grant_lease
from hpo_service.sampling.proposer import warm_sampler

Directive = Literal["continue", "stop"]


@dataclass(frozen=True)
class LeaseGrant:
    trial: Trial
    study: Study
    spec: StudySpec


@dataclass(frozen=True)
class PartialCheckpoint:
    """A checkpoint a released (drained) slice committed part-way, at ``budget_done``."""

    uri: str
    budget_done: float


@dataclass(frozen=True)
class Ack:
    directive: Directive
    expires_at: datetime | None = None


class TrialProtocol:
    def __init__(self, context: Context) -> None:
        self._ctx = context

    # --- lease ---------------------------------------------------------------------

    def lease(
        self, worker_id: str, study_ids: list[int] | None = None, project_id: int | None = None,
        resources: dict[str, Any] | None = None, request_key: str | None = None,
    ) -> LeaseGrant | None:
        """One attempt to lease work (in ``project_id``'s studies); the API's long poll calls this repeatedly.

        ``request_key`` (the request's Idempotency-Key) is stored on the grant. When a grant
        made under it is still running and held by ``worker_id``, that grant is the answer:
        the request is a retry whose first response was lost, and the worker never learned
        the token (it would otherwise hold two trials, one of them until its lease expired).

        Every attempt also marks the worker as seen (throttled), so that the Workers page
        lists idle workers too."""

        def candidates_of(session: Session) -> LeaseGrant | list[int]:
            if request_key is not None:
                granted = self._granted_before(session, worker_id, request_key, project_id)
                if granted is not None:
                    return granted
            found = repo.running_study_ids(session, study_ids, project_id)
            record_worker_seen(session, worker_id, None, self._ctx.clock(), resources)
            return found

        candidates = self._ctx.run(candidates_of)
        if isinstance(candidates, LeaseGrant):
            return candidates
        for study_id in candidates:
            try:
                grant = self._ctx.run(lambda s: self._claim(s, study_id, worker_id, request_key))
            except Conflict:
                # Another try of this request committed its grant first (the index of migration
                # 0006 refused this one): that grant is the answer.
                earlier = self._earlier_grant(worker_id, request_key, project_id)
                if earlier is None:
                    raise
                return earlier
            if grant is not None:
                return grant
        return None

    def _earlier_grant(self, worker_id: str, request_key: str | None, project_id: int | None) -> LeaseGrant | None:
        if request_key is None:
            return None
        return self._ctx.run(lambda s: self._granted_before(s, worker_id, request_key, project_id))

    def _granted_before(
        self, session: Session, worker_id: str, request_key: str, project_id: int | None
    ) -> LeaseGrant | None:
        """The grant an earlier try of this lease request got, its lease renewed from now."""
        trial = repo.trial_leased_by_request(session, worker_id, request_key)
        if trial is None or trial.lease_token is None:
            return None
        study = load_study(session, trial.study_id)
        if project_id is not None and study.project_id != project_id:
            return None
        spec = StudySpec.model_validate(study.spec)
        grant_lease(trial, worker_id, spec.retry.lease_seconds, self._ctx.clock(), trial.lease_token)
        return LeaseGrant(trial, study, spec)

    def _claim(
        self, session: Session, study_id: int, worker_id: str, request_key: str | None = None
    ) -> LeaseGrant | None:
        """A pending trial of the study if there is one (never waiting for it), else new work."""
        study = load_study(session, study_id)
        spec = StudySpec.model_validate(study.spec)
        warm_sampler(spec.sampler.kind)  # a study another API process created: before the study lock
        locked = spec.limits.max_concurrent is not None
        if locked:
            # Count and claim as one step per study: two leases that both counted before either
            # claimed would otherwise both claim, one trial past the limit. Unlimited studies
            # skip the study lock here, so their pending claims never wait.
            study = load_study(session, study_id, lock=True)
        if study.status != StudyStatus.RUNNING.value or self._at_capacity(session, study, spec):
            return None
        trial = repo.claim_pending(session, study_id)
        if trial is not None:
            self._grant(trial, worker_id, spec, request_key)
            return LeaseGrant(trial, study, spec)
        # New work is decided under the study lock. No trial lock is held at this point
        # (none was pending), so taking the study's now keeps the lock order.
        if not locked:
            study = load_study(session, study_id, lock=True)
        driver = StudyDriver(self._ctx, session, study)
        trial = driver.next_work()
        if trial is None:
            return None
        repo.bump_version(session, study, self._ctx.clock())  # before the grant's flush: one UPDATE of the study
        self._grant(trial, worker_id, driver.spec, request_key)
        return LeaseGrant(trial, study, driver.spec)

    def _at_capacity(self, session: Session, study: Study, spec: StudySpec) -> bool:
        limit = spec.limits.max_concurrent
        return limit is not None and repo.count_in_state(session, study.id, [TrialState.RUNNING.value]) >= limit

    def _grant(self, trial: Trial, worker_id: str, spec: StudySpec, request_key: str | None) -> None:
        now = self._ctx.clock()
        grant_lease(trial, worker_id, spec.retry.lease_seconds, now, secrets.token_urlsafe(24))
        trial.lease_request = request_key
        session = Session.object_session(trial)
        if session is not None:  # the worker row is written last: after the study and trial locks
            session.flush()
            record_worker_seen(session, worker_id, trial.id, now, None)

    # --- calls under a lease -------------------------------------------------------------

    def heartbeat(self, trial_id: int, token: str, project_id: int | None = None) -> Ack:
        def use_case(session: Session) -> Ack:
            trial, study = self._leased(session, trial_id, token, project_id)
            spec = StudySpec.model_validate(study.spec)
            now = self._ctx.clock()
            grant_lease(trial, trial.lease_owner or "", spec.retry.lease_seconds, now, token)
            if trial.lease_owner:
                record_worker_seen(session, trial.lease_owner, trial.id, now, None)
            return Ack(_directive(study), as_utc(trial.lease_expires_at))

        return self._ctx.run(use_case)

    def report(
        self, trial_id: int, token: str, reports: list[tuple[float, dict[str, Any]]], project_id: int | None = None
    ) -> Ack:
        def use_case(session: Session) -> Ack:
            # The hottest call: one narrow query (no ORM rows, no study spec) and one insert.
            view = repo.lease_view(session, trial_id)
            if view is None or (project_id is not None and view.project_id != project_id):
                raise NotFound(f"trial {trial_id} does not exist")
            _check_token(trial_id, view.lease_token, view.state, token)
            now = self._ctx.clock()
            rows = [
                {"trial_id": trial_id, "attempt": view.attempt, "step": step,
                 "metrics": _finite_metrics(metrics), "created_at": now}
                for step, metrics in reports
            ]
            repo.insert_reports(session, rows, replace_older_attempts=view.attempt > 1)
            return Ack(_directive_for(view.status))

        return self._ctx.run(use_case)

    def complete(
        self, trial_id: int, token: str, metrics: dict[str, Any], checkpoint_uri: str | None,
        project_id: int | None = None,
    ) -> Trial:
        def use_case(session: Session) -> Trial:
            study, trial = _lock_study_and_trial(session, trial_id, project_id)
            if _already_done_with(trial, token):
                return trial  # a retried completion: the first one counted
            self._check_lease(trial, token)
            self._finish_segment(session, study, trial, metrics, checkpoint_uri)
            return trial

        trial = self._ctx.run(use_case)
        self._ctx.on_work_available()
        return trial

    def _finish_segment(
        self, session: Session, study: Study, trial: Trial, metrics: dict[str, Any], checkpoint_uri: str | None
    ) -> None:
        now = self._ctx.clock()
        slice_start = trial.budget_done
        study.budget_spent += max(0.0, trial.budget_target - trial.budget_done)
        trial.budget_done = trial.budget_target
        trial.checkpoint_uri = checkpoint_uri or trial.checkpoint_uri
        trial.lease_expires_at = None
        trial.updated_at = now
        if study.status == StudyStatus.CANCELLED.value:
            trial.state = TrialState.STOPPED.value
            repo.add_decision(session, study.id, trial.id, "stop", "study cancelled", now, trial.attempt)
            return
        driver = StudyDriver(self._ctx, session, study)
        metric = driver.spec.objective.metric
        value = _objective(session, trial, metrics, metric, slice_start)
        if math.isfinite(value):
            driver.on_result(trial, value, trial.checkpoint_uri)
            return
        trial.state = TrialState.FAILED.value
        trial.error = f"objective {metric!r} was {value} at budget {trial.budget_done:g}: the run diverged"
        repo.add_decision(session, study.id, trial.id, "fail", trial.error, now, trial.attempt)
        driver.on_lost(trial)

    def fail(
        self, trial_id: int, token: str, error: str, retryable: bool, checkpoint_invalid: bool = False,
        project_id: int | None = None, *, checkpoint_out: str | None = None, budget_done: float | None = None,
        drained: bool = False,
    ) -> Trial:
        """Release a leased trial: requeue it (retryable, attempts left) or fail it.

        ``drained``: the worker is shutting down (SIGTERM, preemption), not failing; the trial is
        requeued and the attempt does not count toward ``max_attempts`` (up to ``MAX_FREE_DRAINS``
        of them: a worker that drains every time it holds the trial then uses up attempts too).

        ``checkpoint_out`` + ``budget_done``: the worker stopped part-way (a drain) and
        committed a checkpoint at ``budget_done``, between the lease's ``budget_from`` and
        ``budget_to``. A requeued trial then resumes from it and trains only the rest of the
        slice. Checked after the lease token (a stale token gets StaleLease and changes
        nothing); a budget outside that range is InvalidInput and changes nothing either.
        """
        partial = _partial_checkpoint(checkpoint_out, budget_done, checkpoint_invalid)

        def use_case(session: Session) -> Trial:
            study, trial = _lock_study_and_trial(session, trial_id, project_id)
            self._check_lease(trial, token)
            if partial is not None:
                _check_partial(trial, partial)
            reason = f"worker {trial.lease_owner} reported: {error}"
            self._requeue_or_fail(session, study, trial, reason, retryable, checkpoint_invalid, partial,
                                  drained=drained)
            return trial

        trial = self._ctx.run(use_case)
        self._ctx.on_work_available()
        return trial

    # --- expiry ---------------------------------------------------------------------

    def expire_leases(self) -> int:
        """Requeue (or fail) every trial whose lease ran out. Safe to run from several processes."""
        now = self._ctx.clock()
        expired = self._ctx.run(lambda s: repo.expired_trial_ids(s, now))
        requeued = 0
        for trial_id, study_id in expired:
            requeued += self._ctx.run(lambda s: self._expire_one(s, study_id, trial_id, now))
        if requeued:
            self._ctx.on_work_available()
        return requeued

    def extend_leases_after_restart(self) -> int:
        """Give every running lease at least one lease period from now; returns how many were extended.

        An API process calls this once at start-up, before its expiry sweeper first runs (finding
        F11): while no server was up, workers could not heartbeat, so every lease that ran out
        during the outage would otherwise be requeued at once, and the work in flight redone.
        Each running lease of a study then expires no earlier than now + that study's
        ``lease_seconds``; token and owner are unchanged, so the holder carries on with its next
        heartbeat. A worker that really died meanwhile has its trial requeued one lease period
        later than it would have been.

        Several API processes on one database: when one restarts while another keeps serving,
        the restarting one also extends the leases the other one serves. That is harmless for
        live workers (their heartbeats set the same kind of expiry) and delays the requeue of a
        dead worker's trial by at most one lease period per start-up; accepted. (A server that
        crash-loops faster than ``lease_seconds`` would keep postponing it: each start extends.)

        One transaction; study rows are locked in id order before their trials (the lock order
        of every use case), so it does not deadlock with a concurrent sweep or completion
        (``Context.run`` would retry it if it did)."""

        def use_case(session: Session) -> int:
            now = self._ctx.clock()
            extended = 0
            for study_id in repo.studies_with_running_trials(session):
                study = load_study(session, study_id, lock=True)
                lease_seconds = StudySpec.model_validate(study.spec).retry.lease_seconds
                extended += repo.extend_running_leases(session, study_id, now + timedelta(seconds=lease_seconds))
            return extended

        return self._ctx.run(use_case)

    def _expire_one(self, session: Session, study_id: int, trial_id: int, now: datetime) -> int:
        study = load_study(session, study_id, lock=True)
        trial = load_trial(session, trial_id, lock=True)
        expires = as_utc(trial.lease_expires_at)
        if trial.state != TrialState.RUNNING.value or expires is None or expires >= now:
            return 0  # another process got there first, or the worker heartbeated in time
        reason = f"lease of worker {trial.lease_owner} expired at {expires:%H:%M:%S} (no heartbeat)"
        self._requeue_or_fail(session, study, trial, reason, retryable=True, checkpoint_invalid=False)
        return 1

    def _requeue_or_fail(
        self, session: Session, study: Study, trial: Trial, reason: str, retryable: bool, checkpoint_invalid: bool,
        partial: PartialCheckpoint | None = None, drained: bool = False,
    ) -> None:
        now = self._ctx.clock()
        spec = StudySpec.model_validate(study.spec)
        trial.lease_token = None  # fencing: the old lease can no longer act
        trial.lease_expires_at = None
        trial.updated_at = now
        if study.status in (StudyStatus.CANCELLED.value, StudyStatus.FAILED.value):
            trial.state = TrialState.STOPPED.value
            repo.add_decision(session, study.id, trial.id, "stop", f"{reason}; study is {study.status}", now)
            return
        retryable = retryable or drained  # a drain past MAX_FREE_DRAINS still retries, counted
        free_drain = drained and trial.drains < MAX_FREE_DRAINS
        counted = trial.attempt - trial.drains  # attempts that count toward max_attempts, this one included
        if free_drain or (retryable and counted < spec.retry.max_attempts):
            if checkpoint_invalid:
                reason += "; " + _fall_back_to_earlier_checkpoint(session, trial)
            elif partial is not None:
                reason += "; " + _keep_partial_checkpoint(study, trial, partial)
            if free_drain:
                trial.drains += 1
                reason += "; a drain, not counted toward max_attempts"
            trial.attempt += 1  # always: a new lease attempt (fencing, its own checkpoint folder)
            trial.state = TrialState.PENDING.value
            # "of N": the last attempt this trial may reach, max_attempts plus the drains so far.
            repo.add_decision(session, study.id, trial.id, "requeue",
                              f"{reason}; requeued as attempt {trial.attempt} of "
                              f"{spec.retry.max_attempts + trial.drains} from budget {trial.budget_done:g}",
                              now, trial.attempt)
            return
        why = ("not retryable" if not retryable
               else f"attempt {trial.attempt} of {spec.retry.max_attempts + trial.drains}")
        trial.state = TrialState.FAILED.value
        trial.error = reason
        repo.add_decision(session, study.id, trial.id, "fail", f"{reason} ({why})", now, trial.attempt)
        StudyDriver(self._ctx, session, study).on_lost(trial)

    # --- checks ---------------------------------------------------------------------

    def _leased(self, session: Session, trial_id: int, token: str, project_id: int | None) -> tuple[Trial, Study]:
        """The trial, locked (a lease expiry committed while we waited shows: its token is gone), and its study."""
        trial = load_trial(session, trial_id, lock=True)
        study = load_study(session, trial.study_id, project_id=project_id)
        self._check_lease(trial, token)
        return trial, study

    @staticmethod
    def _check_lease(trial: Trial, token: str) -> None:
        _check_token(trial.id, trial.lease_token, trial.state, token)


def _lock_study_and_trial(session: Session, trial_id: int, project_id: int | None) -> tuple[Study, Trial]:
    """Lock the trial's study, then the trial (the lock order), each read as it is once locked."""
    study_id = repo.study_id_of_trial(session, trial_id)
    if study_id is None:
        raise NotFound(f"trial {trial_id} does not exist")
    study = load_study(session, study_id, lock=True, project_id=project_id)
    return study, load_trial(session, trial_id, lock=True)


def _check_token(trial_id: int, current: str | None, state: str, token: str) -> None:
    if current != token:
        raise StaleLease(
            f"lease token for trial {trial_id} is stale: the trial was re-leased or requeued; stop working on it"
        )
    if state != TrialState.RUNNING.value:
        raise Conflict(f"trial {trial_id} is {state}, not running; it accepts no more reports")


def _objective(session: Session, trial: Trial, metrics: dict[str, Any], metric: str, slice_start: float) -> float:
    """The objective from the completion, else from the last report of this slice (this attempt's,
    past the budget the slice started from)."""
    value = metrics.get(metric)
    if value is None:
        last = repo.last_report(session, trial.id, trial.attempt, slice_start)
        value = last.metrics.get(metric) if last is not None else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidInput(
            f"the completion of trial {trial.id} has no objective metric {metric!r} "
            f"(in `metrics` or the last report of this slice, attempt {trial.attempt} past budget "
            f"{slice_start:g}); send it in `metrics`"
        )
    try:
        return float(value)
    except OverflowError:  # an integer past float range: as good as infinite, so the run diverged
        return math.inf if value > 0 else -math.inf


def _already_done_with(trial: Trial, token: str) -> bool:
    return trial.lease_token == token and trial.state != TrialState.RUNNING.value


def _directive(study: Study) -> Directive:
    return _directive_for(study.status)


def _directive_for(status: str) -> Directive:
    return "stop" if status in (StudyStatus.CANCELLED.value, StudyStatus.FAILED.value,
                                StudyStatus.COMPLETED.value) else "continue"


def _finite_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON columns cannot hold NaN/inf: store them as null (the reading side shows them as missing)."""
    return {
        key: (None if not _finite_number(value) else value)
        for key, value in metrics.items()
    }


def _finite_number(value: Any) -> bool:
    """False for NaN, infinities and integers past float range (readers convert to float)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return False
    return True


def _fall_back_to_earlier_checkpoint(session: Session, trial: Trial) -> str:
    earlier = [
        r for r in repo.rung_results_of(session, trial.id)
        if r.checkpoint_uri and r.budget < trial.budget_done and r.checkpoint_uri != trial.checkpoint_uri
    ]
    if earlier:
        trial.checkpoint_uri, trial.budget_done = earlier[-1].checkpoint_uri, earlier[-1].budget
        return f"checkpoint unusable, resuming from the one at budget {trial.budget_done:g}"
    trial.checkpoint_uri, trial.budget_done = None, 0.0
    return "checkpoint unusable and no earlier one, restarting from scratch"


def _partial_checkpoint(
    uri: str | None, budget_done: float | None, checkpoint_invalid: bool
) -> PartialCheckpoint | None:
    """The shape checks of ``fail``'s partial checkpoint (no database needed)."""
    if uri is None and budget_done is None:
        return None
    if uri is None or budget_done is None:
        raise InvalidInput("checkpoint_out and budget_done go together: give both (a partial checkpoint) or neither")
    if checkpoint_invalid:
        raise InvalidInput("checkpoint_invalid says the slice could not start from its checkpoint, so it cannot "
                           "have written a new one: send checkpoint_out without checkpoint_invalid")
    if not uri.strip():
        raise InvalidInput("checkpoint_out is empty")
    if not math.isfinite(budget_done):
        raise InvalidInput(f"budget_done must be a finite number, got {budget_done}")
    return PartialCheckpoint(uri, float(budget_done))


# Drains that do not count toward max_attempts, per trial. Past this a drain counts like a failure:
# a worker pool that shuts down whenever it runs this trial must not requeue it forever.
MAX_FREE_DRAINS = 20


def _check_partial(trial: Trial, partial: PartialCheckpoint) -> None:
    """A partial checkpoint lies strictly inside the leased slice (trial.budget_done -> budget_target)."""
    if partial.budget_done <= trial.budget_done:
        raise InvalidInput(
            f"budget_done {partial.budget_done:g} is not past the budget the lease of trial {trial.id} started "
            f"from ({trial.budget_done:g}); release the trial without a checkpoint"
        )
    if partial.budget_done >= trial.budget_target:
        raise InvalidInput(
            f"budget_done {partial.budget_done:g} reaches the target budget of trial {trial.id} "
            f"({trial.budget_target:g}); complete the trial instead of failing it"
        )


def _keep_partial_checkpoint(study: Study, trial: Trial, partial: PartialCheckpoint) -> str:
    """The retry resumes from the partial checkpoint: it trains only the rest of the slice.

    The budget trained so far is charged now; the completion charges the remainder
    (``budget_target - budget_done``), so the total is what one uninterrupted slice costs.
    The rung checkpoints stay in ``rung_results``: if the partial one turns out unusable,
    ``checkpoint_invalid`` falls back to the last of them.
    """
    study.budget_spent += partial.budget_done - trial.budget_done
    trial.checkpoint_uri, trial.budget_done = partial.uri, partial.budget_done
    return f"kept its checkpoint at budget {partial.budget_done:g} of {trial.budget_target:g}"
