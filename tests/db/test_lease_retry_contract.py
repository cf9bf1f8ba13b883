"""A lease request retried after its response was lost gets the same grant (SQLite and PostgreSQL).

The worker sends an Idempotency-Key with each lease request and repeats it on retries. The
first try may have been granted a trial whose response never arrived (a timeout, a reset
connection); without the key the retry leased a second trial, and the first stayed leased to
a worker that never learned its token until the lease expired, using up one of its attempts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from hpo_service.orchestration.context import as_utc
from hpo_service.orchestration.protocol import TrialProtocol
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec, run_segment


def test_a_retried_lease_request_gets_the_grant_its_first_try_got(service: Service) -> None:
    study = service.studies.create(make_spec())
    first = service.protocol.lease("w1", request_key="key-1")
    assert first is not None
    trial_id, token = first.trial.id, first.trial.lease_token
    service.clock.advance(20)  # most of the 30 s lease gone while the worker waited for the answer

    again = service.protocol.lease("w1", request_key="key-1")

    assert again is not None
    assert (again.trial.id, again.trial.lease_token) == (trial_id, token)
    stored = service.studies.trial(trial_id).trial
    assert as_utc(stored.lease_expires_at) == service.clock() + timedelta(seconds=30)  # renewed from now
    assert stored.lease_token == token
    summary = service.studies.get(study.id)
    assert summary.study.trials_created == 1  # nothing new was decided
    assert summary.trial_counts == {"running": 1}


def test_a_retry_served_while_its_first_try_still_claims_gets_one_grant(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client gave up on a long poll and retried; the first try, still being served, then
    finds work too. Both had looked for an earlier grant and found none."""
    study = service.studies.create(make_spec())
    claim = TrialProtocol._claim
    retried: list[Any] = []

    def claim_after_the_retry_is_granted(self: TrialProtocol, *args: Any) -> Any:
        if not retried:  # the first try's claim: the retry overtakes it and commits its grant
            retried.append(None)
            retried[0] = service.protocol.lease("w1", request_key="key-1")
        return claim(self, *args)

    monkeypatch.setattr(TrialProtocol, "_claim", claim_after_the_retry_is_granted)
    first_try = service.protocol.lease("w1", request_key="key-1")

    retry = retried[0]
    assert retry is not None and first_try is not None
    assert (first_try.trial.id, first_try.trial.lease_token) == (retry.trial.id, retry.trial.lease_token)
    summary = service.studies.get(study.id)
    assert summary.study.trials_created == 1
    assert summary.trial_counts == {"running": 1}


def test_the_key_belongs_to_one_worker_and_one_live_grant(service: Service) -> None:
    service.studies.create(make_spec())
    first = service.protocol.lease("w1", request_key="key-1")
    assert first is not None

    other_worker = service.protocol.lease("w2", request_key="key-1")  # same key, another worker
    assert other_worker is not None and other_worker.trial.id != first.trial.id

    service.protocol.complete(first.trial.id, first.trial.lease_token, {"loss": 0.5}, None)
    after_it_ended = service.protocol.lease("w1", request_key="key-1")  # that grant is over: new work
    assert after_it_ended is not None
    assert after_it_ended.trial.id not in (first.trial.id, other_worker.trial.id)


def test_a_grant_that_expired_and_was_requeued_is_not_handed_back(service: Service) -> None:
    service.studies.create(make_spec())
    first = service.protocol.lease("w1", request_key="key-1")
    assert first is not None
    service.clock.advance(31)
    assert service.protocol.expire_leases() == 1

    retried = service.protocol.lease("w1", request_key="key-1")  # a normal lease: the requeued trial

    assert retried is not None and retried.trial.id == first.trial.id
    assert retried.trial.attempt == 2 and retried.trial.lease_token != first.trial.lease_token


def test_leases_without_a_key_are_unchanged(service: Service) -> None:
    service.studies.create(make_spec())
    first = service.protocol.lease("w1")
    second = service.protocol.lease("w1")
    assert first is not None and second is not None and first.trial.id != second.trial.id
    run_segment(service, "w2")  # the rest of the protocol works as before
