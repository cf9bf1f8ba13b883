"""The SDK's lease over the real app when the first response is lost on the way back.

The transport hands the request to the app (which grants a trial and commits) and then
raises a read timeout, as a dropped connection would; the SDK retries with the same
Idempotency-Key and must get that trial, not a second one.
"""

from __future__ import annotations

import httpx
import pytest

from hpo_service.client import HpoClient
from tests.chaos.inprocess import TestClientTransport, running_app
from tests.db.test_protocol_contract import make_spec


class LosesFirstLeaseResponse(TestClientTransport):
    """Delivers every request; the response of the first lease never reaches the caller."""

    __test__ = False

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.lease_keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/api/v1/leases":
            self.lease_keys.append(request.headers.get("idempotency-key"))
            if len(self.lease_keys) == 1:
                raise httpx.ReadTimeout("the response was lost", request=request)
        return response


def test_a_lease_whose_response_was_lost_is_retried_into_the_same_trial(database_url: str) -> None:
    with running_app(database_url) as (app, token):
        study = app.post("/api/v1/studies", json=make_spec().model_dump(mode="json")).json()
        transport = LosesFirstLeaseResponse(app)
        with HpoClient("http://testserver", token=token, transport=transport, retries=2, backoff=0.001) as client:
            lease = client.lease("w1", studies=[study["id"]])

        assert lease is not None
        assert len(transport.lease_keys) == 2 and transport.lease_keys[0] == transport.lease_keys[1] is not None
        running = app.get(f"/api/v1/studies/{study['id']}/trials", params={"state": "running"}).json()
        assert [t["id"] for t in running["items"]] == [lease["trial_id"]]  # one trial leased, the one it holds
        ack = app.post(f"/api/v1/trials/{lease['trial_id']}/heartbeat", json={"lease_token": lease["lease_token"]})
        assert ack.status_code == 200 and ack.json()["directive"] == "continue"


def test_each_lease_call_sends_a_key_of_its_own(database_url: str) -> None:
    with running_app(database_url) as (app, token):
        study = app.post("/api/v1/studies", json=make_spec().model_dump(mode="json")).json()
        transport = LosesFirstLeaseResponse(app)
        transport.lease_keys.append("already lost one")  # lose nothing
        with HpoClient("http://testserver", token=token, transport=transport) as client:
            first = client.lease("w1", studies=[study["id"]])
            second = client.lease("w1", studies=[study["id"]])
        assert first is not None and second is not None and first["trial_id"] != second["trial_id"]
        assert len(set(transport.lease_keys[1:])) == 2


@pytest.mark.parametrize("key", ["", "k" * 65, "with space"])
def test_a_malformed_key_is_refused_with_422(database_url: str, key: str) -> None:
    with running_app(database_url) as (app, _token):
        study = app.post("/api/v1/studies", json=make_spec().model_dump(mode="json")).json()
        response = app.post("/api/v1/leases", json={"worker_id": "w1", "studies": [study["id"]]},
                            headers={"Idempotency-Key": key})
        assert response.status_code == 422, response.text
        assert "Idempotency-Key" in response.text or "idempotency" in response.text.lower()
        trials = app.get(f"/api/v1/studies/{study['id']}/trials").json()
        assert trials["total"] == 0  # nothing was leased
