"""Leases survive an API restart longer than the lease (finding F11), on SQLite and PostgreSQL.

While no API server is up, workers cannot heartbeat, so their leases run out. At start-up the
server extends every running lease once (`TrialProtocol.extend_leases_after_restart`) to at
least one lease period from now, before its expiry sweeper first runs. Time is moved with the
fake clock, never slept.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from hpo_service.domain.states import TrialState
from hpo_service.errors import StaleLease
from hpo_service.orchestration.context import as_utc
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec

LEASE_S = 30


def lease_one(service: Service, worker: str = "w1", **spec: Any) -> tuple[int, str]:
    service.studies.create(make_spec(retry={"lease_seconds": LEASE_S, "max_attempts": 3}, **spec))
    grant = service.protocol.lease(worker)
    assert grant is not None and grant.trial.lease_token is not None
    return grant.trial.id, grant.trial.lease_token


def test_a_lease_that_ran_out_while_the_server_was_down_is_kept_by_its_worker(service: Service) -> None:
    trial_id, token = lease_one(service)
    service.clock.advance(4 * LEASE_S)  # the server was down for four lease periods
    assert service.protocol.extend_leases_after_restart() == 1
    assert service.protocol.expire_leases() == 0  # the first sweep after start-up requeues nothing
    expires = as_utc(service.studies.trial(trial_id).trial.lease_expires_at)
    assert expires == service.clock() + timedelta(seconds=LEASE_S)
    # The worker's first heartbeat after the outage gets through, and its lease carries on.
    service.clock.advance(LEASE_S - 1)
    assert service.protocol.heartbeat(trial_id, token).expires_at == service.clock() + timedelta(seconds=LEASE_S)
    service.protocol.report(trial_id, token, [(1.0, {"loss": 0.5})])
    done = service.protocol.complete(trial_id, token, {"loss": 0.5}, None)
    assert done.state != TrialState.RUNNING.value and done.attempt == 1
    assert [d.kind for d in service.studies.trial(trial_id).decisions if d.kind == "requeue"] == []


def test_a_dead_workers_trial_is_requeued_one_lease_period_after_the_restart(service: Service) -> None:
    trial_id, token = lease_one(service)
    service.clock.advance(4 * LEASE_S)
    assert service.protocol.extend_leases_after_restart() == 1
    service.clock.advance(LEASE_S - 1)
    assert service.protocol.expire_leases() == 0  # still inside the extended period
    service.clock.advance(2)
    assert service.protocol.expire_leases() == 1  # no heartbeat came: requeued, as before, one period later
    detail = service.studies.trial(trial_id)
    assert detail.trial.state == TrialState.PENDING.value and detail.trial.attempt == 2
    assert "lease of worker w1 expired" in detail.decisions[-1].reason
    with pytest.raises(StaleLease):
        service.protocol.heartbeat(trial_id, token)


def test_each_study_extends_by_its_own_lease_seconds_and_only_running_trials(service: Service) -> None:
    short = service.studies.create(make_spec(name="short", retry={"lease_seconds": 10, "max_attempts": 3}))
    long = service.studies.create(make_spec(name="long", retry={"lease_seconds": 100, "max_attempts": 3}))
    held = {}
    for study in (short, long):
        grant = service.protocol.lease("w", study_ids=[study.id])
        assert grant is not None
        held[study.id] = grant.trial.id
    pending = service.protocol.lease("w", study_ids=[short.id])  # a third lease, given back at once
    assert pending is not None and pending.trial.lease_token is not None
    service.protocol.fail(pending.trial.id, pending.trial.lease_token, "released", retryable=True)
    service.clock.advance(5)  # a short outage: short's lease has 5 s left, long's 95 s
    assert service.protocol.extend_leases_after_restart() == 2
    now = service.clock()
    assert as_utc(service.studies.trial(held[short.id]).trial.lease_expires_at) == now + timedelta(seconds=10)
    assert as_utc(service.studies.trial(held[long.id]).trial.lease_expires_at) == now + timedelta(seconds=100)
    released = service.studies.trial(pending.trial.id).trial
    assert released.state == TrialState.PENDING.value and released.lease_expires_at is None
    assert service.protocol.extend_leases_after_restart() == 0  # once is enough: nothing moves again


def test_nothing_to_extend_on_an_empty_database(service: Service) -> None:
    assert service.protocol.extend_leases_after_restart() == 0
