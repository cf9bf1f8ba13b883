"""A worker rides out an API outage in the middle of a slice (a restart, a database failover).

The real app runs in process behind a transport that can be cut off: every request then fails
to connect, for longer than the client's own retries. Before, the first report that failed
stopped the trainer and dropped the slice, leaving the trial to lease expiry (trained again,
one attempt used up), and so did a completion that failed; a failure report that failed ended
the worker. Now the reports stay buffered while training goes on, and the slice's last flush,
its completion and its failure report wait for the server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hpo_service.client import HpoClient
from hpo_service.workers.checkpoints import FileCheckpointStore
from hpo_service.workers.loop import WorkerLoop
from tests.chaos.inprocess import TestClientTransport, running_app
from tests.db.test_protocol_contract import make_spec

OUTAGE_S = 0.5  # the client below gives up after ~0.03 s of retries


class Outage(TestClientTransport):
    """Passes requests to the app; once one matching ``trigger`` went through, refuses every
    connection for ``OUTAGE_S`` (once)."""

    __test__ = False

    def __init__(self, app: Any, trigger: Callable[[str, dict[str, Any]], bool]) -> None:
        super().__init__(app)
        self._trigger = trigger
        self._down = threading.Event()
        self._fired = False
        self.refused: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kind = request.url.path.rsplit("/", 1)[-1]
        if self._down.is_set():
            self.refused.append(kind)
            raise httpx.ConnectError("connection refused (the API is restarting)", request=request)
        response = super().handle_request(request)
        if not self._fired and self._trigger(kind, json.loads(request.content or b"{}")):
            self.go_down()
        return response

    def go_down(self) -> None:
        self._fired = True
        self._down.set()
        threading.Timer(OUTAGE_S, self._down.clear).start()


def first_report(kind: str, body: dict[str, Any]) -> bool:
    return kind == "reports"


def last_report(kind: str, body: dict[str, Any]) -> bool:
    return kind == "reports" and any(r["step"] == 4.0 for r in body["reports"])


@pytest.mark.parametrize(("trigger", "refused"), [(first_report, "reports"), (last_report, "complete")],
                         ids=["while training", "before the completion"])
def test_a_slice_completes_through_an_outage(
    database_url: str, tmp_path: Path, trigger: Callable[[str, dict[str, Any]], bool], refused: str
) -> None:
    spec = make_spec(trainer={"name": "synthetic", "params": {"sleep_per_unit": 0.15, "report_every": 0.25}},
                     scheduler={"kind": "random", "min_budget": 1, "max_budget": 4, "eta": 3},
                     limits={"max_trials": 1})
    with running_app(database_url) as (app, token):
        study = app.post("/api/v1/studies", json=spec.model_dump(mode="json")).json()
        transport = Outage(app, trigger)
        with HpoClient("http://testserver", token=token, transport=transport, retries=1, backoff=0.01) as client:
            loop = WorkerLoop(client, FileCheckpointStore(tmp_path / "ckpt"), wait_s=0, studies=[study["id"]])
            loop.unreachable_wait_s = 0.05
            assert loop.run(max_trials=1) == 1
        trials = app.get(f"/api/v1/studies/{study['id']}/trials").json()["items"]
        detail = app.get(f"/api/v1/trials/{trials[0]['id']}").json()

    assert refused in transport.refused  # the outage hit the step this case is about
    assert detail["trial"]["state"] == "completed" and detail["trial"]["attempt"] == 1
    assert [r["step"] for r in detail["reports"]] == [0.25 * k for k in range(1, 17)]  # none lost
    assert [d["kind"] for d in detail["decisions"] if d["kind"] in ("requeue", "fail")] == []


class FailsDuringAnOutage:
    """A trainer that cannot train this configuration (TrainerError), just as the API goes away."""

    name = "synthetic"
    metrics = ("loss",)
    supports_mup = False

    def __init__(self, transport: Outage) -> None:
        from trainers.synthetic.config import SyntheticConfig

        self.config_model = SyntheticConfig
        self._transport = transport

    def train(self, request: Any, reporter: Any) -> Any:
        from hpo_service.workers.trainer import TrainerError

        self._transport.go_down()
        raise TrainerError("this configuration cannot train")


def test_a_failure_reported_during_an_outage_is_delivered_and_the_worker_goes_on(
    database_url: str, tmp_path: Path
) -> None:
    """Before, the failure report's ServiceUnavailable escaped the worker loop and ended the worker."""
    spec = make_spec(scheduler={"kind": "random", "min_budget": 1, "max_budget": 4, "eta": 3},
                     limits={"max_trials": 1})
    with running_app(database_url) as (app, token):
        study = app.post("/api/v1/studies", json=spec.model_dump(mode="json")).json()
        transport = Outage(app, lambda kind, body: False)
        trainer = FailsDuringAnOutage(transport)
        with HpoClient("http://testserver", token=token, transport=transport, retries=1, backoff=0.01) as client:
            loop = WorkerLoop(client, FileCheckpointStore(tmp_path / "ckpt"), wait_s=0, studies=[study["id"]],
                              trainer_lookup=lambda _name: trainer)
            loop.unreachable_wait_s = 0.05
            assert loop.run(max_trials=1) == 1
        trials = app.get(f"/api/v1/studies/{study['id']}/trials").json()["items"]
        detail = app.get(f"/api/v1/trials/{trials[0]['id']}").json()

    assert "fail" in transport.refused
    assert detail["trial"]["state"] == "failed" and detail["trial"]["attempt"] == 1
    assert "this configuration cannot train" in detail["trial"]["error"]


class LosesTheGrantThenGoesDown(Outage):
    """The first lease is granted and committed, its response lost, and the API is then away for
    longer than the client's retries: the worker's lease call ends in ServiceUnavailable."""

    __test__ = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/leases") and not self._fired:
            self.go_down()
            raise httpx.ReadError("connection reset (the API went away)", request=request)
        return response


def test_a_lease_granted_just_before_an_outage_is_picked_up_after_it(database_url: str, tmp_path: Path) -> None:
    """Before, the worker asked again under a new key: a second trial, and the first left running
    (leased to a worker that never learned of it) until its lease expired, an attempt used up."""
    spec = make_spec(scheduler={"kind": "random", "min_budget": 1, "max_budget": 1, "eta": 3},
                     limits={"max_trials": 2})
    with running_app(database_url) as (app, token):
        study = app.post("/api/v1/studies", json=spec.model_dump(mode="json")).json()
        transport = LosesTheGrantThenGoesDown(app, lambda kind, body: False)
        with HpoClient("http://testserver", token=token, transport=transport, retries=1, backoff=0.01) as client:
            loop = WorkerLoop(client, FileCheckpointStore(tmp_path / "ckpt"), wait_s=0, studies=[study["id"]])
            assert loop.run(max_trials=1) == 1
        trials = app.get(f"/api/v1/studies/{study['id']}/trials").json()["items"]

    assert "leases" in transport.refused  # the retry met the outage
    assert [(t["state"], t["attempt"]) for t in trials] == [("completed", 1)]  # the granted trial, and no other
