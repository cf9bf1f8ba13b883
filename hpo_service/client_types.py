"""Typed shapes of the API's JSON answers, for `HpoClient` users and type checkers.

TypedDicts rather than classes: the client returns the server's JSON as-is (plain
dicts a CI script can dump), and a type checker still knows every field. They
mirror `hpo_service.api.schemas`; `tests/api/test_client_types.py` keeps the two in step.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class BestRef(TypedDict):
    trial_id: int
    value: float
    budget: float
    rung: int


class StudyInfo(TypedDict):
    id: int
    name: str
    status: str
    spec: dict[str, Any]
    trials_created: int
    budget_spent: float
    trial_counts: dict[str, int]
    best: BestRef | None
    created_at: str
    updated_at: str


class StudyPage(TypedDict):
    items: list[StudyInfo]
    total: int
    limit: int
    offset: int


class TrialInfo(TypedDict):
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
    drains: NotRequired[int]  # servers before migration 0004 do not send it
    value: float | None
    checkpoint_uri: str | None
    lease_owner: str | None
    lease_expires_at: str | None
    error: str | None
    created_at: str
    updated_at: str


class TrialPage(TypedDict):
    items: list[TrialInfo]
    total: int
    limit: int
    offset: int


class BestTrial(TypedDict):
    trial: TrialInfo
    value: float
    budget: float
    rung: int


class ReportInfo(TypedDict):
    step: float
    attempt: int
    metrics: dict[str, float | int | None]


class RungResultInfo(TypedDict):
    rung: int
    budget: float
    value: float
    promoted: bool
    checkpoint_uri: str | None


class DecisionInfo(TypedDict):
    id: int
    trial_id: int | None
    kind: str
    reason: str
    attempt: int | None
    created_at: str


class TrialCheckpoints(TypedDict):
    trial_id: int
    state: str
    attempt: int
    uris: list[str]


class CheckpointReferences(TypedDict):
    items: list[TrialCheckpoints]
    next_after: int | None


class TrialDetail(TypedDict):
    trial: TrialInfo
    reports: list[ReportInfo]
    rung_results: list[RungResultInfo]
    decisions: list[DecisionInfo]


class RungInfo(TypedDict):
    bracket: int
    rung: int
    budget: float
    results: int
    promoted: int
    best_value: float


class TrainerRef(TypedDict):
    name: str
    params: dict[str, Any]


class Lease(TypedDict):
    trial_id: int
    study_id: int
    number: int
    attempt: int
    lease_token: str
    expires_at: str
    lease_seconds: float
    trainer: TrainerRef
    params: dict[str, Any]
    budget_from: float
    budget_to: float
    checkpoint_in: str | None
    seed: int
    objective: str


class Ack(TypedDict):
    directive: Literal["continue", "stop"]
    expires_at: str | None


class TrialStateInfo(TypedDict):
    trial_id: int
    state: str
    attempt: int


class TokenInfo(TypedDict):
    id: int
    name: str
    project: str
    scope: str
    prefix: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class TokenCreated(TokenInfo):
    token: str


class WhoAmI(TypedDict):
    project: str
    scope: str
    token_id: int


class Health(TypedDict):
    status: str
    version: str
