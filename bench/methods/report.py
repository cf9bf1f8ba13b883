"""The sample-efficiency analysis (targets, budget-to-target, speedups, ranks, goals) and its report."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from bench.lcbench import MAX_EPOCHS
from bench.methods import METHODS
from bench.methods import metrics as m
from bench.methods.budget import RunResult

REFERENCE = "random"
GOAL_RATIO, GOAL_WORSE = 1.5, 3


@dataclass
class SampleEfficiency:
    runs: list[RunResult]
    methods: list[str]
    tasks: list[str]
    seeds: int
    total_epochs: int
    target: dict[str, float] = field(init=False)
    btt: dict[tuple[str, str], float] = field(init=False)  # (method, task) -> median epochs to target
    final: dict[tuple[str, str], float] = field(init=False)  # (method, task) -> median final incumbent
    speedup: dict[tuple[str, str], float] = field(init=False)

    def __post_init__(self) -> None:
        by: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
        for run in self.runs:
            by[(run.method, run.task)].append(run)
        self.by = by
        # The median of random search's final incumbents (the lower middle one for an even number of seeds).
        self.target = {t: m.median_low([m.final_best(r.full) for r in by[(REFERENCE, t)]]) for t in self.tasks}
        self.btt, self.final, self.speedup = {}, {}, {}
        for (method, task), runs in by.items():
            self.btt[(method, task)] = m.median([m.cost_to_reach(r.full, self.target[task]) for r in runs])
            self.final[(method, task)] = m.median([m.final_best(r.full) for r in runs])
        for (method, task), cost in self.btt.items():
            self.speedup[(method, task)] = m.speedup(self.btt[(REFERENCE, task)], cost)

    # --- per method -------------------------------------------------------------------------------

    def ranks(self) -> dict[str, float]:
        """Mean over tasks of each method's rank by budget-to-target (1 = least budget)."""
        totals: dict[str, list[float]] = defaultdict(list)
        for task in self.tasks:
            for method, rank in m.average_ranks({x: self.btt[(x, task)] for x in self.methods}).items():
                totals[method].append(rank)
        return {method: m.mean(values) for method, values in totals.items()}

    def final_ranks(self) -> dict[str, float]:
        totals: dict[str, list[float]] = defaultdict(list)
        for task in self.tasks:
            ranked = m.average_ranks({x: -self.final[(x, task)] for x in self.methods})
            for method, rank in ranked.items():
                totals[method].append(rank)
        return {method: m.mean(values) for method, values in totals.items()}

    def median_speedup(self, method: str) -> float:
        return m.finite_median([self.speedup[(method, t)] for t in self.tasks])

    def worse_than_random(self, method: str) -> list[str]:
        return [t for t in self.tasks if self.speedup[(method, t)] < 1.0]

    def reached(self, method: str) -> int:
        return sum(not math.isinf(self.btt[(method, t)]) for t in self.tasks)

    def family(self, family: str) -> list[str]:
        return [x for x in self.methods if METHODS[x].family == family]

    def best_of(self, family: str) -> str:
        return max(self.family(family), key=lambda x: (self.median_speedup(x), -self.ranks()[x]))

    # --- goals ----------------------------------------------------------------------------------------

    def head_to_head(self, ours: str, anchor: str) -> float:
        """Median over tasks of anchor's budget-to-target / ours' (tasks neither reached are left out)."""
        return m.finite_median([m.speedup(self.btt[(anchor, t)], self.btt[(ours, t)]) for t in self.tasks])

    def goal_lines(self) -> list[str]:
        ours, anchor = self.best_of("ours"), self.best_of("anchor")
        ratio = self.head_to_head(ours, anchor)
        speed_ratio = self.median_speedup(ours) / self.median_speedup(anchor)
        worse = self.worse_than_random(ours)
        met1 = ratio >= GOAL_RATIO
        met2 = len(worse) <= GOAL_WORSE
        return [
            f"Best of hpo-service's methods: **{ours}** (median speedup {_x(self.median_speedup(ours))}); best anchor: "
            f"**{anchor}** (median speedup {_x(self.median_speedup(anchor))}).",
            f"Goal 1, at least {GOAL_RATIO}x less budget to the target than the best anchor (median over tasks of "
            f"{anchor}'s budget-to-target / {ours}'s): **{_x(ratio)}: {'met' if met1 else 'NOT met'}** "
            f"(ratio of the two median speedups: {_x(speed_ratio)}).",
            f"{ours} against every anchor, median over tasks of the anchor's budget-to-target / {ours}'s: "
            + ", ".join(f"{a} {_x(self.head_to_head(ours, a))}" for a in self.family("anchor")) + ".",
            f"Goal 2, slower than random search on at most {GOAL_WORSE} of {len(self.tasks)} tasks: {ours} is slower on "
            f"**{len(worse)}: {'met' if met2 else 'NOT met'}**" + (f" ({', '.join(worse)})." if worse else "."),
        ]

    # --- tables ---------------------------------------------------------------------------------------

    SUMMARY_HEADERS = ["method", "family", "median speedup", "mean rank (budget)", "slower than random",
                       "target reached", "mean rank (final)", "configs / run", "evaluations / run", "wall s / run"]

    def summary_rows(self) -> list[list[Any]]:
        ranks, final_ranks = self.ranks(), self.final_ranks()
        rows = []
        for method in sorted(self.methods, key=lambda x: ranks[x]):
            runs = [r for r in self.runs if r.method == method]
            rows.append([
                method, METHODS[method].family, _x(self.median_speedup(method)), f"{ranks[method]:.2f}",
                f"{len(self.worse_than_random(method))} / {len(self.tasks)}",
                f"{self.reached(method)} / {len(self.tasks)}", f"{final_ranks[method]:.2f}",
                f"{np.mean([r.configurations for r in runs]):.0f}", f"{np.mean([r.evaluations for r in runs]):.0f}",
                f"{np.mean([r.compute_seconds for r in runs]):.1f}",
            ])
        return rows

    def task_rows(self) -> tuple[list[str], list[list[Any]]]:
        order = sorted(self.methods, key=lambda x: self.ranks()[x])
        headers = ["task", "target (val. acc. %)"] + [f"{x}" for x in order]
        rows = []
        for task in self.tasks:
            cells = [task, f"{self.target[task]:.2f}"]
            for method in order:
                cost = self.btt[(method, task)]
                cells.append("never" if math.isinf(cost) else f"{cost / MAX_EPOCHS:.1f}")
            rows.append(cells)
        return headers, rows

    def text_summary(self) -> str:
        lines = [common.text_table(self.SUMMARY_HEADERS, self.summary_rows()), ""]
        lines += [line.replace("**", "") for line in self.goal_lines()]
        return "\n".join(lines)

    # --- curves ---------------------------------------------------------------------------------------

    def normalised_regret(self, grid: np.ndarray) -> dict[str, np.ndarray]:
        """Mean over (task, seed) of (y* - best) / (y* - y_random), clipped to [0, 1].

        y* is the best 52-epoch accuracy any run found on the task; y_random the median accuracy of
        a random configuration (random search's evaluations). Before a run's first 52-epoch result
        its regret is 1.
        """
        curves: dict[str, list[np.ndarray]] = defaultdict(list)
        for task in self.tasks:
            best = max(m.final_best(r.full) for x in self.methods for r in self.by[(x, task)])
            typical = float(np.median([a for r in self.by[(REFERENCE, task)] for _, a in r.full]))
            scale = max(best - typical, 1e-9)
            for method in self.methods:
                for run in self.by[(method, task)]:
                    values = m.best_at(run.full, grid)
                    regret = np.where(np.isnan(values), 1.0, (best - values) / scale)
                    curves[method].append(np.clip(regret, 0.0, 1.0))
        return {method: np.mean(np.stack(c), axis=0) for method, c in curves.items()}

    def reached_fraction(self, grid: np.ndarray) -> dict[str, np.ndarray]:
        """Fraction of (task, seed) runs whose best had reached the task's target by each budget."""
        out = {}
        for method in self.methods:
            costs = [m.cost_to_reach(r.full, self.target[r.task]) for r in self.runs if r.method == method]
            out[method] = np.array([np.mean([c <= g for c in costs]) for g in grid])
        return out


def _x(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.2f}x"


# --- the report ---------------------------------------------------------------------------------------------


def _style(method: str) -> dict[str, Any]:
    ours = METHODS[method].family == "ours"
    return {"linestyle": "-" if ours else "--", "linewidth": 2.0 if ours else 1.4}


def write_plot(study: SampleEfficiency, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    grid = np.linspace(0, study.total_epochs, 201)
    regret, reached = study.normalised_regret(grid), study.reached_fraction(grid)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    x = grid / MAX_EPOCHS
    for method in sorted(study.methods, key=lambda name: study.ranks()[name]):
        left.plot(x, regret[method], label=METHODS[method].label, **_style(method))
        right.plot(x, reached[method], label=METHODS[method].label, **_style(method))
    left.set_yscale("log")
    left.set_xlabel("budget spent (full trainings of 52 epochs)")
    left.set_ylabel("normalised regret of the incumbent (mean over tasks and seeds)")
    left.set_title("Anytime: best 52-epoch validation accuracy, normalised per task")
    right.set_xlabel("budget spent (full trainings of 52 epochs)")
    right.set_ylabel("fraction of (task, seed) runs at the target")
    right.set_title("Reaching the target (random search's median final incumbent)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(study: SampleEfficiency, path: Path, *, command: str, started: dt.datetime, wall: float,
                 driver: str, service_check: list[tuple[str, str, bool, int]],
                 left_out: dict[str, str] | None = None, fast_tpe: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    plot = write_plot(study, path.with_suffix(".png"))
    env = environment()
    headers, task_rows = study.task_rows()
    lines = [
        "# Sample efficiency on LCBench (YAHPO Gym surrogate)",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {wall / 60:.1f} min "
        "(runs already in the cache are reused; see `--no-cache`).",
        "",
        f"{len(study.tasks)} tasks x {study.seeds} seeds x {len(study.methods)} methods"
        + (" (**fewer seeds than the default 5**: a run cut short; the same command with `--seeds 5` resumes it)"
           if study.seeds < 5 else "")
        + f"; the runs took {sum(r.compute_seconds for r in study.runs) / 3600:.1f} process-hours. Every run has "
        f"{study.total_epochs:,} epochs ({study.total_epochs // MAX_EPOCHS} full trainings). hpo-service's methods "
        f"ran with the `{driver}` driver. Optuna's TPE (in hpo-service's sampler and in the anchors) ran "
        + ("with bench/methods/fast_tpe.py (a vectorised log-CDF; same proposals to the last bit)."
           if fast_tpe else "as shipped (`--exact-optuna`)."),
        "",
        "## Results",
        "",
        common.md_table(study.SUMMARY_HEADERS, study.summary_rows()),
        "",
        "- **median speedup**: per task, random search's budget-to-target divided by the method's (each the median "
        "over seeds; a method that does not reach the target has speedup 0); the median over tasks.",
        "- **mean rank (budget)**: rank by budget-to-target per task (1 = least; ties share), averaged over tasks. "
        "**mean rank (final)**: the same by final incumbent.",
        "- **slower than random**: tasks with speedup < 1. **target reached**: tasks whose median seed reached it.",
        "- **configs / run**: distinct configurations; **evaluations / run**: trainings started or resumed "
        "(one per Optuna trial); **wall s / run**: the benchmark's own compute per run (surrogate, sampler, "
        "scheduler), on a machine shared with other work.",
        "",
        "### Against the goals",
        "",
    ]
    lines += [f"- {line}" for line in study.goal_lines()] + [""]
    if plot is not None:
        lines += [f"![anytime curves and fraction at target]({plot.name})", ""]
    if service_check:
        same = sum(ok for _, _, ok, _ in service_check)
        lines += ["### The service path", "",
                  f"{same} of {len(service_check)} runs redone through the real service (HTTP + SQLite, seed 0 of "
                  f"the first tasks) gave exactly the results of the in-memory driver: "
                  + ", ".join(f"{meth} on {task} ({'identical' if ok else 'DIFFERENT'}, {n} evaluations)"
                              for meth, task, ok, n in service_check) + ".", ""]
    notes = [(x, METHODS[x].note) for x in study.methods if METHODS[x].note]
    if notes:
        lines += ["### Method notes", ""] + [f"- **{name}**: {note}." for name, note in notes] + [""]
    if left_out:
        lines += ["Left out: " + "; ".join(f"**{name}**: {why}" for name, why in left_out.items()) + ".", ""]
    lines += ["### Budget to the target per task", "",
              "Median over seeds, in full trainings (52 epochs); `never`: the median seed did not reach it.", "",
              common.md_table(headers, task_rows), "", "## Environment", "",
              common.md_table(["", ""], [[k, v] for k, v in env.items()], "ll"), ""]
    path.write_text("\n".join(lines))


def environment() -> dict[str, str]:
    import os
    import subprocess

    # HPO_BENCH_REVISION names the code under test when it is not a git checkout (an exported tree).
    commit = os.environ.get("HPO_BENCH_REVISION") or subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=common.REPO_ROOT, capture_output=True, text=True,
    ).stdout.strip() or "?"
    return {
        "hpo-service": f"{common.package_version('hpo-service')} (git {commit})",
        "CPU": f"{common.cpu_model()} ({common.cpu_count()} CPUs)",
        "Python": common.platform.python_version(),
        "packages": ", ".join(f"{p} {common.package_version(p)}" for p in
                              ("numpy", "onnxruntime", "optuna", "dehb", "ConfigSpace", "sqlalchemy", "fastapi")),
    }
