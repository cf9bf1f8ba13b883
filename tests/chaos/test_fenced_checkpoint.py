"""Fencing reaches the checkpoint store, not only the server's rows (finding F8, fixed).

A worker that lost its lease while it was stalled between its last report and the commit
of its checkpoint (a freeze, a long GC pause, a network partition) still commits: the
commit runs before the server is asked. Before F8 was fixed, a retried slice wrote to the
same folder (`study-S/trial-T/budget-B`), so the stale commit replaced the checkpoint that
the new lease holder committed and the server recorded: for real (non-deterministic)
training the trial's recorded value and the checkpoint its promotion resumes from no longer
belonged together. Now each lease attempt commits into its own folder
(`budget-B-a<attempt>`); the stale worker's folder is an orphan that nothing refers to.

Reproduced in one process: the stalled worker is a `WorkerLoop` whose trainer blocks after
its last report and whose heartbeats fail; the new holder is another `WorkerLoop`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hpo_service.errors import ServiceUnavailable
from hpo_service.workers.checkpoints import FileCheckpointStore
from hpo_service.workers.loop import WorkerLoop
from hpo_service.workers.trainer import Reporter, TrainRequest, TrainResult
from tests.chaos.cluster import wait_for
from tests.chaos.inprocess import running_app, sdk_client
from tests.support.specs import one_trial_spec
from trainers.synthetic.config import SyntheticConfig

SPEC: dict[str, Any] = one_trial_spec("fenced-checkpoint", lease_seconds=1, max_attempts=5)


class OwnerTrainer:
    """Reports its slice and writes a checkpoint that says who wrote it."""

    name = "synthetic"
    config_model: type[BaseModel] = SyntheticConfig
    metrics = ("loss",)
    supports_mup = False

    def __init__(self, owner: str, loss: float) -> None:
        self.owner, self.loss = owner, loss

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult:
        reporter.report(request.budget_to, {"loss": self.loss})
        (request.checkpoint_out / "owner.txt").write_text(self.owner)
        return TrainResult(metrics={"loss": self.loss}, budget_done=request.budget_to)


class StallingTrainer:
    """Reports its whole slice, then stalls (as a frozen process would) before returning."""

    name = "synthetic"
    config_model: type[BaseModel] = SyntheticConfig
    metrics = ("loss",)
    supports_mup = False

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.resume = threading.Event()

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult:
        reporter.report(request.budget_to, {"loss": 0.5})  # the last step: flushed at once
        self.stalled.set()
        self.resume.wait(60)
        (request.checkpoint_out / "owner.txt").write_text("stale worker")
        return TrainResult(metrics={"loss": 0.5}, budget_done=request.budget_to)


def test_a_fenced_worker_cannot_replace_the_checkpoint_of_the_new_lease_holder(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "checkpoints")
    trainer = StallingTrainer()
    with running_app(f"sqlite:///{tmp_path / 'hpo.db'}") as (test_client, token):
        with sdk_client(test_client, token, retries=0) as stale, sdk_client(test_client, token, retries=0) as new:
            study = stale.create_study(SPEC)
            lease = stale.lease("stale-worker", wait_s=0)
            assert lease is not None

            def no_heartbeat(*_args: Any) -> Any:
                raise ServiceUnavailable("partitioned")

            stale.heartbeat = no_heartbeat  # type: ignore[method-assign]
            loop = WorkerLoop(stale, store, worker_id="stale-worker", trainer_lookup=lambda _name: trainer)
            worker = threading.Thread(target=loop.run_one, args=(lease,), daemon=True)
            worker.start()
            assert trainer.stalled.wait(30)

            # The lease runs out; the trial is requeued, leased by a healthy worker, and finished.
            wait_for(lambda: new.get_trial(lease["trial_id"])["trial"]["state"] == "pending", 30, "the requeue")
            grant = new.lease("new-holder", wait_s=5, studies=[study["id"]])
            assert grant is not None and grant["trial_id"] == lease["trial_id"]
            healthy = WorkerLoop(new, store, worker_id="new-holder",
                                 trainer_lookup=lambda _name: OwnerTrainer("new holder", 0.4))
            healthy.run_one(grant)
            uri = new.get_trial(lease["trial_id"])["trial"]["checkpoint_uri"]
            assert uri is not None

            trainer.resume.set()  # the stale worker wakes up, commits, and is refused by the server
            worker.join(30)
            detail = new.get_trial(lease["trial_id"])

    assert detail["trial"]["value"] == 0.4 and detail["trial"]["checkpoint_uri"] == uri  # the server fenced it off
    assert (store.fetch(uri) / "owner.txt").read_text() == "new holder"  # ...and so did the store
    # The stale worker did commit, into its own attempt's folder, which nothing refers to.
    assert grant["attempt"] == lease["attempt"] + 1
    assert uri == store.location(study["id"], lease["trial_id"], 3, attempt=grant["attempt"]).as_uri()
    orphan = store.location(study["id"], lease["trial_id"], 3, attempt=lease["attempt"])
    assert (orphan / "owner.txt").read_text() == "stale worker"
