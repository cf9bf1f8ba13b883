"""The methods the sample-efficiency benchmark compares, by name.

``ours``: hpo-service's schedulers (each with its TPE and its random sampler). ``anchor``: what a
user would pick instead. A method that does not exist yet is listed with ``available=False`` and a
note, so that the report says it was left out rather than silently dropping it; give it a runner
(a function of ``(RunContext) -> configurations``) when it lands.
"""

from __future__ import annotations

import importlib.util
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lcbench import LCBench
from bench.methods import anchors, deepening
from bench.methods.budget import TOTAL_EPOCHS, Ledger, RunResult, TaskObjective
from bench.methods.service import MemoryBackend, ServiceBackend, run_sequential, study_spec

DRIVERS = ("memory", "service")


@dataclass(frozen=True)
class RunContext:
    objective: TaskObjective
    ledger: Ledger
    seed: int  # the run's seed: every random choice of the method derives from it
    driver: str = "memory"  # how hpo-service methods run: "memory" or "service" (HTTP + SQLite)
    workdir: Path | None = None


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # "ours" | "anchor"
    label: str
    run: Callable[[RunContext], int] | None
    note: str = ""
    requires: str = ""  # a module the method needs (DEHB pins numpy<2: only bench/.venv has it)

    @property
    def available(self) -> bool:
        return self.run is not None and (not self.requires or importlib.util.find_spec(self.requires) is not None)

    @property
    def why_unavailable(self) -> str:
        if self.run is None:
            return self.note
        return f"the {self.requires!r} package is not installed (bench/setup_env.sh installs it in bench/.venv)"


def _on_backend(ctx: RunContext, spec: dict[str, Any], drive: Callable[[Any, TaskObjective, Ledger], object]) -> int:
    """``drive`` the study of ``spec`` through ctx's driver (the real service or memory); its configurations."""
    if ctx.driver == "service":
        with ServiceBackend(spec, ctx.workdir) as backend:
            drive(backend, ctx.objective, ctx.ledger)
            return backend.configurations()
    memory = MemoryBackend(spec)
    drive(memory, ctx.objective, ctx.ledger)
    return memory.configurations()


def _service(scheduler: str, sampler: str) -> Callable[[RunContext], int]:
    def run(ctx: RunContext) -> int:
        spec = study_spec(f"lcbench-{ctx.objective.task}-{scheduler}-{sampler}-{ctx.seed}", scheduler, sampler,
                          ctx.seed, ctx.objective.bench.search_space(), float(ctx.ledger.total_epochs))
        return _on_backend(ctx, spec, run_sequential)

    return run


def _iterative_deepening(ctx: RunContext) -> int:
    """Hyperband + TPE from max 52/9, raised eta-fold whenever it completes (bench/methods/deepening.py)."""
    total = ctx.ledger.total_epochs
    spec = study_spec(f"lcbench-{ctx.objective.task}-iterative-deepening-{ctx.seed}", "hyperband", "tpe", ctx.seed,
                      ctx.objective.bench.search_space(), float(total), max_budget=deepening.LADDER[0],
                      iterations=deepening.hyperband_iterations(total))
    return _on_backend(ctx, spec, deepening.deepen)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("hyperband-tpe", "ours", "hpo-service Hyperband + TPE", _service("hyperband", "tpe")),
    Method("hyperband-random", "ours", "hpo-service Hyperband + random", _service("hyperband", "random")),
    Method("asha-tpe", "ours", "hpo-service ASHA + TPE", _service("asha", "tpe")),
    Method("asha-random", "ours", "hpo-service ASHA + random", _service("asha", "random")),
    Method("iterative-deepening", "ours", "hpo-service iterative deepening (Hyperband + TPE, max 52/9 -> 52)",
           _iterative_deepening, note=deepening.DEFINITION),
    Method("random", "anchor", "random search (full budget)",
           lambda ctx: anchors.run_full_trainings(ctx.objective, ctx.ledger, ctx.seed, "random")),
    Method("optuna-tpe", "anchor", "Optuna TPE, no pruning",
           lambda ctx: anchors.run_full_trainings(ctx.objective, ctx.ledger, ctx.seed, "tpe")),
    Method("optuna-tpe-hyperband", "anchor", "Optuna TPE + HyperbandPruner",
           lambda ctx: anchors.run_tpe_hyperband(ctx.objective, ctx.ledger, ctx.seed)),
    Method("dehb", "anchor", "DEHB", lambda ctx: anchors.run_dehb(ctx.objective, ctx.ledger, ctx.seed, ctx.workdir),
           requires="dehb"),
]}


def run_seed(task: str, seed: int) -> int:
    """The seed of one (task, seed) run, shared by every method (common random numbers per run)."""
    return zlib.crc32(f"lcbench/{task}/{seed}".encode()) & 0x7FFFFFFF


def run_method(name: str, bench: LCBench, task: str, seed: int, total_epochs: int = TOTAL_EPOCHS,
               driver: str = "memory", workdir: Path | None = None) -> RunResult:
    """One run of ``name`` on ``task`` with seed index ``seed``."""
    method = METHODS[name]
    if method.run is None or not method.available:
        raise ValueError(f"{name} is not available: {method.why_unavailable}")
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}")
    ledger = Ledger(total_epochs=total_epochs)
    ctx = RunContext(TaskObjective(bench, task), ledger, run_seed(task, seed), driver, workdir)
    started = time.perf_counter()
    configurations = method.run(ctx)
    return RunResult(name, task, seed, total_epochs, ledger.spent, ledger.evaluations, configurations,
                     list(ledger.full), time.perf_counter() - started,
                     {"driver": driver} if method.family == "ours" else {})
