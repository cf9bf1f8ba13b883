"""The worker loop's release on a drain: the partial checkpoint goes with `fail`, a whole slice completes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from hpo_service.client import HpoClient
from hpo_service.workers.checkpoints import FileCheckpointStore
from hpo_service.workers.loop import WorkerLoop
from hpo_service.workers.trainer import Reporter, TrainRequest, TrainResult


class NoConfig(BaseModel):
    pass


class DrainedTrainer:
    """Trains 1..budget_to in unit steps; the worker is drained when the report at ``drain_at`` is sent."""

    name = "drained"
    config_model = NoConfig
    metrics = ("loss",)
    supports_mup = False

    def __init__(self, loop: list[WorkerLoop], drain_at: float, checkpoint: bool = True) -> None:
        self._loop, self._drain_at, self._checkpoint = loop, drain_at, checkpoint

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult:
        step = request.budget_from
        while step < request.budget_to:
            step += 1
            if step == self._drain_at:
                self._loop[0].stop.set()
            if reporter.report(step, {"loss": 1 / step}) == "stop":
                break
        (request.checkpoint_out / "state.txt").write_text(str(step))
        return TrainResult({"loss": 1 / step}, budget_done=step, wrote_checkpoint=self._checkpoint)


class FakeApi:
    def __init__(self, refuse_partial: bool = False, refuse_drained: bool = False) -> None:
        self.refuse_partial = refuse_partial
        self.refuse_drained = refuse_drained  # a server that predates the field
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        kind = request.url.path.rsplit("/", 1)[-1]
        self.calls.append((kind, body))
        if kind == "leases":
            return httpx.Response(200, json={
                "trial_id": 5, "study_id": 2, "number": 5, "attempt": 1, "lease_token": "t", "lease_seconds": 60.0,
                "expires_at": "2030-01-01T00:00:00Z", "trainer": {"name": "drained", "params": {}}, "params": {},
                "budget_from": 1.0, "budget_to": 4.0, "checkpoint_in": None, "seed": 1, "objective": "loss"})
        if kind == "fail" and ((self.refuse_partial and "checkpoint_out" in body)
                               or (self.refuse_drained and "drained" in body)):
            return httpx.Response(422, json={"error": "invalid_input", "message": "extra fields not permitted"})
        if kind in ("fail", "complete"):
            return httpx.Response(200, json={"trial_id": 5, "state": "pending", "attempt": 2})
        return httpx.Response(200, json={"directive": "continue", "expires_at": None})

    def ends(self) -> list[tuple[str, dict[str, Any]]]:
        return [(kind, body) for kind, body in self.calls if kind in ("fail", "complete")]


def run_once(tmp_path: Path, api: FakeApi, drain_at: float, checkpoint: bool = True) -> None:
    holder: list[WorkerLoop] = []
    trainer = DrainedTrainer(holder, drain_at, checkpoint)
    with HpoClient("http://fake", transport=httpx.MockTransport(api.handle), retries=0) as client:
        loop = WorkerLoop(client, FileCheckpointStore(tmp_path), wait_s=0.0, trainer_lookup=lambda _name: trainer)
        holder.append(loop)
        assert loop.run(max_trials=1) == 1


def test_a_drain_mid_slice_releases_the_trial_with_its_checkpoint(tmp_path: Path) -> None:
    api = FakeApi()
    run_once(tmp_path, api, drain_at=2.0)
    [(kind, body)] = api.ends()
    assert kind == "fail" and body["retryable"] is True and body["error"] == "worker is shutting down"
    assert body["drained"] is True  # a drain does not use up one of the trial's attempts
    assert body["budget_done"] == 2.0
    # One folder per lease attempt (F8): the fake lease is attempt 1.
    assert body["checkpoint_out"] == (tmp_path / "study-2" / "trial-5" / "budget-2-a1").resolve().as_uri()
    assert (tmp_path / "study-2" / "trial-5" / "budget-2-a1" / "state.txt").read_text() == "2.0"


def test_a_drain_at_the_last_step_completes_the_slice(tmp_path: Path) -> None:
    api = FakeApi()
    run_once(tmp_path, api, drain_at=4.0)
    [(kind, body)] = api.ends()
    assert kind == "complete"
    assert body["checkpoint_out"] == (tmp_path / "study-2" / "trial-5" / "budget-4-a1").resolve().as_uri()


@pytest.mark.parametrize("refuse", [False, True], ids=["no-checkpoint", "server-refuses"])
def test_without_a_usable_checkpoint_the_trial_is_released_plainly(tmp_path: Path, refuse: bool) -> None:
    api = FakeApi(refuse_partial=refuse)
    run_once(tmp_path, api, drain_at=2.0, checkpoint=refuse)
    ends = api.ends()
    assert [kind for kind, _ in ends] == (["fail", "fail"] if refuse else ["fail"])
    assert "checkpoint_out" not in ends[-1][1] and "budget_done" not in ends[-1][1]
    assert ends[-1][1]["retryable"] is True and ends[-1][1]["drained"] is True


@pytest.mark.parametrize("checkpoint", [True, False], ids=["with-checkpoint", "without"])
def test_a_server_that_predates_the_drain_mark_gets_a_plain_release(tmp_path: Path, checkpoint: bool) -> None:
    api = FakeApi(refuse_drained=True)
    run_once(tmp_path, api, drain_at=2.0, checkpoint=checkpoint)
    ends = api.ends()
    assert all(kind == "fail" for kind, _ in ends)
    assert len(ends) == (3 if checkpoint else 2)  # with the mark (and the checkpoint), then without
    assert ends[-1][1] == {"lease_token": "t", "error": "worker is shutting down", "retryable": True,
                           "checkpoint_invalid": False}


def test_a_rate_limited_lease_is_retried_with_backoff_not_fatal(tmp_path: Path) -> None:
    answers = [429, 429, 204]
    waits: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        if status == 429:
            return httpx.Response(429, json={"error": "rate_limited", "message": "too many bad tokens"})
        return httpx.Response(204)

    with HpoClient("http://fake", transport=httpx.MockTransport(handle), retries=0) as client:
        loop = WorkerLoop(client, FileCheckpointStore(tmp_path), wait_s=0.0)
        loop.rate_limited_wait_s = 0.01
        loop.stop.wait = lambda seconds: waits.append(seconds) or False  # type: ignore[method-assign]
        assert loop.run(exit_when_idle=True) == 0
    assert answers == [] and waits == [0.01, 0.02]
