"""Iterative deepening through the service: raising max_budget reuses the old top rung's trials."""

from __future__ import annotations

from typing import Any

import pytest

from hpo_service.domain.queries import TrialFilter
from hpo_service.domain.states import StudyStatus
from hpo_service.errors import InvalidInput
from tests.db.conftest import Service
from tests.db.test_protocol_contract import loss_of, make_spec, run_segment


def run_to_end(service: Service, study_id: int) -> int:
    segments = 0
    while service.studies.get(study_id).study.status == StudyStatus.RUNNING.value:
        run_segment(service)
        segments += 1
        assert segments < 500
    return segments


def test_extending_a_completed_study_keeps_its_trials_and_tops_its_brackets_up(service: Service) -> None:
    study = service.studies.create(make_spec())  # hyperband, max_budget 9, eta 3: 17 trials
    run_to_end(service, study.id)
    spent_before = service.studies.get(study.id).study.budget_spent
    assert spent_before == 69
    service.studies.extend(study.id, 27)
    summary = service.studies.get(study.id)
    assert summary.study.status == StudyStatus.RUNNING.value
    assert summary.study.spec["scheduler"]["max_budget"] == 27
    decisions = service.studies.decisions(study.id, limit=1000)
    extend = [d for d in decisions if d.kind == "extend"]
    assert len(extend) == 1 and "raised from 9 to 27" in extend[0].reason
    assert "17 trial(s) keep their results instead of training again, saving 69 budget" in extend[0].reason
    reused = [d for d in decisions if d.kind == "reuse"]  # every reused trial, with what it saves
    assert len({d.trial_id for d in reused}) == len(reused) == 17
    assert all(d.reason.startswith("budget raised 9 -> 27: kept by bracket ") and "(saves " in d.reason
               for d in reused)
    grant = service.protocol.lease("w")  # bracket 0 is topped up first: a new configuration at budget 1
    assert grant is not None and grant.trial.budget_done == 0 and grant.trial.budget_target == 1
    service.protocol.complete(grant.trial.id, grant.trial.lease_token, {"loss": 0.01}, None)
    old_ids, resumed, segments = {d.trial_id for d in reused}, [], 0
    while service.studies.get(study.id).study.status == StudyStatus.RUNNING.value:
        grant = service.protocol.lease("w")
        assert grant is not None
        trial = grant.trial
        if trial.id in old_ids:  # an old trial promoted again resumes from its checkpoint
            assert trial.budget_done > 0
            assert trial.checkpoint_uri == f"file:///tmp/ckpt/{trial.id}/{trial.budget_done:g}"
            resumed.append(trial.id)
        service.protocol.complete(trial.id, trial.lease_token, {"loss": loss_of(trial.params, trial.budget_target)},
                                  f"file:///tmp/ckpt/{trial.id}/{trial.budget_target:g}")
        segments += 1
        assert segments < 500
    assert resumed, "no old trial was continued from its checkpoint"
    final = service.studies.get(study.id)
    assert final.study.status == StudyStatus.COMPLETED.value
    assert final.best is not None and final.best.budget == 27
    assert final.study.budget_spent == 357  # a fresh R=27 study's: the 69 spent before are all reused


def test_extending_a_running_study_logs_each_reuse(service: Service) -> None:
    study = service.studies.create(make_spec())
    for _ in range(12):  # bracket 0 has settled its rung 0; the others are under way
        run_segment(service)
    service.studies.extend(study.id, 27)
    decisions = service.studies.decisions(study.id, limit=1000)
    reused = [d for d in decisions if d.kind == "reuse"]
    assert reused and all(d.trial_id is not None for d in reused)
    run_to_end(service, study.id)
    final = service.studies.get(study.id)
    assert final.study.status == StudyStatus.COMPLETED.value and final.best is not None
    assert final.best.budget == 27


@pytest.mark.parametrize(("kind", "new_max", "message"), [
    ("hyperband", 3, "must grow"),  # (the same max_budget is a repeat: tests/db/test_control_repeat_contract.py)
    ("random", 27, "only hyperband and asha"),
])
def test_bad_extensions_are_refused(service: Service, kind: str, new_max: float, message: str) -> None:
    spec = make_spec(scheduler={"kind": kind, "min_budget": 1, "max_budget": 9, "eta": 3}, limits={"max_trials": 5})
    study = service.studies.create(spec)
    with pytest.raises(InvalidInput, match=message):
        service.studies.extend(study.id, new_max)
    assert service.studies.get(study.id).study.spec["scheduler"]["max_budget"] == 9


def test_only_trials_that_existed_at_the_raise_are_said_to_reuse_a_checkpoint(service: Service) -> None:
    spec = make_spec(scheduler={"kind": "asha", "min_budget": 1, "max_budget": 3, "eta": 3},
                     limits={"max_trials": 40})
    study = service.studies.create(spec)
    for _ in range(15):
        run_segment(service)
    newest = max(t.id for t in service.studies.trials(study.id, TrialFilter(), limit=1000, offset=0)[0])
    service.studies.extend(study.id, 9)
    assert service.studies.get(study.id).study.scheduler_state["raised_after"] == [newest]
    run_to_end(service, study.id)

    promotions_at_3 = [d for d in service.studies.decisions(study.id, limit=5000)
                       if d.kind == "promote" and "at rung 1 (budget 3)" in d.reason]
    labelled = {d.trial_id for d in promotions_at_3 if d.reason.startswith("budget raised 3 -> 9: ")}
    assert labelled and all(trial_id <= newest for trial_id in labelled)  # type: ignore[operator]
    later = {d.trial_id for d in promotions_at_3} - labelled
    assert later and all(trial_id > newest for trial_id in later)  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["hyperband", "asha"])
def test_the_spec_it_was_created_from_still_attaches_after_extensions(service: Service, kind: str) -> None:
    """A CI job re-runs `hpo tune` with its unchanged spec after someone deepened the study: it
    attaches (it was a 409 "different spec": the stored spec's max_budget had grown)."""
    def spec(max_budget: float) -> Any:
        return make_spec(scheduler={"kind": kind, "min_budget": 1, "max_budget": max_budget, "eta": 3},
                         limits={"max_trials": 30})

    study = service.studies.create(spec(9))
    service.studies.extend(study.id, 27)
    service.studies.extend(study.id, 81)

    for submitted in (9, 27, 81):  # each max_budget it has had
        again, created = service.studies.create_or_attach(spec(submitted))
        assert (again.id, created) == (study.id, False)
        assert again.spec["scheduler"]["max_budget"] == 81  # the study as it is now


@pytest.mark.parametrize(("max_budget", "message"), [
    (81, r"has max_budget 27 and this spec asks for 81, nothing else differs: raise it with `hpo study extend"),
    (3, "different spec"),  # never this study's max_budget: not the spec it was created from
])
def test_a_spec_asking_for_more_names_the_extension_and_others_conflict(
    service: Service, max_budget: float, message: str
) -> None:
    from hpo_service.errors import Conflict

    scheduler = {"kind": "hyperband", "min_budget": 1, "max_budget": max_budget, "eta": 3}
    study = service.studies.create(make_spec())
    service.studies.extend(study.id, 27)
    with pytest.raises(Conflict, match=message):
        service.studies.create_or_attach(make_spec(scheduler=scheduler))
    assert service.studies.get(study.id).study.spec["scheduler"]["max_budget"] == 27
