"""The SDK's study controls over the real app when the first response is lost on the way back.

The transport hands the request to the app (which carries it out and commits) and then raises a
read timeout, as a dropped connection would; the SDK retries, and the retry must be answered
with the study as asked, not with an error for the change its first try made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hpo_service.client import HpoClient
from tests.chaos.inprocess import TestClientTransport, running_app
from tests.db.test_protocol_contract import make_spec


class LosesFirstResponse(TestClientTransport):
    """Delivers every request; the response of the first one to ``path_end`` never arrives."""

    __test__ = False

    def __init__(self, app: Any, path_end: str) -> None:
        super().__init__(app)
        self.path_end = path_end
        self.delivered = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith(self.path_end):
            self.delivered += 1
            if self.delivered == 1:
                raise httpx.ReadTimeout("the response was lost", request=request)
        return response


@pytest.mark.parametrize(("path_end", "call", "expected"), [
    ("/pause", lambda client, study: client.control_study(study, "pause"), {"status": "paused"}),
    ("/cancel", lambda client, study: client.control_study(study, "cancel"), {"status": "cancelled"}),
    ("/resume", lambda client, study: client.control_study(study, "resume"), {"status": "running"}),
    ("", lambda client, study: client.extend_study(study, 27), {"status": "running", "max_budget": 27}),
])
def test_a_control_call_whose_response_was_lost_is_retried_into_success(
    database_url: str, path_end: str, call: Callable[[HpoClient, int], Any], expected: dict[str, Any]
) -> None:
    with running_app(database_url) as (app, token):
        study = app.post("/api/v1/studies", json=make_spec().model_dump(mode="json")).json()
        if path_end == "/resume":
            app.post(f"/api/v1/studies/{study['id']}/pause")
        transport = LosesFirstResponse(app, path_end or f"/studies/{study['id']}")
        with HpoClient("http://testserver", token=token, transport=transport, retries=2, backoff=0.001) as client:
            answer = call(client, study["id"])

        assert transport.delivered == 2  # the first try was carried out, then retried
        assert answer["status"] == expected["status"]
        shown = app.get(f"/api/v1/studies/{study['id']}").json()
        assert shown["status"] == expected["status"]
        if "max_budget" in expected:
            assert shown["spec"]["scheduler"]["max_budget"] == expected["max_budget"]


def test_a_token_creation_whose_response_was_lost_is_not_repeated(database_url: str) -> None:
    """The server keeps only a digest of a token's secret, so a retry could not hand the first
    token back: it made a second, and the first stayed valid with a secret no one ever saw."""
    from hpo_service.errors import ServiceUnavailable

    with running_app(database_url) as (app, token):
        before = len(app.get("/api/v1/tokens").json())
        transport = LosesFirstResponse(app, "/tokens")
        with HpoClient("http://testserver", token=token, transport=transport, retries=2, backoff=0.001) as client:
            with pytest.raises(ServiceUnavailable, match="may have been carried out"):
                client.create_token("ci", "read")

        assert transport.delivered == 1
        assert len(app.get("/api/v1/tokens").json()) == before + 1  # one token, listed, revocable


def test_a_token_creation_that_never_connected_is_retried(database_url: str) -> None:
    with running_app(database_url) as (app, token):
        transport = RefusesFirstConnection(app)
        with HpoClient("http://testserver", token=token, transport=transport, retries=2, backoff=0.001) as client:
            created = client.create_token("ci", "read")
        assert created["token"].startswith("hpo_") and transport.refused == 1


class RefusesFirstConnection(TestClientTransport):
    __test__ = False

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refused == 0:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return super().handle_request(request)
