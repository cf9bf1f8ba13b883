"""A starting server builds the dashboard's incremental views of its running studies in the
background (DashboardService.warm, `HPO_DASHBOARD_WARM_STUDIES`), so that the first page opened
after a restart does not read a whole study."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.api.startup import bootstrap_token
from hpo_service.settings import Settings
from tests.browser.seeding import SPEC, SeedService, run_study, spec
from tests.e2e.harness import wait_for


def seed(url: str) -> tuple[int, int]:
    """A running study half-way, and a finished one."""
    service = SeedService(url)
    try:
        running = run_study(service.studies, service.protocol, spec(name="warm-running"), segments=12)
        finished = run_study(service.studies, service.protocol,
                             spec(name="warm-finished", scheduler={**SPEC["scheduler"], "iterations": 1}))
    finally:
        service.close()
    return running.study_id, finished.study_id


def test_the_views_of_running_studies_are_built_at_start_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    running, finished = seed(url)
    settings = Settings(database_url=url)
    token = bootstrap_token(settings, "warm-up test").secret
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"}) as client:
        cache = client.app.state.dashboard.cache  # type: ignore[attr-defined]

        def warmed() -> bool:
            log = cache.peek(("history-log", running))
            return log is not None and log[2].total > 0 and cache.peek(("rung-ledger", running)) is not None

        wait_for(warmed, 30, "the running study's views to be built")
        assert cache.peek(("history-log", finished)) is None  # only running studies
        # What the warm-up built is what a page reads.
        history = client.get(f"/api/v1/studies/{running}/history").json()
        assert history["total"] == cache.peek(("history-log", running))[2].total


def test_no_warm_up_when_disabled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    running, _finished = seed(url)
    settings = Settings(database_url=url, dashboard_warm_studies=0)
    bootstrap_token(settings, "warm-up test")
    with TestClient(create_app(settings)) as client:
        assert getattr(client.app.state, "dashboard", None) is None  # not even made before a page asks
