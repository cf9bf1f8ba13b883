"""End to end on PostgreSQL: real server and worker processes; a worker dies by SIGKILL mid-study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from hpo_service.client import HpoClient
from hpo_service.db.migrate import upgrade
from tests.e2e.harness import Processes, wait_for, worker_id_of

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {
    "name": "e2e-hyperband",
    "objective": {"metric": "loss", "direction": "minimize"},
    "search_space": "synthetic",
    "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
    "sampler": {"kind": "tpe", "seed": 11},
    "trainer": {"name": "synthetic", "params": {"sleep_per_unit": 0.15, "noise": 0.01}},
    # A short lease so the killed worker's trial comes back quickly.
    "retry": {"lease_seconds": 3, "max_attempts": 3},
}


@pytest.fixture
def processes(tmp_path: Path, postgres_url: str) -> Iterator[Processes]:
    upgrade(postgres_url)
    procs = Processes(tmp_path, postgres_url)
    yield procs
    procs.stop_all()


def _all_trials(client: HpoClient, study_id: int) -> list[dict[str, Any]]:
    return client.list_trials(study_id, limit=1000)["items"]


def _check_exactly_once(client: HpoClient, study_id: int, expected_trials: int) -> list[dict[str, Any]]:
    study = client.get_study(study_id)
    assert study["status"] == "completed"
    trials = _all_trials(client, study_id)
    assert len(trials) == expected_trials  # none lost, none duplicated
    assert {t["state"] for t in trials} <= {"completed", "stopped"}
    decisions = client.decisions(study_id, limit=5000)
    finishes = Counter(d["trial_id"] for d in decisions if d["kind"] == "finish")
    assert max(finishes.values()) == 1, "a trial was completed twice"
    assert sum(finishes.values()) == sum(t["state"] == "completed" for t in trials)
    for trial in trials:
        detail = client.get_trial(trial["id"])
        rungs = [r["rung"] for r in detail["rung_results"]]
        assert rungs == list(range(trial["rung"] + 1)), f"trial {trial['id']} has rung results {rungs}"
        steps = [r["step"] for r in detail["reports"]]
        assert steps == sorted(set(steps)), "a report was stored twice"
    return decisions


def test_hyperband_survives_a_sigkilled_worker(processes: Processes) -> None:
    server = processes.server()
    workers = [processes.worker(server, f"worker-{i}") for i in range(3)]
    with processes.client(server) as client:
        study_id = client.create_study(SPEC)["id"]
        victim = workers[0]
        victim_id = worker_id_of(victim)

        def victim_is_training() -> dict[str, Any] | None:
            running = client.list_trials(study_id, state="running")["items"]
            return next((t for t in running if t["lease_owner"] == victim_id), None)

        def frozen_while_training() -> dict[str, Any] | None:
            # A rung-0 slice lasts 0.15 s: the victim may finish the trial seen running before a kill
            # lands. Frozen (SIGSTOP), it cannot; a request it sent just before lands within the pause.
            os.kill(victim.pid, signal.SIGSTOP)
            time.sleep(0.5)
            held = victim_is_training()
            if held is None or not _scratch_of(processes, held["id"]):
                # Between two trials, or not yet writing into its scratch folder: let it go on.
                os.kill(victim.pid, signal.SIGCONT)
                return None
            return held

        killed_trial = wait_for(frozen_while_training, 60, "the victim worker to hold a trial")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()

        wait_for(lambda: client.get_study(study_id)["status"] != "running", 180, "the study to finish",
                 interval=0.5)
        decisions = _check_exactly_once(client, study_id, expected_trials=9 + 5 + 3)

    requeues = [d for d in decisions if d["kind"] == "requeue" and d["trial_id"] == killed_trial["id"]]
    assert requeues, "the killed worker's trial was not requeued"
    assert f"lease of worker {victim_id} expired" in requeues[0]["reason"]
    assert "requeued as attempt 2" in requeues[0]["reason"]
    _collect_the_killed_slices_scratch(processes, server, study_id, killed_trial["id"])


def _scratch_of(processes: Processes, trial_id: int) -> list[Path]:
    return list((processes.tmp / "checkpoints" / ".staging").glob(f"study-*-trial-{trial_id}-*"))


def _collect_the_killed_slices_scratch(processes: Processes, server: str, study_id: int, killed_trial: int) -> None:
    """`hpo checkpoints gc` deletes the scratch folder the SIGKILL left behind and nothing the study needs."""
    left_behind = _scratch_of(processes, killed_trial)
    assert left_behind, "the killed slice left no scratch folder"
    gc = subprocess.run([sys.executable, "-m", "hpo_service.cli", "checkpoints", "gc", "--min-age", "0",
                         "--server", server, "--json"], env=processes.env, capture_output=True, text=True,
                        timeout=120)
    assert gc.returncode == 0, gc.stderr
    report = json.loads(gc.stdout)
    assert {Path(row["path"]) for row in report["deleted"]} == set(left_behind)
    assert not any(path.exists() for path in left_behind)
    with processes.client(server) as client:
        for trial in _all_trials(client, study_id):
            detail = client.get_trial(trial["id"])
            needed = [trial["checkpoint_uri"], *(r["checkpoint_uri"] for r in detail["rung_results"])]
            for uri in filter(None, needed):
                assert Path(unquote(urlsplit(uri).path)).is_dir(), f"{uri} was deleted"


def test_two_api_processes_share_one_database(processes: Processes) -> None:
    servers = [processes.server(), processes.server()]
    for i in range(4):
        processes.worker(servers[i % 2], f"worker-{i}")
    spec = {**SPEC, "name": "e2e-two-servers",
            "trainer": {"name": "synthetic", "params": {"sleep_per_unit": 0.02}}}
    with processes.client(servers[0]) as client:
        study_id = client.create_study(spec)["id"]
        wait_for(lambda: client.get_study(study_id)["status"] != "running", 180, "the study to finish",
                 interval=0.5)
        _check_exactly_once(client, study_id, expected_trials=9 + 5 + 3)
        owners = {t["lease_owner"] for t in _all_trials(client, study_id)}
    assert len(owners) >= 2, "workers of both servers should have run trials"
