"""Service overhead: trials/s of a Hyperband-shaped workload, hpo-service over HTTP vs Optuna's RDBStorage.

The workload has no training in it, so what is measured is pure coordination cost: per trial,
ask for a configuration, send 9 intermediate reports and read a continue/stop answer after each,
then complete. Both systems use the same PostgreSQL server (a fresh throwaway database per run),
the same worker counts and the same time box, in one invocation.

(a) hpo-service: `hpo db upgrade` + one `hpo serve` process (as a user runs it; `--server-processes N`
    for `hpo serve --processes N`); a study with the
    `random` scheduler (every trial one 9-unit segment), `random` sampler, the `synthetic` search
    space, `limits.max_trials = --trials`. Each worker process speaks the worker protocol with
    `HpoClient`: lease -> 9 x report(step k) (one HTTP call each, returning the directive) -> complete.
(b) Optuna: `RDBStorage` on its own database, `RandomSampler`, `HyperbandPruner(min_resource=1,
    max_resource=9, reduction_factor=3)`. Each worker process: `study.ask(space)` -> 9 x
    (`trial.report`, `trial.should_prune()`; pruned -> `study.tell(PRUNED)`) -> `study.tell(value)`.

Worker processes start (spawn), connect, then wait on a barrier; the clock starts when the barrier
opens. A run ends at `--seconds` or when `--trials` trials are done, whichever comes first. Every
worker records the time of each finished trial (completed or pruned); the parent merges them into
trials/s overall and per window of `--window` trials, so a slowdown as the study grows shows.

Usage (from the repository root):

    .venv/bin/python bench/service_overhead.py                      # 1, 4, 16 workers, both systems
    .venv/bin/python bench/service_overhead.py --workers 4 --seconds 30
    .venv/bin/python bench/service_overhead.py --long               # ours to 100,000 trials at 4 workers,
                                                                    # then Optuna in the same time box
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import multiprocessing as mp
import os
import queue
import shlex
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

STEPS = 9  # reports per trial (= Hyperband's max_resource)
SEARCH_SPACE = "synthetic"  # search_spaces/synthetic.yaml, used by both systems
DEFAULT_OUT = common.REPO_ROOT / "bench" / "results" / "service_overhead.md"
MAX_WORKER_ERRORS = 50


# --- the workload ---------------------------------------------------------------------------


def trivial_loss(params: dict[str, Any], step: int) -> float:
    """A cheap deterministic learning curve: a bowl in the hyperparameters plus 1/step."""
    bowl = (math.log10(params["learning_rate"]) + 2.5) ** 2 + (params["dropout"] - 0.1) ** 2
    bowl += abs(math.log2(params["rank"]) - 4.0) / 10.0 + (0.05 if params["optimizer"] == "sgd" else 0.0)
    return bowl + 1.0 / step


def search_space() -> dict[str, Any]:
    """The named space as JSON-able distributions (what the server stores)."""
    from hpo_service.orchestration.spec_loading import load_named_space

    return load_named_space(SEARCH_SPACE, common.REPO_ROOT / "search_spaces")


class OursWorker:
    """hpo-service's worker protocol, done directly with HpoClient (no trainer runs)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.client = common.client(cfg["server"], cfg["token"], timeout=120.0)
        self.client.health()  # open the keep-alive connection before the clock starts
        self.worker_id = f"bench-{os.getpid()}"
        self.study_id = cfg["study_id"]

    def one_trial(self, out: dict[str, Any]) -> bool:
        lease = self.client.lease(self.worker_id, wait_s=1.0, studies=[self.study_id])
        if lease is None:
            return False  # limits.max_trials reached: the study hands out no more work
        trial_id, token = lease["trial_id"], lease["lease_token"]
        value = math.nan
        for step in range(1, STEPS + 1):
            value = trivial_loss(lease["params"], step)
            ack = self.client.report(trial_id, token, [{"step": step, "metrics": {"loss": value}}])
            out["reports"] += 1
            if ack["directive"] == "stop":
                out["stopped"] += 1
                return True
        self.client.complete(trial_id, token, {"loss": value}, None)
        out["times"].append(time.monotonic())
        return True

    def close(self) -> None:
        self.client.close()


class OptunaWorker:
    """Optuna's ask-and-tell on RDBStorage with HyperbandPruner."""

    def __init__(self, cfg: dict[str, Any], claimed: Any) -> None:
        import optuna
        from optuna.pruners import HyperbandPruner
        from optuna.samplers import RandomSampler
        from optuna.storages import RDBStorage

        from pydantic import TypeAdapter

        from hpo_service.domain.space import Distribution
        from hpo_service.sampling.distributions import to_optuna_space

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no INFO line per trial (ours logs none)
        self.optuna = optuna
        self.study = optuna.load_study(
            study_name=cfg["study_name"], storage=RDBStorage(cfg["storage"]),
            sampler=RandomSampler(seed=cfg["seed"] * 1000 + cfg["rank"]),
            pruner=HyperbandPruner(min_resource=1, max_resource=STEPS, reduction_factor=3),
        )
        self.space = to_optuna_space(TypeAdapter(dict[str, Distribution]).validate_python(cfg["space"]))
        self.warm_s = 0.0
        if cfg.get("preseed"):  # a long-running worker has read the study's trials already (Optuna caches them)
            started = time.monotonic()
            self.study.get_trials(deepcopy=False)
            self.warm_s = time.monotonic() - started
        self.claimed = claimed
        self.cap = cfg["trials"]

    def one_trial(self, out: dict[str, Any]) -> bool:
        with self.claimed.get_lock():  # stop at exactly --trials trials across all workers
            if self.claimed.value >= self.cap:
                return False
            self.claimed.value += 1
        trial = self.study.ask(self.space)
        value = math.nan
        for step in range(1, STEPS + 1):
            value = trivial_loss(trial.params, step)
            trial.report(value, step)
            out["reports"] += 1
            if trial.should_prune():
                self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
                out["pruned"] += 1
                out["times"].append(time.monotonic())
                return True
        self.study.tell(trial, value)
        out["times"].append(time.monotonic())
        return True

    def close(self) -> None:
        pass


def worker_main(cfg: dict[str, Any], barrier: Any, claimed: Any, done: Any, results: Any) -> None:
    """One worker process: connect, wait for the start, run trials until the time box or the cap."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends us
    out: dict[str, Any] = {"rank": cfg["rank"], "times": [], "reports": 0, "pruned": 0, "stopped": 0,
                           "errors": 0, "first_error": None, "setup_error": None, "cpu_s": 0.0}
    worker: OursWorker | OptunaWorker | None = None
    try:
        worker = OursWorker(cfg) if cfg["system"] == "ours" else OptunaWorker(cfg, claimed)
    except Exception:
        out["setup_error"] = traceback.format_exc()
        barrier.abort()
        results.put(out)
        return
    out["warm_s"] = getattr(worker, "warm_s", 0.0)
    try:
        barrier.wait(timeout=cfg["barrier_timeout"])
    except Exception:  # BrokenBarrierError: another worker failed to start, or the parent gave up
        out["setup_error"] = "the start barrier broke (another worker failed to start)"
        results.put(out)
        return
    cpu0 = sum(os.times()[:2])
    deadline = time.monotonic() + cfg["seconds"]
    while time.monotonic() < deadline:
        try:
            more = worker.one_trial(out)
        except Exception as error:  # counted and reported; a bench must not hide failures
            out["errors"] += 1
            out["first_error"] = out["first_error"] or f"{type(error).__name__}: {error}"
            if out["errors"] >= MAX_WORKER_ERRORS:
                break
            time.sleep(0.05)
            continue
        if not more:
            break
        with done.get_lock():
            done.value += 1
    out["cpu_s"] = sum(os.times()[:2]) - cpu0
    with contextlib.suppress(Exception):
        worker.close()
    results.put(out)


# --- one run ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    system: str  # "hpo-service" or "optuna"
    workers: int
    trials: int  # finished within the run (completed + pruned)
    seconds: float
    times: list[float]  # completion times, seconds since the start, sorted
    reports: int
    pruned: int
    stopped: int
    errors: int
    first_error: str | None
    finished_all: int = 0  # finished, the ones after the bell included (for reports/trial)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process group over cpu_span
    cpu_span: float = 0.0
    machine_busy: float = 0.0  # CPU seconds of everything on the machine over cpu_span
    extra: dict[str, Any] = field(default_factory=dict)
    cap_reached: bool = False

    @property
    def rate(self) -> float:
        return self.trials / self.seconds if self.seconds > 0 else 0.0


def run_workers(base_cfg: dict[str, Any], workers: int, seconds: float, trials: int, label: str,
                watch_pids: dict[str, int], database: str, progress_every: float) -> RunResult:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    claimed = ctx.Value("q", 0)
    done = ctx.Value("q", 0)
    results = ctx.Queue()
    # Pre-seeded Optuna workers read the whole study first: measured at about 73 s per 100,000 trials for
    # one process on this 2-core machine, and the processes share the cores.
    barrier_timeout = 120.0 + 5.0 * workers + 3.0 * workers * base_cfg.get("preseed", 0) / 1000
    processes = [
        ctx.Process(target=worker_main, name=f"bench-{label}-{rank}", daemon=True,
                    args=({**base_cfg, "rank": rank, "seconds": seconds, "trials": trials,
                           "barrier_timeout": barrier_timeout}, barrier, claimed, done, results))
        for rank in range(workers)
    ]
    outs: list[dict[str, Any]] = []
    try:
        for process in processes:
            process.start()
        try:
            barrier.wait(timeout=barrier_timeout)
        except Exception:
            pass  # a worker's setup failed: its result below says why
        t0 = time.monotonic()
        cpu0 = {name: common.process_tree_cpu_seconds(pid) for name, pid in watch_pids.items()}
        pg0 = common.postgres_cpu_seconds(database)
        busy0 = common.machine_busy_seconds()
        next_progress = t0 + progress_every
        while len(outs) < workers:
            try:
                outs.append(results.get(timeout=1.0))
            except queue.Empty:
                if time.monotonic() > t0 + seconds + 300:
                    raise RuntimeError(f"{label}: workers did not finish 5 minutes after the time box")
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead and len(outs) + len(dead) >= workers:
                    raise RuntimeError(f"{label}: worker {dead[0].name} died with exit code {dead[0].exitcode}")
            now = time.monotonic()
            if now >= next_progress:
                print(f"    {now - t0:6.0f} s: {done.value} trials", file=sys.stderr, flush=True)
                next_progress += progress_every
        cpu = {name: common.process_tree_cpu_seconds(pid) - cpu0[name] for name, pid in watch_pids.items()}
        cpu["postgres"] = common.postgres_cpu_seconds(database) - pg0
        busy = common.machine_busy_seconds() - busy0
        span = time.monotonic() - t0
        for process in processes:
            process.join(timeout=30)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)

    setup_errors = [o["setup_error"] for o in outs if o["setup_error"]]
    if setup_errors:
        raise RuntimeError(f"{label}: a worker failed to start:\n{setup_errors[0]}")
    stamps = sorted(t - t0 for o in outs for t in o["times"])
    cap_reached = len(stamps) >= trials
    if cap_reached:
        stamps = stamps[:trials]
        elapsed = stamps[-1]
    else:
        stamps = [t for t in stamps if t <= seconds]  # a trial in flight at the bell does not count
        elapsed = float(seconds)
    cpu["workers"] = sum(o["cpu_s"] for o in outs)
    warm_s = max((o.get("warm_s", 0.0) for o in outs), default=0.0)
    errors = sum(o["errors"] for o in outs)
    return RunResult(
        finished_all=sum(len(o["times"]) for o in outs), cpu_span=span, machine_busy=busy,
        system=label, workers=workers, trials=len(stamps), seconds=elapsed, times=stamps,
        reports=sum(o["reports"] for o in outs), pruned=sum(o["pruned"] for o in outs),
        stopped=sum(o["stopped"] for o in outs), errors=errors,
        first_error=next((o["first_error"] for o in outs if o["first_error"]), None), cpu=cpu,
        cap_reached=cap_reached, extra={"warm_s": warm_s} if warm_s else {},
    )


def run_ours(admin: str, workers: int, seconds: float, trials: int, seed: int, logs: Path,
             progress_every: float, profile: Path | None, preseed: int = 0, processes: int = 1) -> RunResult:
    with common.throwaway_database(admin) as url:
        common.db_upgrade(url)
        token = common.bootstrap_token(url, logs)
        with common.hpo_server(url, logs / f"server-{workers}w.log", processes=processes) as server:
            spec = {
                "name": f"bench-overhead-{workers}w",
                "objective": {"metric": "loss", "direction": "minimize"},
                "search_space": SEARCH_SPACE,
                "scheduler": {"kind": "random", "min_budget": STEPS, "max_budget": STEPS},
                "sampler": {"kind": "random", "seed": seed},
                "trainer": {"name": "synthetic", "params": {}},
                "limits": {"max_trials": trials + preseed + (1 if preseed else 0)},  # + the warm-up trial
            }
            with common.client(server.url, token) as client:
                study = client.create_study(spec)
            if preseed:
                from bench.preseed import preseed_ours
                from tests.support.postgres import libpq_url

                started = time.monotonic()
                preseed_ours(libpq_url(url), study["id"], preseed, STEPS, search_space(), trivial_loss, seed)
                print(f"  pre-seeded {preseed:,} finished trials in {time.monotonic() - started:.0f} s",
                      file=sys.stderr, flush=True)
                with common.client(server.url, token) as client:  # a long-running server has its caches warm
                    warm = client.lease("bench-warm-up", wait_s=0, studies=[study["id"]])
                    assert warm is not None, "the pre-seeded study handed out no work"
                    client.complete(warm["trial_id"], warm["lease_token"], {"loss": 1.0}, None)
            database = common.database_name(url)
            pg_before = common.database_stats(admin, database)
            spy = _start_profiler(server.pid, profile, workers) if profile else None
            try:
                result = run_workers({"system": "ours", "server": server.url, "token": token,
                                      "study_id": study["id"]},
                                     workers, seconds, trials, "hpo-service", {"server": server.pid},
                                     common.database_name(url), progress_every)
            finally:
                if spy is not None:  # py-spy writes its output on SIGINT (SIGTERM loses it)
                    spy.send_signal(signal.SIGINT)
                    with contextlib.suppress(Exception):
                        spy.wait(timeout=60)
                    common.stop_process(spy)
            with common.client(server.url, token) as client:
                final = client.get_study(study["id"])
            result.extra["trial_counts"] = final["trial_counts"]
            if "ERROR" in server.log_tail(100_000) or "Traceback" in server.log_tail(100_000):
                result.extra["server_log"] = server.log_tail(2000)
        result.extra["pg"] = _pg_delta(admin, database, pg_before)  # the server has closed its connections
    return result


def _pg_delta(admin: str, database: str, before: dict[str, float]) -> dict[str, float]:
    time.sleep(0.5)  # exiting backends flush their statistics
    after = common.database_stats(admin, database)
    return {key: after[key] - before[key] for key in after}


def run_optuna(admin: str, workers: int, seconds: float, trials: int, seed: int,
               progress_every: float, preseed: int = 0) -> RunResult:
    import optuna
    from optuna.pruners import HyperbandPruner
    from optuna.samplers import RandomSampler
    from optuna.storages import RDBStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with common.throwaway_database(admin) as url:
        storage = RDBStorage(url)  # creates Optuna's tables
        name = f"bench-overhead-{workers}w"
        optuna.create_study(study_name=name, storage=storage, direction="minimize",
                            sampler=RandomSampler(seed=seed),
                            pruner=HyperbandPruner(min_resource=1, max_resource=STEPS, reduction_factor=3))
        storage.engine.dispose()
        if preseed:
            _preseed_optuna(url, name, preseed, seed)
        cfg = {"system": "optuna", "storage": url, "study_name": name, "seed": seed, "space": search_space(),
               "preseed": preseed}
        database = common.database_name(url)
        pg_before = common.database_stats(admin, database)
        result = run_workers(cfg, workers, seconds, trials, "optuna", {}, database, progress_every)
        result.extra["pg"] = _pg_delta(admin, database, pg_before)  # the workers have exited
        return result


def _preseed_optuna(url: str, name: str, preseed: int, seed: int) -> None:
    from optuna.distributions import distribution_to_json
    from pydantic import TypeAdapter

    from bench.preseed import preseed_optuna
    from hpo_service.domain.space import Distribution
    from hpo_service.sampling.distributions import to_optuna_space
    from tests.support.postgres import libpq_url

    space = search_space()
    distributions = to_optuna_space(TypeAdapter(dict[str, Distribution]).validate_python(space))
    started = time.monotonic()
    preseed_optuna(libpq_url(url), name, preseed, STEPS, space, trivial_loss,
                   {k: distribution_to_json(d) for k, d in distributions.items()}, [1, 3, STEPS], seed)
    print(f"  pre-seeded {preseed:,} finished trials in {time.monotonic() - started:.0f} s", file=sys.stderr,
          flush=True)


def _start_profiler(pid: int, directory: Path, workers: int) -> Any:
    """py-spy on the server for the whole run (collapsed stacks, to rank frames by hand). ``--gil``: only
    the thread holding the GIL is sampled, i.e. where the server spends its Python CPU, not its waits."""
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"server-{workers}w.collapsed"
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
                             "--nonblocking", "--gil", "--threads", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- report -------------------------------------------------------------------------------------


def fmt_rate(rate: float) -> str:
    return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def summary_rows(runs: list[RunResult]) -> list[list[str]]:
    theirs = {r.workers: r for r in runs if r.system == "optuna"}
    rows = []
    for r in runs:
        other = theirs.get(r.workers) if r.system == "hpo-service" else None
        ratio = f"{r.rate / other.rate:.2f}x" if other and other.rate > 0 else ""
        full, _ = common.window_rates(r.times, WINDOW)
        flat = f"{full[-1].rate / full[0].rate:.2f}" if len(full) >= 2 else "n/a"
        per_trial = r.reports / max(1, r.finished_all + r.stopped)
        rows.append([r.system, r.workers, f"{r.trials:,}", f"{r.seconds:.1f}", fmt_rate(r.rate), ratio,
                     fmt_rate(r.rate * per_trial), f"{per_trial:.1f}",
                     f"{r.pruned / max(1, r.finished_all):.0%}", flat, r.errors])
    return rows


SUMMARY_HEADERS = ["system", "workers", "trials", "seconds", "trials/s", "ours/optuna", "reports/s", "reports/trial",
                   "pruned", "last/first window", "errors"]  # reports/trial and pruned: over all finished trials
WINDOW = 1000  # set from --window in main()


def window_rows(run: RunResult) -> list[list[str]]:
    full, partial = common.window_rates(run.times, WINDOW)
    rows = [[f"{w.first:,}-{w.last:,}", f"{w.seconds:.1f}", fmt_rate(w.rate)] for w in full]
    if partial is not None:
        rows.append([f"{partial.first:,}-{partial.last:,} (partial)", f"{partial.seconds:.1f}", fmt_rate(partial.rate)])
    return rows


CPU_HEADERS = ["system", "workers", "server", "postgres", "workers", "all of this run", "rest of machine",
               "CPU ms/trial", "server CPU ms/trial"]


def cpu_rows(runs: list[RunResult]) -> list[list[str]]:
    """Cores used (CPU seconds / wall seconds) per process group, and CPU milliseconds per finished trial."""
    rows = []
    for r in runs:
        span = r.cpu_span or 1.0
        cores = {name: seconds / span for name, seconds in r.cpu.items()}
        ours = sum(r.cpu.values())
        rows.append([r.system, r.workers, f"{cores['server']:.2f}" if "server" in cores else "-",
                     f"{cores.get('postgres', 0):.2f}", f"{cores.get('workers', 0):.2f}", f"{ours / span:.2f}",
                     f"{max(0.0, r.machine_busy - ours) / span:.2f}",
                     f"{ours / max(1, r.finished_all) * 1000:.1f}",
                     f"{r.cpu['server'] / max(1, r.finished_all) * 1000:.1f}" if "server" in r.cpu else "-"])
    return rows


def server_ceiling(runs: list[RunResult], processes: int = 1) -> str | None:
    """One `hpo serve` process runs Python under one GIL: at most one core, whatever the machine."""
    costs = [r.cpu["server"] / r.finished_all for r in runs if "server" in r.cpu and r.finished_all >= 50]
    if not costs:
        return None
    low, high = min(costs) * 1000, max(costs) * 1000
    if processes > 1:
        return (f"The server's {processes} processes spent {low:.0f}-{high:.0f} ms of CPU per trial ({STEPS + 2} "
                f"requests) together; each uses at most one core.")
    return (f"The server process spent {low:.0f}-{high:.0f} ms of CPU per trial ({STEPS + 2} requests). One "
            f"`hpo serve` process uses at most one core, so it cannot exceed about {1000 / high:.0f}-"
            f"{1000 / low:.0f} trials/s of this workload on any machine, however many cores or workers "
            "(`--server-processes N` runs more).")


def goal_lines(runs: list[RunResult], args: argparse.Namespace) -> list[str]:
    """The issue's goal: >= 10x Optuna's trials/s at 4 and 16 workers; flat from the first 1,000 trials to 100,000."""
    ours = {r.workers: r for r in runs if r.system == "hpo-service"}
    theirs = {r.workers: r for r in runs if r.system == "optuna"}
    lines = []
    for workers in (4, 16):
        if workers in ours and workers in theirs and theirs[workers].rate > 0:
            ratio = ours[workers].rate / theirs[workers].rate
            lines.append(f"10x Optuna at {workers} workers: {'met' if ratio >= 10 else 'NOT met'} ({ratio:.2f}x)")
        else:
            lines.append(f"10x Optuna at {workers} workers: not measured in this run")
    for r in runs:
        if r.system != "hpo-service":
            continue
        full, _ = common.window_rates(r.times, WINDOW)
        if len(full) < 2:
            continue
        first, last, low = full[0].rate, full[-1].rate, min(w.rate for w in full)
        reach = f"to {r.trials:,} trials" + ("" if r.trials >= 100_000 else " (the goal is 100,000: use --long)")
        lines.append(f"flat, {r.workers} workers, {reach}: last window {last / first:.2f} and slowest window "
                     f"{low / first:.2f} of the first window's rate")
    return lines


PG_HEADERS = ["system", "workers", "connections opened", "transactions/trial", "rows written/trial",
              "PG statement ms/trial"]


def pg_rows(runs: list[RunResult]) -> list[list[str]]:
    """What each finished trial cost PostgreSQL (pg_stat_database of the run's own database)."""
    rows = []
    for r in runs:
        pg = r.extra.get("pg")
        if not pg:
            continue
        n = max(1, r.finished_all + r.stopped)
        rows.append([r.system, r.workers, f"{pg['sessions']:.0f}",
                     f"{(pg['xact_commit'] + pg['xact_rollback']) / n:.1f}",
                     f"{(pg['tup_inserted'] + pg['tup_updated']) / n:.1f}", f"{pg['active_time'] / n:.2f}"])
    return rows


def environment(admin: str) -> dict[str, str]:
    import platform

    return {
        "hpo-service": common.package_version("hpo-service"),
        "optuna": common.package_version("optuna"),
        "SQLAlchemy": common.package_version("sqlalchemy"),
        "psycopg": common.package_version("psycopg"),
        "uvicorn": common.package_version("uvicorn"),
        "Python": platform.python_version(),
        "PostgreSQL": common.server_version(admin),
        "CPUs": f"{common.cpu_count()} ({common.cpu_model()})",
        "OS": platform.platform(),
    }


def _processes(n: int) -> str:
    return "one `hpo serve` process" if n == 1 else f"`hpo serve --processes {n}` ({n} API processes on one port)"


def write_markdown(path: Path, args: argparse.Namespace, command: str, env: dict[str, str], runs: list[RunResult],
                   started: dt.datetime, wall: float, load: tuple[str, str], chart: Path | None,
                   notes: list[str]) -> None:
    lines = [
        "# Service overhead: hpo-service vs Optuna RDBStorage",
        "",
        f"Generated by `bench/service_overhead.py` on {started:%Y-%m-%d %H:%M} UTC; the whole run took "
        f"{wall / 60:.1f} min.",
        "",
        f"Command: `{command}`",
        "",
        "Workload, the same for both systems: per trial, ask for a configuration (5 parameters, "
        f"`search_spaces/{SEARCH_SPACE}.yaml`, random sampling on both sides), {STEPS} intermediate reports "
        "with a continue/stop answer after each, then complete; the objective is a trivial formula, so only "
        f"coordination is measured. hpo-service: {_processes(args.server_processes)}, `random` scheduler "
        f"(one {STEPS}-unit segment per trial), `random` sampler, workers speak HTTP with `HpoClient` "
        "(11 requests per trial: lease, 9 reports, complete). Optuna: `RDBStorage`, `RandomSampler`, "
        f"`HyperbandPruner(min_resource=1, max_resource={STEPS}, reduction_factor=3)`, ask-and-tell with "
        "`trial.should_prune()` after each report (pruned trials stop early and count as trials). Both on "
        "the same PostgreSQL server, a fresh database per run; worker processes are started and connected "
        "before the clock starts.",
        "",
        f"Each run ends after {args.seconds:g} s or {args.trials:,} trials, whichever comes first"
        + (" (long mode: see below)." if args.long else ".")
        + (f" Each study starts with {args.preseed:,} finished trials already stored (`--preseed`, "
           "bench/preseed.py: for both systems, the rows it would have written for them), and both start warm, as "
           "long-running processes would be: each Optuna worker has read the study's trials into its cache and "
           "hpo-service's server has handed out one trial before the clock starts."
           if args.preseed else ""),
        "",
        "## Environment",
        "",
        common.md_table(["", ""], [[k, v] for k, v in env.items()], "ll"),
        "",
        f"Load average before / after: {load[0]} / {load[1]}.",
        "",
        "## Results",
        "",
        common.md_table(SUMMARY_HEADERS, summary_rows(runs)),
        "",
        "`reports/s` = trials/s x reports/trial: Optuna's pruned trials stop early and send fewer reports, "
        "so per report the comparison differs from per trial. "
        f"`last/first window`: trials/s of the last full window of {WINDOW:,} trials divided by that of the "
        "first (1.00 = flat as the study grows; n/a = fewer than two full windows).",
        "",
        "### Where the CPU went (during the timed part)",
        "",
        "Cores busy (CPU seconds / wall seconds) per process group: the server process, the PostgreSQL "
        "backends serving this run's database, the worker processes; `rest of machine` is everything else "
        "busy on the machine at the time (PostgreSQL's shared processes, anything else running).",
        "",
        common.md_table(CPU_HEADERS, cpu_rows(runs)),
        "",
        "The PostgreSQL column counts only backends alive at the end of a run: connections opened and "
        "closed during it (see below) take their CPU time with them, so it is a lower bound.",
        "",
        "### What a trial costs PostgreSQL",
        "",
        "From `pg_stat_database` of each run's own database, per finished trial (completed or pruned, "
        "including those finished after the bell); `PG statement ms` is time backends spent executing "
        "statements (`active_time`).",
        "",
        common.md_table(PG_HEADERS, pg_rows(runs)),
        "",
    ]
    lines += ["### Against the goal", ""] + [f"- {g}" for g in goal_lines(runs, args)] + [""]
    if chart is not None:
        lines += [f"![trials/s per window]({chart.name})", ""]
    lines += [f"### Trials/s per window of {WINDOW:,} trials", ""]
    for r in runs:
        lines += [f"**{r.system}, {r.workers} workers**", "",
                  common.md_table(["trials", "seconds", "trials/s"], window_rows(r)) if r.times else "(none)", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def write_chart(path: Path, runs: list[RunResult], workers: int) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return None
    chosen = [r for r in runs if r.workers == workers and r.times]
    if not chosen:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for r in chosen:
        full, partial = common.window_rates(r.times, WINDOW)
        points = full + ([partial] if partial is not None and not full else [])
        ax.plot([w.last for w in points], [w.rate for w in points], marker="o", markersize=3,
                label=f"{r.system} ({fmt_rate(r.rate)} trials/s overall)")
    ax.set_xlabel("trials completed")
    ax.set_ylabel(f"trials/s (windows of {WINDOW:,} trials)")
    ax.set_title(f"Hyperband-shaped trials/s vs study size, {workers} workers")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16], help="worker counts (default 1 4 16)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials per (system, workers) run (default 20,000; 100,000 with --long)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="time box per run (default 75 s, which keeps the default run near 10 minutes "
                             "on 2 cores; 4 hours with --long)")
    parser.add_argument("--window", type=int, default=1000, help="trials per window of the per-window rates")
    parser.add_argument("--long", action="store_true",
                        help="run hpo-service alone to --trials (100,000) at 4 workers, then Optuna with the "
                             "time hpo-service took as its time box")
    parser.add_argument("--systems", nargs="+", choices=["ours", "optuna"], default=["ours", "optuna"])
    parser.add_argument("--database-url", default=None,
                        help="admin URL of the PostgreSQL server to create throwaway databases on (default: "
                             "HPO_TEST_DATABASE_URL, 127.0.0.1:5432, else an embedded server; see tests/support)")
    parser.add_argument("--server-processes", type=int, default=1, metavar="N",
                        help="`hpo serve --processes N` (default 1): the server's CPU time is the whole process tree's")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--preseed", type=int, default=0, metavar="N",
                        help="start each run on a study that already holds N finished trials (bench/preseed.py: "
                             "COPY of the rows each system would have written), to measure a large study quickly")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (a PNG goes next to it)")
    parser.add_argument("--chart-workers", type=int, default=4, help="worker count shown in the chart")
    parser.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the server during each hpo-service run; collapsed stacks go to this folder "
                             "(perturbs the measurement: do not publish figures from such a run)")
    args = parser.parse_args(argv)
    if args.long:
        args.workers = [4] if args.workers == [1, 4, 16] else args.workers[:1]
    args.trials = args.trials or (100_000 if args.long else 20_000)
    args.seconds = args.seconds or (4 * 3600.0 if args.long else 75.0)
    if min(args.workers) < 1 or args.trials < 1 or args.seconds <= 0 or args.window < 1 or args.server_processes < 1:
        parser.error("--workers, --trials, --seconds, --window and --server-processes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    global WINDOW
    args = parse_args(argv)
    WINDOW = args.window
    started, t_start = dt.datetime.now(dt.UTC), time.monotonic()
    command = shlex.join(["python", *sys.argv])
    common.stop_on_sigterm()  # Ctrl-C and SIGTERM both unwind through the `finally`s

    admin = common.admin_url(args.database_url)
    env = environment(admin)
    load_before = common.load_average()
    print("environment: " + "; ".join(f"{k} {v}" for k, v in env.items()), file=sys.stderr)
    print(f"PostgreSQL: {common.redact(admin)}; load average {load_before}", file=sys.stderr)
    runs: list[RunResult] = []
    notes: list[str] = []
    logs = Path(tempfile.mkdtemp(prefix="hpo-bench-"))
    try:
        for workers in args.workers:
            ours_seconds = args.seconds
            if "ours" in args.systems:
                print(f"hpo-service, {workers} workers: up to {args.trials:,} trials or {args.seconds:g} s",
                      file=sys.stderr, flush=True)
                ours = run_ours(admin, workers, args.seconds, args.trials, args.seed, logs, args.progress,
                                args.profile, args.preseed, args.server_processes)
                runs.append(ours)
                _print_run(ours)
                ours_seconds = ours.seconds
            if "optuna" in args.systems:
                box = ours_seconds if args.long else args.seconds
                print(f"optuna, {workers} workers: up to {args.trials:,} trials or {box:.0f} s",
                      file=sys.stderr, flush=True)
                theirs = run_optuna(admin, workers, box, args.trials, args.seed, args.progress, args.preseed)
                runs.append(theirs)
                _print_run(theirs)
                if args.long and not theirs.cap_reached:
                    notes.append(
                        f"Optuna did not reach {args.trials:,} trials: in the {box:.0f} s hpo-service needed for "
                        f"them it finished {theirs.trials:,} ({theirs.trials / args.trials:.1%}).")
    except KeyboardInterrupt:
        print("\ninterrupted: workers, server and databases were cleaned up; partial results follow",
              file=sys.stderr)
    if not runs:
        return 130
    wall = time.monotonic() - t_start
    load_after = common.load_average()

    for r in runs:
        if r.extra.get("warm_s"):
            notes.append(f"{r.system}, {r.workers} workers: before the clock started, each worker read the pre-seeded "
                         f"study into Optuna's cache: the slowest took {r.extra['warm_s']:.0f} s (not counted above).")
        if r.errors:
            notes.append(f"{r.system}, {r.workers} workers: {r.errors} errors; the first: {r.first_error}")
        if r.stopped:
            notes.append(f"{r.system}, {r.workers} workers: {r.stopped} trials were told to stop by the server.")
        counts = r.extra.get("trial_counts")
        if counts:
            notes.append(f"{r.system}, {r.workers} workers: trial states at the end of the run (trials in "
                         f"flight at the bell are not counted above): {counts}")
        if "server_log" in r.extra:
            notes.append(f"{r.system}, {r.workers} workers: the server logged errors:\n\n```\n"
                         f"{r.extra['server_log']}\n```")
    others = [max(0.0, r.machine_busy - sum(r.cpu.values())) / r.cpu_span for r in runs if r.cpu_span > 0]
    if others and sum(others) / len(others) > 0.25:
        notes.append(
            f"Other processes kept {sum(others) / len(others):.2f} of the {common.cpu_count()} CPUs busy on average "
            f"during the runs (from {min(others):.2f} to {max(others):.2f}; see `rest of machine`): the figures are "
            "lower and noisier than on a quiet machine, and a run that had more of the machine to itself looks "
            "better than its neighbour. Part of it is this run's own PostgreSQL connections that were opened and "
            "closed during a run, and PostgreSQL's shared processes (WAL writer).")
    ceiling = server_ceiling(runs, args.server_processes)
    if ceiling:
        notes.append(ceiling)
    if args.profile:
        notes.append("The server was profiled with py-spy during these runs: the figures are perturbed.")
    notes.append(f"The machine has {common.cpu_count()} CPUs shared by PostgreSQL, the server and the workers, so "
                 "more workers than CPUs add contention, not capacity.")

    print()
    print(common.text_table(SUMMARY_HEADERS, summary_rows(runs)))
    print()
    print(common.text_table(CPU_HEADERS, cpu_rows(runs)))
    print()
    print(common.text_table(PG_HEADERS, pg_rows(runs)))
    for r in runs:
        print(f"\n{r.system}, {r.workers} workers: trials/s per window of {WINDOW:,}")
        print(common.text_table(["trials", "seconds", "trials/s"], window_rows(r)) if r.times else "(none)")
    for line in goal_lines(runs, args):
        print(f"\ngoal: {line}")
    for note in notes:
        print(f"\nnote: {note}")

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    chart_workers = args.workers[0] if args.long else args.chart_workers
    chart = write_chart(out.with_suffix(".png"), runs, chart_workers)
    write_markdown(out, args, command, env, runs, started, wall, (load_before, load_after), chart, notes)
    print(f"\nwrote {out}" + (f" and {chart}" if chart else "") + f" ({wall / 60:.1f} min)", file=sys.stderr)
    return 0



def _print_run(r: RunResult) -> None:
    print(f"  -> {r.trials:,} trials in {r.seconds:.1f} s = {fmt_rate(r.rate)} trials/s"
          + (f", {r.errors} errors ({r.first_error})" if r.errors else ""), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
