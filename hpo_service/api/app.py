"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from hpo_service.api import schemas
from hpo_service.api.auth import BadTokenLimiter
from hpo_service.api.errors import install_error_handlers
from hpo_service.api.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from hpo_service.api.routes_access import router as access_router
from hpo_service.api.routes_dashboard import router as dashboard_router
from hpo_service.api.routes_dashboard import warm_dashboard_in_background
from hpo_service.api.routes_studies import router as studies_router
from hpo_service.api.routes_workers import router as workers_router
from hpo_service.api.services import Services, build_services
from hpo_service.dashboard import mount_dashboard
from hpo_service.db.migrate import check_schema
from hpo_service.errors import ServiceUnavailable
from hpo_service.settings import Settings, get_settings

log = logging.getLogger("hpo_service.api")


def package_version() -> str:
    try:
        return version("hpo-service")
    except PackageNotFoundError:
        return "0+unknown"


def _extend_leases_at_startup(services: Services) -> None:
    """Give the leases in flight one lease period after this start-up (F11): workers could not
    heartbeat while the server was down, and the sweeper would requeue them all at once.
    See `TrialProtocol.extend_leases_after_restart` for what this means with several API processes."""
    try:
        extended = services.protocol.extend_leases_after_restart()
    except ServiceUnavailable as error:  # the sweeper will deal with the leases as before: requeue
        log.warning("start-up: could not extend the running leases: %s", error.message)
        return
    log.info("start-up: extended %d running lease(s) to at least one lease period from now", extended)


def _warm_samplers_at_startup(services: Services) -> None:
    try:
        kinds = services.studies.warm_samplers_in_use()
    except ServiceUnavailable as error:  # then the first proposal of each kind imports them, as before
        log.warning("start-up: could not read the studies' sampler kinds: %s", error.message)
        return
    log.info("start-up: sampler modules imported for %s", ", ".join(sorted(kinds)) or "no study")


async def _sweep_expired_leases(services: Services) -> None:
    """Requeue expired leases even when no worker is asking for work."""
    while True:
        await asyncio.sleep(services.context.settings.expiry_sweep_seconds)
        sweep = asyncio.ensure_future(run_in_threadpool(services.expire_leases_throttled))
        try:
            await asyncio.shield(sweep)
        except asyncio.CancelledError:
            # Shutdown: the thread holds a database connection, which must be back in the pool
            # before the engine is disposed (else it is only closed by the garbage collector).
            await asyncio.wait([sweep])
            if not sweep.cancelled():
                sweep.exception()  # retrieved: a failure of the last sweep is not news at shutdown
            raise
        except ServiceUnavailable as error:  # the database is down: one line a sweep, not a traceback
            log.warning("lease expiry sweep: %s", error.message)
        except Exception:  # the sweep must outlive a database restart
            log.exception("lease expiry sweep failed; retrying")


async def _close_dashboard(app: FastAPI) -> None:
    """Stop the live-update poller and the background fits, made on first use by the dashboard routes."""
    hub = getattr(app.state, "live_hub", None)
    if hub is not None:
        await hub.close()
    dashboard = getattr(app.state, "dashboard", None)
    if dashboard is not None:
        dashboard.background.close()
        dashboard.stop_warming.set()
    warming = getattr(app.state, "dashboard_warming", None)
    if warming is not None:  # its connection must go back to the pool before the engine is disposed
        await asyncio.to_thread(warming.join, 30)
    app.state.dashboard_warming = None
    # Both hold the services of this lifespan: a restarted lifespan (same app, same process) makes new ones.
    app.state.live_hub = None
    app.state.dashboard = None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        check_schema(services.context.engine)
        _extend_leases_at_startup(services)  # before the first sweep and the first lease request
        _warm_samplers_at_startup(services)  # before a first proposal would import them under a study lock
        services.signal.bind(asyncio.get_running_loop())
        app.state.services = services
        sweeper = asyncio.create_task(_sweep_expired_leases(services))
        app.state.dashboard_warming = warm_dashboard_in_background(app)
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await _close_dashboard(app)
            services.close()

    app = FastAPI(
        title="hpo-service", version=package_version(), lifespan=lifespan,
        description="Hyperparameter optimisation for adapter fine-tunes: studies, trials and the worker protocol.",
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=DEFAULT_MAX_BODY_BYTES)  # 413 before a huge body is read
    app.state.bad_tokens = BadTokenLimiter()
    app.include_router(access_router)
    app.include_router(studies_router)
    app.include_router(workers_router)
    app.include_router(dashboard_router)
    mount_dashboard(app)

    served_version = app.version

    # async: no database, so no reason for a thread-pool hop; the version is read once (reading
    # the package metadata on every probe cost more than the rest of the request).
    @app.get("/api/v1/health", response_model=schemas.HealthOut, tags=["health"])
    async def health() -> schemas.HealthOut:
        return schemas.HealthOut(status="ok", version=served_version)

    return app
