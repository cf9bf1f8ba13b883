"""The asynchronous-scaling analysis (time to target, speedup and efficiency over W = 1, idle time) and report."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import common
from bench.methods import metrics as m
from bench.methods.budget import RunResult
from bench.methods.report import environment

if TYPE_CHECKING:
    from bench.async_scaling import ScalingRun

GOAL_EFFICIENCY, GOAL_WORKERS = 0.9, 16
BOUND_SAMPLES = 5000


@dataclass
class Scaling:
    runs: list[ScalingRun]
    random_runs: list[RunResult]
    tasks: list[str]
    workers: list[int]
    seeds: int
    total_epochs: int
    sampler: str
    # Per task: the shortest full training among sampled configurations that reach the target
    # (simulated seconds; bench/async_scaling.py's fastest_to_target). Empty: not computed.
    fastest: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        finals: dict[str, list[float]] = defaultdict(list)
        for run in self.random_runs:
            finals[run.task].append(m.final_best(run.full))
        self.target = {task: m.median_low(values) for task, values in finals.items()}
        self.by: dict[tuple[str, int, str], list[ScalingRun]] = defaultdict(list)
        for scaling_run in self.runs:
            self.by[(scaling_run.method, scaling_run.workers, scaling_run.task)].append(scaling_run)
        self.methods = sorted({r.method for r in self.runs}, key=lambda name: not name.startswith("hyperband"))

    def time_to_target(self, run: ScalingRun) -> float:
        return m.cost_to_reach([(t, a) for t, a, _, _ in run.full], self.target[run.task])

    def epochs_to_target(self, run: ScalingRun) -> float:
        """Epochs handed out (to all workers) by the time the target was reached."""
        return m.cost_to_reach([(spent, a) for _t, a, _i, spent in run.full], self.target[run.task])

    def compute_ratios(self, method: str, workers: int) -> list[float]:
        """Per task: median epochs to the target at W = 1 / at W (below 1: the parallel run needed more
        compute to get there), over the tasks both reached."""
        out = []
        for task in self.tasks:
            base = m.median([self.epochs_to_target(r) for r in self.by[(method, 1, task)]])
            wide = m.median([self.epochs_to_target(r) for r in self.by[(method, workers, task)]])
            if not math.isinf(base) and not math.isinf(wide) and wide > 0:
                out.append(base / wide)
        return out

    def median_time(self, method: str, workers: int, task: str) -> float:
        return m.median([self.time_to_target(r) for r in self.by[(method, workers, task)]])

    def speedups(self, method: str, workers: int) -> list[float]:
        """Per task T(1) / T(W), over the tasks whose W = 1 median run reached the target."""
        out = []
        for task in self.tasks:
            base = self.median_time(method, 1, task)
            if not math.isinf(base):
                out.append(m.speedup(base, self.median_time(method, workers, task)))
        return out

    def idle_fraction(self, method: str, workers: int, until_target: bool) -> float:
        """Mean over runs of idle worker-time / (W x time), until the target (runs that reached it) or the end."""
        fractions = []
        for task in self.tasks:
            for run in self.by[(method, workers, task)]:
                if not until_target:
                    if run.makespan > 0:
                        fractions.append(run.idle / (workers * run.makespan))
                    continue
                hit = next((x for x in run.full if x[1] >= self.target[task]), None)
                if hit is not None and hit[0] > 0:
                    fractions.append(hit[2] / (workers * hit[0]))
        return m.mean(fractions)

    HEADERS = ["scheduler", "W", "tasks (W=1 reached)", "median time to target (h)", "median speedup",
               "efficiency", "idle until target", "idle, whole run", "compute to target, W=1 / W", "target reached (tasks)",
               "epochs / run"]

    def rows(self) -> list[list[Any]]:
        rows = []
        for method in self.methods:
            for workers in self.workers:
                ups = self.speedups(method, workers)
                speed = m.finite_median(ups)
                times = [self.median_time(method, workers, t) for t in self.tasks]
                runs = [r for t in self.tasks for r in self.by[(method, workers, t)]]
                rows.append([
                    method, workers, len(ups), _hours(m.median(times)), _f(speed, "x"), _f(speed / workers),
                    _pct(self.idle_fraction(method, workers, True)), _pct(self.idle_fraction(method, workers, False)),
                    _f(m.finite_median(self.compute_ratios(method, workers))),
                    f"{sum(not math.isinf(t) for t in times)} / {len(self.tasks)}",
                    f"{np.mean([r.spent for r in runs]):.0f}",
                ])
        return rows

    def goal_lines(self) -> list[str]:
        lines = []
        asha = next((x for x in self.methods if x.startswith("asha")), None)
        hyperband = next((x for x in self.methods if x.startswith("hyperband")), None)
        if asha and GOAL_WORKERS in self.workers:
            eff = m.finite_median(self.speedups(asha, GOAL_WORKERS)) / GOAL_WORKERS
            lines.append(f"Goal, ASHA efficiency >= {GOAL_EFFICIENCY} at W = {GOAL_WORKERS}: **{_f(eff)}: "
                         f"{'met' if eff >= GOAL_EFFICIENCY else 'NOT met'}**.")
        if asha and GOAL_WORKERS in self.workers and max(self.workers) > GOAL_WORKERS:
            widest = max(self.workers)
            best = m.finite_median(self.speedups(asha, widest))
            ratio = m.finite_median(self.compute_ratios(asha, GOAL_WORKERS))
            lines.append(
                f"ASHA's speedup at W = {widest} is {_f(best, 'x')}. Workers are busy until the target (idle "
                f"{_pct(self.idle_fraction(asha, GOAL_WORKERS, True))} at W = {GOAL_WORKERS}); what the efficiency "
                f"loses is compute: at W = {GOAL_WORKERS} ASHA hands out more epochs before the target than at W = 1 "
                f"(W = 1 needs {_f(ratio)} of them, median over tasks), because W configurations are always in "
                "flight and each promotion is decided on the results that have come in, fewer than a sequential "
                "run would have. The length of one training is not what binds (next section). At this budget "
                f"(100 full trainings) W = 1 reaches the target in "
                f"{_hours(m.median([self.median_time(asha, 1, t) for t in self.tasks]))} h (median over tasks).")
        if hyperband and GOAL_WORKERS in self.workers:
            eff = m.finite_median(self.speedups(hyperband, GOAL_WORKERS)) / GOAL_WORKERS
            lines.append(f"Synchronous Hyperband at W = {GOAL_WORKERS}: efficiency {_f(eff)}, idle "
                         f"{_pct(self.idle_fraction(hyperband, GOAL_WORKERS, True))} of worker time until the "
                         f"target ({_pct(self.idle_fraction(hyperband, GOAL_WORKERS, False))} over the whole run).")
        return lines

    def limit_lines(self, workers: int | None = None) -> list[str]:
        """How close each scheduler is to the limit the fastest qualifying full training sets.

        No schedule, with any number of workers, reaches the target before some configuration that
        reaches it has trained its 52 epochs, so per task T(1) / T* bounds the speedup (T*: the
        fastest such training among the sampled configurations) and min(W, T(1) / T*) / W the
        efficiency at W.
        """
        if workers is None:  # the goal's W, else the widest run
            workers = GOAL_WORKERS if GOAL_WORKERS in self.workers else max(self.workers)
        if not self.fastest or workers not in self.workers or workers == 1:
            return []
        lines = []
        for method in self.methods:
            ceilings, ratios, over = [], [], []
            for task in self.tasks:
                base, best = self.median_time(method, 1, task), self.fastest.get(task, math.inf)
                if math.isinf(base) or math.isinf(best) or best <= 0:
                    continue
                ceilings.append(base / best)
                ratios.append(min(workers, base / best) / workers)
                over.append(self.median_time(method, workers, task) / best)
            if not ceilings:
                continue
            lines.append(
                f"{method}: over {len(ceilings)} tasks, T(1) is a median {_f(m.median(ceilings))} times the fastest "
                f"qualifying full training, so no number of workers could give more than that speedup; at W = "
                f"{workers} the efficiency could reach at most {_f(m.median(ratios))} (median over tasks of "
                f"min(W, T(1)/T*)/W; {sum(1 for c in ceilings if c < GOAL_EFFICIENCY * workers)} of {len(ceilings)} "
                f"tasks have a ceiling below {GOAL_EFFICIENCY * workers:.1f}x). Its time to the target at W = "
                f"{workers} is a median {_f(m.median(over), 'x')} that fastest training.")
        return lines

    def text_summary(self) -> str:
        return "\n".join([common.text_table(self.HEADERS, self.rows()), ""]
                         + [x.replace("**", "") for x in self.goal_lines()])


def _f(value: float, suffix: str = "") -> str:
    return "n/a" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.2f}{suffix}")


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def _hours(seconds: float) -> str:
    return "never" if math.isinf(seconds) else ("n/a" if math.isnan(seconds) else f"{seconds / 3600:.2f}")


def write_plot(study: Scaling, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    ws = study.workers
    left.plot(ws, ws, color="grey", linestyle=":", label="linear")
    for method in study.methods:
        speed = [m.finite_median(study.speedups(method, w)) for w in ws]
        left.plot(ws, [s if s > 0 else math.nan for s in speed], marker="o", label=method)  # log axis
        right.plot(ws, [s / w for s, w in zip(speed, ws)], marker="o", label=f"{method}: efficiency")
        right.plot(ws, [study.idle_fraction(method, w, True) for w in ws], marker="x", linestyle="--",
                   label=f"{method}: idle fraction until target")
    right.axhline(GOAL_EFFICIENCY, color="grey", linestyle=":", linewidth=1)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ws, [str(w) for w in ws])
        ax.set_xlabel("parallel workers W")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_yscale("log", base=2)
    left.set_ylabel("speedup in wall-clock time to target over W = 1")
    left.set_title("Speedup (median over tasks)")
    right.set_ylim(0, 1.05)
    right.set_ylabel("efficiency = speedup / W; idle fraction")
    right.set_title("Scaling efficiency and idle workers")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(study: Scaling, path: Path, *, command: str, started: dt.datetime, wall: float,
                 reused: tuple[int, int] = (0, 0)) -> None:
    """``reused``: (runs taken from the cache, runs in all); the wall time covers only the others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot = write_plot(study, path.with_suffix(".png"))
    lines = [
        "# Asynchronous scaling: simulated workers on LCBench",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {wall / 60:.1f} min"
        + (f" ({reused[0]:,} of {reused[1]:,} runs reused from the cache)." if reused[0] else "."),
        "",
        f"{len(study.tasks)} tasks x {study.seeds} seeds"
        + (" (**fewer seeds than the default 5**: a run cut short; the same command resumes it)" if study.seeds < 5
           else "")
        + f"; W in {', '.join(map(str, study.workers))}; "
        f"{study.total_epochs:,} epochs per run; hpo-service's `{study.sampler}` sampler. Time is the LCBench "
        "surrogate's training time, on a simulated clock (event-driven, nothing sleeps).",
        "",
        common.md_table(study.HEADERS, study.rows()),
        "",
        "- **median time to target**: per task the median over seeds, then the median over tasks (simulated hours).",
        "- **median speedup**: per task T(W = 1) / T(W), over the tasks whose W = 1 median run reached the target; "
        "**efficiency** = median speedup / W.",
        "- **idle**: worker-time with no work to do / (W x elapsed time), mean over runs; until the target (runs "
        "that reached it) and over the whole run (including the end, when the budget is spent and the last "
        "trials finish).",
        "",
        "### Against the goal",
        "",
    ]
    lines += [f"- {line}" for line in study.goal_lines()] + [""]
    limits = study.limit_lines()
    if limits:
        lines += ["### The limit: the fastest full training that reaches the target", "",
                  "Per task T* = the shortest 52-epoch training (surrogate time) among "
                  f"{BOUND_SAMPLES:,} random configurations whose accuracy at 52 epochs reaches the target. A run reaches "
                  "the target only when such a configuration finishes its 52 epochs, so T(W) >= T* for every "
                  "scheduler and W (T* comes from a sample, so it estimates the minimum over the space from above).",
                  ""] + [f"- {line}" for line in limits] + [""]
    if plot is not None:
        lines += [f"![scaling efficiency vs W]({plot.name})", ""]
    env = environment()
    lines += ["## Environment", "", common.md_table(["", ""], [[k, v] for k, v in env.items()], "ll"), ""]
    path.write_text("\n".join(lines))
