"""End to end through Ray on PostgreSQL: `hpo serve` and `hpo worker --ray-address local --slots 2`
as real processes, an ASHA study, one actor killed by SIGKILL mid-trial, and a SIGTERM drain.

Parametrised by trainer. To add the adapter_lm trainer on a tiny model, append a case to
``CASES``, e.g.::

    pytest.param(TrainerCase(
        trainer={"name": "adapter_lm", "params": {"model": "<tiny model>", ...}},
        search_space="adapter_lm", min_budget=1, max_budget=9,
    ), id="adapter_lm", marks=needs_trainer("adapter_lm")),

``min_budget``/``max_budget`` are in the trainer's budget unit; choose them so that a top-rung
slice takes a few seconds (the kill must land mid-trial) and the whole study a minute at most.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpo_service.client import HpoClient
from hpo_service.client_types import DecisionInfo, TrialInfo
from hpo_service.db.migrate import upgrade
from hpo_service.workers.registry import available_trainers
from tests.e2e.harness import Processes, wait_for

pytestmark = pytest.mark.slow
psutil = pytest.importorskip("psutil")  # comes with Ray
pytest.importorskip("ray")

SLOT_OWNER = re.compile(r"-(?P<pid>\d+)-ray-slot(?P<slot>\d+)$")
RAY_START_S = 60  # a local Ray instance starts in 10-25 s on a busy 2-core machine


def needs_trainer(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(name not in available_trainers(), reason=f"trainer {name!r} is not registered")


@dataclass(frozen=True)
class TrainerCase:
    trainer: dict[str, Any]  # the spec's `trainer` section
    search_space: str | dict[str, Any]
    min_budget: float
    max_budget: float


CASES = [
    pytest.param(TrainerCase(
        trainer={"name": "synthetic", "params": {"sleep_per_unit": 0.5, "noise": 0.01}},
        search_space="synthetic", min_budget=1, max_budget=9,
    ), id="synthetic"),
]


def _spec(case: TrainerCase, name: str, *, max_trials: int, lease_seconds: float, min_budget: float | None = None,
          ) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": case.search_space,
        "scheduler": {"kind": "asha", "min_budget": min_budget or case.min_budget, "max_budget": case.max_budget,
                      "eta": 3},
        "sampler": {"kind": "random", "seed": 5},
        "trainer": case.trainer,
        "limits": {"max_trials": max_trials},
        "retry": {"lease_seconds": lease_seconds, "max_attempts": 3},
    }


@pytest.fixture
def processes(tmp_path: Path, postgres_url: str) -> Iterator[Processes]:
    upgrade(postgres_url)
    procs = Processes(tmp_path, postgres_url)
    yield procs
    procs.stop_all()


def _ray_worker(processes: Processes, server: str, name: str) -> subprocess.Popen[bytes]:
    """`hpo worker --ray-address local --slots 2`, stderr to NAME.log and stdout to NAME.out."""
    argv = [sys.executable, "-m", "hpo_service.cli", "worker", "--server", server,
            "--ray-address", "local", "--slots", "2"]
    with (processes.tmp / f"{name}.log").open("wb") as err, (processes.tmp / f"{name}.out").open("wb") as out:
        process = subprocess.Popen(argv, env=processes.env, stdout=out, stderr=err)
    processes.running.append(process)  # stopped (SIGTERM, then SIGKILL) by the fixture
    return process


def _full_log(processes: Processes, name: str) -> str:
    return (processes.tmp / f"{name}.log").read_text(errors="replace")


def _running_on_slots(client: HpoClient, study_id: int) -> list[TrialInfo]:
    running = client.list_trials(study_id, state="running", limit=1000)["items"]
    return [t for t in running if t["lease_owner"] and SLOT_OWNER.search(t["lease_owner"])]


def _check_completed_once(client: HpoClient, study_id: int, expected_trials: int) -> list[DecisionInfo]:
    assert client.get_study(study_id)["status"] == "completed"
    trials = client.list_trials(study_id, limit=1000)["items"]
    assert len(trials) == expected_trials
    assert {t["state"] for t in trials} <= {"completed", "stopped"}
    decisions = client.decisions(study_id, limit=5000)
    finishes = Counter(d["trial_id"] for d in decisions if d["kind"] == "finish")
    assert finishes and max(finishes.values()) == 1, "a trial was completed twice"
    for trial in trials:
        detail = client.get_trial(trial["id"])
        rungs = [r["rung"] for r in detail["rung_results"]]
        assert rungs == list(range(trial["rung"] + 1)), f"trial {trial['id']} has rung results {rungs}"
        steps = [r["step"] for r in detail["reports"]]
        assert steps == sorted(set(steps)), "a report was stored twice"
    return decisions


@pytest.mark.parametrize("case", CASES)
def test_asha_through_ray_survives_a_killed_actor(processes: Processes, case: TrainerCase) -> None:
    server = processes.server()
    with processes.client(server) as client:
        study_id = client.create_study(_spec(case, "e2e-ray-asha", max_trials=9, lease_seconds=3))["id"]
        worker = _ray_worker(processes, server, "ray-worker")

        # The top-rung slice is the longest: killing its actor lands mid-trial, and the retry
        # has to resume from the trial's own rung-1 checkpoint.
        def top_rung_running() -> TrialInfo | None:
            assert worker.poll() is None, processes.log("ray-worker")
            return next((t for t in _running_on_slots(client, study_id)
                         if t["budget_target"] == case.max_budget and t["budget_done"] > 0), None)

        victim_trial = wait_for(top_rung_running, RAY_START_S + 60, "a top-rung trial on a Ray slot")
        victim_owner = victim_trial["lease_owner"]
        match = SLOT_OWNER.search(victim_owner)
        assert match is not None
        victim_pid, slot = int(match["pid"]), match["slot"]
        pool_processes = {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}
        assert victim_pid in pool_processes, "the lease owner is not an actor of our local Ray"
        os.kill(victim_pid, signal.SIGKILL)

        wait_for(lambda: client.get_study(study_id)["status"] != "running", 90, "the study to finish",
                 interval=0.5)
        decisions = _check_completed_once(client, study_id, expected_trials=9)
        victim_detail = client.get_trial(victim_trial["id"])
        log = _full_log(processes, "ray-worker")
        assert worker.poll() is None, log[-3000:]  # the pool outlived its actor

    requeues = [d for d in decisions if d["kind"] == "requeue" and d["trial_id"] == victim_trial["id"]]
    assert requeues, "the killed actor's trial was not requeued"
    assert f"lease of worker {victim_owner} expired" in requeues[0]["reason"]
    resumed_from = victim_trial["budget_done"]
    assert f"requeued as attempt 2 of 3 from budget {resumed_from:g}" in requeues[0]["reason"]
    # Attempt 2 resumed from the trial's own checkpoint at that budget: the synthetic trainer
    # refuses a resume without one (CheckpointError), which would log "checkpoint unusable".
    assert not [d for d in decisions if d["kind"] == "fail" or "checkpoint unusable" in d["reason"]]
    retried = [r["step"] for r in victim_detail["reports"] if r["attempt"] >= 2]
    assert retried and min(retried) > resumed_from, victim_detail["reports"]
    assert victim_detail["trial"]["state"] == "completed"
    # The actors' progress lines reach the stderr of `hpo worker`, nothing goes to its stdout.
    assert re.search(r"\(SlotWorker pid=\d+.*\).* slot-\d INFO trial \d+ \(study \d+\): step 9/9 loss", log)
    assert "step " not in (processes.tmp / "ray-worker.out").read_text(errors="replace")
    # Ray replaced the actor: the same slot answered again as a new process.
    replaced = re.search(rf"slot {slot} is back as worker \S+-(\d+)-ray-slot{slot}", log)
    assert replaced and int(replaced[1]) != victim_pid, log[-3000:]


@pytest.mark.parametrize("case", CASES)
def test_sigterm_drains_the_ray_slots(processes: Processes, case: TrainerCase) -> None:
    server = processes.server()
    with processes.client(server) as client:
        # A lease far longer than the test: a trial that comes back came back by the drain.
        spec = _spec(case, "e2e-ray-drain", max_trials=20, lease_seconds=600, min_budget=case.max_budget / 3)
        study_id = client.create_study(spec)["id"]
        worker = _ray_worker(processes, server, "ray-worker")

        def both_slots_training() -> list[TrialInfo] | None:
            assert worker.poll() is None, processes.log("ray-worker")
            running = [t for t in _running_on_slots(client, study_id)
                       if client.get_trial(t["id"])["reports"]]  # mid-trial: it has reported
            return running if len(running) == 2 else None

        running = wait_for(both_slots_training, RAY_START_S + 30, "both Ray slots to be training")
        ray_processes = psutil.Process(worker.pid).children(recursive=True)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, processes.log("ray-worker")

        assert client.list_trials(study_id, state="running")["items"] == [], "a trial was left to lease expiry"
        decisions = client.decisions(study_id, limit=5000)
    drained = {d["trial_id"]: d["reason"] for d in decisions if d["kind"] == "requeue"}
    for trial in running:
        if trial["id"] in drained:
            reason = drained[trial["id"]]
            assert f"worker {trial['lease_owner']} reported: worker is shutting down" in reason
            assert "requeued as attempt 2" in reason
    assert {t["id"] for t in running} & set(drained), f"no running trial was released: {decisions}"
    log = _full_log(processes, "ray-worker")
    assert "draining 2 slot(s)" in log and "'drained'" in log, log[-3000:]
    # The local Ray instance went down with the worker.
    _, alive = psutil.wait_procs(ray_processes, timeout=15)
    assert not alive, f"Ray processes still running: {[p.pid for p in alive]}"
