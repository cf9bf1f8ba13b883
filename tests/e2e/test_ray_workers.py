"""End to end through Ray on PostgreSQL: `hpo serve` and `hpo worker --ray-address local --slots 2`
as real processes, an ASHA study, one actor killed by SIGKILL mid-trial, and a SIGTERM drain
whose released trials resume from the checkpoints they wrote on the way out.

Parametrised by trainer (``CASES``): ``synthetic``, and ``adapter_lm`` on a tiny Llama built in
the test (tests/e2e/tiny_lm.py) and saved to a folder the actors load it from. A case's
``params_fixture`` names a fixture whose dict is merged into ``trainer.params`` (paths made at
test time). ``min_budget``/``max_budget`` are in the trainer's budget unit; choose them so that a
top-rung slice takes a few seconds (the kill must land mid-trial) and the whole study a minute
at most.
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
from hpo_service.client_types import DecisionInfo, TrialDetail, TrialInfo
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
    objective: str = "loss"
    lease_seconds: float = 3  # of the kill test: how soon the killed actor's trial comes back
    params_fixture: str | None = None  # a fixture whose dict is merged into trainer.params
    exports_adapter: bool = False  # check GET /studies/{id}/best/adapter and load it with PEFT


# adapter_lm: 16 x 128-token sequences per step on a 2-layer Llama with LoRA, ~80 ms a step on
# one core; budget in optimizer steps, rungs 9 -> 27 -> 81, so the top-rung slice (27 -> 81) trains
# for a few seconds. Its max_budget must be the scheduler's (schedules span it).
ADAPTER_LM = TrainerCase(
    trainer={"name": "adapter_lm", "params": {
        "adapter": "lora", "seq_len": 128, "batch_size": 16, "eval_fraction": 0.1, "eval_max_batches": 1,
        "budget_unit": "steps", "max_budget": 81, "report_every": 9, "device": "cpu", "precision": "fp32"}},
    search_space={"learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                  "rank": {"type": "int", "low": 2, "high": 8, "step": 2}},
    min_budget=9, max_budget=81, objective="eval_loss", lease_seconds=5, params_fixture="tiny_lm_params",
    exports_adapter=True,
)

CASES = [
    pytest.param(TrainerCase(
        trainer={"name": "synthetic", "params": {"sleep_per_unit": 0.5, "noise": 0.01}},
        search_space="synthetic", min_budget=1, max_budget=9,
    ), id="synthetic"),
    pytest.param(ADAPTER_LM, id="adapter_lm", marks=needs_trainer("adapter_lm")),
]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A tiny Llama + tokenizer saved to a folder, and two data files (built once per session)."""
    pytest.importorskip("peft")
    from tests.e2e.tiny_lm import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture
def tiny_lm_params(tiny_lm: tuple[Path, list[str]]) -> dict[str, Any]:
    model_dir, data_files = tiny_lm
    return {"model": str(model_dir), "data_files": data_files}


def _trainer(case: TrainerCase, request: pytest.FixtureRequest) -> dict[str, Any]:
    if case.params_fixture is None:
        return case.trainer
    return {**case.trainer, "params": {**case.trainer["params"], **request.getfixturevalue(case.params_fixture)}}


def _spec(case: TrainerCase, trainer: dict[str, Any], name: str, *, max_trials: int, lease_seconds: float,
          min_budget: float | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"metric": case.objective, "direction": "minimize"},
        "search_space": case.search_space,
        "scheduler": {"kind": "asha", "min_budget": min_budget or case.min_budget, "max_budget": case.max_budget,
                      "eta": 3},
        "sampler": {"kind": "random", "seed": 5},
        "trainer": trainer,
        "limits": {"max_trials": max_trials},
        "retry": {"lease_seconds": lease_seconds, "max_attempts": 3},
    }


@pytest.fixture
def processes(tmp_path: Path, postgres_url: str) -> Iterator[Processes]:
    upgrade(postgres_url)
    procs = Processes(tmp_path, postgres_url)
    procs.env["HF_HUB_OFFLINE"] = "1"  # trainers load models from local folders only
    # One torch thread per process (Ray gives its actors that anyway): on a busy 2-core machine,
    # OpenMP threads of a plain `hpo worker` spinning against the actors made steps ~10x slower.
    procs.env["OMP_NUM_THREADS"] = "1"
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


def _plain_worker(processes: Processes, server: str, name: str, *args: str) -> subprocess.Popen[bytes]:
    """`hpo worker` (one process) with extra ARGS, stdout and stderr to NAME.log."""
    argv = [sys.executable, "-m", "hpo_service.cli", "worker", "--server", server, *args]
    with (processes.tmp / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(argv, env=processes.env, stdout=log, stderr=subprocess.STDOUT)
    processes.running.append(process)
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
    decisions = client.decisions(study_id, limit=5000)
    unfinished = {t["id"]: t["state"] for t in trials if t["state"] not in ("completed", "stopped")}
    assert not unfinished, (unfinished, [(d["trial_id"], d["kind"], d["reason"]) for d in decisions
                                         if d["trial_id"] in unfinished])
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
def test_asha_through_ray_survives_a_killed_actor(processes: Processes, case: TrainerCase,
                                                  request: pytest.FixtureRequest) -> None:
    trainer = _trainer(case, request)
    server = processes.server()
    with processes.client(server) as client:
        spec = _spec(case, trainer, "e2e-ray-asha", max_trials=9, lease_seconds=case.lease_seconds)
        study_id = client.create_study(spec)["id"]
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
        promoted = [client.get_trial(t["id"]) for t in client.list_trials(study_id, limit=1000)["items"]
                    if t["rung"] >= 1]
        victim_detail = client.get_trial(victim_trial["id"])
        adapter = client.best_adapter(study_id) if case.exports_adapter else None
        # Ray replaces the actor: the same slot answers again as a new process. On a loaded
        # machine that can take longer than the rest of the study, so wait for it.
        back = rf"slot {slot} is back as worker \S+-(\d+)-ray-slot{slot}"
        wait_for(lambda: re.search(back, _full_log(processes, "ray-worker")), 60, f"slot {slot}'s actor to come back")
        log = _full_log(processes, "ray-worker")
        assert worker.poll() is None, log[-3000:]  # the pool outlived its actor

    requeues = [d for d in decisions if d["kind"] == "requeue" and d["trial_id"] == victim_trial["id"]]
    assert requeues, "the killed actor's trial was not requeued"
    assert f"lease of worker {victim_owner} expired" in requeues[0]["reason"]
    resumed_from = victim_trial["budget_done"]
    assert f"requeued as attempt 2 of 3 from budget {resumed_from:g}" in requeues[0]["reason"]
    # Attempt 2 resumed from the trial's own checkpoint at that budget: both trainers refuse a
    # resume without one, or from one at another budget (CheckpointError), which would log
    # "checkpoint unusable".
    assert not [d for d in decisions if d["kind"] == "fail" or "checkpoint unusable" in d["reason"]]
    retried = [r["step"] for r in victim_detail["reports"] if r["attempt"] >= 2]
    assert retried and min(retried) > resumed_from, victim_detail["reports"]
    assert victim_detail["trial"]["state"] == "completed"
    _check_promotions_resumed(promoted, decisions, log, study_id)
    # The actors' progress lines reach the stderr of `hpo worker`, nothing goes to its stdout.
    top = f"{case.max_budget:g}"
    assert re.search(rf"\(SlotWorker pid=\d+.*\).* slot-\d INFO trial \d+ \(study \d+\): step {top}/{top} ", log)
    assert "step " not in (processes.tmp / "ray-worker.out").read_text(errors="replace")
    replaced = re.search(back, log)
    assert replaced and int(replaced[1]) != victim_pid, log[-3000:]
    if adapter is not None:
        _check_adapter_loads(adapter, Path(trainer["params"]["model"]), processes.tmp / "export")


def _check_promotions_resumed(promoted: list[TrialDetail], decisions: list[DecisionInfo], log: str,
                              study_id: int) -> None:
    """Every promoted trial went rung by rung, each slice leased from the previous rung's budget
    (and so from its checkpoint: the trainers refuse a resume at another budget)."""
    assert promoted, "ASHA promoted no trial"
    promotes = Counter(d["trial_id"] for d in decisions if d["kind"] == "promote")
    for detail in promoted:
        trial = detail["trial"]
        budgets = [r["budget"] for r in detail["rung_results"]]
        assert promotes[trial["id"]] == trial["rung"], (trial, decisions)
        assert budgets == sorted(set(budgets)) and budgets[-1] == trial["budget_done"], detail["rung_results"]
        for lower, upper in zip(budgets, budgets[1:]):
            lease_line = rf"trial {trial['id']} \(study {study_id}\) attempt \d+: budget {lower:g} -> {upper:g},"
            assert re.search(lease_line, log), f"trial {trial['id']} was not resumed at budget {lower:g}"


def _check_adapter_loads(archive: bytes, model_dir: Path, out: Path) -> None:
    """The best trial's adapter, as GET /studies/{id}/best/adapter gives it, loads with plain PEFT."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    from hpo_service.workers.artifacts import unpack_adapter_archive
    from trainers.adapter_lm.adapters.peft_adapters import quiet_peft

    folder = unpack_adapter_archive(archive, out)
    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    with quiet_peft():  # a transformers deprecation warning that PEFT triggers, nothing of ours
        model = peft.PeftModel.from_pretrained(base, str(folder)).eval()
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "the exported LoRA was never trained"
    ids = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[:2] == (1, 16) and torch.isfinite(logits).all()


@pytest.mark.parametrize("case", CASES)
def test_sigterm_drains_the_ray_slots(processes: Processes, case: TrainerCase, request: pytest.FixtureRequest,
                                      ) -> None:
    trainer = _trainer(case, request)
    server = processes.server()
    with processes.client(server) as client:
        # A lease far longer than the test: a trial that comes back came back by the drain. One
        # rung at max_budget: slices long enough for the drain to land mid-slice.
        spec = _spec(case, trainer, "e2e-ray-drain", max_trials=20, lease_seconds=600, min_budget=case.max_budget)
        study_id = client.create_study(spec)["id"]
        worker = _ray_worker(processes, server, "ray-worker")

        def both_slots_mid_slice() -> list[TrialInfo] | None:
            assert worker.poll() is None, processes.log("ray-worker")
            running = []
            for trial in _running_on_slots(client, study_id):
                steps = [r["step"] for r in client.get_trial(trial["id"])["reports"]]
                # It has reported, and a third of its slice is still ahead: the drain lands mid-slice.
                if steps and max(steps) <= trial["budget_target"] * 2 / 3:
                    running.append(trial)
            return running if len(running) == 2 else None

        running = wait_for(both_slots_mid_slice, RAY_START_S + 30, "both Ray slots to be training")
        ray_processes = psutil.Process(worker.pid).children(recursive=True)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, processes.log("ray-worker")

        assert client.list_trials(study_id, state="running")["items"] == [], "a trial was left to lease expiry"
        decisions = client.decisions(study_id, limit=5000)
        drained = {d["trial_id"]: d["reason"] for d in decisions if d["kind"] == "requeue"}
        kept: dict[int, float] = {}  # trial -> the budget of the checkpoint it was released with
        for trial in running:
            if trial["id"] not in drained:
                # The drain came after its last step: the slice was whole and was completed.
                assert client.get_trial(trial["id"])["trial"]["budget_done"] == trial["budget_target"]
                continue
            reason = drained[trial["id"]]
            assert f"worker {trial['lease_owner']} reported: worker is shutting down" in reason
            # A drain does not use up one of the 3 attempts: attempt 2 of 4 (F18).
            found = re.search(rf"kept its checkpoint at budget (\S+) of {trial['budget_target']:g}; "
                              rf"a drain, not counted toward max_attempts; "
                              rf"requeued as attempt 2 of 4 from budget (\S+)$", reason)
            assert found and found[1] == found[2], reason
            kept[trial["id"]] = float(found[1])
            pending = client.get_trial(trial["id"])["trial"]
            assert (pending["state"], pending["budget_done"]) == ("pending", kept[trial["id"]])
        assert kept, f"no running trial was released with its checkpoint: {decisions}"
        log = _full_log(processes, "ray-worker")
        assert "draining 2 slot(s)" in log and "'drained'" in log, log[-3000:]
        # The local Ray instance went down with the worker.
        _, alive = psutil.wait_procs(ray_processes, timeout=15)
        assert not alive, f"Ray processes still running: {[p.pid for p in alive]}"

        # A plain worker picks the released trials up first (pending before new work) and exits
        # after them: each retry resumes from the drained checkpoint and trains only the rest.
        retrier = _plain_worker(processes, server, "worker-after-drain", "--max-trials", str(len(kept)))
        assert retrier.wait(timeout=120) == 0, processes.log("worker-after-drain")
        details = {t: client.get_trial(t) for t in kept}
    after = _full_log(processes, "worker-after-drain")
    for trial_id, budget in kept.items():
        detail = details[trial_id]
        target = detail["trial"]["budget_target"]
        assert detail["trial"]["state"] == "completed" and detail["trial"]["budget_done"] == target
        assert f"trial {trial_id} (study {study_id}) attempt 2: budget {budget:g} -> {target:g}," in after
        assert not [d for d in detail["decisions"] if "checkpoint unusable" in d["reason"]], detail["decisions"]
        # Steps continue where the drained attempt stopped; a restart would log steps <= budget again.
        first = [r["step"] for r in detail["reports"] if r["attempt"] == 1]
        second = [r["step"] for r in detail["reports"] if r["attempt"] == 2]
        assert first and max(first) == budget and second and min(second) > budget, detail["reports"]
        logged = [float(k) for k in re.findall(rf"trial {trial_id} \(study {study_id}\): step ([\d.]+)/", after)]
        assert logged and min(logged) > budget and max(logged) == target, logged
