"""The trial protocol's contract, run on SQLite and on PostgreSQL (ids [sqlite], [postgresql])."""

from __future__ import annotations

from typing import Any

import pytest

from hpo_service.domain.spec import StudySpec
from hpo_service.domain.states import StudyStatus, TrialState
from hpo_service.errors import Conflict, InvalidInput, NotFound, StaleLease
from tests.db.conftest import Service


def make_spec(**overrides: Any) -> StudySpec:
    spec: dict[str, Any] = {
        "name": "contract",
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
        "sampler": {"kind": "random", "seed": 1},
        "trainer": {"name": "synthetic", "params": {}},
        "retry": {"lease_seconds": 30, "max_attempts": 2},
    }
    for key, value in overrides.items():
        spec[key] = value
    return StudySpec.model_validate(spec)


def loss_of(params: dict[str, Any], budget: float) -> float:
    return abs(params["lr"] - 0.01) + 1.0 / (1.0 + budget)


def run_segment(service: Service, worker: str = "w1") -> Any:
    grant = service.protocol.lease(worker)
    assert grant is not None
    trial = grant.trial
    token = trial.lease_token
    for step in range(int(trial.budget_done) + 1, int(trial.budget_target) + 1):
        ack = service.protocol.report(trial.id, token, [(float(step), {"loss": loss_of(trial.params, step)})])
        assert ack.directive == "continue"
    return service.protocol.complete(trial.id, token, {"loss": loss_of(trial.params, trial.budget_target)},
                                     f"file:///tmp/ckpt/{trial.id}/{trial.budget_target:g}")


def test_hyperband_study_runs_to_completion_with_promotions(service: Service) -> None:
    study = service.studies.create(make_spec())
    segments = 0
    while service.studies.get(study.id).study.status == StudyStatus.RUNNING.value:
        run_segment(service)
        segments += 1
        assert segments < 100
    summary = service.studies.get(study.id)
    # R=9, eta=3: brackets of 9, 5 and 3 trials (Li et al.'s formula).
    assert summary.study.trials_created == 9 + 5 + 3
    assert summary.trial_counts.get("pending", 0) == summary.trial_counts.get("running", 0) == 0
    assert sum(summary.trial_counts.values()) == 17
    kinds = [d.kind for d in service.studies.decisions(study.id)]
    assert kinds.count("promote") == (3 + 1) + 1  # bracket s=2: 9->3->1; s=1: 5->1; s=0: none
    assert kinds.count("finish") == 1 + 1 + 3
    assert kinds[-1] == "completed"
    best_trial, best = service.studies.best(study.id)
    assert best.budget == 9
    assert best_trial.state == TrialState.COMPLETED.value


def test_promoted_trial_resumes_from_its_checkpoint(service: Service) -> None:
    service.studies.create(make_spec())
    for _ in range(9):
        run_segment(service)  # bracket s=2, rung 0: all nine finish, three are promoted
    grant = service.protocol.lease("w2")
    assert grant is not None
    trial = grant.trial
    assert (trial.rung, trial.budget_done, trial.budget_target) == (1, 1.0, 3.0)
    assert trial.checkpoint_uri == f"file:///tmp/ckpt/{trial.id}/1"


def test_stale_lease_token_is_refused_and_changes_nothing(service: Service) -> None:
    service.studies.create(make_spec())
    grant = service.protocol.lease("w1")
    assert grant is not None
    trial_id, old_token = grant.trial.id, grant.trial.lease_token
    service.clock.advance(31)
    assert service.protocol.expire_leases() == 1
    regrant = service.protocol.lease("w2")
    assert regrant is not None and regrant.trial.id == trial_id and regrant.trial.attempt == 2
    for call in (
        lambda: service.protocol.report(trial_id, old_token, [(1.0, {"loss": 0.5})]),
        lambda: service.protocol.heartbeat(trial_id, old_token),
        lambda: service.protocol.complete(trial_id, old_token, {"loss": 0.5}, None),
        lambda: service.protocol.fail(trial_id, old_token, "boom", retryable=True),
    ):
        with pytest.raises(StaleLease):
            call()
    detail = service.studies.trial(trial_id)
    assert detail.trial.state == TrialState.RUNNING.value
    assert detail.trial.lease_owner == "w2"
    assert detail.reports == [] and detail.rung_results == []


def test_repeated_reports_and_completions_are_no_ops(service: Service) -> None:
    service.studies.create(make_spec())
    grant = service.protocol.lease("w1")
    assert grant is not None
    trial_id, token = grant.trial.id, grant.trial.lease_token
    for _ in range(3):
        service.protocol.report(trial_id, token, [(1.0, {"loss": 0.7})])
    service.protocol.report(trial_id, token, [(1.0, {"loss": 0.1})])  # same step again: first one wins
    assert [(r.step, r.metrics["loss"]) for r in service.studies.trial(trial_id).reports] == [(1.0, 0.7)]
    first = service.protocol.complete(trial_id, token, {"loss": 0.7}, None)
    again = service.protocol.complete(trial_id, token, {"loss": 0.7}, None)
    assert first.state == again.state == TrialState.PAUSED.value
    assert len(service.studies.trial(trial_id).rung_results) == 1
    with pytest.raises(Conflict, match="accepts no more reports"):
        service.protocol.report(trial_id, token, [(2.0, {"loss": 0.6})])


def test_expired_lease_requeues_then_fails_after_max_attempts(service: Service) -> None:
    study = service.studies.create(make_spec())
    for attempt in (1, 2):
        grant = service.protocol.lease(f"w{attempt}")
        assert grant is not None and grant.trial.attempt == attempt
        trial_id = grant.trial.id
        service.clock.advance(31)
        assert service.protocol.expire_leases() == 1
    detail = service.studies.trial(trial_id)
    assert detail.trial.state == TrialState.FAILED.value
    assert "lease of worker w2 expired" in (detail.trial.error or "")
    kinds = [(d.kind, d.attempt) for d in detail.decisions]
    assert kinds == [("requeue", 2), ("fail", 2)]
    assert service.studies.get(study.id).study.status == StudyStatus.RUNNING.value


def test_heartbeat_extends_the_lease(service: Service) -> None:
    service.studies.create(make_spec())
    grant = service.protocol.lease("w1")
    assert grant is not None
    service.clock.advance(20)
    service.protocol.heartbeat(grant.trial.id, grant.trial.lease_token)
    service.clock.advance(20)
    assert service.protocol.expire_leases() == 0


def test_non_retryable_failure_fails_at_once_and_frees_the_rung(service: Service) -> None:
    service.studies.create(make_spec())
    grant = service.protocol.lease("w1")
    assert grant is not None
    trial = service.protocol.fail(grant.trial.id, grant.trial.lease_token, "bad config", retryable=False)
    assert trial.state == TrialState.FAILED.value
    for _ in range(8):
        run_segment(service)
    # The rung settled with 8 results and one loss: floor(9/3) = 3 promotions still happen.
    promoted = [d for d in service.studies.decisions(1) if d.kind == "promote"]
    assert len(promoted) == 3


def test_invalid_checkpoint_falls_back_to_an_earlier_one(service: Service) -> None:
    service.studies.create(make_spec())
    for _ in range(9):
        run_segment(service)
    grant = service.protocol.lease("w1")
    assert grant is not None and grant.trial.budget_done == 1.0
    token = grant.trial.lease_token
    for step in (2.0, 3.0):
        service.protocol.report(grant.trial.id, token, [(step, {"loss": 0.5})])
    service.protocol.complete(grant.trial.id, token, {"loss": 0.5}, "file:///tmp/at-3")
    # Fast-forward: the same trial reaches rung 2, and its rung-1 checkpoint turns out corrupt.
    while True:
        grant = service.protocol.lease("w1")
        assert grant is not None
        if grant.trial.rung == 2:
            break
        service.protocol.complete(grant.trial.id, grant.trial.lease_token, {"loss": 0.9}, "file:///tmp/x")
    trial = service.protocol.fail(grant.trial.id, grant.trial.lease_token, "corrupt", retryable=True,
                                  checkpoint_invalid=True)
    assert trial.state == TrialState.PENDING.value
    assert trial.budget_done == 1.0  # back to the rung-0 checkpoint
    reasons = [d.reason for d in service.studies.trial(trial.id).decisions if d.kind == "requeue"]
    assert "resuming from the one at budget 1" in reasons[-1]


def test_cancel_stops_waiting_trials_and_tells_running_ones(service: Service) -> None:
    study = service.studies.create(make_spec())
    grant = service.protocol.lease("w1")
    assert grant is not None
    run_segment(service)  # another trial pauses at rung 0
    service.studies.cancel(study.id)
    ack = service.protocol.report(grant.trial.id, grant.trial.lease_token, [(1.0, {"loss": 0.4})])
    assert ack.directive == "stop"
    trial = service.protocol.complete(grant.trial.id, grant.trial.lease_token, {"loss": 0.4}, None)
    assert trial.state == TrialState.STOPPED.value
    counts = service.studies.get(study.id).trial_counts
    assert set(counts) == {"stopped"}
    assert service.protocol.lease("w1") is None
    with pytest.raises(Conflict):
        service.studies.resume(study.id)


def test_paused_study_hands_out_nothing_until_resumed(service: Service) -> None:
    study = service.studies.create(make_spec())
    service.studies.pause(study.id)
    assert service.protocol.lease("w1") is None
    service.studies.resume(study.id)
    assert service.protocol.lease("w1") is not None


def test_completion_without_the_objective_metric_is_refused(service: Service) -> None:
    service.studies.create(make_spec())
    grant = service.protocol.lease("w1")
    assert grant is not None
    with pytest.raises(InvalidInput, match="objective metric 'loss'"):
        service.protocol.complete(grant.trial.id, grant.trial.lease_token, {"accuracy": 0.3}, None)
    assert service.studies.trial(grant.trial.id).trial.state == TrialState.RUNNING.value


def test_diverged_objective_fails_the_trial(service: Service) -> None:
    service.studies.create(make_spec())
    grant = service.protocol.lease("w1")
    assert grant is not None
    trial = service.protocol.complete(grant.trial.id, grant.trial.lease_token, {"loss": float("nan")}, None)
    assert trial.state == TrialState.FAILED.value and "diverged" in (trial.error or "")


def test_max_concurrent_limits_leases(service: Service) -> None:
    service.studies.create(make_spec(limits={"max_concurrent": 2}))
    assert service.protocol.lease("a") is not None
    assert service.protocol.lease("b") is not None
    assert service.protocol.lease("c") is None


def test_unknown_ids_are_not_found(service: Service) -> None:
    with pytest.raises(NotFound):
        service.studies.get(999)
    with pytest.raises(NotFound):
        service.protocol.report(999, "x", [(1.0, {"loss": 1.0})])


def test_same_name_and_spec_attaches_other_spec_conflicts(service: Service) -> None:
    first, created = service.studies.create_or_attach(make_spec())
    again, created_again = service.studies.create_or_attach(make_spec())
    assert (created, created_again) == (True, False) and again.id == first.id
    with pytest.raises(Conflict, match="different spec"):
        service.studies.create(make_spec(limits={"max_trials": 5}))


def test_projects_are_isolated(service: Service) -> None:
    from hpo_service.domain.access import Principal, Scope
    from hpo_service.orchestration.access import AccessService

    access = AccessService(service.context)
    root = access.authenticate(access.bootstrap_admin().secret)
    other = access.create_token(root, project="team-b", name="b", scope=Scope.ADMIN, expires_in=None)
    other_project = other.token.project_id
    mine = service.studies.create(make_spec())
    theirs = service.studies.create(make_spec(), project_id=other_project)  # same name, other project
    assert mine.id != theirs.id
    with pytest.raises(NotFound):
        service.studies.get(mine.id, project_id=other_project)
    assert [s.study.id for s in service.studies.list(project_id=other_project)[0]] == [theirs.id]
    grant = service.protocol.lease("w", project_id=other_project)
    assert grant is not None and grant.study.id == theirs.id
    with pytest.raises(NotFound):
        service.protocol.report(grant.trial.id, grant.trial.lease_token, [(1.0, {"loss": 1.0})], project_id=1)
    assert isinstance(root, Principal)


def test_a_verified_token_is_answered_from_memory_until_its_cache_entry_expires(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cached` is what the API's authentication asks on the event loop before it hops to a thread:
    it must never answer for a token it has not verified, nor for longer than CACHE_SECONDS."""
    from hpo_service.orchestration import access as access_module

    access = access_module.AccessService(service.context)
    secret = access.bootstrap_admin().secret
    assert access.cached(secret) is None  # never verified: only `authenticate` may look it up
    principal = access.authenticate(secret)
    assert access.cached(secret) == principal
    assert access.cached(secret + "x") is None
    monkeypatch.setattr(access_module, "CACHE_SECONDS", 0.0)
    assert access.cached(secret) is None  # expired: the next call goes to the database again


@pytest.mark.parametrize("kind", ["asha", "random"])
def test_asha_and_random_run_to_their_trial_limit(service: Service, kind: str) -> None:
    study = service.studies.create(make_spec(scheduler={"kind": kind, "min_budget": 1, "max_budget": 9, "eta": 3},
                                             limits={"max_trials": 12}))
    for _ in range(200):
        if service.studies.get(study.id).study.status != StudyStatus.RUNNING.value:
            break
        run_segment(service)
    summary = service.studies.get(study.id)
    assert summary.study.status == StudyStatus.COMPLETED.value
    assert summary.study.trials_created == 12
    assert summary.trial_counts.get("completed", 0) >= 1
