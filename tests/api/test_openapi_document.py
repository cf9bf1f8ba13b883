"""The OpenAPI document says how to authenticate and that big bodies get 413 (finding F12).

Clients and fuzzers (tests/fuzz) trust /openapi.json: it must declare the bearer scheme that
every protected operation uses, and the 413 that `BodySizeLimit` answers to every operation
taking a body. Each declaration is also checked against what the server does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.api.limits import DEFAULT_MAX_BODY_BYTES
from hpo_service.db.migrate import upgrade
from hpo_service.settings import Settings

# Operations anyone may call: the health check, and the session cookie (opened with a token in the body).
PUBLIC = {("GET", "/api/v1/health"), ("POST", "/api/v1/session"), ("DELETE", "/api/v1/session")}
ERROR_OUT = {"$ref": "#/components/schemas/ErrorOut"}


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    upgrade(sqlite_url)
    with TestClient(create_app(Settings(database_url=sqlite_url))) as test_client:
        yield test_client


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation) for path, item in sorted(document["paths"].items())
            for method, operation in sorted(item.items())]


def concrete(path: str) -> str:
    return path.replace("{study_id}", "1").replace("{trial_id}", "1").replace("{token_id}", "1").replace(
        "{action}", "pause")


def test_every_operation_that_takes_a_body_documents_413(document: dict[str, Any]) -> None:
    with_body = [(method, path, op) for method, path, op in operations(document) if "requestBody" in op]
    assert {(method, path) for method, path, _ in with_body} >= {
        ("POST", "/api/v1/studies"), ("PATCH", "/api/v1/studies/{study_id}"), ("POST", "/api/v1/leases"),
        ("POST", "/api/v1/trials/{trial_id}/reports"), ("POST", "/api/v1/trials/{trial_id}/complete"),
        ("POST", "/api/v1/trials/{trial_id}/fail"), ("POST", "/api/v1/trials/{trial_id}/heartbeat"),
        ("POST", "/api/v1/tokens"), ("POST", "/api/v1/session"),
    }
    missing = [f"{method} {path}" for method, path, op in with_body
               if op["responses"].get("413", {}).get("content", {}).get("application/json", {}).get("schema")
               != ERROR_OUT]
    assert missing == [], "no 413 (ErrorOut) documented"


def test_the_documented_413_is_what_a_body_over_the_limit_gets(client: TestClient, document: dict[str, Any]) -> None:
    too_big = b"[" + b" " * DEFAULT_MAX_BODY_BYTES + b"]"
    for method, path, op in operations(document):
        if "requestBody" not in op:
            continue
        response = client.request(method, concrete(path), content=too_big,
                                  headers={"Content-Type": "application/json"})
        assert response.status_code == 413, (method, path, response.status_code)
        assert set(response.json()) == {"error", "message"} and response.json()["error"] == "payload_too_large"


def test_the_bearer_scheme_is_declared(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert document.get("security") is None  # not global: the public operations need none


def test_protected_operations_reference_the_bearer_scheme_and_public_ones_do_not(document: dict[str, Any]) -> None:
    found = {(method, path): op.get("security") for method, path, op in operations(document)}
    assert PUBLIC <= set(found)
    wrong = {key: security for key, security in found.items()
             if security != (None if key in PUBLIC else [{"bearer": []}])}
    assert wrong == {}


def test_what_the_document_calls_protected_refuses_a_call_without_a_token(
    client: TestClient, document: dict[str, Any]
) -> None:
    protected = [(method, path, op) for method, path, op in operations(document) if op.get("security")]
    assert len(protected) == len(operations(document)) - len(PUBLIC)
    for method, path, op in protected:
        body = {"json": {}} if "requestBody" in op else {}
        response = client.request(method, concrete(path), **body)
        assert response.status_code == 401, (method, path, response.status_code, response.text[:200])
        assert response.json()["error"] == "unauthorized"
