"""Iterative deepening on LCBench: raise a study's max budget 16 -> 52 epochs, or start again at 52.

A PURE SIMULATION: the service's schedulers (Hyperband, ASHA) are driven directly, with
``InMemoryRungPort``, one worker, promoted trials handed out before new ones (as the service's
lease does); no server, database or HTTP. Training is the YAHPO Gym LCBench surrogate
(bench/lcbench.py, 34 OpenML tasks, 52 epochs); when it is not available (no model.onnx or no
onnxruntime) the synthetic trainer's curves stand in, and the report says so.

For every (task, seed), with configuration ``n`` the same in every study of that pair:

- ``raised``: a study at max 16 epochs run to the end, raised to 52 (``Scheduler.extend``),
  run to the end. Hyperband tops every old bracket up to the size of the larger Hyperband's
  bracket with the same minimum budget (Brandt et al.'s efficient variant, the service's
  default): the old trials keep their results, new ones are sampled at the bracket's lowest
  rung, and successive halving runs again with the larger bracket's counts; an old trial that
  is promoted continues from its checkpoint. ASHA's rungs simply grow (no top-up needed).
- ``raised, no top-up`` (Hyperband): ``extend(..., top_up=False)``: only the best of each
  old top rung continue; the old brackets keep their size.
- ``fresh``: a study at max 52 from the start.
- ``fresh, same spend`` (Hyperband): a fresh study at 52 whose ``limits.total_budget`` is what
  ``raised, no top-up`` committed: what that money buys without the first study.
- ``restart``: the paper's baseline (run at 16, then again at 52): ``fresh``'s incumbent at the
  cost of both studies; not a separate run.

Budgets: min 1, eta 3 (16 -> budgets 1.78, 5.33, 16; 52 -> 1.93, 5.78, 17.3, 52). A segment from
budget a to b trains epochs ceil(a)+1 .. ceil(b), costs ceil(b) - ceil(a) epochs and is scored at
epoch ceil(b) (bench/methods/budget.py's accounting). The incumbent is the best validation
accuracy among trials trained to 52 epochs.

    bench/.venv/bin/python bench/iterative_deepening.py            # 34 tasks x 10 seeds
    bench/.venv/bin/python bench/iterative_deepening.py --tasks 3 --seeds 2 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the root, on sys.path
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import cpu_model, md_table, package_version  # noqa: E402
from hpo_service.domain.spec import Limits, SchedulerSpec  # noqa: E402
from hpo_service.scheduling.base import Finish, NewTrial, Promote, Reuse, RungResult, Stop  # noqa: E402
from hpo_service.scheduling.factory import make_scheduler  # noqa: E402
from hpo_service.scheduling.memory_port import InMemoryRungPort  # noqa: E402

OLD_MAX, NEW_MAX, MAX_EPOCHS = 16.0, 52.0, 52
HYPERBAND = SchedulerSpec(kind="hyperband", min_budget=1, max_budget=OLD_MAX, eta=3)
ASHA = SchedulerSpec(kind="asha", min_budget=1, max_budget=OLD_MAX, eta=3)
ASHA_TRIALS = 100
CHUNK = 64  # trial ids whose whole curves are predicted in one surrogate call
RESULTS = REPO_ROOT / "bench" / "results"


# --- what trains: the surrogate, or the synthetic curves --------------------------------------


class Evaluator(Protocol):
    """``evaluate(task, config, epoch) -> (val_accuracy, time)``, batched as whole curves."""

    name: str
    tasks: list[str]

    def sample(self, rng: random.Random) -> dict[str, Any]: ...

    def curves(self, task: str, configs: Sequence[Mapping[str, Any]]) -> list[list[tuple[float, float]]]:
        """Per configuration, (val_accuracy %, cumulative seconds) at epochs 1..52."""
        ...


class LCBenchEvaluator:
    def __init__(self) -> None:
        from bench.lcbench import LCBench, Y_NAMES

        self._bench = LCBench()
        self._time, self._accuracy = Y_NAMES.index("time"), Y_NAMES.index("val_accuracy")
        self.tasks = list(self._bench.tasks)
        self.name = f"YAHPO Gym LCBench surrogate (onnxruntime {package_version('onnxruntime')})"

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return self._bench.sample(rng)

    def curves(self, task: str, configs: Sequence[Mapping[str, Any]]) -> list[list[tuple[float, float]]]:
        epochs = list(range(1, MAX_EPOCHS + 1))
        rows = self._bench.predict(task, [c for c in configs for _ in epochs], epochs * len(configs))
        return [[(float(rows[i * MAX_EPOCHS + e][self._accuracy]), float(rows[i * MAX_EPOCHS + e][self._time]))
                 for e in range(MAX_EPOCHS)] for i in range(len(configs))]


class SyntheticEvaluator:
    """The synthetic trainer's noise-free curves; a task moves the optimum of the learning rate."""

    def __init__(self, tasks: int = 34) -> None:
        self.tasks = [f"synthetic-{i}" for i in range(tasks)]
        self.name = "synthetic trainer curves (trainers/synthetic/curves.py): LCBench surrogate not available"

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {"learning_rate": 10 ** rng.uniform(-4, -1), "weight_decay": 10 ** rng.uniform(-5, -1),
                "momentum": rng.uniform(0.1, 0.99), "max_dropout": rng.uniform(0, 1)}

    def curves(self, task: str, configs: Sequence[Mapping[str, Any]]) -> list[list[tuple[float, float]]]:
        from trainers.synthetic.curves import accuracy_from_loss, curve_for

        index = self.tasks.index(task)
        optimum = {"learning_rate": 10 ** (-3.5 + 2.5 * index / len(self.tasks)), "momentum": 0.9}
        out = []
        for config in configs:
            curve = curve_for(config, optimum)
            out.append([(100 * accuracy_from_loss(curve.loss_at(e)), float(e)) for e in range(1, MAX_EPOCHS + 1)])
        return out


def make_evaluator() -> Evaluator:
    try:
        return LCBenchEvaluator()
    except (ImportError, FileNotFoundError) as exc:
        print(f"LCBench surrogate unavailable ({exc}); using the synthetic curves", file=sys.stderr)
        return SyntheticEvaluator()


class Curves:
    """Configuration ``n`` of one (task, seed) and its curve, computed CHUNK trial ids at a time."""

    def __init__(self, evaluator: Evaluator, task: str, seed: int) -> None:
        self._evaluator, self._task, self._seed = evaluator, task, seed
        self._curves: dict[int, list[tuple[float, float]]] = {}

    def at(self, trial_id: int, epoch: int) -> tuple[float, float]:
        if trial_id not in self._curves:
            first = (trial_id - 1) // CHUNK * CHUNK + 1
            ids = range(first, first + CHUNK)
            configs = [self._evaluator.sample(random.Random(f"{self._seed}:{self._task}:{n}")) for n in ids]
            self._curves.update(zip(ids, self._evaluator.curves(self._task, configs)))
        return self._curves[trial_id][epoch - 1]


# --- one study, driven like the service drives it --------------------------------------------


def epochs_of(budget: float) -> int:
    return max(0, math.ceil(budget - 1e-9))


@dataclass
class Trial:
    bracket: int
    rung: int
    target: float
    done: float = 0.0
    status: str = "pending"
    accuracy: float = 0.0


@dataclass
class Study:
    spec: SchedulerSpec
    limits: Limits
    curves: Curves
    trials: dict[int, Trial] = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0
    reused: int = 0
    epochs_saved: int = 0
    epochs_before_raise: int = 0

    def __post_init__(self) -> None:
        self.scheduler = make_scheduler(self.spec, self.limits)
        self.state = self.scheduler.initial_state()
        self.port = InMemoryRungPort()
        self.pending: list[int] = []

    def run(self) -> Study:
        while True:
            if self.pending:
                trial_id = self.pending.pop(0)
            else:
                self.state, action = self.scheduler.next_work(self.state, self.port)
                if action is None:
                    break
                if isinstance(action, NewTrial):
                    trial_id = len(self.trials) + 1
                    self.trials[trial_id] = Trial(action.bracket, action.rung, action.budget)
                    self.port.created(trial_id)
                else:
                    self._apply([action])
                    trial_id = self.pending.pop(0)
            self._train(trial_id)
        assert self.scheduler.is_finished(self.state, self.port, 0)
        return self

    def raise_to(self, max_budget: float, top_up: bool = True) -> Study:
        """``Scheduler.extend``; ``top_up`` is Hyperband's option (ASHA has none)."""
        old = self.spec.max_budget
        self.epochs_before_raise = self.epochs
        self.spec = self.spec.model_copy(update={"max_budget": max_budget})
        self.scheduler = make_scheduler(self.spec, self.limits)
        if self.spec.kind == "hyperband":
            scheduler: Any = self.scheduler
            self.state, actions = scheduler.extend(self.state, self.port, old, top_up=top_up)
        else:
            self.state, actions = self.scheduler.extend(self.state, self.port, old)
        self._apply(actions)
        return self

    def fork(self) -> Study:
        """An independent copy (to raise the same finished study in two ways)."""
        import copy

        twin = copy.copy(self)
        twin.trials = copy.deepcopy(self.trials)
        twin.state = copy.deepcopy(self.state)
        twin.port = copy.deepcopy(self.port)
        twin.pending = list(self.pending)
        return twin

    def _train(self, trial_id: int) -> None:
        trial = self.trials[trial_id]
        start, end = epochs_of(trial.done), epochs_of(trial.target)
        accuracy, seconds = self.curves.at(trial_id, end)
        self.epochs += end - start
        self.seconds += max(0.0, seconds - (self.curves.at(trial_id, start)[1] if start else 0.0))
        trial.done, trial.accuracy, trial.status = trial.target, accuracy, "paused"
        result = RungResult(trial_id, trial.bracket, trial.rung, -accuracy)
        self.port.record(result)
        self.state, actions = self.scheduler.on_result(self.state, self.port, result)
        self._apply(actions)

    def _apply(self, actions: Sequence[Any]) -> None:
        for action in actions:
            trial = self.trials[action.trial_id]
            if isinstance(action, Reuse):  # a top-up keeps the trial with its results (decision log: reuse)
                self.reused += 1
                self.epochs_saved += epochs_of(action.budget)
            elif isinstance(action, Promote):
                if action.reason.startswith("budget raised"):
                    self.reused += 1
                    self.epochs_saved += epochs_of(trial.done)
                self.port.mark_promoted(action.trial_id, trial.rung)
                trial.rung, trial.target, trial.status = action.to_rung, action.budget, "pending"
                self.pending.append(action.trial_id)
            elif isinstance(action, Finish):
                trial.status = "completed"
            elif isinstance(action, Stop):
                trial.status = "stopped"

    @property
    def committed(self) -> float:
        return float(self.state["budget_committed"])

    def incumbent(self) -> float:
        return max((t.accuracy for t in self.trials.values() if epochs_of(t.done) == MAX_EPOCHS), default=math.nan)


# --- the comparison --------------------------------------------------------------------------------


@dataclass
class Pair:
    """One (task, seed): every method's (epochs, seconds, incumbent, epochs after the raise), and each
    raise's reuse (trials, epochs saved)."""

    task: str
    seed: int
    runs: dict[str, tuple[int, float, float, int]]
    reused: dict[str, tuple[int, int]]


def compare(evaluator: Evaluator, task: str, seed: int) -> Pair:
    curves = Curves(evaluator, task, seed)
    runs: dict[str, tuple[int, float, float, int]] = {}
    reused: dict[str, tuple[int, int]] = {}
    for label, spec, limits in (("Hyperband", HYPERBAND, Limits()), ("ASHA", ASHA, Limits(max_trials=ASHA_TRIALS))):
        old = Study(spec, limits, curves).run()
        old_cost = (old.epochs, old.seconds)
        raised_ways = {"raised": old.fork().raise_to(NEW_MAX).run()}
        if label == "Hyperband":
            raised_ways["raised, no top-up"] = old.fork().raise_to(NEW_MAX, top_up=False).run()
        fresh = Study(spec.model_copy(update={"max_budget": NEW_MAX}), limits, curves).run()
        for method, raised in raised_ways.items():
            runs[f"{label} {method}"] = (raised.epochs, raised.seconds, raised.incumbent(),
                                         raised.epochs - raised.epochs_before_raise)
            reused[f"{label} {method}"] = (raised.reused, raised.epochs_saved)
        runs[f"{label} fresh"] = (fresh.epochs, fresh.seconds, fresh.incumbent(), fresh.epochs)
        runs[f"{label} restart"] = (old_cost[0] + fresh.epochs, old_cost[1] + fresh.seconds, fresh.incumbent(),
                                    fresh.epochs)
        if label == "Hyperband":
            capped = Study(spec.model_copy(update={"max_budget": NEW_MAX}),
                           Limits(total_budget=raised_ways["raised, no top-up"].committed), curves).run()
            runs[f"{label} fresh, same spend"] = (capped.epochs, capped.seconds, capped.incumbent(), capped.epochs)
    return Pair(task, seed, runs, reused)


METHODS = ("raised", "raised, no top-up", "fresh", "fresh, same spend", "restart")


def summary_rows(pairs: list[Pair], label: str) -> list[list[Any]]:
    rows = []
    for method in METHODS:
        key = f"{label} {method}"
        if key not in pairs[0].runs:
            continue
        epochs = [p.runs[key][0] for p in pairs]
        after = [p.runs[key][3] for p in pairs]
        hours = [p.runs[key][1] / 3600 for p in pairs]
        gaps = [p.runs[key][2] - p.runs[f"{label} fresh"][2] for p in pairs]
        finite = [g for g in gaps if not math.isnan(g)]
        rows.append([
            method, f"{statistics.mean(epochs):.0f}", f"{statistics.mean(after):.0f}", f"{statistics.mean(hours):.2f}",
            f"{statistics.mean(p.runs[key][2] for p in pairs if not math.isnan(p.runs[key][2])):.2f}",
            f"{statistics.mean(finite):+.2f}" if finite else "n/a",
            f"{sum(g > 0 for g in finite)} / {sum(g == 0 for g in finite)} / {sum(g < 0 for g in finite)}",
        ])
    return rows


def per_task_rows(pairs: list[Pair], label: str) -> list[list[Any]]:
    rows = []
    for task in dict.fromkeys(p.task for p in pairs):
        mine = [p for p in pairs if p.task == task]
        raised = [p.runs[f"{label} raised"] for p in mine]
        fresh = [p.runs[f"{label} fresh"] for p in mine]
        rows.append([task, f"{statistics.mean(r[0] for r in raised):.0f}", f"{statistics.mean(f[0] for f in fresh):.0f}",
                     f"{statistics.mean(r[2] for r in raised):.2f}", f"{statistics.mean(f[2] for f in fresh):.2f}",
                     f"{statistics.mean(r[2] - f[2] for r, f in zip(raised, fresh)):+.2f}"])
    return rows


def _mean(pairs: list[Pair], key: str, index: int) -> float:
    return statistics.mean(p.runs[key][index] for p in pairs)


def _sentence(pairs: list[Pair], label: str, method: str) -> str:
    raised, fresh, restart = f"{label} {method}", f"{label} fresh", f"{label} restart"
    gaps = [p.runs[raised][2] - p.runs[fresh][2] for p in pairs]
    gap = statistics.mean(gaps)
    error = statistics.stdev(gaps) / math.sqrt(len(gaps)) if len(gaps) > 1 else math.nan
    worse = sum(g < 0 for g in gaps)
    better = sum(g > 0 for g in gaps)
    return (
        f"in all it trains {1 - _mean(pairs, raised, 0) / _mean(pairs, fresh, 0):.0%} fewer epochs than a fresh "
        f"study at 52 and {1 - _mean(pairs, raised, 0) / _mean(pairs, restart, 0):.0%} fewer than running again at "
        f"52 after the study at 16 (the paper's baseline); after the raise it trains "
        f"{_mean(pairs, raised, 3):.0f} epochs, {1 - _mean(pairs, raised, 3) / _mean(pairs, fresh, 0):.0%} fewer "
        f"than a fresh study. Its incumbent is {gap:+.2f} accuracy points from the fresh study's (paired "
        f"standard error {error:.2f}; better in {better}, worse in {worse} of {len(pairs)} pairs)."
    )


def findings(pairs: list[Pair]) -> list[str]:
    """The comparison in words, every number computed from ``pairs``."""
    out = ["## What it shows", ""]
    for label, method, what in (
        ("Hyperband", "raised", "Hyperband raised with top-up (the default)"),
        ("Hyperband", "raised, no top-up", "Hyperband raised without top-up"),
        ("ASHA", "raised", "ASHA raised"),
    ):
        if f"{label} {method}" in pairs[0].runs:
            out.append(f"- {what}: {_sentence(pairs, label, method)}")
    kept = [p.reused["Hyperband raised"] for p in pairs]
    out.append(
        f"- With top-up, every old trial stays in its bracket ({statistics.mean(k[0] for k in kept):.1f} `reuse` "
        f"decisions per raise, {statistics.mean(k[1] for k in kept):.0f} epochs not trained again) and the old "
        "brackets grow to the larger Hyperband's sizes, so the study ends with a fresh study's brackets and "
        "configuration count and its incumbent is a fresh study's in distribution; the whole saving is the "
        "study at 16 (the old rungs 1.78/5.33/16 epochs round to 2/6/16 against 2/6/18, so a raised study also "
        "trains a little less than a fresh one in all). Without top-up the raise is cheaper still but explores "
        "only the old brackets' configurations plus the new s'=0 bracket."
    )
    capped = "Hyperband fresh, same spend"
    if capped in pairs[0].runs:
        edge = _mean(pairs, capped, 2) - _mean(pairs, "Hyperband raised, no top-up", 2)
        out.append(
            f"- A fresh Hyperband study held to what the raise without top-up committed (`total_budget`, in budget "
            f"units, so it trains {_mean(pairs, capped, 0):.0f} epochs against "
            f"{_mean(pairs, 'Hyperband raised, no top-up', 0):.0f}) reaches an incumbent {edge:+.2f} points from "
            "that raised study's. ASHA needs no top-up: after the raise its rungs are a fresh study's and it samples "
            "new configurations up to the same `max_trials`."
        )
    return out + [""]


def report(pairs: list[Pair], evaluator: Evaluator, seeds: int, seconds: float, command: str) -> str:
    headers = ["method", "epochs spent", "after the raise", "surrogate hours", "incumbent val. acc. %",
               "vs fresh (points)", "better / same / worse than fresh"]
    lines = [
        "# Iterative deepening: raising max_budget 16 -> 52 epochs versus starting again at 52",
        "",
        "**Pure simulation.** The service's schedulers are driven directly with `InMemoryRungPort` "
        "(one worker, promoted trials first, as the lease does); no server, database or HTTP. "
        f"Training: {evaluator.name}.",
        "",
        f"- {len(dict.fromkeys(p.task for p in pairs))} tasks x {seeds} seeds = {len(pairs)} pairs; in each pair "
        "trial n is the same configuration in every study.",
        "- Schedulers: min_budget 1, eta 3, one sweep; ASHA with `max_trials` "
        f"{ASHA_TRIALS}. `raised`: run at 16 to the end, `extend` to 52, run to the end (Hyperband: old brackets "
        "topped up to the larger Hyperband's sizes, the default). `raised, no top-up`: Hyperband's "
        "`extend(..., top_up=False)`. `fresh`: at 52 from the start. `fresh, same spend`: at 52 with `total_budget` "
        "= what `raised, no top-up` committed. `restart`: the run at 16 plus `fresh` (the paper's baseline: same "
        "incumbent as fresh, both costs).",
        "- Cost: epochs trained (a resumed trial pays only its new epochs) and the surrogate's training time; "
        "`after the raise`: epochs trained after `extend` (for `fresh` and `restart`: the fresh study's). "
        "Incumbent: best validation accuracy among trials trained to 52 epochs.",
        f"- Command: `{command}` ({seconds:.0f} s on {cpu_model()}, Python {sys.version.split()[0]}).",
        "",
    ]
    lines += findings(pairs)
    for label in ("Hyperband", "ASHA"):
        lines += [f"## {label}", "", md_table(headers, summary_rows(pairs, label)), ""]
        for method, how in (("raised", "kept with their results (`reuse` decisions)" if label == "Hyperband"
                             else "continued from their checkpoint at 16 epochs"),
                            ("raised, no top-up", "continued from their checkpoint at 16 epochs")):
            if f"{label} {method}" not in pairs[0].reused:
                continue
            reused = [p.reused[f"{label} {method}"] for p in pairs]
            lines += [
                f"Reuse per raise (decision log), `{method}`: {statistics.mean(r[0] for r in reused):.1f} trials "
                f"{how}, saving {statistics.mean(r[1] for r in reused):.0f} epochs against training them again "
                "from scratch.",
                "",
            ]
    lines += [
        "## Per task (Hyperband, mean over seeds)",
        "",
        md_table(["task", "epochs raised", "epochs fresh", "acc. raised", "acc. fresh", "raised - fresh"],
                 per_task_rows(pairs, "Hyperband")),
        "",
        "## Per task (ASHA, mean over seeds)",
        "",
        md_table(["task", "epochs raised", "epochs fresh", "acc. raised", "acc. fresh", "raised - fresh"],
                 per_task_rows(pairs, "ASHA")),
        "",
    ]
    return "\n".join(lines)


def plot(pairs: list[Pair], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, marker in (("Hyperband", "o"), ("ASHA", "s")):
        for method in ("raised", "raised, no top-up", "fresh, same spend", "restart"):
            key = f"{label} {method}"
            if key not in pairs[0].runs:
                continue
            xs = [p.runs[key][0] / p.runs[f"{label} fresh"][0] for p in pairs]
            ys = [p.runs[key][2] - p.runs[f"{label} fresh"][2] for p in pairs]
            left.scatter(xs, ys, s=8, alpha=0.4, marker=marker, label=f"{label} {method}")
    left.axhline(0, color="grey", lw=0.8)
    left.axvline(1, color="grey", lw=0.8)
    left.set_xlabel("epochs spent / fresh study's")
    left.set_ylabel("incumbent - fresh study's (accuracy points)")
    left.set_title("each (task, seed) against a fresh study at 52")
    left.legend(fontsize=7, markerscale=2)
    tasks = list(dict.fromkeys(p.task for p in pairs))
    for offset, label, method in ((-0.27, "Hyperband", "raised"), (0.0, "Hyperband", "raised, no top-up"),
                                  (0.27, "ASHA", "raised")):
        gaps = [statistics.mean(p.runs[f"{label} {method}"][2] - p.runs[f"{label} fresh"][2]
                                for p in pairs if p.task == task) for task in tasks]
        right.bar([i + offset for i in range(len(tasks))], gaps, width=0.27, label=f"{label} {method}")
    right.axhline(0, color="grey", lw=0.8)
    right.set_xticks(range(len(tasks)), tasks, rotation=90, fontsize=6)
    right.set_ylabel("raised - fresh incumbent (points, mean over seeds)")
    right.set_title("per task")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks")
    parser.add_argument("--no-write", action="store_true", help="print the report instead of writing bench/results")
    args = parser.parse_args(argv)
    evaluator = make_evaluator()
    tasks = evaluator.tasks[: args.tasks] if args.tasks else evaluator.tasks
    started = time.perf_counter()
    pairs = [compare(evaluator, task, seed) for task in tasks for seed in range(1, args.seeds + 1)]
    elapsed = time.perf_counter() - started
    command = "bench/.venv/bin/python bench/iterative_deepening.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    text = report(pairs, evaluator, args.seeds, elapsed, command)
    if args.no_write:
        print(text)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "iterative_deepening.md").write_text(text)
    plot(pairs, RESULTS / "iterative_deepening.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
