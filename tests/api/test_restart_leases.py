"""An API restart longer than the lease does not requeue the trials in flight (finding F11).

The server is stopped and started again (the app's lifespan, twice, on one database) while a
worker holds a lease; the outage lasts longer than the lease. Time is a fake clock installed in
every server start's services, moved instead of slept: the outage, then the extended period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hpo_service.api import app as app_module
from hpo_service.api.app import create_app
from hpo_service.api.services import Services
from hpo_service.api.startup import bootstrap_token
from hpo_service.db.migrate import upgrade
from hpo_service.settings import Settings
from tests.support.specs import one_trial_spec

LEASE_S = 30

SPEC: dict[str, Any] = one_trial_spec("restart", lease_seconds=LEASE_S, max_attempts=3)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


Server = Callable[[], AbstractContextManager[TestClient]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(database_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """Starts a fresh API server (a new app, its lifespan run) on the one database, with the fake clock."""
    upgrade(database_url)
    settings = Settings(database_url=database_url)
    token = bootstrap_token(settings, "test admin").secret
    real_build = app_module.build_services

    def build_with_clock(settings: Settings) -> Services:
        services = real_build(settings)
        services.context.clock = clock  # before the lifespan's start-up work uses it
        return services

    monkeypatch.setattr(app_module, "build_services", build_with_clock)
    yield lambda: TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"})


def services_of(api: TestClient) -> Services:
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    return services


def lease_then_outage(server: Server, clock: Clock) -> dict[str, Any]:
    with server() as api:
        assert api.post("/api/v1/studies", json=SPEC).status_code == 201
        grant = api.post("/api/v1/leases", json={"worker_id": "w1", "wait_s": 0})
        assert grant.status_code == 200, grant.text
    clock.advance(4 * LEASE_S)  # the server is down for four lease periods: no heartbeat gets through
    return grant.json()


def trial_of(api: TestClient, trial_id: int) -> dict[str, Any]:
    response = api.get(f"/api/v1/trials/{trial_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_after_a_long_restart_the_worker_still_holds_its_lease(
    server: Server, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    grant = lease_then_outage(server, clock)
    trial_id, token = grant["trial_id"], {"lease_token": grant["lease_token"]}
    caplog.set_level(logging.INFO, logger="hpo_service.api")
    with server() as api:
        assert services_of(api).protocol.expire_leases() == 0  # what the expiry sweeper runs
        assert trial_of(api, trial_id)["trial"]["state"] == "running"
        assert [r.getMessage() for r in caplog.records if "start-up: extended" in r.getMessage()] == [
            "start-up: extended 1 running lease(s) to at least one lease period from now"]
        # The worker's calls with its token, retried after the outage, all get through.
        beat = api.post(f"/api/v1/trials/{trial_id}/heartbeat", json=token)
        assert beat.status_code == 200, beat.text
        reports = api.post(f"/api/v1/trials/{trial_id}/reports",
                           json={**token, "reports": [{"step": 1, "metrics": {"loss": 0.3}}]})
        assert reports.status_code == 200, reports.text
        done = api.post(f"/api/v1/trials/{trial_id}/complete", json={**token, "metrics": {"loss": 0.3}})
        assert done.status_code == 200, done.text
        detail = trial_of(api, trial_id)
    assert detail["trial"]["attempt"] == 1 and detail["trial"]["value"] == 0.3
    assert [d for d in detail["decisions"] if d["kind"] == "requeue"] == []


def test_a_dead_workers_trial_is_requeued_one_lease_period_after_the_restart(server: Server, clock: Clock) -> None:
    grant = lease_then_outage(server, clock)
    trial_id = grant["trial_id"]
    with server() as api:
        protocol = services_of(api).protocol
        clock.advance(LEASE_S - 1)
        assert protocol.expire_leases() == 0
        assert trial_of(api, trial_id)["trial"]["state"] == "running"
        clock.advance(2)  # the extended lease ran out and the worker never came back
        protocol.expire_leases()  # (or the sweeper did, in the background: the same clock)
        detail = trial_of(api, trial_id)
        assert detail["trial"]["state"] == "pending" and detail["trial"]["attempt"] == 2
        assert "lease of worker w1 expired" in detail["decisions"][-1]["reason"]
        stale = api.post(f"/api/v1/trials/{trial_id}/heartbeat", json={"lease_token": grant["lease_token"]})
        assert stale.status_code == 409 and stale.json()["error"] == "stale_lease"
        regrant = api.post("/api/v1/leases", json={"worker_id": "w2", "wait_s": 0})
        assert regrant.status_code == 200 and regrant.json()["trial_id"] == trial_id
        assert regrant.json()["attempt"] == 2
