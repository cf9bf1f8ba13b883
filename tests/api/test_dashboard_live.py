"""The dashboard's live events, its static files, and the pieces behind them (worker rows,
the incremental history)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hpo_service.api.app import create_app
from hpo_service.api.startup import bootstrap_token
from hpo_service.dashboard import ASSETS, load_files
from hpo_service.db.dashboard_queries import record_worker_seen
from hpo_service.db.engine import make_engine, make_session_factory
from hpo_service.db.migrate import upgrade
from hpo_service.db.models_dashboard import Worker
from hpo_service.orchestration import dashboard
from hpo_service.orchestration.dashboard_history import GRID_CAP, HistoryLog
from hpo_service.settings import Settings
from tests.browser.seeding import SPEC

API = "/api/v1"


@pytest.fixture
def api(sqlite_url: str) -> Iterator[TestClient]:
    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    token = bootstrap_token(settings, "dashboard tests").secret
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def read_events(client: TestClient, path: str, seconds: float, into: list[tuple[str, Any, str]],
                headers: dict[str, str] | None = None) -> None:
    """Collect (event, data, id) from an SSE stream that the server ends after ``seconds``."""
    with client.stream("GET", f"{API}{path}", params={"max_seconds": seconds}, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if not line:
                if "data" in event:
                    into.append((event.get("event", "message"), json.loads(event["data"]), event.get("id", "")))
                event = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                event[key] = value.strip()


def start_trial(client: TestClient, name: str = "live") -> tuple[int, dict[str, Any]]:
    study = client.post(f"{API}/studies", json={**SPEC, "name": name}).json()
    grant = client.post(f"{API}/leases", json={"worker_id": "w-live", "studies": [study["id"]], "wait_s": 0}).json()
    return study["id"], grant


def test_reports_and_decisions_arrive_live(api: TestClient) -> None:
    study_id, grant = start_trial(api)
    events: list[tuple[str, Any, str]] = []
    reader = threading.Thread(target=read_events, args=(api, f"/studies/{study_id}/events", 4.0, events))
    reader.start()
    time.sleep(1.5)
    token = grant["lease_token"]
    api.post(f"{API}/trials/{grant['trial_id']}/reports",
             json={"lease_token": token, "reports": [{"step": 0.5, "metrics": {"loss": 0.75}}]})
    api.post(f"{API}/trials/{grant['trial_id']}/complete", json={"lease_token": token, "metrics": {"loss": 0.7}})
    reader.join(timeout=20)
    kinds = [kind for kind, _data, _id in events]
    assert kinds[0] == "hello"
    reports = [r for kind, data, _ in events if kind == "reports" for r in data]
    assert [(r["trial_id"], r["step"], r["value"]) for r in reports] == [(grant["trial_id"], 0.5, 0.75)]
    assert "study" in kinds  # the completion changed the study's version
    decisions = [d for kind, data, _ in events if kind == "decisions" for d in data]
    assert all(d["trial_id"] == grant["trial_id"] for d in decisions)


def test_a_reconnecting_page_gets_what_it_missed(api: TestClient) -> None:
    study_id, grant = start_trial(api)
    first: list[tuple[str, Any, str]] = []
    read_events(api, f"/studies/{study_id}/events", 1.0, first)
    cursor = first[0][2]
    api.post(f"{API}/trials/{grant['trial_id']}/reports",
             json={"lease_token": grant["lease_token"], "reports": [{"step": 1, "metrics": {"loss": 0.5}}]})
    again: list[tuple[str, Any, str]] = []
    # Open for over two poll intervals: the missed report comes from the catch-up query, or, where
    # the hub's topic outlived the first stream by a moment, from its next poll (a loaded machine
    # made a 1 s window too short for that path once).
    read_events(api, f"/studies/{study_id}/events", 2.5, again, headers={"Last-Event-ID": cursor})
    reports = [r for kind, data, _ in again if kind == "reports" for r in data]
    assert [r["step"] for r in reports] == [1.0]


def test_quiet_streams_share_one_poll_per_second(api: TestClient) -> None:
    study_id, _grant = start_trial(api)
    streams: list[list[tuple[str, Any, str]]] = [[] for _ in range(6)]
    readers = [threading.Thread(target=read_events, args=(api, f"/studies/{study_id}/events", 3.0, s)) for s in streams]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=30)
    hub = api.app.state.live_hub  # type: ignore[attr-defined]
    assert 1 <= hub.polls <= 6  # ~3 s of polling at 1/s for all six pages together, not 6 per second
    assert all(s[0][0] == "hello" and len(s) == 1 for s in streams)  # and nothing else was sent


def test_the_global_stream_tells_the_studies_page_about_changes(api: TestClient) -> None:
    events: list[tuple[str, Any, str]] = []
    reader = threading.Thread(target=read_events, args=(api, "/events", 3.5, events))
    reader.start()
    time.sleep(1.5)
    api.post(f"{API}/studies", json={**SPEC, "name": "new-one"})
    reader.join(timeout=20)
    changed = [data for kind, data, _ in events if kind == "changed"]
    assert changed == [{}]  # a nudge without data: the stamps behind it span every project


# --- static files ------------------------------------------------------------------------


def test_dashboard_page_and_assets_are_served_locally_with_cache_headers(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert api.get("/", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
    index, assets = load_files()
    for name in ASSETS:
        version = assets[name].version
        if name.endswith((".js", ".css")):
            assert f"/static/{name}?v={version}" in page.text
        fresh = api.get(f"/static/{name}", params={"v": version}, headers={"Accept-Encoding": "gzip"})
        assert fresh.status_code == 200 and "immutable" in fresh.headers["cache-control"]
        assert fresh.content == assets[name].body  # httpx undoes the gzip
        stale = api.get(f"/static/{name}", params={"v": "old"})
        assert stale.headers["cache-control"] == "no-cache"
    echarts = api.get("/static/vendor/echarts.custom.min.js", headers={"Accept-Encoding": "gzip"})
    assert echarts.headers["content-encoding"] == "gzip"
    assert "Apache License" in api.get("/static/vendor/LICENSE").text
    assert api.get("/static/../app.py").status_code == 404
    assert api.get("/static/nope.js").status_code == 404
    assert index.body.startswith(b"<!doctype html>")


# --- worker rows -------------------------------------------------------------------------


def test_worker_rows_are_throttled_and_keep_what_they_know(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        with sessions.begin() as session:
            record_worker_seen(session, "host-1", None, t0, {"gpu_slot": 0})
        with sessions.begin() as session:
            record_worker_seen(session, "host-1", None, t0 + timedelta(seconds=1), None)  # within resolution
            record_worker_seen(session, "host-1", 7, t0 + timedelta(seconds=1), None)  # a new trial: written
        with sessions.begin() as session:
            record_worker_seen(session, "host-1", None, t0 + timedelta(seconds=30), None)
        with sessions() as session:
            worker = session.execute(select(Worker)).scalar_one()
            assert worker.hostname == "host" and worker.resources == {"gpu_slot": 0}
            assert worker.current_trial_id == 7
            assert worker.last_seen.replace(tzinfo=UTC) == t0 + timedelta(seconds=30)
            assert worker.first_seen.replace(tzinfo=UTC) == t0
    finally:
        engine.dispose()


# --- incremental history -------------------------------------------------------------------


def rows(ids: range, budget: float = 1.0) -> list[tuple[Any, ...]]:
    return [(i, i, budget, 100.0 - i, budget) for i in ids]


def test_history_log_skips_what_it_read_and_picks_up_late_commits() -> None:
    log = HistoryLog()
    log.consume(rows(range(1, 11)), lambda s: s)
    log.settle(5)  # ids up to 5 are settled, 6..10 will be read again
    assert log.watermark == 5
    log.consume([*rows(range(6, 11)), *rows(range(12, 13))], lambda s: s)  # 11 not visible yet
    log.consume(rows(range(11, 12)), lambda s: s)  # committed late: still counted
    assert log.total == 12 and log.spent == 12.0
    # in the order consumed: 11 (score 89) came after 12 (score 88), so it did not improve the best
    assert [p.trial_id for p in log.records] == [*range(1, 11), 12]


def test_history_log_thins_its_grid_by_powers_of_two() -> None:
    log = HistoryLog()
    log.consume(rows(range(1, 2 * GRID_CAP + 2)), lambda s: s)
    assert log.base == 4 and len(log.grid) <= GRID_CAP
    stride, points = log.sample(100)
    assert stride & (stride - 1) == 0 and len(points) <= 100
    assert points[0].seq == 1 and points[-1].seq == log.total
    assert all((p.seq - 1) % stride == 0 for p in points[:-1])


# --- what only some studies have -------------------------------------------------------------


def finish_segments(api: TestClient, study_id: int, count: int, metric: str = "loss") -> None:
    for k in range(count):
        grant = api.post(f"{API}/leases", json={"worker_id": "w-ext", "studies": [study_id], "wait_s": 0}).json()
        api.post(f"{API}/trials/{grant['trial_id']}/complete",
                 json={"lease_token": grant["lease_token"], "metrics": {metric: 1.0 + k / 10}})


def test_extensions_show_a_raised_budget_from_the_decision_log(api: TestClient) -> None:
    study_id = api.post(f"{API}/studies", json={**SPEC, "name": "deepened"}).json()["id"]
    assert api.get(f"{API}/studies/{study_id}/extensions").json() == {"mup_transfer": None, "budget_history": None}
    finish_segments(api, study_id, 3)
    raised = api.patch(f"{API}/studies/{study_id}", json={"max_budget": 27})
    assert raised.status_code == 200, raised.text
    history = api.get(f"{API}/studies/{study_id}/extensions").json()["budget_history"]
    assert history["max_budget"] == 27
    assert [d["kind"] for d in history["raises"]] == ["extend"] and "from 9 to 27" in history["raises"][0]["reason"]


def test_extensions_show_the_stages_of_a_mup_transfer_study(api: TestClient) -> None:
    spec = {"name": "transfer", "objective": {"metric": "eval_loss"}, "search_space": "mup_gpt",
            "scheduler": {"kind": "mup_transfer", "min_budget": 1, "max_budget": 9, "eta": 3,
                          "transfer": {"proxy": [64], "target": 256, "top_k": 1}},
            "trainer": {"name": "mup_gpt", "params": {"max_budget": 9}}}
    created = api.post(f"{API}/studies", json=spec)
    assert created.status_code == 201, created.text
    finish_segments(api, created.json()["id"], 3, metric="eval_loss")
    transfer = api.get(f"{API}/studies/{created.json()['id']}/extensions").json()["mup_transfer"]
    assert transfer == api.get(f"{API}/studies/{created.json()['id']}/transfer").json()
    assert transfer["stage"] == 1 and transfer["proxies"][0]["width"] == 64


def test_importance_of_a_big_study_is_fitted_in_the_background(api: TestClient, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr(dashboard, "IMPORTANCE_SYNC_OBSERVATIONS", {})  # every study counts as big
    monkeypatch.setattr(dashboard, "IMPORTANCE_SYNC_DEFAULT", 0)
    study_id = api.post(f"{API}/studies", json={**SPEC, "name": "big-one"}).json()["id"]
    finish_segments(api, study_id, 4)
    first = api.get(f"{API}/studies/{study_id}/importance").json()
    assert first["pending"] and first["importances"] == {}
    deadline = time.monotonic() + 30
    while (done := api.get(f"{API}/studies/{study_id}/importance").json())["pending"]:
        assert time.monotonic() < deadline, "the background fit did not finish"
        time.sleep(0.2)
    assert done["used"] >= 2 and sum(done["importances"].values()) == pytest.approx(1.0)
