"""The worker protocol: lease (long poll), heartbeat, reports, complete, fail."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.concurrency import run_in_threadpool

from hpo_service.api import schemas
from hpo_service.api.convert import lease_out
from hpo_service.api.auth import Worker
from hpo_service.api.deps import ServicesDep
from hpo_service.api.limits import IdPath

router = APIRouter(prefix="/api/v1", tags=["worker protocol"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorOut} for code in (401, 403, 404, 409, 422, 429)}
BODY_ERRORS = {**ERRORS, **schemas.BODY_TOO_LARGE}  # operations that take a body: all of them here
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=64, pattern=r"^[!-~]+$",
    description="a key the client picks per lease request (1-64 printable ASCII characters) and repeats "
                "on its retries",
)]


@router.post(
    "/leases", response_model=schemas.LeaseOut,
    responses={204: {"description": "no work within wait_s"}, **BODY_ERRORS},
)
async def lease(
    body: schemas.LeaseIn, services: ServicesDep, caller: Worker, idempotency_key: IdempotencyKey = None
) -> schemas.LeaseOut | Response:
    """Lease a trial, waiting up to ``wait_s`` for one.

    Send an ``Idempotency-Key`` (the SDK does) and repeat it when retrying a request whose
    response never arrived: while the trial it was granted is still running under this
    worker, the retry gets that grant back instead of a second trial.
    """
    settings = services.context.settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait_s, settings.max_lease_wait_seconds)
    while True:
        if services.sweep_due():  # asked on the loop: most polls have no sweep due, and a hop costs CPU
            await run_in_threadpool(services.expire_leases_throttled)
        grant = await run_in_threadpool(services.protocol.lease, body.worker_id, body.studies, caller.project_id,
                                           body.resources, idempotency_key)
        if grant is not None:
            return lease_out(grant)
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Response(status_code=204)
        await services.signal.wait(min(settings.lease_poll_seconds, remaining))


@router.post("/trials/{trial_id}/heartbeat", response_model=schemas.AckOut, responses=BODY_ERRORS)
def heartbeat(trial_id: IdPath, body: schemas.TokenIn, services: ServicesDep, caller: Worker) -> schemas.AckOut:
    ack = services.protocol.heartbeat(trial_id, body.lease_token, caller.project_id)
    return schemas.AckOut(directive=ack.directive, expires_at=ack.expires_at)


@router.post("/trials/{trial_id}/reports", response_model=schemas.AckOut, responses=BODY_ERRORS)
def reports(trial_id: IdPath, body: schemas.ReportsIn, services: ServicesDep, caller: Worker) -> schemas.AckOut:
    batch = [(r.step, r.metrics) for r in body.reports]
    ack = services.protocol.report(trial_id, body.lease_token, batch, caller.project_id)
    return schemas.AckOut(directive=ack.directive)


@router.post("/trials/{trial_id}/complete", response_model=schemas.TrialStateOut, responses=BODY_ERRORS)
def complete(trial_id: IdPath, body: schemas.CompleteIn, services: ServicesDep, caller: Worker) -> schemas.TrialStateOut:
    trial = services.protocol.complete(trial_id, body.lease_token, body.metrics, body.checkpoint_out,
                                       caller.project_id)
    return schemas.TrialStateOut(trial_id=trial.id, state=trial.state, attempt=trial.attempt)


@router.post("/trials/{trial_id}/fail", response_model=schemas.TrialStateOut, responses=BODY_ERRORS)
def fail(trial_id: IdPath, body: schemas.FailIn, services: ServicesDep, caller: Worker) -> schemas.TrialStateOut:
    trial = services.protocol.fail(trial_id, body.lease_token, body.error, body.retryable, body.checkpoint_invalid,
                                   caller.project_id, checkpoint_out=body.checkpoint_out, budget_done=body.budget_done,
                                   drained=body.drained)
    return schemas.TrialStateOut(trial_id=trial.id, state=trial.state, attempt=trial.attempt)
