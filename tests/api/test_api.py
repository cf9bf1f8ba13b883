"""REST API tests: every endpoint, and bad input that gets a clear 4xx and changes nothing."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.api.startup import bootstrap_token
from hpo_service.db.migrate import upgrade
from hpo_service.settings import Settings

SPEC: dict[str, Any] = {
    "name": "api-study",
    "objective": {"metric": "loss", "direction": "minimize"},
    "search_space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "rank": {"type": "int", "low": 2, "high": 16},
        "opt": {"type": "categorical", "choices": ["adamw", "sgd"]},
    },
    "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
    "sampler": {"kind": "tpe", "seed": 3},
    "trainer": {"name": "synthetic", "params": {"noise": 0.0}},
}


@pytest.fixture
def api(database_url: str) -> Iterator[TestClient]:
    upgrade(database_url)
    settings = Settings(database_url=database_url)
    token = bootstrap_token(settings, "test admin").secret
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def spec(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(SPEC)
    result.update(changes)
    return result


def lease(api: TestClient, worker: str = "w1") -> dict[str, Any]:
    response = api.post("/api/v1/leases", json={"worker_id": worker, "wait_s": 0})
    assert response.status_code == 200, response.text
    return response.json()


def test_health_and_openapi(api: TestClient) -> None:
    assert api.get("/api/v1/health").json()["status"] == "ok"
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/studies", "/api/v1/leases", "/api/v1/trials/{trial_id}/reports",
                 "/api/v1/trials/{trial_id}/complete", "/api/v1/trials/{trial_id}/fail",
                 "/api/v1/trials/{trial_id}/heartbeat", "/api/v1/studies/{study_id}/best"):
        assert path in paths
    assert api.get("/docs").status_code == 200


def test_study_lifecycle_over_http(api: TestClient) -> None:
    created = api.post("/api/v1/studies", json=spec())
    assert created.status_code == 201, created.text
    study = created.json()
    assert study["status"] == "running" and study["best"] is None
    assert api.get(f"/api/v1/studies/{study['id']}").json()["name"] == "api-study"
    assert api.get("/api/v1/studies", params={"name": "api"}).json()["total"] == 1
    assert api.get("/api/v1/studies", params={"status": "paused"}).json()["total"] == 0

    grant = lease(api)
    assert grant["budget_from"] == 0 and grant["budget_to"] == 1 and grant["checkpoint_in"] is None
    assert set(grant["params"]) == {"lr", "rank", "opt"}
    trial_id, token = grant["trial_id"], grant["lease_token"]
    ack = api.post(f"/api/v1/trials/{trial_id}/reports",
                   json={"lease_token": token, "reports": [{"step": 0.5, "metrics": {"loss": 0.9}},
                                                           {"step": 1, "metrics": {"loss": 0.8}}]})
    assert ack.json() == {"directive": "continue", "expires_at": None}
    assert api.post(f"/api/v1/trials/{trial_id}/heartbeat", json={"lease_token": token}).json()["expires_at"]
    done = api.post(f"/api/v1/trials/{trial_id}/complete",
                    json={"lease_token": token, "metrics": {"loss": 0.8}, "checkpoint_out": "file:///tmp/c"})
    assert done.json()["state"] == "paused"

    best = api.get(f"/api/v1/studies/{study['id']}/best").json()
    assert best["trial"]["id"] == trial_id and best["value"] == 0.8
    detail = api.get(f"/api/v1/trials/{trial_id}").json()
    assert [r["step"] for r in detail["reports"]] == [0.5, 1.0]
    assert detail["rung_results"][0]["budget"] == 1
    trials = api.get(f"/api/v1/studies/{study['id']}/trials", params={"state": "paused"}).json()
    assert trials["total"] == 1
    rungs = api.get(f"/api/v1/studies/{study['id']}/rungs").json()
    assert rungs == [{"bracket": 0, "rung": 0, "budget": 1.0, "results": 1, "promoted": 0, "best_value": 0.8}]

    assert api.post(f"/api/v1/studies/{study['id']}/pause").json()["status"] == "paused"
    assert api.post("/api/v1/leases", json={"worker_id": "w1", "wait_s": 0}).status_code == 204
    assert api.post(f"/api/v1/studies/{study['id']}/resume").json()["status"] == "running"
    assert api.post(f"/api/v1/studies/{study['id']}/cancel").json()["status"] == "cancelled"
    kinds = [d["kind"] for d in api.get(f"/api/v1/studies/{study['id']}/decisions").json()]
    assert kinds[-1] == "cancelled"


def test_trials_are_paged_and_filtered(api: TestClient) -> None:
    study_id = api.post("/api/v1/studies", json=spec()).json()["id"]
    for worker in range(5):
        lease(api, f"w{worker}")
    page = api.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [t["number"] for t in page["items"]] == [1, 2]
    assert api.get(f"/api/v1/studies/{study_id}/trials", params={"state": "running"}).json()["total"] == 5
    assert api.get(f"/api/v1/studies/{study_id}/trials", params={"bracket": 1}).json()["total"] == 0
    reverse = api.get(f"/api/v1/studies/{study_id}/trials", params={"order": "-number", "limit": 1}).json()
    assert reverse["items"][0]["number"] == 4


def test_long_poll_waits_then_returns_204(api: TestClient) -> None:
    response = api.post("/api/v1/leases", json={"worker_id": "w1", "wait_s": 0.3})
    assert response.status_code == 204


BAD_SPECS = [
    ("negative budget", spec(scheduler={"kind": "hyperband", "min_budget": -1, "max_budget": 9}),
     "scheduler.min_budget"),
    ("min above max", spec(scheduler={"kind": "hyperband", "min_budget": 10, "max_budget": 9}), "max_budget"),
    ("unknown trainer", spec(trainer={"name": "nope", "params": {}}), "trainer 'nope' is not registered"),
    ("bad trainer params", spec(trainer={"name": "synthetic", "params": {"noise": "loud"}}), "trainer.params.noise"),
    ("typo in a key", spec(limits={"max_trail": 3}), "limits.max_trail"),
    ("log with low 0", spec(search_space={"lr": {"type": "float", "low": 0, "high": 1, "log": True}}),
     "'log: true' needs 'low' > 0"),
    ("wrong type", spec(name=123), "name"),
    ("unknown named space", spec(search_space="nope"), "no search space named 'nope'"),
    ("objective not reported", spec(objective={"metric": "bleu"}), "does not report 'bleu'"),
    ("asha without limits", spec(scheduler={"kind": "asha"}), "limits.max_trials"),
    ("bad sampler", spec(sampler={"kind": "simulated-annealing"}), "sampler.kind"),
]


@pytest.mark.parametrize(("case", "body", "message"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_invalid_specs_get_422_naming_the_field(api: TestClient, case: str, body: Any, message: str) -> None:
    response = api.post("/api/v1/studies", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert message in response.json()["message"]
    assert api.get("/api/v1/studies").json()["total"] == 0


def test_named_search_space_is_resolved_inline(api: TestClient) -> None:
    study = api.post("/api/v1/studies", json=spec(search_space="synthetic")).json()
    assert "learning_rate" in study["spec"]["search_space"]


def test_malformed_json_gets_422(api: TestClient) -> None:
    response = api.post("/api/v1/studies", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["message"]


BAD_PROTOCOL_CALLS = [
    ("unknown study", "GET", "/api/v1/studies/999", None, 404),
    ("unknown trial", "GET", "/api/v1/trials/999", None, 404),
    ("report for unknown trial", "POST", "/api/v1/trials/999/reports",
     {"lease_token": "x", "reports": [{"step": 1, "metrics": {"loss": 1}}]}, 404),
    ("negative step", "POST", "/api/v1/trials/1/reports",
     {"lease_token": "x", "reports": [{"step": -1, "metrics": {"loss": 1}}]}, 422),
    ("empty report batch", "POST", "/api/v1/trials/1/reports", {"lease_token": "x", "reports": []}, 422),
    ("lease without worker", "POST", "/api/v1/leases", {"wait_s": 0}, 422),
    ("huge wait", "POST", "/api/v1/leases", {"worker_id": "w", "wait_s": 10_000}, 422),
    ("bad state filter", "GET", "/api/v1/studies/1/trials?state=zombie", None, 422),
    ("unknown action", "POST", "/api/v1/studies/1/explode", None, 422),
]


@pytest.mark.parametrize(("case", "method", "path", "body", "status"), BAD_PROTOCOL_CALLS,
                         ids=[c[0] for c in BAD_PROTOCOL_CALLS])
def test_bad_calls_get_clear_4xx(api: TestClient, case: str, method: str, path: str, body: Any, status: int) -> None:
    api.post("/api/v1/studies", json=spec())
    response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["message"]


def test_stale_token_gets_409_and_report_after_completion_gets_409(api: TestClient) -> None:
    api.post("/api/v1/studies", json=spec())
    grant = lease(api)
    trial_id, token = grant["trial_id"], grant["lease_token"]
    wrong = api.post(f"/api/v1/trials/{trial_id}/reports",
                     json={"lease_token": "not-the-token", "reports": [{"step": 1, "metrics": {"loss": 1}}]})
    assert wrong.status_code == 409 and wrong.json()["error"] == "stale_lease"
    api.post(f"/api/v1/trials/{trial_id}/complete", json={"lease_token": token, "metrics": {"loss": 0.5}})
    late = api.post(f"/api/v1/trials/{trial_id}/reports",
                    json={"lease_token": token, "reports": [{"step": 2, "metrics": {"loss": 0.4}}]})
    assert late.status_code == 409 and "paused" in late.json()["message"]
    assert [r["step"] for r in api.get(f"/api/v1/trials/{trial_id}").json()["reports"]] == []


def test_adapter_export_of_a_trainer_without_adapters_is_refused(api: TestClient) -> None:
    study_id = api.post("/api/v1/studies", json=spec()).json()["id"]
    assert api.get(f"/api/v1/studies/{study_id}/best/adapter").status_code == 404  # nothing finished yet
    grant = lease(api)
    completed = api.post(f"/api/v1/trials/{grant['trial_id']}/complete",
                         json={"lease_token": grant["lease_token"], "metrics": {"loss": 0.5}})
    assert completed.status_code == 200, completed.text
    response = api.get(f"/api/v1/studies/{study_id}/best/adapter")
    assert response.status_code == 422 and "produces no adapter" in response.json()["message"], response.text


def test_transfer_report_of_another_kind_is_refused(api: TestClient) -> None:
    study_id = api.post("/api/v1/studies", json=spec()).json()["id"]
    response = api.get(f"/api/v1/studies/{study_id}/transfer")
    assert response.status_code == 422 and "not a mup_transfer study" in response.json()["message"]
