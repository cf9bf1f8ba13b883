"""Asynchronous scaling: wall-clock time to the target with W parallel workers, simulated.

An event-driven simulation, no sleeping: W simulated workers share one study of hpo-service's
synchronous Hyperband or ASHA (the real scheduler and sampler code, with the service's decision
rules: bench/methods/service.py's MemoryBackend, which the smoke test checks against the real
service). A worker that is free asks for work; if there is none it waits, idle, until another
worker's result comes in (the only thing that can create work). A segment from epoch a to b takes
the LCBench surrogate's training time ``time(b) - time(a)`` of simulated seconds; the clock jumps
from one completion to the next.

Same budget rule as bench/sample_efficiency.py: 5,200 epochs per run, charged when a segment is
handed out; the run stops handing out work at the first segment that does not fit. Target per
task: the median over seeds of random search's final incumbent (as in the sample-efficiency
report). For W in 1, 4, 16, 64: the speedup in simulated wall-clock time to the target over W = 1
(per task, medians over seeds; the median over the tasks that W = 1 reaches), the efficiency
speedup / W, and the fraction of worker time spent idle (until the target is reached, and over the
whole run).

The sampler is the service's random sampler by default (``--sampler tpe`` for TPE, several times
slower): scaling is a property of the scheduler, and a model-based sampler would add its own
effect of proposing with fewer results in hand.

Usage (from the repository root, after bench/setup_env.sh):

    bench/.venv/bin/python bench/async_scaling.py                       # 34 tasks x 5 seeds, ~30 min on one core
    bench/.venv/bin/python bench/async_scaling.py --tasks 2 --seeds 1 --budget 20 --out /tmp/as.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import itertools
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.lcbench import DATA_DIR, MAX_EPOCHS, LCBench, read_space  # noqa: E402
from bench.methods import run_seed  # noqa: E402
from bench.methods.budget import FULL_TRAININGS, Ledger, RunResult, TaskObjective, epochs_of  # noqa: E402
from bench.methods.runner import Job, load_cache, run_jobs  # noqa: E402
from bench.methods.service import MemoryBackend, study_spec  # noqa: E402

DEFAULT_OUT = common.REPO_ROOT / "bench" / "results" / "async_scaling.md"
DEFAULT_CACHE = common.REPO_ROOT / "bench" / ".cache" / "async_scaling.jsonl"
SCHEDULERS = ("hyperband", "asha")
WORKERS = (1, 4, 16, 64)


@dataclass
class ScalingRun:
    """One simulated study. ``full``: one entry per 52-epoch result, (seconds, accuracy, idle worker-seconds
    so far, epochs spent so far, when that configuration's first segment was handed out (seconds), epochs
    spent by then): the last two split a run's time to the target into finding the configuration that
    reaches it and that configuration's own training."""

    method: str
    task: str
    seed: int
    workers: int
    spent: int
    evaluations: int
    makespan: float
    idle: float  # worker-seconds without work before the last result came in
    full: list[tuple[float, float, float, int, float, int]] = field(default_factory=list)
    compute_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "task": self.task, "seed": self.seed, "workers": self.workers,
                "spent": self.spent, "evaluations": self.evaluations, "makespan": self.makespan, "idle": self.idle,
                "full": [list(x) for x in self.full], "compute_seconds": round(self.compute_seconds, 3)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ScalingRun:
        return cls(raw["method"], raw["task"], raw["seed"], raw["workers"], raw["spent"], raw["evaluations"],
                   raw["makespan"], raw["idle"],
                   [(float(t), float(a), float(i), int(s), float(t0), int(s0)) for t, a, i, s, t0, s0 in raw["full"]],
                   raw["compute_seconds"])


def simulate(bench: LCBench, job: Job) -> ScalingRun:
    """``job.workers`` workers on one study of ``job.method`` (``hyperband`` or ``asha``) and ``job.sampler``."""
    started = time.perf_counter()
    scheduler, sampler = job.method, job.sampler
    spec = study_spec(f"scaling-{job.task}-{scheduler}-{job.seed}-{job.workers}", scheduler, sampler,
                      run_seed(job.task, job.seed), bench.search_space(), float(job.total_epochs))
    backend, objective, ledger = MemoryBackend(spec), TaskObjective(bench, job.task), Ledger(job.total_epochs)
    run = ScalingRun(f"{scheduler}-{sampler}", job.task, job.seed, job.workers, 0, 0, 0.0, 0.0)
    events: list[tuple[float, int, Any, float, int]] = []  # (finish time, tie-break, lease, accuracy, end epoch)
    first_handed_out: dict[int, tuple[float, int]] = {}  # trial id -> (time, epochs spent) at its first segment
    order = itertools.count()
    now, idle_workers, budget_left = 0.0, job.workers, True
    while True:
        while idle_workers and budget_left:
            lease = backend.lease()
            if lease is None:
                break
            start, end = epochs_of(lease.budget_from), epochs_of(lease.budget_to)
            if not ledger.fits(end - start):
                budget_left = False  # the run hands out no more work; what is in flight finishes
                break
            segment = objective.train(lease.params, start, end)
            first_handed_out.setdefault(lease.trial_id, (now, ledger.spent))
            ledger.charge(end - start, end, segment.accuracy)
            heapq.heappush(events, (now + segment.seconds, next(order), lease, segment.accuracy, end))
            idle_workers -= 1
        if not events:
            break
        finish, _, lease, accuracy, end = heapq.heappop(events)
        run.idle += idle_workers * (finish - now)
        now = finish
        if end >= MAX_EPOCHS:
            run.full.append((now, accuracy, run.idle, ledger.spent, *first_handed_out[lease.trial_id]))
        backend.complete(lease, accuracy)
        idle_workers += 1
    run.spent, run.evaluations, run.makespan = ledger.spent, ledger.evaluations, now
    run.compute_seconds = time.perf_counter() - started
    return run


def fastest_to_target(bench: LCBench, task: str, target: float, samples: int, seed: int = 0) -> float:
    """The shortest full training (epochs 1..52, surrogate seconds) among ``samples`` random
    configurations whose validation accuracy at 52 epochs reaches ``target``; inf if none does.
    Resuming from checkpoints does not change a configuration's total (segments add up to time(52))."""
    import math
    import random

    import numpy as np

    from bench.lcbench import Y_NAMES

    rng = random.Random(f"limit-{task}-{seed}")
    configs = [bench.sample(rng) for _ in range(samples)]
    rows = bench.predict(task, configs, [MAX_EPOCHS] * samples)
    accuracy, seconds = rows[:, Y_NAMES.index("val_accuracy")], np.maximum(rows[:, Y_NAMES.index("time")], 0.0)
    reaching = accuracy >= target
    return float(seconds[reaching].min()) if reaching.any() else math.inf


# --- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["all"], help="task ids, or N for the first N (default all)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKERS))
    parser.add_argument("--schedulers", nargs="+", choices=SCHEDULERS, default=list(SCHEDULERS))
    parser.add_argument("--sampler", choices=["random", "tpe"], default="random")
    parser.add_argument("--budget", type=int, default=FULL_TRAININGS, help="full trainings per run (default 100)")
    parser.add_argument("--exact-optuna", action="store_true", help="TPE as shipped (see bench/methods/fast_tpe.py)")
    parser.add_argument("--jobs", type=int, default=common.cpu_count())
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    all_tasks, _ = read_space(args.data_dir)
    if args.tasks == ["all"]:
        args.tasks = all_tasks
    elif len(args.tasks) == 1 and args.tasks[0].isdigit() and args.tasks[0] not in all_tasks:
        args.tasks = all_tasks[: int(args.tasks[0])]
    if set(args.tasks) - set(all_tasks):
        parser.error(f"unknown tasks {sorted(set(args.tasks) - set(all_tasks))}")
    if 1 not in args.workers:
        parser.error("speedups are over W = 1: keep 1 in --workers")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.methods.scaling_report import BOUND_SAMPLES, Scaling, write_report

    args = parse_args(argv)
    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    total = args.budget * MAX_EPOCHS
    fast = not args.exact_optuna
    sims = [Job("scaling", s, t, seed, total, workers=w, sampler=args.sampler, fast_tpe=fast)
            for s in args.schedulers for w in args.workers for t in args.tasks for seed in range(args.seeds)]
    anchors = [Job("sample", "random", t, seed, total, fast_tpe=fast) for t in args.tasks for seed in range(args.seeds)]
    cached = {} if args.no_cache or not args.cache.exists() else load_cache(args.cache)
    reused = sum(1 for job in sims + anchors if job.key() in cached)
    results = run_jobs(sims + anchors, args.data_dir, args.jobs, None if args.no_cache else args.cache,
                       cost=lambda job: job.workers * (3.0 if job.method == "hyperband" else 1.0))
    runs = [ScalingRun.from_json(results[job.key()]) for job in sims]
    random_runs = [RunResult.from_json(results[job.key()]) for job in anchors]
    study = Scaling(runs, random_runs, args.tasks, args.workers, args.seeds, total, args.sampler)
    bench = LCBench(args.data_dir)
    study.fastest = {task: fastest_to_target(bench, task, study.target[task], BOUND_SAMPLES)
                     for task in args.tasks if task in study.target}
    command = shlex.join(["bench/.venv/bin/python", "bench/async_scaling.py", *sys.argv[1:]])
    write_report(study, args.out, command=command, started=started, wall=time.monotonic() - t0,
                 reused=(reused, len(sims) + len(anchors)))
    print(study.text_summary())
    print(f"\nwrote {args.out} ({(time.monotonic() - t0) / 60:.1f} min)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
