"""Study endpoints: create, read, control, trials, best, decisions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from hpo_service.api import schemas
from hpo_service.api.convert import decision_out, study_out, trial_detail_out, trial_out
from hpo_service.api.auth import Reader, Submitter
from hpo_service.api.deps import ServicesDep
from hpo_service.api.limits import NO_NUL_PATTERN, IdPath, IndexQuery, OffsetQuery
from hpo_service.domain.queries import TrialFilter
from hpo_service.domain.spec import StudySpec
from hpo_service.domain.states import StudyStatus, TrialState
from hpo_service.orchestration.transfer_report import transfer_report
from hpo_service.workers.artifacts import export_adapter_archive

router = APIRouter(prefix="/api/v1", tags=["studies"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorOut} for code in (401, 403, 404, 409, 422, 429)}
BODY_ERRORS = {**ERRORS, **schemas.BODY_TOO_LARGE}  # operations that take a body

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = OffsetQuery  # BIGINT-bounded: a huge offset is a 422, not a database error


@router.post("/studies", status_code=201, response_model=schemas.StudyOut,
             responses={200: {"model": schemas.StudyOut, "description": "same name and spec: attached"},
                        **BODY_ERRORS})
def create_study(spec: StudySpec, services: ServicesDep, caller: Submitter, response: Response) -> schemas.StudyOut:
    """Create a study. Submitting the same name with the same spec again returns the existing study (200)."""
    study, created = services.studies.create_or_attach(spec, caller.project_id)
    if not created:
        response.status_code = 200
    return study_out(services.studies.get(study.id))


@router.get("/studies", response_model=schemas.StudyPage, responses=ERRORS)
def list_studies(
    services: ServicesDep, caller: Reader, status: StudyStatus | None = None,
    name: Annotated[str | None, Query(max_length=128, pattern=NO_NUL_PATTERN, description="substring of the name")
                    ] = None,
    limit: Limit = 50, offset: Offset = 0,
) -> schemas.StudyPage:
    summaries, total = services.studies.list(
        status=status.value if status else None, name_contains=name, limit=limit, offset=offset,
        project_id=caller.project_id,
    )
    return schemas.StudyPage(items=[study_out(s) for s in summaries], total=total, limit=limit, offset=offset)


@router.get("/studies/{study_id}", response_model=schemas.StudyOut, responses=ERRORS)
def get_study(study_id: IdPath, services: ServicesDep, caller: Reader) -> schemas.StudyOut:
    return study_out(services.studies.get(study_id, caller.project_id))


@router.patch("/studies/{study_id}", response_model=schemas.StudyOut, responses=BODY_ERRORS)
def patch_study(study_id: IdPath, body: schemas.StudyPatchIn, services: ServicesDep, caller: Submitter) -> schemas.StudyOut:
    """Raise max_budget (iterative deepening): adds rungs on top; every trial keeps its results. Hyperband
    tops its old brackets up to the larger Hyperband's sizes (new configurations at the bottom rung,
    successive halving again over old and new; promoted old trials resume from their checkpoints);
    ASHA promotes from its old top rung as usual. Each kept trial is a `reuse` decision, and the
    `extend` decision says what was saved. The current max_budget again changes nothing (a retry);
    a smaller one is 422."""
    services.studies.extend(study_id, body.max_budget, caller.project_id)
    return study_out(services.studies.get(study_id, caller.project_id))


@router.post("/studies/{study_id}/{action}", response_model=schemas.StudyOut, responses=ERRORS)
async def control_study(
    study_id: IdPath, action: Literal["pause", "resume", "cancel"], services: ServicesDep, caller: Submitter
) -> schemas.StudyOut:
    """Pause, resume or cancel. Asking for the status the study already has changes nothing and
    succeeds (a retry after a lost response); one it cannot reach (resuming a cancelled study) is 409."""
    handler = {"pause": services.studies.pause, "resume": services.studies.resume,
               "cancel": services.studies.cancel}[action]
    await run_in_threadpool(handler, study_id, caller.project_id)
    return study_out(await run_in_threadpool(services.studies.get, study_id, caller.project_id))


@router.get("/studies/{study_id}/trials", response_model=schemas.TrialPage, responses=ERRORS)
def list_trials(
    study_id: IdPath, services: ServicesDep, caller: Reader, state: TrialState | None = None,
    bracket: IndexQuery = None, rung: IndexQuery = None,
    order: Literal["number", "-number", "value", "-value"] = "number",
    limit: Limit = 100, offset: Offset = 0,
) -> schemas.TrialPage:
    filters = TrialFilter(state=state.value if state else None, bracket=bracket, rung=rung, order=order)
    trials, total = services.studies.trials(study_id, filters, limit=limit, offset=offset,
                                            project_id=caller.project_id)
    return schemas.TrialPage(items=[trial_out(t) for t in trials], total=total, limit=limit, offset=offset)


@router.get("/studies/{study_id}/best", response_model=schemas.BestTrialOut, responses=ERRORS)
def best_trial(study_id: IdPath, services: ServicesDep, caller: Reader) -> schemas.BestTrialOut:
    trial, result = services.studies.best(study_id, caller.project_id)
    return schemas.BestTrialOut(trial=trial_out(trial), value=result.value, budget=result.budget, rung=result.rung)


@router.get("/studies/{study_id}/rungs", response_model=list[schemas.RungOut], responses=ERRORS)
def rungs(study_id: IdPath, services: ServicesDep, caller: Reader) -> list[schemas.RungOut]:
    return [schemas.RungOut.model_validate(row) for row in services.studies.rungs(study_id, caller.project_id)]


@router.get("/studies/{study_id}/best/adapter", responses={200: {"content": {"application/gzip": {}}}, **ERRORS})
def best_adapter(study_id: IdPath, services: ServicesDep, caller: Reader) -> Response:
    """The best trial's adapter as a .tar.gz with an `adapter/` folder (PEFT kinds: `PeftModel.from_pretrained`)."""
    trial, result = services.studies.best(study_id, caller.project_id)
    spec = services.studies.get(study_id, caller.project_id).study.spec
    # The checkpoint of the rung result that scored best, not the trial's latest one: a
    # promoted or drained trial has moved on from the budget where it was best.
    data = export_adapter_archive(spec["trainer"]["name"], result.checkpoint_uri or trial.checkpoint_uri,
                                  services.context.settings.checkpoint_uri, owner=(study_id, trial.id))
    return Response(data, media_type="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="study-{study_id}-trial-{trial.id}-adapter.tar.gz"'})


@router.get("/studies/{study_id}/transfer", response_model=schemas.TransferOut, responses=ERRORS)
def transfer(study_id: IdPath, services: ServicesDep, caller: Reader) -> schemas.TransferOut:
    """Stages, transfer gap and tuning cost of a mup_transfer study (422 for other kinds)."""
    return schemas.TransferOut.model_validate(transfer_report(services.context, study_id, caller.project_id))


@router.get("/studies/{study_id}/checkpoints", response_model=schemas.CheckpointReferencesOut, responses=ERRORS)
def checkpoint_references(
    study_id: IdPath, services: ServicesDep, caller: Reader, after: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> schemas.CheckpointReferencesOut:
    """The checkpoints each trial still needs, by trial id after `after` (keyset pages): what
    `hpo checkpoints gc` keeps. A running trial's `attempt` is the one whose slice is writing."""
    rows = services.studies.checkpoint_references(study_id, after_trial_id=after, limit=limit,
                                                  project_id=caller.project_id)
    return schemas.CheckpointReferencesOut(
        items=[schemas.TrialCheckpointsOut.model_validate(row) for row in rows],
        next_after=rows[-1].trial_id if len(rows) == limit else None,
    )


@router.get("/studies/{study_id}/decisions", response_model=list[schemas.DecisionOut], responses=ERRORS)
def decisions(
    study_id: IdPath, services: ServicesDep, caller: Reader, after_id: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[schemas.DecisionOut]:
    rows = services.studies.decisions(study_id, after_id=after_id, limit=limit, project_id=caller.project_id)
    return [decision_out(d) for d in rows]


@router.get("/trials/{trial_id}", response_model=schemas.TrialDetailOut, responses=ERRORS)
def get_trial(trial_id: IdPath, services: ServicesDep, caller: Reader) -> schemas.TrialDetailOut:
    return trial_detail_out(services.studies.trial(trial_id, caller.project_id))
