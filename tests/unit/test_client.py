"""The SDK's transport rules: retries with backoff, error types carrying the server's message."""

from __future__ import annotations

import httpx
import pytest

from hpo_service.client import HpoClient, resolve_token
from hpo_service.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable, StaleLease, Unauthorized


def client_for(responses: list[httpx.Response | Exception], seen: list[httpx.Request]) -> HpoClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return HpoClient("http://hpo.test", token="hpo_secret", retries=3, backoff=0.001,
                     transport=httpx.MockTransport(handler))


def test_503_and_connection_errors_are_retried() -> None:
    seen: list[httpx.Request] = []
    client = client_for([httpx.Response(503, json={"error": "unavailable", "message": "db down"}),
                         httpx.ConnectError("refused"),
                         httpx.Response(200, json={"status": "ok", "version": "1"})], seen)
    assert client.health()["status"] == "ok"
    assert len(seen) == 3
    assert seen[0].headers["authorization"] == "Bearer hpo_secret"


def test_gives_up_after_the_retries_with_service_unavailable() -> None:
    seen: list[httpx.Request] = []
    client = client_for([httpx.ConnectError("refused")] * 4, seen)
    with pytest.raises(ServiceUnavailable, match="cannot reach http://hpo.test"):
        client.health()
    assert len(seen) == 4


@pytest.mark.parametrize(("status", "code", "error_type"), [
    (409, "stale_lease", StaleLease), (409, "conflict", Conflict), (404, "not_found", NotFound),
    (422, "invalid_input", InvalidInput), (401, "unauthorized", Unauthorized),
])
def test_errors_become_the_projects_types(status: int, code: str, error_type: type[Exception]) -> None:
    seen: list[httpx.Request] = []
    client = client_for([httpx.Response(status, json={"error": code, "message": "the server says why"})], seen)
    with pytest.raises(error_type, match="the server says why"):
        client.get_study(1)
    assert len(seen) == 1  # 4xx answers are never retried


def test_no_work_is_none() -> None:
    client = client_for([httpx.Response(204)], [])
    assert client.lease("w", wait_s=0) is None


def test_token_resolution_order(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"  # type: ignore[operator]
    token_file.write_text("hpo_from_file\n")
    monkeypatch.setenv("HPO_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("HPO_TOKEN", raising=False)
    assert resolve_token() == "hpo_from_file"
    monkeypatch.setenv("HPO_TOKEN", "hpo_from_env")
    assert resolve_token() == "hpo_from_env"
    assert resolve_token("hpo_explicit") == "hpo_explicit"
