"""Read endpoints the dashboard calls, and its live event streams.

Every chart endpoint is bounded by its arguments, not by the study's size; the
downsampling contract of each is in its description (and in the OpenAPI docs).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from hpo_service.api import schemas
from hpo_service.api.auth import Reader
from hpo_service.api.limits import IdPath, IndexQuery, OffsetQuery
from hpo_service.dashboard.live import EVERYTHING, LiveHub
from hpo_service.domain.states import TrialState
from hpo_service.orchestration.dashboard import DashboardService
from hpo_service.orchestration.dashboard_views import (
    Curves,
    History,
    HyperbandView,
    Importance,
    Parallel,
    TablePage,
    TrialOverview,
    WorkerRow,
)

router = APIRouter(prefix="/api/v1", tags=["dashboard"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorOut} for code in (401, 403, 404, 422, 429)}
# The event streams answer errors in JSON, before any event: documented so (with `model`, FastAPI
# would list them under the route's media type, text/event-stream).
STREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    for code in (401, 403, 404, 422, 429)}


def dashboard_of(app: FastAPI) -> DashboardService:
    """One DashboardService (and its cache) per app lifespan, made on first use."""
    state = app.state
    if getattr(state, "dashboard", None) is None:
        state.dashboard = DashboardService(state.services.context)
    dashboard: DashboardService = state.dashboard
    return dashboard


def get_dashboard(request: Request) -> DashboardService:
    return dashboard_of(request.app)


def warm_dashboard_in_background(app: FastAPI) -> threading.Thread | None:
    """Start building the views of the running studies (DashboardService.warm) on a daemon
    thread, so that the first page opened after a restart finds them; None when disabled."""
    studies = app.state.services.context.settings.dashboard_warm_studies
    if studies <= 0:
        return None
    dashboard = dashboard_of(app)
    thread = threading.Thread(target=dashboard.warm, args=(studies,), name="hpo-dashboard-warm", daemon=True)
    thread.start()
    return thread


def get_hub(request: Request, dashboard: Annotated[DashboardService, Depends(get_dashboard)]) -> LiveHub:
    state = request.app.state
    if getattr(state, "live_hub", None) is None:
        state.live_hub = LiveHub(dashboard)
    hub: LiveHub = state.live_hub
    return hub


DashboardDep = Annotated[DashboardService, Depends(get_dashboard)]
HubDep = Annotated[LiveHub, Depends(get_hub)]
StreamSeconds = Annotated[float, Query(ge=1, le=300, description="the stream ends after this; the browser reconnects")]
ParamFilters = Annotated[list[str], Query(max_length=32, description="name:low:high (a bound may be empty) "
                                                                    "or name=choice")]
Sort = Annotated[str, Query(max_length=80, description="number, value, state, bracket, rung, budget_done, attempt, "
                                                       "updated_at or param:<name>; a leading '-' descends")]


@router.get("/studies/{study_id}/history", response_model=History, responses=ERRORS)
def history(
    study_id: IdPath, dashboard: DashboardDep, caller: Reader,
    max_points: Annotated[int, Query(ge=3, le=5000)] = 2000,
) -> History:
    """Optimization history over the study's results (finished trial segments) in completion order.

    `points`: at most `max_points` results: the first, the last and every `stride`-th (seq - 1
    divisible by stride), `stride` the smallest power of two with `(total - 1) / stride <=
    max_points - 2`. `best`: every result that improved the best value at its budget level (exact,
    never sampled). Columns: seq, trial_id, number, budget, value, budget_spent (budget of all
    results up to this one, each counted from its trial's previous rung).
    """
    return dashboard.history(study_id, max_points, caller.project_id)


@router.get("/studies/{study_id}/curves", response_model=Curves, responses=ERRORS)
def curves(
    study_id: IdPath, dashboard: DashboardDep, caller: Reader, max_trials: Annotated[int, Query(ge=0, le=2000)] = 100,
    top: Annotated[int, Query(ge=0, le=200)] = 10, max_points: Annotated[int, Query(ge=2, le=5000)] = 200,
    metric: Annotated[str | None, Query(max_length=128, description="default: the objective")] = None,
) -> Curves:
    """Learning curves: the `top` best trials (best result at the highest budget, then the next
    level down) plus every trial whose `number % stride == 0`, `stride = ceil(trials / max_trials)`:
    at most `top + max_trials` curves. Each curve has at most `max_points` points (first, last and
    every s-th report), its rung results with the decision taken there and why, and its requeues."""
    return dashboard.curves(study_id, max_trials, top, max_points, metric, caller.project_id)


@router.get("/studies/{study_id}/parallel", response_model=Parallel, responses=ERRORS)
def parallel(
    study_id: IdPath, dashboard: DashboardDep, caller: Reader, budget: Annotated[float | None, Query(gt=0)] = None,
    max_points: Annotated[int, Query(ge=1, le=20_000)] = 1000, top: Annotated[int, Query(ge=0, le=1000)] = 50,
) -> Parallel:
    """Parameters vs objective at one budget level (default: the highest with 20+ results): the
    `top` best results plus every result whose `id % stride == 0`, `stride = ceil(n / max_points)`,
    at most `top + max_points` rows, one per trial."""
    return dashboard.parallel(study_id, budget, max_points, top, caller.project_id)


# The evaluators this service knows (sampling/importance.py EVALUATORS), an enum in the OpenAPI
# document; one that needs scikit-learn where it is not installed is refused by the use case.
Evaluator = Literal["ped_anova", "fanova", "mean_decrease_impurity"]


@router.get("/studies/{study_id}/importance", response_model=Importance, responses=ERRORS)
def importance(
    study_id: IdPath, dashboard: DashboardDep, caller: Reader, evaluator: Evaluator = "ped_anova",
    budget: Annotated[float | None, Query(gt=0)] = None,
    max_observations: Annotated[int, Query(ge=2, le=5000)] = 1000,
) -> Importance:
    """Parameter importance with Optuna's evaluators (`ped_anova`; `fanova` and
    `mean_decrease_impurity` when scikit-learn is installed) over at most `max_observations`
    results at one budget level (sampled by result id). Recomputed at most every 30 s; with more
    than 200 observations the fit runs in the background: `pending` (no values yet) or the previous
    values until it is done."""
    return dashboard.importance(study_id, evaluator, budget, max_observations, caller.project_id)


@router.get("/studies/{study_id}/hyperband", response_model=HyperbandView, responses=ERRORS)
def hyperband(study_id: IdPath, dashboard: DashboardDep, caller: Reader) -> HyperbandView:
    """Brackets x rungs: how many trials entered each rung, how many are there now (in flight or
    waiting for a decision) and how many left it (promoted, stopped, completed, failed). With over
    30 brackets, brackets of one shape (Hyperband: the same first budget) are summed (`grouped`)."""
    return dashboard.hyperband(study_id, caller.project_id)


@router.get("/studies/{study_id}/extensions", responses=ERRORS)
def extensions(study_id: IdPath, dashboard: DashboardDep, caller: Reader) -> dict[str, Any]:
    """What only some studies have, null otherwise: `mup_transfer` (the stages and transfer result of
    a muP-transfer study, as GET /studies/{id}/transfer) and `budget_history` (the raises of an
    extended study's max budget, from the decision log)."""
    return dashboard.extensions(study_id, caller.project_id)


@router.get("/studies/{study_id}/trial-table", response_model=TablePage, responses=ERRORS)
def trial_table(
    study_id: IdPath, dashboard: DashboardDep, caller: Reader, state: TrialState | None = None,
    bracket: IndexQuery = None, rung: IndexQuery = None,
    param: ParamFilters = [],  # noqa: B006 (FastAPI copies defaults)
    sort: Sort = "number",
    limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: OffsetQuery = 0,
) -> TablePage:
    """One page of the study's trials, filtered and sorted on the server."""
    return dashboard.trial_table(study_id, caller.project_id, state=state.value if state else None, bracket=bracket,
                                 rung=rung, params=param, sort=sort, limit=limit, offset=offset)


@router.get("/trials/{trial_id}/overview", response_model=TrialOverview, responses=ERRORS)
def trial_overview(
    trial_id: IdPath, dashboard: DashboardDep, caller: Reader,
    max_points: Annotated[int, Query(ge=2, le=20_000)] = 2000,
) -> TrialOverview:
    """A trial with its curve (all metrics; at most `max_points` reports: first, last and every
    s-th), rung results and decisions, attempts (and what ended each), worker and checkpoint."""
    return dashboard.trial(trial_id, max_points, caller.project_id)


@router.get("/workers", response_model=list[WorkerRow], responses=ERRORS)
def workers(
    dashboard: DashboardDep, caller: Reader, stale_after_s: Annotated[float, Query(gt=0, le=86_400)] = 120.0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[WorkerRow]:
    """Workers by last contact (newest first): what each runs, heartbeat age, GPU slot. `live`:
    seen within `stale_after_s`. Instance admins see every worker; other callers the workers whose
    last trial belongs to their project."""
    return dashboard.workers(stale_after_s, limit, None if caller.is_instance_admin else caller.project_id)


def existing_study(study_id: IdPath, dashboard: DashboardDep, caller: Reader) -> int:
    """A dependency, so that an unknown study (or another project's) gets 404 before the stream starts."""
    dashboard.require_study(study_id, caller.project_id)
    return study_id


@router.get("/studies/{study_id}/events", response_class=EventSourceResponse, responses=STREAM_ERRORS)
async def study_events(
    study_id: Annotated[int, Depends(existing_study)], hub: HubDep, max_seconds: StreamSeconds = 25.0,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events of one study: `reports` and `decisions` as they are stored, `study`
    when its version or status changes, `resync` when the page should reload its data. Each
    event's id is a cursor: a reconnecting browser gets what it missed (Last-Event-ID)."""
    async for event in hub.stream(study_id, last_event_id, max_seconds):
        yield event


@router.get("/events", response_class=EventSourceResponse, responses=STREAM_ERRORS)
async def events(hub: HubDep, _caller: Reader, max_seconds: StreamSeconds = 25.0) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events for the studies list and the workers page: `changed` (no data) when some
    study changed or a worker was seen; the page reloads what it shows."""
    async for event in hub.stream(EVERYTHING, None, max_seconds):
        yield event
