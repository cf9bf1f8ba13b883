"""What a muP-transfer study found: per-stage results, the transfer gap and the tuning cost.

- transferred value: the best stage-2 trial (a proxy's configuration trained at the target width);
- check: the stage-3 sweep of one parameter around the transferred value; the gap is how
  many grid steps the best point of the sweep lies from the transferred value (0 = muP
  transfer found the optimum of the sweep);
- tuning cost: the compute of stage 1 (sum of budget x width**compute_exponent over its
  trials) relative to (a) one full training at the target width and (b) the same stage-1
  search run at the target width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from hpo_service.db import repositories as repo
from hpo_service.db.models import Trial
from hpo_service.domain.spec import StudySpec
from hpo_service.errors import InvalidInput
from hpo_service.orchestration.context import Context
from hpo_service.orchestration.studies import load_study
from hpo_service.scheduling.mup_transfer import CHECK_BRACKET, TARGET_BRACKET

STAGES = {1: "tuning at proxy width", 2: "training at target width", 3: "checking the transfer", 4: "done"}


@dataclass
class TransferReport:
    stage: int
    stage_name: str
    param: str
    target: int
    proxies: list[dict[str, Any]] = field(default_factory=list)
    transferred: dict[str, Any] | None = None
    check: list[dict[str, Any]] = field(default_factory=list)
    best_check_value: float | None = None
    gap_grid_steps: int | None = None
    proxy_compute: float = 0.0
    cost_vs_one_target_run: float | None = None
    cost_vs_tuning_at_target: float | None = None


def transfer_report(context: Context, study_id: int, project_id: int | None = None) -> TransferReport:
    def use_case(session: Session) -> TransferReport:
        study = load_study(session, study_id, project_id=project_id)
        spec = StudySpec.model_validate(study.spec)
        transfer = spec.scheduler.transfer
        if transfer is None:
            raise InvalidInput(f"study {study_id} is not a mup_transfer study")
        trials = repo.trials_in_state(session, study_id, ["pending", "running", "paused", "completed",
                                                          "stopped", "failed"])
        # The snapshot's stage only advances on the next lease request; a completed study is done.
        stage = 4 if study.status == "completed" else int(study.scheduler_state.get("stage", 1))
        return _build(spec, stage, trials)

    return context.run(use_case)


def _build(spec: StudySpec, stage: int, trials: list[Trial]) -> TransferReport:
    transfer = spec.scheduler.transfer
    assert transfer is not None
    exponent, top = transfer.compute_exponent, spec.scheduler.max_budget
    sign = 1.0 if spec.objective.direction.value == "minimize" else -1.0
    report = TransferReport(stage, STAGES.get(stage, "?"), transfer.param, transfer.target)
    stage1 = [t for t in trials if t.bracket < TARGET_BRACKET]
    for width in transfer.proxy:
        mine = [t for t in stage1 if t.params.get(transfer.param) == width]
        finished = [t for t in mine if t.value is not None and t.budget_done >= top]
        best = min(finished, key=lambda t: sign * (t.value or 0.0), default=None)
        report.proxies.append({
            "width": width, "trials": len(mine), "compute": sum(t.budget_done * width**exponent for t in mine),
            "best_value": best.value if best else None, "best_trial": best.id if best else None,
            "best_params": best.params if best else None,
        })
    report.proxy_compute = sum(p["compute"] for p in report.proxies)
    stage1_budget = sum(t.budget_done for t in stage1)
    target_cost = transfer.target**exponent
    if stage1_budget:
        report.cost_vs_one_target_run = report.proxy_compute / (top * target_cost)
        report.cost_vs_tuning_at_target = report.proxy_compute / (stage1_budget * target_cost)
    transferred = [t for t in trials if t.bracket == TARGET_BRACKET and t.value is not None]
    best_transfer = min(transferred, key=lambda t: sign * (t.value or 0.0), default=None)
    if best_transfer is not None:
        report.transferred = {"trial": best_transfer.id, "value": best_transfer.value,
                              "params": best_transfer.params}
        _check(report, spec, best_transfer, [t for t in trials if t.bracket == CHECK_BRACKET], sign)
    return report


def _check(report: TransferReport, spec: StudySpec, base: Trial, sweep: list[Trial], sign: float) -> None:
    check = spec.scheduler.transfer.check if spec.scheduler.transfer else None
    if check is None or check.param not in base.params:
        return
    base_value = float(base.params[check.param])
    points = [(0, base.value)] + [
        (round(math.log(float(t.params[check.param]) / base_value, check.factor)), t.value)
        for t in sweep if t.value is not None and check.param in t.params
    ]
    report.check = [{"grid_step": step, check.param: base_value * check.factor**step, "value": value}
                    for step, value in sorted(points)]
    if len(points) > 1:
        best_step, best_value = min(points, key=lambda p: sign * (p[1] or 0.0))
        report.best_check_value, report.gap_grid_steps = best_value, abs(best_step)
