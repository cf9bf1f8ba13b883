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

    with pytest.raises(InvalidInput, match="last report of attempt 2"):  # not the dead attempt's 0.1
        service.protocol.complete(second.trial.id, second.trial.lease_token, {}, None)
    assert service.studies.trial(second.trial.id).trial.state == "running"  # nothing changed
