"""`POST /trials/{id}/fail` with a partial checkpoint, over HTTP (the protocol's contract is in tests/db)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.api.startup import bootstrap_token
from hpo_service.db.migrate import upgrade
from hpo_service.settings import Settings

SPEC: dict[str, Any] = {
    "name": "partial",
    "objective": {"metric": "loss", "direction": "minimize"},
    "search_space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
    "scheduler": {"kind": "asha", "min_budget": 3, "max_budget": 9, "eta": 3},
    "sampler": {"kind": "random", "seed": 3},
    "trainer": {"name": "synthetic", "params": {"noise": 0.0}},
    "limits": {"max_trials": 3},
}


@pytest.fixture
def api(sqlite_url: str) -> Iterator[TestClient]:
    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    token = bootstrap_token(settings, "test admin").secret
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def lease(api: TestClient, worker: str = "w1") -> dict[str, Any]:
    response = api.post("/api/v1/leases", json={"worker_id": worker, "wait_s": 0})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_drained_trial_is_leased_again_from_its_partial_checkpoint(api: TestClient) -> None:
    assert api.post("/api/v1/studies", json=SPEC).status_code == 201
    grant = lease(api)
    assert (grant["budget_from"], grant["budget_to"], grant["checkpoint_in"]) == (0, 3, None)
    trial_id, token = grant["trial_id"], grant["lease_token"]
    url = f"/api/v1/trials/{trial_id}/fail"
    partial = {"lease_token": token, "error": "worker is shutting down", "checkpoint_out": "file:///c/budget-2"}

    for bad in ({"budget_done": 0}, {"budget_done": -1}, {"budget_done": "nan"}, {"budget_done": 3},
                {}, {"budget_done": 2, "checkpoint_invalid": True}):
        response = api.post(url, json={**partial, **bad})
        assert response.status_code == 422, (bad, response.text)
    assert api.get(f"/api/v1/trials/{trial_id}").json()["trial"]["state"] == "running"
    assert api.post(url, json={**partial, "lease_token": "stale", "budget_done": 2}).status_code == 409

    released = api.post(url, json={**partial, "budget_done": 2})
    assert released.status_code == 200, released.text
    assert released.json() == {"trial_id": trial_id, "state": "pending", "attempt": 2}
    again = lease(api, "w2")
    assert (again["trial_id"], again["budget_from"], again["budget_to"], again["checkpoint_in"]) == (
        trial_id, 2, 3, "file:///c/budget-2")
    decisions = api.get(f"/api/v1/trials/{trial_id}").json()["decisions"]
    assert "kept its checkpoint at budget 2 of 3" in decisions[-1]["reason"]
