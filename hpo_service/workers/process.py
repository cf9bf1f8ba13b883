"""`hpo worker`: N worker processes, each running the worker loop.

SIGTERM / Ctrl-C drains: each loop stops at its trainer's next report and tells the
server that its running trial should be retried, with the checkpoint the trainer wrote
on its way out (the retry resumes from it), instead of leaving it to lease expiry.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import FrameType

from hpo_service.client import HpoClient, resolve_token
from hpo_service.workers.checkpoints import store_from_uri
from hpo_service.workers.loop import WorkerLoop


@dataclass(frozen=True)
class WorkerOptions:
    server: str
    checkpoint_uri: str
    studies: list[int] | None = None
    max_trials: int | None = None
    exit_when_idle: bool = False
    wait_s: float = 5.0
    token: str | None = None
    threads: int | None = None  # torch threads per process; None: torch's default (every core)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_process(cpu_count: int, concurrency: int, requested: int | None,
                        environment: Mapping[str, str]) -> int | None:
    """How many threads each worker process's torch may use, None to leave torch's default.

    Several processes on one machine each default to every core, so N trainers run N x cores
    threads and slow each other down; they get an equal share instead (at least one). An
    explicit ``--threads`` wins, and so does an ``OMP_NUM_THREADS`` the user already set.
    """
    if requested is not None:
        return requested
    if concurrency == 1 or "OMP_NUM_THREADS" in environment:
        return None
    return max(1, cpu_count // concurrency)


def cap_threads(threads: int | None) -> None:
    """Limit this process's math libraries to ``threads`` (before torch is imported, or after)."""
    if threads is None:
        return
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(processName)s %(levelname)s %(message)s")


def worker_main(options: WorkerOptions) -> int:
    configure_logging()
    cap_threads(options.threads)
    if options.threads is not None:
        logging.getLogger("hpo_service.worker").info("torch threads in this worker process: %d", options.threads)
    store = store_from_uri(options.checkpoint_uri)
    with HpoClient(options.server, token=resolve_token(options.token), retries=8) as client:
        loop = WorkerLoop(client, store, studies=options.studies, wait_s=options.wait_s)

        def _drain(_signum: int, _frame: FrameType | None) -> None:
            loop.stop.set()

        signal.signal(signal.SIGTERM, _drain)
        signal.signal(signal.SIGINT, _drain)
        loop.run(max_trials=options.max_trials, exit_when_idle=options.exit_when_idle)
    return 0


def run_workers(options: WorkerOptions, concurrency: int) -> int:
    threads = threads_per_process(len(os.sched_getaffinity(0)), concurrency, options.threads, os.environ)
    options = replace(options, threads=threads)
    if concurrency == 1:
        return worker_main(options)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_main, args=(options,), name=f"worker-{i}") for i in range(concurrency)]
    for process in processes:
        process.start()

    def _forward(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for process in processes:
        process.join()
    return max((p.exitcode or 0) for p in processes)
