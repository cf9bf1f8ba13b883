"""Request and response schemas of the REST API, separate from the table models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from hpo_service.api.limits import IdItem, NameText, StoredText, WorkerResources, strip_nul
from hpo_service.domain.spec import StudySpec

MetricValue = float | int | None
Metrics = dict[str, MetricValue]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    error: str = Field(description="machine-readable code, e.g. invalid_input, stale_lease")
    message: str


# Every operation that takes a body documents this: `BodySizeLimit` (api/limits.py) answers it,
# before anything is parsed, for a body over the limit (1 MiB).
BODY_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "the request body is over the size limit (`payload_too_large`)"},
}


class BestOut(_Out):
    trial_id: int
    value: float
    budget: float
    rung: int


class StudyOut(_Out):
    id: int
    name: str
    status: str
    spec: StudySpec
    trials_created: int
    budget_spent: float
    trial_counts: dict[str, int]
    best: BestOut | None
    created_at: datetime
    updated_at: datetime


class StudyPage(BaseModel):
    items: list[StudyOut]
    total: int
    limit: int
    offset: int


class TrialOut(_Out):
    id: int
    study_id: int
    number: int
    params: dict[str, Any]
    state: str
    bracket: int
    rung: int
    budget_done: float
    budget_target: float
    attempt: int
    drains: int = Field(default=0, description="attempts that ended in a drain: they do not count toward "
                                               "the study's retry.max_attempts")
    value: float | None
    checkpoint_uri: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class TrialPage(BaseModel):
    items: list[TrialOut]
    total: int
    limit: int
    offset: int


class ReportOut(_Out):
    step: float
    attempt: int
    metrics: Metrics


class RungResultOut(_Out):
    rung: int
    budget: float
    value: float
    promoted: bool
    checkpoint_uri: str | None


class DecisionOut(_Out):
    id: int
    trial_id: int | None
    kind: str
    reason: str
    attempt: int | None
    created_at: datetime


class TrialDetailOut(BaseModel):
    trial: TrialOut
    reports: list[ReportOut]
    rung_results: list[RungResultOut]
    decisions: list[DecisionOut]


class TrialCheckpointsOut(_Out):
    trial_id: int
    state: str
    attempt: int
    uris: list[str] = Field(description="checkpoints the database refers to: the trial's own and its rung results'")


class CheckpointReferencesOut(BaseModel):
    items: list[TrialCheckpointsOut]
    next_after: int | None = Field(description="pass as `after` for the next page; null on the last one")


class RungOut(_Out):
    bracket: int
    rung: int
    budget: float
    results: int = Field(description="trials that finished this rung")
    promoted: int = Field(description="of those, how many were promoted to the next rung")
    best_value: float


class BestTrialOut(BaseModel):
    trial: TrialOut
    value: float
    budget: float
    rung: int


# --- worker protocol -----------------------------------------------------------------


class LeaseIn(_In):
    # NameText, WorkerResources, IdItem: NUL in text columns and ids past BIGINT are a 422, not a
    # DataError (500) on PostgreSQL.
    worker_id: NameText = Field(min_length=1, max_length=128)
    resources: WorkerResources = Field(default_factory=dict)
    studies: list[IdItem] | None = Field(default=None, max_length=1000)
    wait_s: float = Field(default=0.0, ge=0.0, le=300.0)


class TransferOut(_Out):
    """The result of a mup_transfer study (see orchestration/transfer_report.py)."""

    stage: int
    stage_name: str
    param: str
    target: int
    proxies: list[dict[str, Any]]
    transferred: dict[str, Any] | None
    check: list[dict[str, Any]]
    best_check_value: float | None
    gap_grid_steps: int | None
    proxy_compute: float
    cost_vs_one_target_run: float | None
    cost_vs_tuning_at_target: float | None


class StudyPatchIn(_In):
    max_budget: float = Field(gt=0, description="raise the study's max_budget (iterative deepening)")


class TrainerOut(BaseModel):
    name: str
    params: dict[str, Any]


class LeaseOut(BaseModel):
    trial_id: int
    study_id: int
    number: int
    attempt: int
    lease_token: str
    expires_at: datetime
    lease_seconds: float
    trainer: TrainerOut
    params: dict[str, Any]
    budget_from: float
    budget_to: float
    checkpoint_in: str | None
    seed: int
    objective: str


class TokenIn(_In):
    lease_token: str = Field(min_length=1, max_length=64)


class ReportItem(_In):
    step: float = Field(ge=0, allow_inf_nan=False)  # a step is a budget position: finite
    metrics: dict[str, MetricValue] = Field(max_length=256)


class ReportsIn(TokenIn):
    reports: list[ReportItem] = Field(min_length=1, max_length=1000)


class CompleteIn(TokenIn):
    metrics: dict[str, MetricValue] = Field(default_factory=dict, max_length=256)
    checkpoint_out: StoredText | None = Field(default=None, max_length=2048)


class FailIn(TokenIn):
    error: Annotated[str, AfterValidator(strip_nul)] = Field(max_length=10_000)  # tracebacks, kept as sent
    retryable: bool = True
    checkpoint_invalid: bool = Field(
        default=False, description="the checkpoint given in the lease was missing or corrupt"
    )
    checkpoint_out: StoredText | None = Field(
        default=None, max_length=2048,
        description="a checkpoint the slice committed part-way (e.g. while draining); needs budget_done",
    )
    budget_done: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="the budget checkpoint_out is at, strictly between the lease's budget_from and budget_to: "
                    "the retry resumes there and trains only the rest",
    )
    drained: bool = Field(
        default=False,
        description="the worker is shutting down (SIGTERM, preemption), not failing: the trial is requeued and "
                    "this attempt does not count toward the study's retry.max_attempts (up to 20 drains per trial)",
    )


class AckOut(BaseModel):
    directive: Literal["continue", "stop"]
    expires_at: datetime | None = None


class TrialStateOut(BaseModel):
    trial_id: int
    state: str
    attempt: int


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str


# --- access control ------------------------------------------------------------------


class TokenCreateIn(_In):
    name: NameText = Field(min_length=1, max_length=128)
    scope: Literal["admin", "submit", "worker", "read"]
    project: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
                                description="default: the caller's project")
    expires_days: float | None = Field(default=None, gt=0, le=3650)


class TokenOut(BaseModel):
    id: int
    name: str
    project: str
    scope: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the secret; shown only in this response")


class SessionIn(_In):
    token: str = Field(min_length=1, max_length=256)


class WhoAmIOut(BaseModel):
    project: str
    scope: str
    token_id: int
