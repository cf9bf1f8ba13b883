"""Sample efficiency on LCBench: how little training each method needs to find a good configuration.

Every method gets the same budget per run, the cost of 100 full trainings (5,200 epochs), charged
the same way (bench/methods/budget.py): an evaluation costs the epochs it trains, a promoted
trial that resumes from its checkpoint pays only its new epochs, a stopped trial paid what it
trained. Methods (bench/methods/): hpo-service's Hyperband and ASHA, each with its TPE and its
random sampler, and its iterative deepening (Hyperband + TPE started at max 52/9 epochs and raised
eta-fold through the service whenever the study completes: bench/methods/deepening.py); random
search, Optuna TPE with and without HyperbandPruner, and DEHB as anchors. All at their defaults:
nothing was tuned, on any task.

For each of the 34 tasks and each seed: the anytime curve (best validation accuracy among
52-epoch results vs epochs spent), the final incumbent, and the budget to reach the task's
target, the median over seeds of random search's final incumbent (the lower middle value for an even
number of seeds, so that at least half of them reach it). Per method: the speedup
(random search's budget-to-target / the method's, medians over seeds) per task, its median over
tasks, the mean rank, and the number of tasks on which it is slower than random search.

hpo-service's methods run through ``--driver memory`` by default: the service's own scheduler,
sampler and decision rules in memory (bench/methods/service.py), which make exactly the decisions
the service makes over HTTP and SQLite; ``--service-check K`` reruns K tasks (seed 0) through the
real service and the report says whether every result matched. ``--driver service`` runs
everything through the service (about ten times slower).

Usage (from the repository root, after bench/setup_env.sh):

    bench/.venv/bin/python bench/sample_efficiency.py                   # 34 tasks x 5 seeds, ~40 min on one core
    bench/.venv/bin/python bench/sample_efficiency.py --tasks 2 --seeds 1 --budget 20 --out /tmp/se.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.lcbench import DATA_DIR, MAX_EPOCHS, read_space  # noqa: E402
from bench.methods import METHODS  # noqa: E402
from bench.methods.budget import FULL_TRAININGS, RunResult  # noqa: E402
from bench.methods.report import SampleEfficiency, write_report  # noqa: E402
from bench.methods.runner import Job, run_jobs  # noqa: E402

DEFAULT_OUT = common.REPO_ROOT / "bench" / "results" / "sample_efficiency.md"
DEFAULT_CACHE = common.REPO_ROOT / "bench" / ".cache" / "sample_efficiency.jsonl"
# Rough seconds per run, so that the slowest runs start first (the pool then ends evenly).
COST = {"asha-tpe": 25.0, "hyperband-tpe": 15.0, "optuna-tpe-hyperband": 6.0, "hyperband-random": 3.5,
        "dehb": 2.5, "iterative-deepening": 2.0, "optuna-tpe": 1.5, "asha-random": 1.5, "random": 0.2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["all"],
                        help="task ids, or one number N for the first N tasks (default: all 34)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per task (default 5)")
    parser.add_argument("--methods", nargs="+", default=None, help=f"default: all available of {', '.join(METHODS)}")
    parser.add_argument("--budget", type=int, default=FULL_TRAININGS, help="full trainings per run (default 100)")
    parser.add_argument("--driver", choices=["memory", "service"], default="memory",
                        help="how hpo-service's methods run (default memory; see the module docstring)")
    parser.add_argument("--service-check", type=int, default=2, metavar="K",
                        help="rerun K tasks (seed 0) of hpo-service's methods through the real service and "
                             "compare (default 2; 0 skips)")
    parser.add_argument("--exact-optuna", action="store_true",
                        help="run Optuna's TPE as shipped (bench/methods/fast_tpe.py explains the default)")
    parser.add_argument("--jobs", type=int, default=common.cpu_count(), help="processes (default: CPU count)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="finished runs are kept here and reused (default bench/.cache/...)")
    parser.add_argument("--no-cache", action="store_true", help="run everything again; keep nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (PNGs go next to it)")
    args = parser.parse_args(argv)
    all_tasks, _ = read_space(args.data_dir)
    if args.tasks == ["all"]:
        args.tasks = all_tasks
    elif len(args.tasks) == 1 and args.tasks[0].isdigit() and args.tasks[0] not in all_tasks:
        args.tasks = all_tasks[: int(args.tasks[0])]
    unknown = set(args.tasks) - set(all_tasks)
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}")
    args.methods = args.methods or [name for name, m in METHODS.items() if m.available]
    bad = [m for m in args.methods if m not in METHODS or not METHODS[m].available]
    if bad:
        parser.error(f"not available: {bad}")
    if "random" not in args.methods:
        parser.error("random search is the reference of every speedup: keep it in --methods")
    if args.seeds < 1 or args.budget < 1 or args.jobs < 1:
        parser.error("--seeds, --budget and --jobs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    total_epochs = args.budget * MAX_EPOCHS
    fast = not args.exact_optuna
    jobs = [Job("sample", method, task, seed, total_epochs,
                args.driver if METHODS[method].family == "ours" else "memory", fast_tpe=fast)
            for method in args.methods for task in args.tasks for seed in range(args.seeds)]
    ours = [m for m in args.methods if METHODS[m].family == "ours"]
    checks = [Job("sample", method, task, 0, total_epochs, "service", fast_tpe=fast)
              for method in ours for task in args.tasks[: args.service_check]] if args.driver == "memory" else []
    cache = None if args.no_cache else args.cache
    results = run_jobs(jobs + checks, args.data_dir, args.jobs, cache,
                       cost=lambda job: COST.get(job.method, 1.0) * (10 if job.driver == "service" else 1))
    runs = [RunResult.from_json(results[job.key()]) for job in jobs]
    check_rows = _service_check(checks, results)
    study = SampleEfficiency(runs, args.methods, args.tasks, args.seeds, total_epochs)
    command = shlex.join(["bench/.venv/bin/python", "bench/sample_efficiency.py", *sys.argv[1:]])
    left_out = {name: method.why_unavailable for name, method in METHODS.items() if not method.available}
    write_report(study, args.out, command=command, started=started, wall=time.monotonic() - t0,
                 driver=args.driver, service_check=check_rows, left_out=left_out, fast_tpe=fast)
    print(study.text_summary())
    print(f"\nwrote {args.out} ({(time.monotonic() - t0) / 60:.1f} min)", file=sys.stderr)
    return 0


def _service_check(checks: list[Job], results: dict[str, Any]) -> list[tuple[str, str, bool, int]]:
    """(method, task, identical?, evaluations) for each run redone through the real service."""
    rows = []
    for job in checks:
        memory = Job(job.kind, job.method, job.task, job.seed, job.total_epochs, "memory", fast_tpe=job.fast_tpe).key()
        a, b = results[memory], results[job.key()]
        same = all(a[k] == b[k] for k in ("spent", "evaluations", "configurations", "full"))
        rows.append((job.method, job.task, same, int(b["evaluations"])))
    return rows


if __name__ == "__main__":
    sys.exit(main())
