"""muP transfer through the service: stages, widths, copies, the check sweep and the report."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hpo_service.domain.spec import StudySpec
from hpo_service.domain.states import StudyStatus
from hpo_service.errors import InvalidInput
from hpo_service.orchestration.transfer_report import transfer_report
from tests.db.conftest import Service


def spec(**changes: Any) -> StudySpec:
    raw: dict[str, Any] = {
        "name": "transfer",
        "objective": {"metric": "eval_loss", "direction": "minimize"},
        "search_space": {"learning_rate": {"type": "float", "low": 2**-12, "high": 2**-4, "log": True}},
        "scheduler": {"kind": "mup_transfer", "min_budget": 1, "max_budget": 9, "eta": 3,
                      "transfer": {"param": "width", "proxy": [32, 64], "target": 256, "top_k": 2,
                                   "check": {"param": "learning_rate", "factor": 2.0, "steps": 1}}},
        "sampler": {"kind": "random", "seed": 4},
        "trainer": {"name": "mup_gpt", "params": {"max_budget": 9}},
    }
    raw.update(changes)
    return StudySpec.model_validate(raw)


def eval_loss(params: dict[str, Any], budget: float) -> float:
    # muP-like: the optimum (2**-8) does not move with width; wider models reach lower loss.
    return (math.log2(params["learning_rate"]) + 8) ** 2 / 10 + 32 / params["width"] + 1 / (1 + budget)


def test_a_transfer_study_runs_all_stages(service: Service) -> None:
    study = service.studies.create(spec())
    for _ in range(300):
        if service.studies.get(study.id).study.status != StudyStatus.RUNNING.value:
            break
        grant = service.protocol.lease("w")
        assert grant is not None
        trial = grant.trial
        service.protocol.complete(trial.id, trial.lease_token, {"eval_loss": eval_loss(trial.params,
                                                                                      trial.budget_target)}, None)
    assert service.studies.get(study.id).study.status == StudyStatus.COMPLETED.value
    report = transfer_report(service.context, study.id)
    assert report.stage == 4
    assert [p["width"] for p in report.proxies] == [32, 64] and all(p["trials"] == 17 for p in report.proxies)
    assert report.transferred is not None and report.transferred["params"]["width"] == 256
    assert [row["grid_step"] for row in report.check] == [-1, 0, 1]
    assert report.gap_grid_steps is not None and report.best_check_value is not None
    # Stage 1 ran at widths 32 and 64 instead of 256: far cheaper than the same search at the target.
    assert report.cost_vs_tuning_at_target is not None and report.cost_vs_tuning_at_target < 0.05


def test_a_trainer_without_muP_is_refused(service: Service) -> None:
    with pytest.raises(InvalidInput, match="does not declare width transfer"):
        service.studies.create(spec(trainer={"name": "synthetic", "params": {}},
                                    objective={"metric": "loss", "direction": "minimize"}))
