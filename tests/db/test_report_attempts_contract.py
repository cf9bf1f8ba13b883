"""Reports of a requeued trial: the attempt that completes owns the curve and the objective (SQLite and PostgreSQL).

A requeued trial resumes from its checkpoint and trains the steps after it again, reporting the
same step numbers. Those reports used to be dropped as repeats, so the stored curve kept the dead
attempt's values, and a completion that leaves the objective to the last report was scored with
the dead attempt's value while the checkpoint recorded was the new attempt's.
"""

from __future__ import annotations

import pytest

from hpo_service.errors import InvalidInput
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec


def requeue(service: Service) -> None:
    service.clock.advance(31)
    assert service.protocol.expire_leases() == 1


def test_a_later_attempt_replaces_the_reports_of_the_steps_it_trains_again(service: Service) -> None:
    service.studies.create(make_spec(retry={"lease_seconds": 30, "max_attempts": 3}))
    first = service.protocol.lease("w1")
    assert first is not None and first.trial.budget_target == 1
    trial_id, dead_token = first.trial.id, first.trial.lease_token
    service.protocol.report(trial_id, dead_token, [(0.5, {"loss": 0.9}), (1.0, {"loss": 0.1})])
    requeue(service)  # the worker died before completing

    second = service.protocol.lease("w2")
    assert second is not None and second.trial.id == trial_id and second.trial.attempt == 2
    service.protocol.report(trial_id, second.trial.lease_token, [(0.5, {"loss": 0.8}), (1.0, {"loss": 0.7})])
    service.protocol.report(trial_id, second.trial.lease_token, [(1.0, {"loss": 0.0})])  # a retry: a no-op
    trial = service.protocol.complete(trial_id, second.trial.lease_token, {}, None)  # objective: the last report

    assert trial.value == 0.7
    detail = service.studies.trial(trial_id)
    assert [(r.step, r.attempt, r.metrics["loss"]) for r in detail.reports] == [(0.5, 2, 0.8), (1.0, 2, 0.7)]
    assert [r.value for r in detail.rung_results] == [0.7]


def test_a_completion_without_the_objective_is_refused_when_its_attempt_reported_nothing(service: Service) -> None:
    service.studies.create(make_spec(retry={"lease_seconds": 30, "max_attempts": 3}))
    first = service.protocol.lease("w1")
    assert first is not None
    service.protocol.report(first.trial.id, first.trial.lease_token, [(1.0, {"loss": 0.1})])
    requeue(service)
    second = service.protocol.lease("w2")
    assert second is not None

    with pytest.raises(InvalidInput, match="last report of this slice, attempt 2"):  # not the dead attempt's 0.1
        service.protocol.complete(second.trial.id, second.trial.lease_token, {}, None)
    assert service.studies.trial(second.trial.id).trial.state == "running"  # nothing changed


def test_a_promoted_slice_is_not_scored_with_the_slice_before_it(service: Service) -> None:
    """A slice that resumed at budget 1 and completes without the objective and without a report
    of its own was scored with the last report of the slice before it (step 1)."""
    service.studies.create(make_spec())  # hyperband 1..9: bracket 0 puts 9 trials at budget 1
    first = None
    for number in range(9):
        grant = service.protocol.lease("w1")
        assert grant is not None and grant.trial.budget_target == 1
        first = first or grant.trial.id
        loss = 0.01 if grant.trial.id == first else 0.5 + number / 100  # the first one is the best
        service.protocol.report(grant.trial.id, grant.trial.lease_token, [(1.0, {"loss": loss})])
        service.protocol.complete(grant.trial.id, grant.trial.lease_token, {"loss": loss}, "file:///c/1")
    promoted = service.protocol.lease("w1")
    assert promoted is not None and promoted.trial.id == first and promoted.trial.budget_done == 1

    with pytest.raises(InvalidInput, match="last report of this slice, attempt 1 past budget 1"):
        service.protocol.complete(first, promoted.trial.lease_token, {}, "file:///c/3")
    service.protocol.report(first, promoted.trial.lease_token, [(3.0, {"loss": 0.02})])
    assert service.protocol.complete(first, promoted.trial.lease_token, {}, "file:///c/3").value == 0.02
