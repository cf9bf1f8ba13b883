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
from bench.lcbench import MAX_EPOCHS
from bench.methods.budget import FULL_TRAININGS, RunResult
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
        return m.cost_to_reach([(x[0], x[1]) for x in run.full], self.target[run.task])

    def epochs_to_target(self, run: ScalingRun) -> float:
        """Epochs handed out (to all workers) by the time the target was reached."""
        return m.cost_to_reach([(x[3], x[1]) for x in run.full], self.target[run.task])

    def winner(self, run: ScalingRun) -> tuple[float, float, float, int, float, int] | None:
        """The 52-epoch result that reached the target first (None: the run never did)."""
        return next((x for x in run.full if x[1] >= self.target[run.task]), None)

    def split(self, method: str, workers: int, task: str) -> tuple[float, float, float]:
        """Medians over seeds, of the runs that reached the target: (epochs handed out before the winning
        configuration's first segment, epochs handed out from then until the target, seconds from then until
        the target, i.e. its own training plus any wait for a promotion); nan where no run reached it."""
        hits = [h for h in (self.winner(r) for r in self.by[(method, workers, task)]) if h is not None]
        if not hits:
            return math.nan, math.nan, math.nan
        return (m.median([h[5] for h in hits]), m.median([h[3] - h[5] for h in hits]),
                m.median([h[0] - h[4] for h in hits]))

    def split_row(self, method: str, workers: int) -> dict[str, float]:
        """Medians over tasks (those both W = 1 and W reached) of where the time to the target goes."""
        before, ratio, during, share, amdahl, serial = [], [], [], [], [], []
        for task in self.tasks:
            base_time, at_w = self.median_time(method, 1, task), self.median_time(method, workers, task)
            (base_before, _, base_own), (w_before, w_during, w_own) = (self.split(method, 1, task),
                                                                       self.split(method, workers, task))
            if any(math.isinf(x) or math.isnan(x) for x in (base_time, at_w, base_before, w_before, w_own)):
                continue
            before.append(w_before)
            ratio.append(base_before / w_before if w_before else math.nan)
            during.append(w_during)
            share.append(w_own / at_w if at_w else math.nan)
            # What T(W) would be if finding the winner took exactly 1/W of W = 1's time and its own
            # training stayed as long as it was: Amdahl's law with the winner's training as the serial part.
            amdahl.append(base_time / (workers * ((base_time - base_own) / workers + w_own)))
            serial.append(base_time / w_own if w_own else math.nan)
        return {"tasks": len(before), "before": m.finite_median(before), "ratio": m.finite_median(ratio),
                "during": m.finite_median(during), "share": m.finite_median(share),
                "amdahl": m.finite_median(amdahl), "serial": m.finite_median(serial)}

    SPLIT_HEADERS = ["scheduler", "W", "tasks", "epochs before the winner started", "W=1 / W",
                     "epochs while it trained", "its start to the target, share of time to target",
                     "efficiency if finding it scaled perfectly"]

    def split_rows(self) -> list[list[Any]]:
        rows = []
        for method in self.methods:
            for workers in self.workers:
                row = self.split_row(method, workers)
                rows.append([method, workers, row["tasks"], _count(row["before"]), _f(row["ratio"]),
                             _count(row["during"]), _pct(row["share"]), _f(row["amdahl"])])
        return rows

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
                hit = self.winner(run)
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
            trainings = self.total_epochs / MAX_EPOCHS
            setting = ("" if trainings == FULL_TRAININGS else
                       f" (at {trainings:,.0f} full trainings per run and the target that budget gives; the "
                       f"benchmark's setting is {FULL_TRAININGS})")
            lines.append(f"Goal, ASHA efficiency >= {GOAL_EFFICIENCY} at W = {GOAL_WORKERS}{setting}: **{_f(eff)}: "
                         f"{'met' if eff >= GOAL_EFFICIENCY else 'NOT met'}**.")
        if asha and GOAL_WORKERS in self.workers and max(self.workers) > GOAL_WORKERS:
            widest = max(self.workers)
            best = m.finite_median(self.speedups(asha, widest))
            ratio = m.finite_median(self.compute_ratios(asha, GOAL_WORKERS))
            lines.append(
                f"ASHA's speedup at W = {widest} is {_f(best, 'x')}. Workers are busy until the target (idle "
                f"{_pct(self.idle_fraction(asha, GOAL_WORKERS, True))} at W = {GOAL_WORKERS}); what the efficiency "
                f"loses is compute: at W = {GOAL_WORKERS} ASHA hands out more epochs before the target than at W = 1 "
                f"(W = 1 needs {_f(ratio)} of them, median over tasks). " + self._where_the_compute_goes(asha)
                + f" At this budget ({self.total_epochs / MAX_EPOCHS:,.0f} full trainings) W = 1 reaches the target in "
                f"{_hours(m.median([self.median_time(asha, 1, t) for t in self.tasks]))} h (median over tasks).")
        if hyperband and GOAL_WORKERS in self.workers:
            eff = m.finite_median(self.speedups(hyperband, GOAL_WORKERS)) / GOAL_WORKERS
            lines.append(f"Synchronous Hyperband at W = {GOAL_WORKERS}: efficiency {_f(eff)}, idle "
                         f"{_pct(self.idle_fraction(hyperband, GOAL_WORKERS, True))} of worker time until the "
                         f"target ({_pct(self.idle_fraction(hyperband, GOAL_WORKERS, False))} over the whole run).")
        return lines

    def _where_the_compute_goes(self, method: str) -> str:
        """The goal's explanation from the split at GOAL_WORKERS: finding the winner, then its own training."""
        split = self.split_row(method, GOAL_WORKERS)
        needed = GOAL_WORKERS / (1 / GOAL_EFFICIENCY - 1)  # Amdahl: W * serial / T(1) <= 1/eff - 1
        if split["ratio"] >= GOAL_EFFICIENCY:
            finding = (f"not into finding the configuration that reaches the target -- until its first segment W = "
                       f"{GOAL_WORKERS} has handed out about as many epochs as W = 1 (W = 1 / W = "
                       f"{_f(split['ratio'])}), so deciding promotions on fewer results costs little -- but ")
        else:
            finding = (f"partly into finding the configuration that reaches the target (until its first segment "
                       f"W = 1 hands out {_f(split['ratio'])} of the epochs W = {GOAL_WORKERS} does), and ")
        return (
            "Where they go (next section): " + finding
            + "into the time from that configuration's first segment to the target (its own 52 epochs, segment "
            f"after segment, and any wait for a promotion: {_pct(split['share'])} of the time to the "
            f"target at W = {GOAL_WORKERS}), while the other workers train configurations the target did not "
            f"need. That is Amdahl's serial part: with it, perfectly parallel search gives efficiency "
            f"{_f(split['amdahl'])}. At this budget and target T(1) is a median {_f(split['serial'])} times that "
            f"training; efficiency {GOAL_EFFICIENCY} at W = {GOAL_WORKERS} needs about {needed:.0f} times, a "
            "target that takes a sequential search far longer to reach.")

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
        return "\n".join([common.text_table(self.HEADERS, self.rows()), "",
                          common.text_table(self.SPLIT_HEADERS, self.split_rows()), ""]
                         + [x.replace("**", "") for x in self.goal_lines()])


def _f(value: float, suffix: str = "") -> str:
    return "n/a" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.2f}{suffix}")


def _count(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0f}"


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
        + (" (**fewer seeds than the default 5**; `--seeds 5` adds the others, reusing these from the cache)"
           if study.seeds < 5
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
    lines += [
        "### Where the time to the target goes",
        "",
        "Per run, the configuration whose 52-epoch result first reaches the target (the winner) splits the run in "
        "two: until the winner's first segment is handed out (finding it), and from then until the target (its "
        "own training, resumed rung after rung, plus any wait for a promotion). Per task medians over seeds, "
        "then medians over the tasks that W = 1 and W both reached. **W=1 / W**: epochs handed out before the "
        "winner started at W = 1 divided by those at W (1.00: the parallel run found it with no extra compute). "
        "**efficiency if finding it scaled perfectly**: T(1) / (W x ((T(1) - winner's training at W = 1) / W + "
        "winner's training at W)), Amdahl's law with the winner's own training as the serial part.",
        "",
        common.md_table(study.SPLIT_HEADERS, study.split_rows()),
        "",
    ]
    limits = study.limit_lines()
    if limits:
        lines += ["### The limit: the fastest full training that reaches the target", "",
                  "Per task T* = the shortest 52-epoch training (surrogate time) among "
                  f"{BOUND_SAMPLES:,} random configurations whose accuracy at 52 epochs reaches the target. A run reaches "
                  "the target only when such a configuration finishes its 52 epochs, so T(W) >= T* for every "
                  "scheduler and W (T* comes from a sample, so it estimates the minimum over the space from above). "
                  "This bound only says the winner's training cannot be shorter than T*; it ignores that the search "
                  "before the winner comes first and adds to it (previous section), which is why the efficiencies "
                  "stay well below it.",
                  ""] + [f"- {line}" for line in limits] + [""]
    if plot is not None:
        lines += [f"![scaling efficiency vs W]({plot.name})", ""]
    env = environment()
    lines += ["## Environment", "", common.md_table(["", ""], [[k, v] for k, v in env.items()], "ll"), ""]
    path.write_text("\n".join(lines))
