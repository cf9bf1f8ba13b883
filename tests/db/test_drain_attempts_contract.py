"""A drain (`fail(..., drained=True)`: the worker shut down, the trial did nothing wrong) does not
use up one of the trial's attempts; a failure or a lease expiry does. Run on SQLite and PostgreSQL.

Every release still starts a new lease attempt (the fencing token and the per-attempt checkpoint
folder depend on it), so ``attempt`` keeps counting every lease and ``drains`` the ones that
ended in a drain; ``max_attempts`` applies to ``attempt - drains``.
"""

from __future__ import annotations

import pytest

from hpo_service.api.convert import trial_out
from hpo_service.domain.states import StudyStatus, TrialState
from hpo_service.errors import StaleLease
from hpo_service.orchestration.protocol import MAX_FREE_DRAINS
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec

RETRY = {"lease_seconds": 30, "max_attempts": 2}


def lease_again(service: Service, trial_id: int) -> str:
    grant = service.protocol.lease("w")
    assert grant is not None and grant.trial.id == trial_id, "the released trial is the one handed out next"
    return str(grant.trial.lease_token)


def release(service: Service, trial_id: int, token: str, how: str) -> None:
    if how == "drain":
        service.protocol.fail(trial_id, token, "worker is shutting down", retryable=True, drained=True)
    elif how == "failure":
        service.protocol.fail(trial_id, token, "CUDA error", retryable=True)
    else:  # the worker died: its lease runs out
        service.clock.advance(RETRY["lease_seconds"] + 1)
        assert service.protocol.expire_leases() == 1


@pytest.mark.parametrize(
    ("releases", "state", "attempt", "drains"),
    [
        pytest.param(["drain"], TrialState.PENDING, 2, 1, id="one drain"),
        pytest.param(["drain"] * 5, TrialState.PENDING, 6, 5, id="drains never use up max_attempts=2"),
        pytest.param(["failure", "failure"], TrialState.FAILED, 2, 0, id="two failures use it up"),
        pytest.param(["drain", "failure", "drain", "failure"], TrialState.FAILED, 4, 2,
                     id="drains between failures do not count"),
        pytest.param(["drain", "expiry", "drain", "expiry"], TrialState.FAILED, 4, 2,
                     id="a lease expiry counts like a failure"),
        pytest.param(["failure", "drain", "drain"], TrialState.PENDING, 4, 2,
                     id="a drain on the last counted attempt still requeues"),
    ],
)
def test_drains_do_not_count_toward_max_attempts(service: Service, releases: list[str], state: TrialState,
                                                 attempt: int, drains: int) -> None:
    service.studies.create(make_spec(retry=RETRY))
    grant = service.protocol.lease("w")
    assert grant is not None
    trial_id, token = grant.trial.id, str(grant.trial.lease_token)
    for index, how in enumerate(releases):
        release(service, trial_id, token, how)
        if index < len(releases) - 1:
            token = lease_again(service, trial_id)
    detail = service.studies.trial(trial_id)
    assert (detail.trial.state, detail.trial.attempt, detail.trial.drains) == (state.value, attempt, drains)
    assert trial_out(detail.trial).drains == drains  # what GET /trials/{id} shows
    requeues = [d.reason for d in detail.decisions if d.kind == "requeue"]
    assert len(requeues) == len(releases) - (state == TrialState.FAILED)  # every release is explained
    assert sum("a drain, not counted toward max_attempts" in reason for reason in requeues) == drains, requeues
    if requeues:  # "of N": the last attempt the trial may reach, max_attempts plus its drains so far
        assert requeues[-1].endswith(f"of {RETRY['max_attempts'] + drains} from budget 0"), requeues[-1]


def test_past_the_free_drains_a_drain_counts(service: Service) -> None:
    service.studies.create(make_spec(retry=RETRY))
    grant = service.protocol.lease("w")
    assert grant is not None
    trial_id, token = grant.trial.id, str(grant.trial.lease_token)
    for _ in range(MAX_FREE_DRAINS + RETRY["max_attempts"] - 1):
        release(service, trial_id, token, "drain")
        token = lease_again(service, trial_id)
    release(service, trial_id, token, "drain")  # the second counted attempt: the last one
    detail = service.studies.trial(trial_id)
    assert (detail.trial.state, detail.trial.drains) == (TrialState.FAILED.value, MAX_FREE_DRAINS)
    last = MAX_FREE_DRAINS + RETRY["max_attempts"]
    assert detail.decisions[-1].kind == "fail" and f"attempt {last} of {last}" in detail.decisions[-1].reason


def test_a_drain_with_a_stale_token_changes_nothing(service: Service) -> None:
    service.studies.create(make_spec(retry=RETRY))
    grant = service.protocol.lease("w")
    assert grant is not None
    trial_id, old_token = grant.trial.id, str(grant.trial.lease_token)
    release(service, trial_id, old_token, "failure")
    lease_again(service, trial_id)
    before = service.studies.trial(trial_id)
    with pytest.raises(StaleLease):
        service.protocol.fail(trial_id, old_token, "worker is shutting down", retryable=True, drained=True)
    after = service.studies.trial(trial_id)
    assert (after.trial.state, after.trial.attempt, after.trial.drains, after.trial.lease_token) == (
        before.trial.state, before.trial.attempt, before.trial.drains, before.trial.lease_token)
    assert len(after.decisions) == len(before.decisions)


def test_a_drain_in_a_cancelled_study_stops_the_trial(service: Service) -> None:
    study = service.studies.create(make_spec(retry=RETRY))
    grant = service.protocol.lease("w")
    assert grant is not None
    service.studies.cancel(study.id)
    service.protocol.fail(grant.trial.id, str(grant.trial.lease_token), "worker is shutting down",
                          retryable=True, drained=True)
    assert service.studies.trial(grant.trial.id).trial.state == TrialState.STOPPED.value
    assert service.studies.get(study.id).study.status == StudyStatus.CANCELLED.value
