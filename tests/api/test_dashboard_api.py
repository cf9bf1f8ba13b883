"""The dashboard's API: every endpoint it calls, with the downsampling contracts checked
against the full data, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hpo_service.api.app import create_app
from hpo_service.api.startup import bootstrap_token
from hpo_service.db.engine import make_engine, make_session_factory
from hpo_service.db.models import RungResult, Study
from hpo_service.orchestration.context import Context
from hpo_service.orchestration.dashboard import DashboardService
from hpo_service.settings import Settings
from tests.browser.seeding import SPEC, Seeded, SeedService, run_study, spec
from tests.support import postgres as pg

API = "/api/v1"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[TestClient, Seeded, str]]:
    """One study run through the protocol, shared by the module's tests on each backend (they only
    read it; tests that write create studies of their own)."""
    admin = request.getfixturevalue("postgres_admin_url") if request.param == "postgresql" else None
    url = pg.create_throwaway_database(admin) if admin else f"sqlite:///{tmp_path_factory.mktemp('dash') / 'hpo.db'}"
    try:
        service = SeedService(url)
        try:
            study = run_study(service.studies, service.protocol,
                              spec(scheduler={**SPEC["scheduler"], "iterations": 2}))
        finally:
            service.close()
        settings = Settings(database_url=url)
        token = bootstrap_token(settings, "dashboard tests").secret
        with TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"}) as client:
            yield client, study, url
    finally:
        if admin:
            pg.drop_database(admin, url)


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(API + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def results_in_order(url: str, study_id: int) -> list[RungResult]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            query = select(RungResult).where(RungResult.study_id == study_id).order_by(RungResult.id)
            return list(connection.execute(query))  # type: ignore[arg-type]
    finally:
        engine.dispose()


def study_row(url: str, study_id: int) -> Any:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(Study).where(Study.id == study_id)).one()
    finally:
        engine.dispose()


# --- history ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_points", [3, 7, 2000])
def test_history_samples_at_most_max_points_and_keeps_every_improvement(
    seeded: tuple[TestClient, Seeded, str], max_points: int
) -> None:
    client, study, url = seeded
    history = get(client, f"/studies/{study.study_id}/history", max_points=max_points)
    results = results_in_order(url, study.study_id)
    total = len(results)
    assert history["total"] == total == study.segments
    assert history["columns"] == ["seq", "trial_id", "number", "budget", "value", "budget_spent"]
    stride, points = history["stride"], history["points"]
    assert stride & (stride - 1) == 0 and (total - 1) / stride <= max_points - 2
    assert len(points) <= max_points
    assert [p[0] for p in points[:-1]] == list(range(1, total + 1, stride))[: len(points) - 1]
    assert points[0][0] == 1 and points[-1][0] == total
    # every improvement of the best value at each budget level, exactly
    best: dict[float, float] = {}
    expected = []
    for seq, result in enumerate(results, 1):
        if result.budget not in best or result.score < best[result.budget]:
            best[result.budget] = result.score
            expected.append((seq, result.trial_id, result.budget, result.value))
    assert [(p[0], p[1], p[3], p[4]) for p in history["best"]] == expected
    assert history["levels"] == sorted(best)
    # cumulative budget: the last point has spent what the study has
    assert points[-1][5] == pytest.approx(study_row(url, study.study_id).budget_spent)


def test_history_from_the_database_pass_equals_the_incremental_one(seeded: tuple[TestClient, Seeded, str]) -> None:
    """A first view of settled results starts from one SQL pass; fresh results are consumed in Python."""
    client, study, url = seeded
    incremental = get(client, f"/studies/{study.study_id}/history", max_points=7)
    engine = make_engine(url)
    later = datetime.now(UTC) + timedelta(minutes=5)  # every result has settled by then
    context = Context(engine=engine, sessions=make_session_factory(engine), settings=Settings(database_url=url),
                      clock=lambda: later)
    try:
        from_database = asdict(DashboardService(context).history(study.study_id, 7))
    finally:
        engine.dispose()
    for key in ("total", "stride", "levels"):
        assert from_database[key] == incremental[key]
    for rows in ("points", "best"):
        assert [r[:5] for r in from_database[rows]] == [r[:5] for r in incremental[rows]]
        assert [r[5] for r in from_database[rows]] == pytest.approx([r[5] for r in incremental[rows]])


def test_history_of_a_study_without_results_is_empty(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, _study, _url = seeded
    created = client.post(API + "/studies", json={**SPEC, "name": "empty-one"}).json()
    history = get(client, f"/studies/{created['id']}/history")
    assert history["total"] == 0 and history["points"] == [] and history["best"] == []


def test_history_grows_incrementally(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, url = seeded
    first = get(client, f"/studies/{study.study_id}/history")
    service = SeedService(url)
    try:
        more = run_study(service.studies, service.protocol, spec(name="second"), segments=3, requeue_one=False)
        assert more.segments == 3
    finally:
        service.close()
    # another study's results change nothing; this study's history is served from the kept state
    again = get(client, f"/studies/{study.study_id}/history")
    assert again == first


# --- curves ----------------------------------------------------------------------------


def test_curves_are_the_top_trials_plus_a_sample_by_number(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, url = seeded
    data = get(client, f"/studies/{study.study_id}/curves", max_trials=5, top=3, max_points=3)
    trials_created = study_row(url, study.study_id).trials_created
    assert data["stride"] == math.ceil(trials_created / 5)
    curves = data["curves"]
    assert len(curves) <= 5 + 3
    top = [c for c in curves if c["top"]]
    assert len(top) == 3
    # the top trials: best results at the highest budget level
    results = results_in_order(url, study.study_id)
    highest = max(r.budget for r in results)
    best_ids = [r.trial_id for r in sorted((r for r in results if r.budget == highest), key=lambda r: r.score)]
    assert [c["trial_id"] for c in top] == best_ids[:3]
    sampled = [c for c in curves if not c["top"]]
    assert all(c["number"] % data["stride"] == 0 for c in sampled)
    for curve in curves:
        assert 1 <= len(curve["points"]) <= 3
        steps = [p[0] for p in curve["points"]]
        assert steps == sorted(steps)
        detail = get(client, f"/trials/{curve['trial_id']}")
        all_steps = [r["step"] for r in detail["reports"]]
        assert steps[0] == all_steps[0] and steps[-1] == all_steps[-1]
        assert len(curve["rungs"]) == len(detail["rung_results"])


def test_curves_carry_rung_decisions_and_reasons(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, _url = seeded
    curves = get(client, f"/studies/{study.study_id}/curves", max_trials=1000, top=0)["curves"]
    outcomes = {mark["outcome"] for c in curves for mark in c["rungs"]}
    assert {"promoted", "stopped", "finished"} <= outcomes
    promoted = next(m for c in curves for m in c["rungs"] if m["outcome"] == "promoted")
    assert "promoted" in promoted["reason"]
    requeued = next(c for c in curves if c["trial_id"] == study.requeued_trial)
    assert [e["kind"] for e in requeued["events"]] == ["requeue"]


# --- parallel coordinates and importance -----------------------------------------------


def test_parallel_is_bounded_and_starts_with_the_best(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, url = seeded
    data = get(client, f"/studies/{study.study_id}/parallel", max_points=4, top=2)
    assert [a["name"] for a in data["params"]] == ["lr", "rank", "optimizer"]
    assert data["params"][2]["choices"] == ["adamw", "lion", "sgd"]
    assert len(data["rows"]) <= 4 + 2
    level = data["budget"]
    at_level = sorted((r for r in results_in_order(url, study.study_id) if r.budget == level), key=lambda r: r.score)
    assert data["observations"] == len(at_level)
    assert [row[0] for row in data["rows"][:2]] == [r.trial_id for r in at_level[:2]]
    assert all(len(row) == 3 + 3 for row in data["rows"])
    other = next(b for b, _n in data["levels"] if b != level)
    assert get(client, f"/studies/{study.study_id}/parallel", budget=other)["budget"] == other
    missing = client.get(f"{API}/studies/{study.study_id}/parallel", params={"budget": 1234})
    assert missing.status_code == 422 and "levels with results" in missing.json()["message"]


def test_importance_uses_optuna_over_one_budget_level(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, _url = seeded
    data = get(client, f"/studies/{study.study_id}/importance")
    assert data["evaluator"] == "ped_anova" and data["used"] >= 2
    assert set(data["importances"]) <= {"lr", "rank", "optimizer"}
    assert sum(data["importances"].values()) == pytest.approx(1.0)
    bad = client.get(f"{API}/studies/{study.study_id}/importance", params={"evaluator": "astrology"})
    assert bad.status_code == 422 and "ped_anova" in bad.json()["message"]


# --- hyperband view --------------------------------------------------------------------


def test_hyperband_view_counts_trials_in_and_out_of_each_rung(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, url = seeded
    view = get(client, f"/studies/{study.study_id}/hyperband")
    assert not view["grouped"]
    cells = {(c["bracket"], c["rung"]): c for c in view["cells"]}
    assert sum(c["entered"] for (b, r), c in cells.items() if r == min(r2 for b2, r2 in cells if b2 == b)) \
        == study_row(url, study.study_id).trials_created
    for (bracket, rung), cell in cells.items():
        assert cell["entered"] == cell["in_flight"] + cell["waiting"] + cell["promoted"] + cell["stopped"] \
            + cell["completed"] + cell["failed"]
        if (bracket, rung + 1) in cells:
            assert cells[(bracket, rung + 1)]["entered"] == cell["promoted"]


def test_hyperband_view_groups_many_brackets_by_geometry() -> None:
    from hpo_service.domain.states import Direction
    from hpo_service.orchestration.dashboard_build import hyperband_view

    counts = {(b, 0, "stopped"): 3 for b in range(40)} | {(b, 1, "completed"): 1 for b in range(0, 40, 2)}
    summary = [(b, 0, 1.0, 3, 1 if b % 2 == 0 else 0, 0.5 + b) for b in range(40)]
    view = hyperband_view(counts, summary, lambda b: b % 2, 30, Direction.MINIMIZE, lambda b, r: 9.0)
    assert view.grouped and view.brackets == 40
    by_cell = {(c.bracket, c.rung): c for c in view.cells}
    assert by_cell[(0, 0)].brackets == 20 and by_cell[(0, 0)].entered == 80 and by_cell[(0, 0)].promoted == 20
    assert by_cell[(0, 1)].entered == 20 and by_cell[(0, 1)].budget == 9.0
    assert by_cell[(1, 0)].entered == 60 and by_cell[(1, 0)].best_value == 1.5


# --- trials table ----------------------------------------------------------------------


def test_trial_table_pages_sorts_and_filters_on_the_server(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, _url = seeded
    path = f"/studies/{study.study_id}/trial-table"
    everything = get(client, path, limit=500)["items"]
    page = get(client, path, limit=5, offset=5)
    assert page["total"] == len(everything) and [t["number"] for t in page["items"]] == list(range(5, 10))
    by_value = get(client, path, sort="-value", limit=500)["items"]
    values = [t["value"] for t in by_value if t["value"] is not None]
    assert values == sorted(values, reverse=True)
    ranged = get(client, path, param=["lr:0.001:0.01", "optimizer=lion"], limit=500)
    expected = [t["id"] for t in everything
                if 0.001 <= t["params"]["lr"] <= 0.01 and t["params"]["optimizer"] == "lion"]
    assert sorted(t["id"] for t in ranged["items"]) == sorted(expected) and ranged["total"] == len(expected)
    open_ended = get(client, path, param="rank::8", limit=500)["items"]
    assert {t["id"] for t in open_ended} == {t["id"] for t in everything if t["params"]["rank"] <= 8}
    ranks = [t["params"]["rank"] for t in get(client, path, sort="param:rank", limit=500)["items"]]
    assert ranks == sorted(ranks)
    assert get(client, path, sort="param:optimizer", limit=500)["total"] == len(everything)
    stopped = get(client, path, state="stopped", bracket=0, rung=0, limit=500)["items"]
    assert stopped and all(t["state"] == "stopped" and t["bracket"] == 0 and t["rung"] == 0 for t in stopped)


@pytest.mark.parametrize(("params", "message"), [
    ({"param": "nope:1:2"}, "unknown parameter 'nope'"),
    ({"param": "lr:abc:"}, "is not a number"),
    ({"param": "optimizer:1:2"}, "optimizer=<choice>"),
    ({"param": "optimizer=adam"}, "not a choice"),
    ({"param": "lr"}, "name:low:high"),
    ({"sort": "color"}, "cannot sort by 'color'"),
    ({"state": "zombie"}, "state"),
])
def test_trial_table_refuses_bad_filters_with_a_message(
    seeded: tuple[TestClient, Seeded, str], params: dict[str, str], message: str
) -> None:
    client, study, _url = seeded
    response = client.get(f"{API}/studies/{study.study_id}/trial-table", params=params)
    assert response.status_code == 422 and message in response.json()["message"]


# --- trial page --------------------------------------------------------------------------


def test_trial_overview_has_attempts_rungs_and_a_thinned_curve(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, _url = seeded
    trial_id = study.requeued_trial
    full = get(client, f"/trials/{trial_id}")
    overview = get(client, f"/trials/{trial_id}/overview")
    assert overview["trial"]["id"] == trial_id and overview["metric"] == "loss"
    assert overview["reports_total"] == len(full["reports"]) == len(overview["curve"])
    assert [a["attempt"] for a in overview["attempts"]] == [1, 2]
    ended = overview["attempts"][0]["ended_by"]
    assert ended["kind"] == "requeue" and "CUDA out of memory" in ended["reason"]
    assert [m["rung"] for m in overview["rungs"]] == [r["rung"] for r in full["rung_results"]]
    assert overview["checkpoint_uri"].startswith("file://") and overview["adapter_download_url"] is None
    assert overview["worker"]["worker_id"] == overview["trial"]["lease_owner"]
    thin = get(client, f"/trials/{trial_id}/overview", max_points=2)
    assert [p[0] for p in thin["curve"]] == [full["reports"][0]["step"], full["reports"][-1]["step"]]
    assert client.get(f"{API}/trials/999999/overview").status_code == 404


# --- workers -----------------------------------------------------------------------------


def test_workers_show_what_they_run_their_heartbeat_age_and_gpu_slot(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, _study, _url = seeded
    live = client.post(API + "/studies", json={**SPEC, "name": "worker-view"}).json()
    grant = client.post(API + "/leases", json={"worker_id": "node-a-1", "studies": [live["id"]], "wait_s": 0,
                                               "resources": {"gpu_slot": 3, "hostname": "node-a"}}).json()
    client.post(f"{API}/trials/{grant['trial_id']}/heartbeat", json={"lease_token": grant["lease_token"]})
    workers = {w["worker_id"]: w for w in get(client, "/workers")}
    worker = workers["node-a-1"]
    assert worker["hostname"] == "node-a" and worker["gpu_slot"] == "3" and worker["live"]
    assert worker["running"]["id"] == grant["trial_id"] and worker["study_name"] == "worker-view"
    assert 0 <= worker["heartbeat_age_s"] < 30
    assert workers["seed-0"]["running"] is None and workers["seed-0"]["last_trial_id"] is not None
    assert not get(client, "/workers", stale_after_s=1e-6)[0]["live"]


def test_extensions_are_hooks_without_data(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, _url = seeded
    assert get(client, f"/studies/{study.study_id}/extensions") == {"mup_transfer": None, "budget_history": None}


@pytest.mark.parametrize("path", ["history", "curves", "parallel", "importance", "hyperband", "trial-table",
                                  "extensions", "events"])
def test_unknown_study_is_404_everywhere(seeded: tuple[TestClient, Seeded, str], path: str) -> None:
    client, _study, _url = seeded
    response = client.get(f"{API}/studies/424242/{path}")
    assert response.status_code == 404 and "424242" in response.json()["message"]


def test_dashboard_endpoints_need_a_token_and_keep_projects_apart(seeded: tuple[TestClient, Seeded, str]) -> None:
    client, study, _url = seeded
    paths = [f"/studies/{study.study_id}/{p}" for p in ("history", "curves", "parallel", "importance", "hyperband",
                                                        "trial-table", "extensions", "events")]
    paths += [f"/trials/{study.requeued_trial}/overview", "/workers", "/events"]
    for path in paths:
        assert client.get(API + path, headers={"Authorization": ""}).status_code == 401, path
    issued = client.post(API + "/tokens", json={"project": "elsewhere", "name": "reader", "scope": "read"})
    assert issued.status_code == 201, issued.text
    other = {"Authorization": f"Bearer {issued.json()['token']}"}
    for path in paths[:-2]:
        response = client.get(API + path, headers=other)
        assert response.status_code == 404, (path, response.text)
    assert client.get(API + "/workers", headers=other).json() == []  # none served its project


def test_the_importance_evaluators_are_an_enum_that_matches_the_sampling_layer() -> None:
    from typing import get_args

    from hpo_service.api.routes_dashboard import Evaluator
    from hpo_service.sampling.importance import EVALUATORS

    assert get_args(Evaluator) == EVALUATORS
