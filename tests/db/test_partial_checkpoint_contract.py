"""`fail` with a partial checkpoint (a drained slice), run on SQLite and on PostgreSQL.

A worker that stops mid-slice sends ``checkpoint_out`` + ``budget_done`` with its retryable
failure; the retry then resumes from that checkpoint and trains only the rest of the slice.
Only the current lease holder may do this, a budget outside the leased slice is refused, and
both refusals change nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from hpo_service.api.convert import lease_out
from hpo_service.domain.states import TrialState
from hpo_service.errors import InvalidInput, StaleLease
from hpo_service.orchestration.protocol import LeaseGrant
from tests.db.conftest import Service
from tests.db.test_protocol_contract import loss_of, make_spec, run_segment

PARTIAL = "file:///tmp/ckpt/partial-2"


def promoted_lease(service: Service, **spec: Any) -> LeaseGrant:
    """Hyperband R=9, eta=3: after the nine rung-0 trials, a promoted trial leased for budget 1 -> 3."""
    study = service.studies.create(make_spec(**spec))
    for _ in range(9):
        run_segment(service)
    grant = service.protocol.lease("w1")
    assert grant is not None
    assert (grant.trial.study_id, grant.trial.rung, grant.trial.budget_done, grant.trial.budget_target) == (
        study.id, 1, 1.0, 3.0)
    service.protocol.report(grant.trial.id, grant.trial.lease_token, [(2.0, {"loss": 0.5})])
    return grant


def lease_trial(service: Service, trial_id: int, worker: str = "w2") -> LeaseGrant:
    """Lease until ``trial_id`` comes up, completing the others' slices on the way."""
    for _ in range(20):
        grant = service.protocol.lease(worker)
        assert grant is not None
        if grant.trial.id == trial_id:
            return grant
        trial, token = grant.trial, grant.trial.lease_token
        service.protocol.complete(trial.id, token, {"loss": loss_of(trial.params, trial.budget_target)},
                                  f"file:///tmp/ckpt/{trial.id}/{trial.budget_target:g}")
    raise AssertionError(f"trial {trial_id} was never leased again")


def snapshot(service: Service, trial_id: int) -> tuple[Any, ...]:
    detail = service.studies.trial(trial_id)
    t = detail.trial
    spent = service.studies.get(t.study_id).study.budget_spent
    return (t.state, t.attempt, t.lease_owner, t.lease_token, t.budget_done, t.checkpoint_uri, spent,
            [(d.kind, d.reason) for d in detail.decisions])


def test_a_drained_trial_resumes_from_its_partial_checkpoint(service: Service) -> None:
    grant = promoted_lease(service)
    trial_id, study_id = grant.trial.id, grant.trial.study_id
    spent_before = service.studies.get(study_id).study.budget_spent

    trial = service.protocol.fail(trial_id, grant.trial.lease_token, "worker is shutting down", retryable=True,
                                  checkpoint_out=PARTIAL, budget_done=2.0)

    assert (trial.state, trial.attempt, trial.budget_done, trial.checkpoint_uri) == (
        TrialState.PENDING.value, 2, 2.0, PARTIAL)
    [requeue] = [d for d in service.studies.trial(trial_id).decisions if d.kind == "requeue"]
    assert requeue.reason == ("worker w1 reported: worker is shutting down; kept its checkpoint at budget 2 of 3; "
                              "requeued as attempt 2 of 2 from budget 2")
    # The budget trained so far is charged now; the completion charges only the rest.
    assert service.studies.get(study_id).study.budget_spent == spent_before + 1.0

    retry = lease_out(lease_trial(service, trial_id))
    assert (retry.attempt, retry.budget_from, retry.budget_to, retry.checkpoint_in) == (2, 2.0, 3.0, PARTIAL)
    service.protocol.report(trial_id, retry.lease_token, [(3.0, {"loss": 0.4})])
    spent_before_completion = service.studies.get(study_id).study.budget_spent
    done = service.protocol.complete(trial_id, retry.lease_token, {"loss": 0.4}, "file:///tmp/ckpt/final-3")
    assert done.budget_done == 3.0 and done.state != TrialState.RUNNING.value
    # The completion charges the rest (3 - 2): with the 1 charged at the drain, the slice 1 -> 3 cost 2.
    assert service.studies.get(study_id).study.budget_spent == spent_before_completion + 1.0
    detail = service.studies.trial(trial_id)
    assert [(r.rung, r.budget, r.checkpoint_uri) for r in detail.rung_results][-1] == (
        1, 3.0, "file:///tmp/ckpt/final-3")
    assert [(r.step, r.attempt) for r in detail.reports if r.step > 1] == [(2.0, 1), (3.0, 2)]


def test_a_stale_token_cannot_leave_a_checkpoint(service: Service) -> None:
    grant = promoted_lease(service)
    trial_id, old_token = grant.trial.id, grant.trial.lease_token
    service.clock.advance(31)
    assert service.protocol.expire_leases() == 1
    regrant = lease_trial(service, trial_id)
    before = snapshot(service, trial_id)
    assert before[:3] == (TrialState.RUNNING.value, 2, "w2")
    with pytest.raises(StaleLease):
        service.protocol.fail(trial_id, old_token, "worker is shutting down", retryable=True,
                              checkpoint_out=PARTIAL, budget_done=2.0)
    assert snapshot(service, trial_id) == before
    # The holder's own release works, and a repeated call with its (now cleared) token is stale too.
    service.protocol.fail(trial_id, regrant.trial.lease_token, "worker is shutting down", retryable=True,
                          checkpoint_out=PARTIAL, budget_done=2.0)
    after = snapshot(service, trial_id)
    with pytest.raises(StaleLease):
        service.protocol.fail(trial_id, regrant.trial.lease_token, "again", retryable=True,
                              checkpoint_out="file:///tmp/other", budget_done=2.5)
    assert snapshot(service, trial_id) == after


@pytest.mark.parametrize(("checkpoint_out", "budget_done", "invalid", "message"), [
    (PARTIAL, 1.0, False, "is not past the budget the lease of trial"),  # = budget_from: nothing trained
    (PARTIAL, 0.5, False, "is not past the budget the lease of trial"),
    (PARTIAL, 3.0, False, "complete the trial instead"),  # = budget_to: the slice is whole
    (PARTIAL, 4.0, False, "complete the trial instead"),
    (PARTIAL, None, False, "go together"),
    (None, 2.0, False, "go together"),
    (PARTIAL, 2.0, True, "without checkpoint_invalid"),
    (PARTIAL, float("nan"), False, "finite"),
    ("  ", 2.0, False, "empty"),
], ids=["at-start", "before-start", "at-target", "past-target", "no-budget", "no-uri", "with-invalid", "nan",
        "blank-uri"])
def test_a_partial_checkpoint_outside_the_slice_is_refused_and_changes_nothing(
    service: Service, checkpoint_out: str | None, budget_done: float | None, invalid: bool, message: str,
) -> None:
    grant = promoted_lease(service)
    trial_id, token = grant.trial.id, grant.trial.lease_token
    before = snapshot(service, trial_id)
    with pytest.raises(InvalidInput, match=message):
        service.protocol.fail(trial_id, token, "worker is shutting down", retryable=True,
                              checkpoint_invalid=invalid, checkpoint_out=checkpoint_out, budget_done=budget_done)
    assert snapshot(service, trial_id) == before
    # The lease is still the worker's: it can still release the trial properly.
    assert service.protocol.fail(trial_id, token, "worker is shutting down", retryable=True).budget_done == 1.0


def test_an_unusable_partial_checkpoint_falls_back_to_the_rung_checkpoint(service: Service) -> None:
    grant = promoted_lease(service, retry={"lease_seconds": 30, "max_attempts": 3})
    trial_id = grant.trial.id
    rung_checkpoint = grant.trial.checkpoint_uri
    service.protocol.fail(trial_id, grant.trial.lease_token, "worker is shutting down", retryable=True,
                          checkpoint_out=PARTIAL, budget_done=2.0)
    retry = lease_trial(service, trial_id)
    assert (retry.trial.budget_done, retry.trial.checkpoint_uri) == (2.0, PARTIAL)
    trial = service.protocol.fail(trial_id, retry.trial.lease_token, "checkpoint unusable: corrupt", retryable=True,
                                  checkpoint_invalid=True)
    assert (trial.state, trial.attempt, trial.budget_done, trial.checkpoint_uri) == (
        TrialState.PENDING.value, 3, 1.0, rung_checkpoint)
    reasons = [d.reason for d in service.studies.trial(trial_id).decisions if d.kind == "requeue"]
    assert "checkpoint unusable, resuming from the one at budget 1" in reasons[-1]
    third = lease_out(lease_trial(service, trial_id))
    assert (third.budget_from, third.budget_to, third.checkpoint_in) == (1.0, 3.0, rung_checkpoint)


def test_a_trial_out_of_attempts_fails_and_ignores_its_partial_checkpoint(service: Service) -> None:
    grant = promoted_lease(service)  # max_attempts 2
    trial_id = grant.trial.id
    service.protocol.fail(trial_id, grant.trial.lease_token, "worker is shutting down", retryable=True,
                          checkpoint_out=PARTIAL, budget_done=2.0)
    retry = lease_trial(service, trial_id)
    spent = service.studies.get(retry.trial.study_id).study.budget_spent
    trial = service.protocol.fail(trial_id, retry.trial.lease_token, "worker is shutting down", retryable=True,
                                  checkpoint_out="file:///tmp/ckpt/partial-2.5", budget_done=2.5)
    assert (trial.state, trial.budget_done, trial.checkpoint_uri) == (TrialState.FAILED.value, 2.0, PARTIAL)
    assert service.studies.get(retry.trial.study_id).study.budget_spent == spent
