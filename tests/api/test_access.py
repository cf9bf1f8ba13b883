"""Access control: every scope on every endpoint, expiry, revocation, isolation, bad-token storms."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.api.startup import bootstrap_token
from hpo_service.db.migrate import upgrade
from hpo_service.settings import Settings
from tests.api.test_api import SPEC

SCOPES = ["admin", "submit", "worker", "read"]

# (name, method, path, body, permission). {study} and {trial} are filled in per test.
ENDPOINTS: list[tuple[str, str, str, Any, str]] = [
    ("list studies", "GET", "/api/v1/studies", None, "read"),
    ("get study", "GET", "/api/v1/studies/{study}", None, "read"),
    ("trials", "GET", "/api/v1/studies/{study}/trials", None, "read"),
    ("best", "GET", "/api/v1/studies/{study}/best", None, "read"),
    ("rungs", "GET", "/api/v1/studies/{study}/rungs", None, "read"),
    ("decisions", "GET", "/api/v1/studies/{study}/decisions", None, "read"),
    ("checkpoints", "GET", "/api/v1/studies/{study}/checkpoints", None, "read"),
    ("trial", "GET", "/api/v1/trials/{trial}", None, "read"),
    ("create study", "POST", "/api/v1/studies", {**SPEC, "name": "other"}, "submit"),
    ("pause", "POST", "/api/v1/studies/{study}/pause", None, "submit"),
    ("lease", "POST", "/api/v1/leases", {"worker_id": "w", "wait_s": 0}, "work"),
    ("heartbeat", "POST", "/api/v1/trials/{trial}/heartbeat", {"lease_token": "x"}, "work"),
    ("reports", "POST", "/api/v1/trials/{trial}/reports",
     {"lease_token": "x", "reports": [{"step": 1, "metrics": {"loss": 1}}]}, "work"),
    ("complete", "POST", "/api/v1/trials/{trial}/complete", {"lease_token": "x", "metrics": {"loss": 1}}, "work"),
    ("fail", "POST", "/api/v1/trials/{trial}/fail", {"lease_token": "x", "error": "e"}, "work"),
    ("create token", "POST", "/api/v1/tokens", {"name": "n", "scope": "read"}, "manage_tokens"),
    ("list tokens", "GET", "/api/v1/tokens", None, "manage_tokens"),
]
ALLOWED = {
    "admin": {"read", "submit", "work", "manage_tokens"},
    "submit": {"read", "submit"},
    "worker": {"work"},
    "read": {"read"},
}


class World:
    def __init__(self, client: TestClient, admin: str) -> None:
        self.client = client
        self.admin = admin
        self.tokens = {"admin": admin}
        for scope in SCOPES[1:]:
            self.tokens[scope] = self.issue(scope)["token"]
        study = self.call("admin", "POST", "/api/v1/studies", SPEC).json()
        grant = self.call("admin", "POST", "/api/v1/leases", {"worker_id": "seed", "wait_s": 0}).json()
        self.call("admin", "POST", f"/api/v1/trials/{grant['trial_id']}/complete",
                  {"lease_token": grant["lease_token"], "metrics": {"loss": 0.5}})
        self.study, self.trial = study["id"], grant["trial_id"]

    def issue(self, scope: str, **extra: Any) -> dict[str, Any]:
        response = self.client.post("/api/v1/tokens", json={"name": scope, "scope": scope, **extra},
                                    headers={"Authorization": f"Bearer {self.admin}"})
        assert response.status_code == 201, response.text
        return response.json()

    def call(self, who: str | None, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        secret = token or (self.tokens[who] if who else None)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        path = path.format(study=getattr(self, "study", 0), trial=getattr(self, "trial", 0))
        return self.client.request(method, path, json=body, headers=headers)


def _world(url: str) -> Iterator[World]:
    upgrade(url)
    settings = Settings(database_url=url)
    admin = bootstrap_token(settings, "root").secret
    with TestClient(create_app(settings)) as client:
        yield World(client, admin)


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    yield from _world(database_url)


@pytest.fixture
def sqlite_world(sqlite_url: str) -> Iterator[World]:
    """The scope matrix is API logic, not storage: SQLite keeps its 80 cases fast."""
    yield from _world(sqlite_url)


CASES = [(scope, *endpoint) for scope in SCOPES for endpoint in ENDPOINTS]


@pytest.mark.parametrize(("scope", "name", "method", "path", "body", "permission"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_scope_on_every_endpoint(
    sqlite_world: World, scope: str, name: str, method: str, path: str, body: Any, permission: str
) -> None:
    response = sqlite_world.call(scope, method, path, body)
    if permission in ALLOWED[scope]:
        assert response.status_code not in (401, 403), response.text
    else:
        assert response.status_code == 403, response.text
        assert scope in response.json()["message"]


@pytest.mark.parametrize(("name", "method", "path", "body", "permission"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_no_token_gets_401_naming_the_header(
    sqlite_world: World, name: str, method: str, path: str, body: Any, permission: str
) -> None:
    response = sqlite_world.call(None, method, path, body)
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["message"]


def test_health_and_docs_need_no_token(world: World) -> None:
    assert world.call(None, "GET", "/api/v1/health").status_code == 200
    assert world.call(None, "GET", "/openapi.json").status_code == 200


def test_revoked_token_is_refused(world: World) -> None:
    issued = world.issue("read")
    assert world.call(None, "GET", "/api/v1/studies", token=issued["token"]).status_code == 200
    assert world.call("admin", "DELETE", f"/api/v1/tokens/{issued['id']}").json()["revoked_at"]
    response = world.call(None, "GET", "/api/v1/studies", token=issued["token"])
    assert response.status_code == 401 and "revoked" in response.json()["message"]


def test_expired_token_is_refused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    issued = world.issue("read", expires_days=1)
    services = world.client.app.state.services  # type: ignore[attr-defined]
    real_clock = services.context.clock
    monkeypatch.setattr(services.context, "clock", lambda: real_clock() + timedelta(days=2))
    services.access._cache.clear()
    response = world.call(None, "GET", "/api/v1/studies", token=issued["token"])
    assert response.status_code == 401 and "expired" in response.json()["message"]


def test_tokens_are_stored_hashed_and_listed_without_secrets(world: World) -> None:
    issued = world.issue("worker")
    listing = world.call("admin", "GET", "/api/v1/tokens").json()
    assert all("token" not in row for row in listing)
    assert issued["prefix"] in [row["prefix"] for row in listing]
    assert issued["token"].startswith(issued["prefix"])


def test_other_project_sees_nothing(world: World) -> None:
    other = world.issue("admin", project="team-b")["token"]
    for path in ("/api/v1/studies/{study}", "/api/v1/studies/{study}/trials", "/api/v1/trials/{trial}",
                 "/api/v1/studies/{study}/best"):
        response = world.call(None, "GET", path, token=other)
        assert response.status_code == 404, path
    assert world.call(None, "GET", "/api/v1/studies", token=other).json()["total"] == 0
    assert world.call(None, "POST", "/api/v1/leases", {"worker_id": "b", "wait_s": 0}, token=other).status_code == 204
    assert world.call(None, "POST", "/api/v1/studies/{study}/cancel", token=other).status_code == 404
    # A project admin cannot mint tokens for another project; the instance admin can.
    response = world.call(None, "POST", "/api/v1/tokens", {"name": "x", "scope": "read", "project": "default"},
                          token=other)
    assert response.status_code == 403


def test_a_storm_of_bad_tokens_is_rate_limited(world: World) -> None:
    statuses = [world.call(None, "GET", "/api/v1/studies", token=f"hpo_bad{i}").status_code for i in range(25)]
    assert statuses[:20] == [401] * 20
    assert set(statuses[20:]) == {429}


def test_dashboard_session_cookie(world: World) -> None:
    response = world.client.post("/api/v1/session", json={"token": world.tokens["read"]})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert world.client.get("/api/v1/studies").status_code == 200  # the cookie authenticates
    world.client.delete("/api/v1/session")
    world.client.cookies.clear()
    assert world.client.get("/api/v1/studies").status_code == 401


def test_same_spec_attaches_with_200(world: World) -> None:
    again = world.call("admin", "POST", "/api/v1/studies", SPEC)
    assert again.status_code == 200 and again.json()["id"] == world.study
