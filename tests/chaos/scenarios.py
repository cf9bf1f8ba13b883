"""The chaos scenarios: one study on real processes, one kind of fault injected while it runs.

Each scenario returns a `ScenarioResult`: what was injected and when, how long the service
took to notice and to recover from each fault, and the audit of the finished study
(tests/chaos/audit.py). tests/chaos/test_chaos.py runs every scenario at `CI` scale and
asserts a clean audit; bench/chaos.py runs them at `LONG` scale and writes the table.

Recovery is measured with the server's own timestamps: "detected" is the time from the
fault to the requeue decision that names it, "recovered" the time from the fault to the
next completed segment of the affected trial (or of any trial, for faults that hit the
service: a restarted API server or database, where only segments completed after the
outage count).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hpo_service.client import HpoClient
from hpo_service.db.migrate import upgrade
from hpo_service.errors import Conflict, StaleLease
from tests.chaos.audit import Audit, StudyRows, _utc, audit_study, read_study
from tests.chaos.baseline import reference_for
from tests.chaos.cluster import Cluster, Proc, free_port, pg_outage, pg_outage_mode, wait_for
from tests.chaos.lossy_proxy import LossyProxy
from tests.support.postgres import database_name


@dataclass(frozen=True)
class Scale:
    max_budget: float = 9.0
    iterations: int = 3  # Hyperband sweeps: 17 trials each at max_budget 9, 49 at 27
    workers: int = 4
    sleep_per_unit: float = 0.2
    faults: int = 3  # worker kills and freezes (the checkpoint scenario damages as many as it can)
    restarts: int = 2  # API server restarts
    pg_restarts: int = 2  # PostgreSQL restarts (a real restart cuts every session on the server: keep few)
    fault_interval_s: float = 4.0
    lease_seconds: float = 3.0
    seed: int = 17
    timeout_s: float = 300.0
    server_down_s: float = 1.0  # how long a killed API server stays down before its restart
    pg_down_s: float = 2.0  # outage length when PostgreSQL is emulated (mode "database")


CI = Scale()
LONG = Scale(max_budget=27.0, iterations=6, workers=6, sleep_per_unit=0.12, faults=1000, restarts=1000,
             pg_restarts=5, fault_interval_s=5.0,
             lease_seconds=4.0, timeout_s=1800.0, server_down_s=2.0, pg_down_s=3.0)


def study_spec(name: str, scale: Scale) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": "synthetic",
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": scale.max_budget, "eta": 3,
                      "iterations": scale.iterations},
        "sampler": {"kind": "random", "seed": scale.seed},
        "trainer": {"name": "synthetic", "params": {"sleep_per_unit": scale.sleep_per_unit, "noise": 0.02}},
        "retry": {"lease_seconds": scale.lease_seconds, "max_attempts": 100},
    }


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Fault:
    kind: str
    at: datetime
    trial_id: int | None = None
    worker_id: str | None = None
    detected_s: float | None = None
    recovered_s: float | None = None
    down_s: float | None = None
    note: str = ""
    whole_service: bool = False  # nothing can progress until the outage ends (one API server, the database)


@dataclass
class ScenarioResult:
    name: str
    injected: str
    faults: list[Fault]
    audit: Audit
    duration_s: float
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # beyond the audit's

    @property
    def failures(self) -> list[str]:
        return self.audit.problems + self.problems

    def summary(self) -> str:
        a = self.audit
        return (f"{self.name}: {len(self.faults)} x {self.injected}; {a.trials} trials {a.states}; "
                f"lost {a.trials_lost}, duplicated {a.trials_duplicated}, reports lost {a.reports_lost} / "
                f"duplicated {a.reports_duplicated}, values differing {a.values_differing}, "
                f"requeues {a.requeues} {a.requeue_causes} (unexplained {a.requeues_unexplained}), "
                f"best #{a.best_number} matches fault-free: {a.best_matches_reference}; {self.duration_s:.0f}s")


@dataclass
class Run:
    """What a scenario works with."""

    cluster: Cluster
    admin_url: str
    database_url: str
    scale: Scale
    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    study_id: int = 0
    client: HpoClient | None = None
    pg_mode: str | None = None  # how postgres_restart takes PostgreSQL away (None: pg_outage_mode decides)

    def start_study(self, url: str) -> None:
        self.client = self.cluster.client(url)
        self.spec = study_spec(f"chaos-{self.name}", self.scale)
        self.study_id = self.client.create_study(self.spec)["id"]

    @property
    def api(self) -> HpoClient:
        assert self.client is not None
        return self.client

    def running(self) -> bool:
        return self.api.get_study(self.study_id)["status"] == "running"

    def wait_done(self) -> None:
        wait_for(lambda: not self.running(), self.scale.timeout_s, f"study {self.name} to finish", interval=0.5)

    def sleep_while_running(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False as soon as the study is no longer running."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.running():
                return False
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return self.running()

    def held_by(self, proc: Proc) -> dict[str, Any] | None:
        running = self.api.list_trials(self.study_id, state="running", limit=1000)["items"]
        return next((t for t in running if t["lease_owner"] == proc.worker_id), None)

    def busy_workers(self) -> list[tuple[Proc, dict[str, Any]]]:
        """Live worker processes holding a lease on this study, with the trial they hold."""
        running = self.api.list_trials(self.study_id, state="running", limit=1000)["items"]
        pairs = []
        for trial in running:
            proc = self.cluster.by_worker_id(trial["lease_owner"] or "")
            if proc is not None and proc.alive() and not proc.frozen:
                pairs.append((proc, trial))
        return pairs


# --- the scenarios -------------------------------------------------------------------------


MAX_KILLS_PER_TRIAL = 2
# The line a worker logs when it starts a slice (WorkerLoop.run_one): which trial and attempt it holds.
_STARTED = re.compile(r"trial (\d+) \(study \d+\) attempt (\d+):")


def worker_sigkill(run: Run, rng: random.Random) -> tuple[str, list[Fault], dict[str, Any]]:
    url = run.cluster.start_server()
    for _ in range(run.scale.workers):
        run.cluster.start_worker(url)
    run.start_study(url)
    faults: list[Fault] = []
    kills: Counter[int] = Counter()  # trial id -> how often its holder was killed
    while len(faults) < run.scale.faults and run.sleep_while_running(run.scale.fault_interval_s):
        busy = run.busy_workers()
        # A trial's holder is killed at most MAX_KILLS_PER_TRIAL times: at the end of a study one long
        # segment is all that runs, and killing its holder every few seconds (less than expiry plus the
        # segment) would requeue it until its attempts run out -- a livelock of the test, not the service.
        candidates = [pair for pair in busy if kills[pair[1]["id"]] < MAX_KILLS_PER_TRIAL]
        if busy and not candidates:
            continue
        victim = rng.choice(candidates)[0] if candidates else rng.choice(run.cluster.workers())
        fault = Fault("SIGKILL worker", utc_now(), worker_id=victim.worker_id)
        run.cluster.kill(victim)
        run.cluster.start_worker(url)  # the replacement
        trial = run.held_by(victim)  # what it held when it died (it may have moved on since the pick)
        if trial is not None:
            kills[trial["id"]] += 1
            fault.trial_id = trial["id"]
            fault.note = f"rung {trial['rung']} attempt {trial['attempt']}"
        else:
            fault.note = "held no lease when killed"
        faults.append(fault)
    run.wait_done()
    return "SIGKILL of a random busy worker, replacement started", faults, {}


_REFUSED = re.compile(r"lease lost while training|refused our lease|stale")


def worker_sigstop(run: Run, rng: random.Random) -> tuple[str, list[Fault], dict[str, Any]]:
    url = run.cluster.start_server()
    for _ in range(run.scale.workers):
        run.cluster.start_worker(url)
    run.start_study(url)
    details: dict[str, Any] = {"zombie": _stale_lease_holder(run), "frozen": []}
    faults: list[Fault] = []
    next_at = time.monotonic() + run.scale.fault_interval_s
    while len(faults) < max(1, run.scale.faults // 2) and run.running():
        busy = sorted(run.busy_workers(), key=lambda pair: pair[1]["budget_target"] - pair[1]["budget_done"])
        if time.monotonic() < next_at or not busy:
            time.sleep(0.3)
            continue
        victim = busy[-1][0] if rng.random() < 0.7 else rng.choice(busy)[0]  # mostly the longest segment
        log_before = len(victim.log_text())
        fault = Fault("SIGSTOP worker past its lease, then SIGCONT", utc_now(), worker_id=victim.worker_id)
        run.cluster.freeze(victim)
        time.sleep(1.0)  # a request already on the wire still lands
        trial = run.held_by(victim)  # it may have finished the picked trial and leased another meanwhile
        if trial is None:
            run.cluster.thaw(victim)  # frozen between two leases: nothing to fence, try another
            continue
        fault.trial_id = trial["id"]
        detail = run.api.get_trial(trial["id"])
        attempt, rung = detail["trial"]["attempt"], detail["trial"]["rung"]
        steps_at_freeze = sorted(r["step"] for r in detail["reports"] if r["attempt"] == attempt)

        def segment_done_by_another() -> bool:
            now = run.api.get_trial(trial["id"])
            return (any(r["rung"] == rung for r in now["rung_results"]) and now["trial"]["attempt"] > attempt) or (
                now["trial"]["state"] in ("completed", "stopped", "failed"))

        try:
            wait_for(segment_done_by_another, 120, "another worker to finish the frozen worker's segment", 0.3)
        finally:
            run.cluster.thaw(victim)
        thawed = time.monotonic()
        frozen_s = (utc_now() - fault.at).total_seconds()
        refused = None
        while time.monotonic() - thawed < 30 and refused is None:
            refused = _REFUSED.search(victim.log_text()[log_before:])
            time.sleep(0.3)
        fault.down_s = round(frozen_s, 1)
        fault.note = f"late calls refused in its log: {'yes' if refused else 'not seen'}"
        details["frozen"].append({"trial_id": trial["id"], "attempt": attempt, "steps_at_freeze": steps_at_freeze,
                                  "refusal_logged": refused is not None, "worker": victim.name})
        faults.append(fault)
        next_at = time.monotonic() + run.scale.fault_interval_s
    run.wait_done()
    return "SIGSTOP of a busy worker until its trial was finished elsewhere, then SIGCONT", faults, details


def _stale_lease_holder(run: Run) -> dict[str, Any]:
    """A scripted worker that takes a lease and goes silent; once the trial was re-leased and its segment
    finished by a real worker, it sends its late report and completion, which must be refused."""
    grant = run.api.lease("chaos-zombie", wait_s=30, studies=[run.study_id])
    if grant is None:
        return {"ran": False}
    trial_id, token, rung = grant["trial_id"], grant["lease_token"], run.api.get_trial(grant["trial_id"])["trial"]["rung"]

    def finished_by_another() -> bool:
        detail = run.api.get_trial(trial_id)
        return detail["trial"]["attempt"] > grant["attempt"] and any(r["rung"] == rung for r in detail["rung_results"])

    wait_for(finished_by_another, 120, "the zombie's trial to be finished by a real worker", 0.3)
    before = run.api.get_trial(trial_id)
    outcome: dict[str, Any] = {"ran": True, "trial_id": trial_id}
    step = grant["budget_to"]
    for call, attempt in (("report", lambda: run.api.report(trial_id, token, [{"step": step, "metrics": {"loss": 99.0}}])),
                          ("complete", lambda: run.api.complete(trial_id, token, {"loss": -99.0}, None)),
                          ("heartbeat", lambda: run.api.heartbeat(trial_id, token))):
        try:
            attempt()
            outcome[call] = "ACCEPTED"
        except StaleLease:
            outcome[call] = "409 stale_lease"
        except Conflict as error:
            outcome[call] = f"409 {error.code}"
    after = run.api.get_trial(trial_id)
    outcome["unchanged"] = (before["reports"] == after["reports"] and before["rung_results"] == after["rung_results"]
                            and before["trial"]["value"] == after["trial"]["value"])
    return outcome


def server_restart(run: Run, rng: random.Random) -> tuple[str, list[Fault], dict[str, Any]]:
    port = free_port()
    url = run.cluster.start_server(port)
    for _ in range(run.scale.workers):
        run.cluster.start_worker(url)
    run.start_study(url)
    faults: list[Fault] = []
    while len(faults) < run.scale.restarts and run.sleep_while_running(run.scale.fault_interval_s):
        fault = Fault("SIGKILL API server, restart on the same port", utc_now(), whole_service=True)
        fault.down_s = _kill_and_restart_server(run, port)
        faults.append(fault)
    run.wait_done()
    return "SIGKILL of the API server, restarted on the same port", faults, {}


def _kill_and_restart_server(run: Run, port: int) -> float:
    """SIGKILL the API server on ``port``, wait the scale's outage, start it again; seconds it was down."""
    started = time.monotonic()
    run.cluster.kill_server(port)
    time.sleep(run.scale.server_down_s)
    run.cluster.start_server(port)
    return time.monotonic() - started


def postgres_restart(run: Run, rng: random.Random) -> tuple[str, list[Fault], dict[str, Any]]:
    url = run.cluster.start_server()
    for _ in range(run.scale.workers):
        run.cluster.start_worker(url)
    run.start_study(url)
    mode = run.pg_mode or pg_outage_mode(run.admin_url)
    faults: list[Fault] = []
    while len(faults) < run.scale.pg_restarts and run.sleep_while_running(run.scale.fault_interval_s * 1.5):
        fault = Fault(f"PostgreSQL restart ({mode})", utc_now(), whole_service=True)
        fault.down_s = pg_outage(run.admin_url, database_name(run.database_url), mode, run.scale.pg_down_s)
        faults.append(fault)
    run.wait_done()
    what = ("PostgreSQL restarted (pg_ctlcluster restart)" if mode == "cluster"
            else "PostgreSQL outage of the study's database (connections cut and refused)")
    return what, faults, {"mode": mode}


def two_api_servers(run: Run, rng: random.Random) -> tuple[str, list[Fault], dict[str, Any]]:
    ports = [free_port(), free_port()]
    urls = [run.cluster.start_server(port) for port in ports]
    groups: dict[str, list[Proc]] = {url: [] for url in urls}
    for i in range(run.scale.workers):
        groups[urls[i % 2]].append(run.cluster.start_worker(urls[i % 2]))
    run.start_study(urls[0])
    faults: list[Fault] = []
    while len(faults) < run.scale.restarts and run.sleep_while_running(run.scale.fault_interval_s * 1.5):
        port = ports[len(faults) % 2]
        fault = Fault("SIGKILL one of two API servers, restart it", utc_now(), note=f"port {port}")
        fault.down_s = _kill_and_restart_server(run, port)
        faults.append(fault)
    run.wait_done()
    segments = {url: sum(len(_STARTED.findall(p.log_text())) for p in procs)
                for url, procs in groups.items()}
    return "two API servers on one database, workers split; one killed and restarted at a time", faults, {
        "segments_per_server": segments}


# Chance that a chunk of an answer is cut, by request kind: granted leases and completions often
# (the paths the retry rules exist for), the many reports and heartbeats now and then. A worker's
# client retries 8 times, so even a granted lease is lost past its retries about once in 10**7.
LOSSY_CUTS = {"lease grant": 0.15, "leases": 0.05, "complete": 0.15, "fail": 0.15, "reports": 0.03,
              "heartbeat": 0.05}


def lossy_network(run: Run, rng: random.Random) -> tuple[str, list[Fault], dict[str, Any]]:
    url = run.cluster.start_server()
    proxy = LossyProxy(int(url.rsplit(":", 1)[1]), LOSSY_CUTS, seed=rng.randrange(2**32))
    proxied = proxy.start_serving()
    try:
        workers = [run.cluster.start_worker(proxied) for _ in range(run.scale.workers)]
        run.start_study(url)  # the harness itself talks to the server directly
        run.wait_done()
    finally:
        proxy.stop()
    faults = [Fault(f"answer to a {kind} request cut", datetime.fromtimestamp(at, UTC)) for at, kind in proxy.cut_at]
    # Which (trial, attempt) each worker learned of: a grant it never started was lost to it.
    started = sorted(f"{proc.worker_id}:{trial}:{attempt}" for proc in workers
                     for trial, attempt in _STARTED.findall(proc.log_text()))
    return "answers lost on the way back to the workers (a proxy cuts the connection after the server answered)", \
        faults, {"cut": dict(proxy.cut), "relayed": dict(proxy.relayed), "_started": started}


class _Corrupter(threading.Thread):
    """Damages committed checkpoints of every third trial the moment they appear: alternately
    deleted (missing) and rewritten with a bad checksum (corrupt)."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True, name="checkpoint-corrupter")
        self.root = root
        self.stop = threading.Event()
        self.damaged: list[tuple[int, str, str, datetime]] = []  # trial id, folder, how, when
        self._seen: set[Path] = set()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            for folder in sorted(self.root.glob("study-*/trial-*/budget-*")):
                if folder in self._seen:
                    continue
                self._seen.add(folder)
                trial_id = int(folder.parent.name.removeprefix("trial-"))
                if trial_id % 3 == 0:
                    self._damage(folder, trial_id)

    def _damage(self, folder: Path, trial_id: int) -> None:
        how = "missing" if len(self.damaged) % 2 == 0 else "corrupt"
        if how == "missing":
            shutil.rmtree(folder, ignore_errors=True)
        else:
            state = folder / "state.json"
            try:
                document = json.loads(state.read_text())
                document["payload"]["budget_done"] = -1.0  # the checksum no longer matches
                state.write_text(json.dumps(document))
            except (OSError, ValueError):
                return
        self.damaged.append((trial_id, folder.name, how, utc_now()))


def checkpoint_damage(run: Run, rng: random.Random) -> tuple[str, list[Fault], dict[str, Any]]:
    url = run.cluster.start_server()
    corrupter = _Corrupter(run.cluster.checkpoints)
    corrupter.start()
    try:
        for _ in range(run.scale.workers):
            run.cluster.start_worker(url)
        run.start_study(url)
        run.wait_done()
    finally:
        corrupter.stop.set()
        corrupter.join(timeout=5)
    faults = [Fault(f"checkpoint {how}", when, trial_id, note=folder) for trial_id, folder, how, when in corrupter.damaged]
    return "checkpoints of every third trial deleted or corrupted as soon as committed", faults, {}


SCENARIOS: dict[str, Callable[[Run, random.Random], tuple[str, list[Fault], dict[str, Any]]]] = {
    "worker_sigkill": worker_sigkill,
    "worker_sigstop": worker_sigstop,
    "server_restart": server_restart,
    "postgres_restart": postgres_restart,
    "two_api_servers": two_api_servers,
    "checkpoint_damage": checkpoint_damage,
    "lossy_network": lossy_network,
}


# --- running one -------------------------------------------------------------------------------

_MIGRATING = threading.Lock()


def run_scenario(name: str, folder: Path, admin_url: str, database_url: str, scale: Scale = CI,
                 seed: int = 1, pg_mode: str | None = None) -> ScenarioResult:
    """Run one scenario on a fresh database. ``pg_mode``: ``cluster`` or ``database`` (see
    tests/chaos/cluster.py, `pg_outage`); scenarios run side by side must use ``database``."""
    with _MIGRATING:  # Alembic keeps its environment in module globals: one migration at a time
        upgrade(database_url)
    cluster = Cluster(folder, database_url)
    run = Run(cluster, admin_url, database_url, scale, name, pg_mode=pg_mode)
    started = time.monotonic()
    try:
        injected, faults, details = SCENARIOS[name](run, random.Random(seed))
        duration = time.monotonic() - started
        exits = cluster.unexpected_exits()  # before close(), which stops everyone on purpose
    finally:
        if run.client is not None:
            run.client.close()
        cluster.close()
    reference = reference_for(run.spec)
    rows = read_study(database_url, run.study_id)
    result = ScenarioResult(name, injected, faults, audit_study(rows, reference), duration, details)
    result.problems += cluster.log_problems() + exits
    _measure(rows, result)
    CHECKS.get(name, lambda _r, _rows: None)(result, rows)
    return result


def _seconds(later: datetime | None, earlier: datetime) -> float | None:
    return None if later is None else round((later - earlier).total_seconds(), 2)


def _measure(rows: StudyRows, result: ScenarioResult) -> None:
    for fault in result.faults:
        if fault.trial_id is not None and fault.trial_id in rows.trials:
            requeues = rows.requeues_after(fault.at, fault.trial_id)
            if requeues:
                fault.detected_s = _seconds(_utc(requeues[0].created_at), fault.at)
            fault.recovered_s = _seconds(rows.progress_after(fault.at, fault.trial_id), fault.at)
        elif fault.worker_id is None:  # the service was hit: progress of any trial is recovery
            # A transaction that began before the outage may still commit during its first moments;
            # when the whole service was down, only progress after the outage counts.
            since = fault.at + timedelta(seconds=fault.down_s or 0.0) if fault.whole_service else fault.at
            fault.recovered_s = _seconds(rows.progress_after(since), fault.at)


# --- what each scenario must show beyond the audit -------------------------------------------------


def _check_sigkill(result: ScenarioResult, rows: StudyRows) -> None:
    for fault in result.faults:
        if fault.trial_id is None:
            continue
        named = [d for d in rows.requeues_after(fault.at, fault.trial_id)
                 if f"lease of worker {fault.worker_id} expired" in d.reason]
        # Killed right after its completion reached the server: nothing to requeue.
        completed_at_death = any(abs((_utc(r.created_at) - fault.at).total_seconds()) < 2.0
                                 for r in rows.rung_results.get(fault.trial_id, []))
        if not named and not completed_at_death:
            result.problems.append(f"trial {fault.trial_id} of killed worker {fault.worker_id} was never requeued")


def _check_sigstop(result: ScenarioResult, rows: StudyRows) -> None:
    zombie = result.details.get("zombie", {})
    if zombie.get("ran"):
        for call in ("report", "complete", "heartbeat"):
            if not str(zombie.get(call, "")).startswith("409"):
                result.problems.append(f"the stale lease holder's late {call} was {zombie.get(call)}, not a 409")
        if not zombie.get("unchanged"):
            result.problems.append("the stale lease holder's late calls changed the trial")
    for frozen in result.details.get("frozen", []):
        late = [float(r.step) for r in rows.reports.get(frozen["trial_id"], []) if r.attempt == frozen["attempt"]
                and float(r.step) not in frozen["steps_at_freeze"]]
        if late:
            result.problems.append(f"trial {frozen['trial_id']}: reports {late} of the frozen attempt "
                                   f"{frozen['attempt']} were stored after its lease was gone")
    for fault in result.faults:
        if not rows.requeues_after(fault.at, fault.trial_id or -1):
            result.problems.append(f"the frozen worker's trial {fault.trial_id} was never requeued")


def _check_two_servers(result: ScenarioResult, rows: StudyRows) -> None:
    segments = result.details.get("segments_per_server", {})
    if len(segments) != 2 or min(segments.values()) == 0:
        result.problems.append(f"workers of both servers should have trained segments: {segments}")


def _check_checkpoints(result: ScenarioResult, rows: StudyRows) -> None:
    unusable = [d for d in rows.decisions if d.kind == "requeue" and "checkpoint unusable" in d.reason]
    result.details["checkpoint_requeues"] = len(unusable)
    result.details["resumed_from_earlier"] = sum("resuming from the one at budget" in d.reason for d in unusable)
    result.details["restarted_from_scratch"] = sum("restarting from scratch" in d.reason for d in unusable)
    if not unusable:
        result.problems.append("no resume ever met a damaged checkpoint: the scenario tested nothing")
    damaged_trials = {f.trial_id for f in result.faults}
    for decision in unusable:
        if decision.trial_id not in damaged_trials:
            result.problems.append(f"trial {decision.trial_id} found its checkpoint unusable but was never damaged")
    for fault in result.faults:
        hits = rows.requeues_after(fault.at, fault.trial_id or -1)
        if hits:
            fault.detected_s = _seconds(_utc(hits[0].created_at), fault.at)
            fault.recovered_s = _seconds(rows.progress_after(_utc(hits[0].created_at), fault.trial_id), fault.at)
        else:
            fault.recovered_s = None
            fault.note += " (never resumed from: not promoted, or resumed before the damage)"


def _check_lossy(result: ScenarioResult, rows: StudyRows) -> None:
    started = set(result.details.pop("_started", []))
    cut = result.details.get("cut", {})
    for kind in ("lease grant", "complete", "reports"):
        if not cut.get(kind):
            result.problems.append(f"no answer to a {kind} request was cut: the scenario did not test that path")
    for decision in rows.decisions:
        expired = re.match(r"lease of worker (\S+) expired", decision.reason)
        if decision.kind == "requeue" and expired and decision.attempt is not None:
            if f"{expired.group(1)}:{decision.trial_id}:{decision.attempt - 1}" not in started:
                result.problems.append(f"trial {decision.trial_id} attempt {decision.attempt - 1} was granted to "
                                       f"{expired.group(1)}, which never learned of it (its lease expired unused)")


CHECKS: dict[str, Callable[[ScenarioResult, StudyRows], None]] = {
    "worker_sigkill": _check_sigkill,
    "worker_sigstop": _check_sigstop,
    "two_api_servers": _check_two_servers,
    "checkpoint_damage": _check_checkpoints,
    "lossy_network": _check_lossy,
}


def assert_clean(result: ScenarioResult) -> None:
    assert not result.failures, f"{result.summary()}\n" + "\n".join(result.failures[:30])
    assert result.audit.best_matches_reference, result.summary()

