"""Iterative deepening through the service: raising max_budget reuses the old top rung's trials."""

from __future__ import annotations

import pytest

from hpo_service.domain.states import StudyStatus
from hpo_service.errors import InvalidInput
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec, run_segment


def run_to_end(service: Service, study_id: int) -> int:
    segments = 0
    while service.studies.get(study_id).study.status == StudyStatus.RUNNING.value:
        run_segment(service)
        segments += 1
        assert segments < 500
    return segments


def test_extending_a_completed_study_continues_its_best_trials(service: Service) -> None:
    study = service.studies.create(make_spec())  # hyperband, max_budget 9, eta 3
    run_to_end(service, study.id)
    spent_before = service.studies.get(study.id).study.budget_spent
    service.studies.extend(study.id, 27)
    summary = service.studies.get(study.id)
    assert summary.study.status == StudyStatus.RUNNING.value
    assert summary.study.spec["scheduler"]["max_budget"] == 27
    decisions = service.studies.decisions(study.id)
    extend = [d for d in decisions if d.kind == "extend"]
    assert len(extend) == 1 and "raised from 9 to 27" in extend[0].reason
    reused = [d for d in decisions if d.kind == "promote" and d.id > extend[0].id - 100 and "checkpoint" in d.reason]
    assert reused, "no trial was continued from its checkpoint"
    grant = service.protocol.lease("w")
    assert grant is not None and grant.trial.budget_done == 9 and grant.trial.budget_target == 27
    assert grant.trial.checkpoint_uri == f"file:///tmp/ckpt/{grant.trial.id}/9"
    service.protocol.complete(grant.trial.id, grant.trial.lease_token, {"loss": 0.01}, None)
    run_to_end(service, study.id)
    final = service.studies.get(study.id)
    assert final.study.status == StudyStatus.COMPLETED.value
    assert final.best is not None and final.best.budget == 27
    assert final.study.budget_spent > spent_before


@pytest.mark.parametrize(("kind", "new_max", "message"), [
    ("hyperband", 9, "must grow"),
    ("hyperband", 3, "must grow"),
    ("random", 27, "only hyperband and asha"),
])
def test_bad_extensions_are_refused(service: Service, kind: str, new_max: float, message: str) -> None:
    spec = make_spec(scheduler={"kind": kind, "min_budget": 1, "max_budget": 9, "eta": 3}, limits={"max_trials": 5})
    study = service.studies.create(spec)
    with pytest.raises(InvalidInput, match=message):
        service.studies.extend(study.id, new_max)
    assert service.studies.get(study.id).study.spec["scheduler"]["max_budget"] == 9
