"""Run many (method, task, seed) jobs on a process pool, cached in a JSON-lines file.

Each worker process opens the surrogate once (single-threaded ONNX) and, unless told not to,
installs bench/methods/fast_tpe.py. Jobs run seed by seed (all tasks and methods of seed 0 first,
the slowest first within a seed), so a run cut short still has whole seeds. Finished runs are
appended to the cache as they come in, so an interrupted benchmark resumes where it stopped; a
cached run is reused only when its whole key (the Job's fields and BENCH_VERSION, for scaling runs
also SCALING_RECORD) matches.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bump when a change to the methods or the accounting makes cached runs stale.
BENCH_VERSION = 2
# Bump when what a scaling run records changes (older cached ones cannot be read back); sample runs,
# hours of compute, keep their cache. 2: each 52-epoch result records when its configuration started.
SCALING_RECORD = 2

_BENCH: Any = None


@dataclass(frozen=True)
class Job:
    kind: str  # "sample" (bench.methods.run_method) or "scaling" (bench.async_scaling.simulate)
    method: str
    task: str
    seed: int
    total_epochs: int
    driver: str = "memory"  # sample: how hpo-service's methods run ("memory" or "service")
    workers: int = 1  # scaling: simulated workers
    sampler: str = ""  # scaling: the study's sampler kind
    fast_tpe: bool = True  # bench/methods/fast_tpe.py installed

    def key(self) -> str:
        version = BENCH_VERSION if self.kind == "sample" else f"{BENCH_VERSION}.{SCALING_RECORD}"
        return json.dumps([version, self.kind, self.method, self.task, self.seed, self.total_epochs,
                           self.driver, self.workers, self.sampler, self.fast_tpe])


def _init_worker(data_dir: str, fast_tpe: bool) -> None:
    global _BENCH
    from bench.lcbench import LCBench
    from bench.methods import fast_tpe as fast

    _BENCH = LCBench(Path(data_dir), threads=1)
    if fast_tpe and not fast.install():
        print("note: this Optuna has no _truncnorm._log_ndtr; TPE runs unpatched", file=sys.stderr)


def _run(job: Job) -> tuple[str, dict[str, Any]]:
    if job.kind == "sample":
        from bench.methods import run_method

        result = run_method(job.method, _BENCH, job.task, job.seed, job.total_epochs, job.driver)
        return job.key(), result.to_json()
    from bench.async_scaling import simulate

    return job.key(), simulate(_BENCH, job).to_json()


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    cache: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                cache[entry["key"]] = entry["result"]
    return cache


def run_jobs(jobs: Iterable[Job], data_dir: Path, processes: int, cache_path: Path | None,
             cost: Callable[[Job], float] = lambda job: 1.0, progress_every: float = 30.0) -> dict[str, dict[str, Any]]:
    """Results by job key: cached ones, then the rest computed on ``processes`` processes."""
    jobs = list(jobs)
    if len({job.fast_tpe for job in jobs}) > 1:
        raise ValueError("mixing jobs with and without fast_tpe in one pool")
    cache = load_cache(cache_path) if cache_path else {}
    todo = sorted((job for job in jobs if job.key() not in cache), key=lambda job: (job.seed, -cost(job)))
    results = {job.key(): cache[job.key()] for job in jobs if job.key() in cache}
    print(f"{len(jobs)} runs: {len(results)} cached, {len(todo)} to run on {processes} processes", file=sys.stderr,
          flush=True)
    if not todo:
        return results
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
    started = last = time.monotonic()
    context = mp.get_context("spawn")  # the service runs threads; forking a process with threads is unsafe
    fast_tpe = jobs[0].fast_tpe
    with context.Pool(processes, initializer=_init_worker, initargs=(str(data_dir), fast_tpe)) as pool:
        for done, (key, result) in enumerate(pool.imap_unordered(_run, todo, chunksize=1), start=1):
            results[key] = result
            if cache_path:
                with cache_path.open("a") as out:
                    out.write(json.dumps({"key": key, "result": result}) + "\n")
            now = time.monotonic()
            if now - last >= progress_every or done == len(todo):
                last = now
                eta = (now - started) / done * (len(todo) - done)
                print(f"  {done}/{len(todo)} runs, {now - started:.0f} s, about {eta:.0f} s left", file=sys.stderr,
                      flush=True)
    return results
